"""Exceptions that the command line turns into one clear message and exit code 2.

Every error a user can cause (bad YAML, missing file, malformed RLE, corrupt
shard) is raised as a :class:`TfpipeError` subclass whose message states the
rule and what was received, e.g.::

    tile_size must be a multiple of 32; got tile_size=500 in experiments/x.yaml

Programming errors stay ordinary exceptions and keep their traceback.
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
