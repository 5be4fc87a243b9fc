"""Read TFRecord shards and ``tf.train.Example`` bytes without TensorFlow (for inspect-records).

The inverse of :mod:`tfpipe.records.writer` and :mod:`tfpipe.records.example`:
frames are checked against their CRCs, and Examples are decoded into
``{key: [values]}`` (bytes, float or int lists). ``tfpipe.data`` reads with
TensorFlow; this reader lets the inspect command start in a second instead
of ~10 s and checks the framing independently of TensorFlow.

:func:`count_frames` counts a shard's records from the framing alone (each
header's length and length CRC; the data is skipped), so ``load()``
can compare every shard with ``manifest.json`` before each run.

Example:
    >>> from tfpipe.records.example import serialize_example
    >>> parse_example(serialize_example(b"x", "raw", (1, 1, 1), source_id="a:0:0"))["image/format"]
    [b'raw']
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tfpipe.errors import RecordsError
from tfpipe.records.writer import FRAME_OVERHEAD, masked_crc32c

_HEADER = 12  # uint64 length + uint32 masked CRC of the length
# Bytes read per pread: one page holds a record's header, and the headers of
# several small records (fewer system calls when records are tiny).
_BLOCK = 4096


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


@dataclass(frozen=True)
class FrameCount:
    """What the framing of one shard says about it, without reading record data.

    Attributes:
        records: Complete frames from the start of the file (length CRC checked).
        damage: None when the file is exactly a sequence of frames; otherwise
            where and how the framing breaks (records after it cannot be found).
    """

    records: int
    damage: str | None = None


def count_frames(path: str | Path, compression: str = "none") -> FrameCount:
    """Count a shard's records from its TFRecord framing.

    Uncompressed shards are read header by header with ``os.pread`` (12
    bytes per record, data skipped), so the cost does not grow with record
    size; the data CRCs are not checked (TensorFlow does that while reading).
    GZIP shards cannot seek: their whole stream is decompressed (for
    inspect-records, not for ``load()``).

    Example:
        >>> import os, tempfile
        >>> from tfpipe.records.writer import frame_record
        >>> path = os.path.join(tempfile.mkdtemp(), "x.tfrecord")
        >>> _ = open(path, "wb").write(frame_record(b"abc") * 3)
        >>> count_frames(path)
        FrameCount(records=3, damage=None)
        >>> _ = os.truncate(path, 40)
        >>> count_frames(path).damage
        'record 2 is truncated: the file ends at byte 40, inside it'
    """
    if compression == "gzip":
        return _count_gzip(Path(path))
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        records = offset = block_at = 0
        block, want = b"", _BLOCK
        while offset < size:
            at = offset - block_at
            if at + _HEADER > len(block):
                block, block_at, at = os.pread(fd, want, offset), offset, 0
                if len(block) < _HEADER:
                    return FrameCount(records, _truncated(records, size))
            length, crc = struct.unpack_from("<QI", block, at)
            if masked_crc32c(block[at : at + 8]) != crc:
                return FrameCount(
                    records, f"record {records} has a bad length CRC at byte {offset}"
                )
            # After a record larger than a block the next header is alone in its block.
            want = _HEADER if length > _BLOCK else _BLOCK
            offset += length + FRAME_OVERHEAD
            if offset > size:
                return FrameCount(records, _truncated(records, size))
            records += 1
    return FrameCount(records)


def _count_gzip(path: Path) -> FrameCount:
    records = 0
    try:
        with gzip.open(path, "rb") as f:
            while header := f.read(_HEADER):
                if len(header) < _HEADER:
                    return FrameCount(records, f"record {records} is truncated")
                if masked_crc32c(header[:8]) != struct.unpack("<I", header[8:])[0]:
                    return FrameCount(records, f"record {records} has a bad length CRC")
                rest = struct.unpack("<Q", header[:8])[0] + 4
                if len(f.read(rest)) < rest:
                    return FrameCount(records, f"record {records} is truncated")
                records += 1
    except (EOFError, OSError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        return FrameCount(records, f"the gzip stream breaks after record {records}: {err}")
    return FrameCount(records)


def _truncated(index: int, size: int) -> str:
    return f"record {index} is truncated: the file ends at byte {size}, inside it"


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
