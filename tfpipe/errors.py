"""Exceptions that the command line turns into one clear message and exit code 2.

Every error a user can cause (bad YAML, missing file, malformed RLE, corrupt
shard) is raised as a :class:`TfpipeError` subclass whose message states the
rule and what was received, e.g.::

    tile_size must be a multiple of 32; got tile_size=500 in experiments/x.yaml

Programming errors stay ordinary exceptions and keep their traceback.

A command that needs an optional part of the install (a pyproject extra such
as ``[train]``) calls :func:`require_extra` first, which names the extra to
install when its modules are missing.
"""


class TfpipeError(Exception):
    """Base class for errors caused by user input; the CLI prints them without a traceback."""


class ConfigError(TfpipeError):
    """An experiment file or override is invalid (unknown key, wrong type, bad value)."""


class InputDataError(TfpipeError):
    """Source data is missing, unreadable or inconsistent (TIFF, mask, RLE, CSV)."""


class RecordsError(TfpipeError):
    """A records folder is missing, corrupt, or from an unsupported format version."""


class DiskFullError(TfpipeError):
    """The disk under ``data.output`` ran out of space (ENOSPC/EDQUOT) during a build."""


class MissingExtraError(TfpipeError, ImportError):
    """A command or module needs an optional part of the install (a pyproject extra) that is absent.

    Also an :class:`ImportError`, so that library code can catch it like the
    missing import it stands for.
    """


# What each extra of pyproject.toml installs that tfpipe imports (top-level module names).
# The base install has what build-records and tfpipe.data need; see pyproject.toml.
EXTRA_MODULES = {
    "train": ("segmentation_models", "tensorboard", "matplotlib"),
    "rasterio": ("rasterio",),
    "bench": ("torch",),
    "beam": ("apache_beam",),
}


def require_extra(extra: str, user: str) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` unless its modules are installed.

    Looks the modules up without importing them (cheap: no TensorFlow).

    Args:
        extra: A key of :data:`EXTRA_MODULES`, e.g. ``"train"``.
        user: What needs it, as the message's subject: ``"this command"``, ``"tfpipe.models"``.

    Example:
        >>> require_extra("train", "tfpipe.models")  # doctest: +SKIP
        Traceback (most recent call last):
        tfpipe.errors.MissingExtraError: tfpipe.models needs the [train] extra: pip install -e
        ".[train]" in the tfpipe checkout; missing module(s) segmentation_models, tensorboard
    """
    import importlib.util

    missing = [m for m in EXTRA_MODULES[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f'{user} needs the [{extra}] extra: pip install -e ".[{extra}]" in the tfpipe '
            f"checkout; missing module(s) {', '.join(missing)}"
        )
