"""Damaged records met while a command reads them: one line and exit status 2, not a traceback.

``load()`` checks every shard's size and framing before a run starts, but some
damage only reading finds: a flipped byte inside a record's data (its CRC
fails) or a tile whose bytes pass the CRC and still do not decode. TensorFlow
then raises a ``tf.errors.OpError`` deep inside ``model.fit`` or a benchmark
loop, with a long message and a traceback. Commands that iterate
``tfpipe.data`` run inside :func:`damaged_records_as_errors`, which re-raises
those errors, and only those, as a :class:`~tfpipe.errors.RecordsError` that
names the shard (when TensorFlow's message does) or the records folder, and
says what to do. Every other TensorFlow error keeps its traceback: it is a
bug, not bad input.

Example:
    >>> line = describe_damage("Could not parse example input, value: 'tfpipe.data: shard "
    ...     "/r/fold0.tfrecord is corrupt or truncated: it has fewer than the 16 records "
    ...     "that manifest.json lists; ...'", "/r")
    >>> line.startswith("shard /r/fold0.tfrecord is corrupt or truncated: reading it failed")
    True
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from tfpipe.errors import RecordsError

# The text tfpipe.data's count check puts into the stream for a short shard
# (tfpipe/data/shards.py); TensorFlow quotes it when the record fails to parse.
_SHARD_NOTICE = re.compile(
    r"tfpipe\.data: shard (?P<shard>.+?) is corrupt or truncated"
    r"(?:: it has fewer than the (?P<count>\d+) records)?"
)
# TensorFlow's own reader errors (tf.data.TFRecordDataset without ignore_errors).
_READER_DAMAGE = re.compile(r"(?:corrupted|truncated) record at \d+")
# What tf.io.decode_png / decode_jpeg / decode_image say about bytes they cannot decode.
_DECODE_FAILURES = (
    "Unknown image file format",
    "Invalid PNG",
    "Invalid JPEG data",
    "jpeg::Uncompress failed",
)
_NOT_AN_EXAMPLE = "Could not parse example input"


def describe_damage(message: str, records: str | Path) -> str | None:
    """One line for a TensorFlow error caused by damaged records, or None for any other error.

    Args:
        message: The ``tf.errors.OpError`` message.
        records: The records folder the command reads (named when the message
            names no shard).

    Example:
        >>> describe_damage("Invalid PNG. Failed to initialize decoder. [Op:DecodePng]", "r")
        ... # doctest: +ELLIPSIS
        'a tile in r does not decode (TensorFlow: Invalid PNG. Failed to initialize decoder.)...'
        >>> describe_damage("Incompatible shapes: [4,8] vs. [4,9]", "r") is None
        True
    """
    check = f"`tfpipe inspect-records {records}` checks every shard"
    notice = _SHARD_NOTICE.search(message)
    if notice is not None:
        promised = f"the {notice['count']} records" if notice["count"] else "all the records"
        return (
            f"shard {notice['shard']} is corrupt or truncated: reading it failed before "
            f"{promised} that manifest.json lists (a damaged record); {check}; rebuild the "
            "records, or set input.skip_corrupt: true to skip the damaged part"
        )
    reader = _READER_DAMAGE.search(message)
    if reader is not None:
        return (
            f"a shard in {records} is corrupt ({reader.group(0)}); {check}; rebuild the "
            "records, or set input.skip_corrupt: true to skip the damaged part"
        )
    starts = [message.find(f) for f in _DECODE_FAILURES if f in message]
    if starts:
        return (
            f"a tile in {records} does not decode (TensorFlow: {_reason(message, min(starts))})"
            f": its record passed the CRC, so the bytes were written damaged; rebuild the "
            f"records with `tfpipe build-records` ({check}; input.skip_corrupt skips only "
            "records that fail their CRC)"
        )
    if _NOT_AN_EXAMPLE in message:
        return (
            f"a record in {records} is not a tf.train.Example (TensorFlow: could not parse "
            f"it); {check}; rebuild the records"
        )
    return None


@contextlib.contextmanager
def damaged_records_as_errors(records: str | Path) -> Iterator[None]:
    """Re-raise TensorFlow's errors for damaged records as :class:`RecordsError` (one line).

    Example:
        >>> with damaged_records_as_errors(exp.data.output):   # doctest: +SKIP
        ...     train_experiment(exp)
    """
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as err:
        line = describe_damage(err.message, records)
        if line is None:
            raise
        raise RecordsError(line) from None


def _reason(message: str, start: int) -> str:
    """TensorFlow's own words from ``start`` to the end of that line, without ``[Op:...]``."""
    text = message[start:].splitlines()[0]
    return re.sub(r"\s*\[Op:\w+\]\s*$", "", text).strip()
