"""Read TFRecord shards and ``tf.train.Example`` bytes without TensorFlow (for inspect-records).

The inverse of :mod:`tfpipe.records.writer` and :mod:`tfpipe.records.example`:
frames are checked against their CRCs, and Examples are decoded into
``{key: [values]}`` (bytes, float or int lists). ``tfpipe.data`` reads with
TensorFlow; this reader lets the inspect command start in a second instead
of ~10 s and checks the framing independently of TensorFlow.

Example:
    >>> from tfpipe.records.example import serialize_example
    >>> parse_example(serialize_example(b"x", "raw", (1, 1, 1), source_id="a:0:0"))["image/format"]
    [b'raw']
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from tfpipe.errors import RecordsError
from tfpipe.records.writer import masked_crc32c


def iter_records(path: str | Path, compression: str = "none") -> Iterator[bytes]:
    """Yield the payload of every frame in a shard, checking both CRCs.

    Raises:
        RecordsError: a truncated frame or a CRC mismatch (names the file and record).
    """
    path = Path(path)
    with open(path, "rb") as raw:
        f: BinaryIO = gzip.GzipFile(fileobj=raw) if compression == "gzip" else raw
        index = 0
        while header := f.read(12):
            if len(header) < 12:
                raise RecordsError(f"{path}: record {index} is truncated (corrupt shard)")
            length_bytes, crc = header[:8], struct.unpack("<I", header[8:])[0]
            if masked_crc32c(length_bytes) != crc:
                raise RecordsError(f"{path}: record {index} has a bad length CRC (corrupt shard)")
            (length,) = struct.unpack("<Q", length_bytes)
            data, footer = f.read(length), f.read(4)
            if len(data) < length or len(footer) < 4:
                raise RecordsError(f"{path}: record {index} is truncated (corrupt shard)")
            if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise RecordsError(f"{path}: record {index} has a bad data CRC (corrupt shard)")
            yield data
            index += 1


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """``(field number, wire type, value)`` of one message level."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire == 5:
            yield number, wire, buf[pos : pos + 4]
            pos += 4
        elif wire == 1:
            yield number, wire, buf[pos : pos + 8]
            pos += 8
        else:
            raise RecordsError(f"not a tf.train.Example (wire type {wire})")


def _feature(buf: bytes) -> list:
    for kind, _, payload in _fields(buf):
        if kind == 1:
            return [v for _, _, v in _fields(payload)]
        if kind == 2:
            return _floats(payload)
        if kind == 3:
            return _ints(payload)
    return []


def _floats(payload: bytes) -> list[float]:
    out: list[float] = []
    for _, wire, v in _fields(payload):
        raw = v if isinstance(v, bytes) else b""
        out.extend(
            struct.unpack(f"<{len(raw) // 4}f", raw) if wire == 2 else struct.unpack("<f", raw)
        )
    return out


def _ints(payload: bytes) -> list[int]:
    out: list[int] = []
    for _, wire, v in _fields(payload):
        if wire == 0:
            out.append(_signed(int(v)))
            continue
        pos = 0
        while pos < len(v):
            value, pos = _varint(v, pos)
            out.append(_signed(value))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def parse_example(data: bytes) -> dict[str, list]:
    """Decode serialised ``tf.train.Example`` bytes into ``{key: list of values}``.

    Example:
        >>> from tfpipe.records.example import serialize_example
        >>> ex = parse_example(serialize_example(b"", "png", (2, 3, 3), source_id="s:0:0"))
        >>> ex["image/height"], ex["image/width"]
        ([2], [3])
    """
    out: dict[str, list] = {}
    for _, _, features in _fields(data):
        for _, _, entry in _fields(features):
            key, value = "", b""
            for number, _, v in _fields(entry):
                if number == 1:
                    key = v.decode()
                elif number == 2:
                    value = v
            out[key] = _feature(value)
    return out
