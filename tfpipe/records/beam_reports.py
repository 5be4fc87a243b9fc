"""Errors and warnings of Beam workers, handed back to the launching process as small files.

A Beam runner reports a failed worker as its own error: the DirectRunner
raises a ``RuntimeError`` holding the worker's traceback as text, Dataflow a
job failure. The one-line message a user gets from the local build (``cannot
read window y=0 x=0 ... of data/train/b.tiff: ...``) would be buried in it.
So every stage body runs inside :func:`reported`: a
:class:`~tfpipe.errors.TfpipeError` or an ``OSError`` (a full disk) is written
to ``<tmp>/.beam/errors/<stage>.json`` before it fails the job, and the
launcher raises the first report again (:func:`raise_reported`), same class,
same message. Warnings (a blank slide) travel the same way
(:func:`save_warnings`, :func:`reported_warnings`). The temporary folder is
where the workers write the shards too, so it is reachable from every
worker; the reports go with it.

Example:
    >>> import tempfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> from tfpipe.errors import InputDataError
    >>> try:
    ...     with reported(tmp, "map-00003"):
    ...         raise InputDataError("cannot read b.tiff")
    ... except InputDataError:
    ...     pass
    >>> raise_reported(tmp)
    Traceback (most recent call last):
    tfpipe.errors.InputDataError: cannot read b.tiff
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from tfpipe import errors
from tfpipe.errors import TfpipeError

REPORTS = ".beam"  # inside the build's temporary folder; removed before it is published
# Added to a reported exception: Beam's own log lines about it are dropped (beam_logging).
REPORTED_NOTE = "(tfpipe: this error was saved for the launching process, which raises it)"


def reports_dir(tmp: Path) -> Path:
    """Where the workers of the build in ``tmp`` leave their reports."""
    return tmp / REPORTS


@contextlib.contextmanager
def reported(tmp: Path, stage: str) -> Iterator[None]:
    """Run a stage body; a user error or ``OSError`` is saved as ``<stage>.json``, then re-raised.

    Args:
        tmp: The build's temporary folder.
        stage: Names the report; reports are raised again in name order
            (``map-00003`` before ``map-00010`` before ``plan``).
    """
    try:
        yield
    except (TfpipeError, OSError) as err:
        _save(reports_dir(tmp) / "errors" / f"{stage}.json", _describe(err))
        err.add_note(REPORTED_NOTE)
        raise


def save_warnings(tmp: Path, stage: str, messages: list[str]) -> None:
    """Keep warnings a worker met, for the launcher to issue (:func:`reported_warnings`)."""
    if messages:
        _save(reports_dir(tmp) / "warnings" / f"{stage}.json", messages)


def reported_warnings(tmp: Path) -> list[str]:
    """Every saved warning, by stage name."""
    folder = reports_dir(tmp) / "warnings"
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return [message for path in paths for message in json.loads(path.read_text())]


def raise_reported(tmp: Path) -> None:
    """Raise the first saved error again (by stage name); do nothing when there is none.

    Raises:
        TfpipeError: the saved error's class (e.g. ``InputDataError``) with its message.
        OSError: a saved ``OSError``, with its errno (a full disk stays a full disk).
    """
    folder = reports_dir(tmp) / "errors"
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if paths:
        raise _rebuild(json.loads(paths[0].read_text()))


def _describe(err: BaseException) -> dict[str, object]:
    described: dict[str, object] = {"type": type(err).__name__, "message": str(err)}
    if isinstance(err, OSError):
        described |= {"errno": err.errno, "strerror": err.strerror, "filename": err.filename}
    return described


def _rebuild(report: dict) -> Exception:
    if report["type"] in _user_errors():
        return _user_errors()[report["type"]](report["message"])
    if report.get("errno") is not None:
        return OSError(report["errno"], report["strerror"], report["filename"])
    if "errno" in report:
        return OSError(report["message"])
    # A TfpipeError subclass defined outside tfpipe.errors (e.g. OutputLockedError).
    return TfpipeError(report["message"])


def _user_errors() -> dict[str, type[TfpipeError]]:
    """The user-error classes of :mod:`tfpipe.errors`, by name."""
    return {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, TfpipeError)
    }


def _save(path: Path, content: object) -> None:
    """Write ``content`` as JSON atomically: a retried worker may write the same report again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(content))
    part.replace(path)
