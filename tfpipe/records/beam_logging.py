"""Keep Apache Beam's own logging out of a build's output, unless asked for (``--verbose``).

Beam logs at INFO and WARNING for its own life cycle (workers starting,
options it discards, a missing Google Cloud client). A build shows its own
progress instead (:mod:`tfpipe.records.beam_stages`), so:

* :func:`quiet_beam` holds the ``apache_beam`` loggers at WARNING for the
  duration of a build, unless the application set a level on them itself
  (``build-records --verbose`` sets INFO);
* while it holds them, Beam's ERROR lines about a worker's failure are
  dropped when the failure is a user error the launcher raises again (it
  carries :data:`~tfpipe.records.beam_reports.REPORTED_NOTE`): the user gets
  the local build's one line, not three tracebacks of it;
* the first ``import apache_beam`` runs under it with the one warning it
  logs through the root logger (``apitools not found``: the Google Cloud
  extra of Beam is not installed, which a build does not need) dropped, and
  the root handler that ``logging.warning`` installs as a side effect removed.

The DirectRunner's worker processes are quieted by an option instead
(``default_sdk_harness_log_level``, :mod:`tfpipe.records.beam_options`), and
by :func:`quiet_worker_stderr`: a Beam SDK worker prints the traceback of
every failed bundle to its stderr, which the DirectRunner's worker processes
share with the launcher; the traceback of an error the launcher raises again
is dropped there. What remains of Beam's noise is two lines per worker
process as it starts (before any tfpipe code runs in it).

Example:
    >>> with quiet_beam():  # doctest: +SKIP
    ...     import apache_beam
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TextIO

BEAM_LOGGER = "apache_beam"
IMPORT_NOISE = "apitools not found"
# Where Beam logs a failed bundle: in-process (DoFnRunner), and a worker process's log
# forwarded to the launcher (DirectRunner multi_processing).
FAILURE_LOGGERS = (
    "apache_beam.runners.common",
    "apache_beam.runners.worker.sdk_worker",
    "apache_beam.runners.portability.local_job_service",
)


@contextlib.contextmanager
def quiet_beam() -> Iterator[None]:
    """Beam's loggers at WARNING inside the block (unless a level was set); import Beam quietly."""
    logger = logging.getLogger(BEAM_LOGGER)
    saved = logger.level
    quiet = saved == logging.NOTSET
    reported = _DropReported()
    if quiet:
        logger.setLevel(logging.WARNING)
        for name in FAILURE_LOGGERS:
            logging.getLogger(name).addFilter(reported)
    try:
        _import_quietly()
        yield
    finally:
        logger.setLevel(saved)
        for name in FAILURE_LOGGERS:
            logging.getLogger(name).removeFilter(reported)


def verbose_beam() -> None:
    """Let Beam's INFO lines through (``build-records --verbose``), on stderr."""
    logging.getLogger(BEAM_LOGGER).setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")


class _DropReported(logging.Filter):
    """Drop records about an exception that a tfpipe stage saved for the launcher."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tfpipe.records.beam_reports import REPORTED_NOTE

        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        return REPORTED_NOTE not in text


class _DropImportNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(IMPORT_NOISE)


def _import_quietly() -> None:
    root = logging.getLogger()
    handlers = list(root.handlers)
    noise = _DropImportNoise()
    root.addFilter(noise)
    try:
        import apache_beam  # noqa: F401
    finally:
        root.removeFilter(noise)
        root.handlers[:] = handlers  # logging.warning() called basicConfig() when there were none


def quiet_worker_stderr() -> None:
    """In a Beam worker process: drop the tracebacks of reported errors from ``sys.stderr``."""
    if not isinstance(sys.stderr, _QuietStderr):
        sys.stderr = _QuietStderr(sys.stderr)


class _QuietStderr:
    """``sys.stderr`` of a worker process, without the tracebacks of reported errors.

    The SDK worker writes a failed bundle's traceback with one ``print``: one
    ``write`` of the text, one of the line end.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._dropped = False

    def write(self, text: str) -> int:
        from tfpipe.records.beam_reports import REPORTED_NOTE

        dropped, self._dropped = self._dropped, REPORTED_NOTE in text
        if self._dropped or (dropped and text == "\n"):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)
