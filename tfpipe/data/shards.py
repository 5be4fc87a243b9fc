"""Read the serialized records of a set of shards, in a fresh order every epoch.

Training order comes from three seeded sources of randomness, each drawn
from the epoch's key (:mod:`tfpipe.data.seeds`), so every epoch differs and
runs with the same seed repeat:

1. the shard list is shuffled (``stateless_shuffle``);
2. each shard starts at a random record and wraps around, so shards read side
   by side by ``interleave`` are not in lockstep (without this, the k-th
   records of all shards would meet in the same batches every epoch);
3. a record shuffle buffer after ``interleave`` (see ``pipeline``).

Shards are read in parallel by ``interleave``. GZIP shards are read
transparently (compression comes from the manifest). A shard that yields
fewer records than the manifest promises (CRC error, truncation) fails with a
message naming it, or, with ``skip_corrupt``, is logged with the count of
records lost. (TFRecord cannot resynchronise after a bad record, so a
damaged shard loses everything from the damage to its end. Tiles whose
bytes pass the CRC but do not decode are a writer bug and still fail.)

Example:
    >>> ds = read_shards(plan.shards, cfg, training=True, key=tf.constant(7, tf.int64))
    ... # doctest: +SKIP
    >>> next(iter(ds)).dtype                          # doctest: +SKIP
    tf.string
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from tfpipe.config import InputConfig
from tfpipe.data.seeds import mix_key, uniform
from tfpipe.errors import RecordsError
from tfpipe.records.reader import FrameCount, count_frames

# Functions handed to tf.data are plain graph code (explicit tf.cond, no Python
# control flow on tensors); skipping AutoGraph's source conversion saves seconds
# per load() call.
_plain = tf.autograph.experimental.do_not_convert

# Salts keep an epoch's shard order and shard starts independent draws of its key.
_ORDER_SALT = 7907
_OFFSET_SALT = 7919
# Shards read side by side when input.cycle_length is not set.
DEFAULT_CYCLE_LENGTH = 16


@dataclass(frozen=True)
class ShardSet:
    """The shards one ``load()`` call reads.

    Attributes:
        paths: Absolute shard paths.
        counts: Records per shard, from the manifest.
        sizes: Bytes per shard, from the manifest.
        compression: ``none`` or ``gzip``.
    """

    paths: tuple[str, ...]
    counts: tuple[int, ...]
    sizes: tuple[int, ...]
    compression: str

    @property
    def num_records(self) -> int:
        return sum(self.counts)


def check_shard_files(shards: ShardSet, skip_corrupt: bool) -> list[str]:
    """Compare each shard on disk with the manifest: size, and record count from the framing.

    Runs at every ``load()``: one ``stat`` per shard and, for uncompressed
    shards, a read of each record's 12-byte header; the data is skipped, so
    the cost does not grow with record size (10,000 records of 107 kB: ~30 ms
    of CPU from the page cache; ~0.5 s when every header comes from disk,
    read by up to ``_COUNT_THREADS`` threads). It catches an interrupted copy
    or sync (truncation), a damaged header, and a manifest whose counts do
    not fit its shards, before training starts. GZIP shards cannot seek: only
    their size is compared, and the graph's count check catches the rest
    while reading.

    Returns:
        One message per damaged shard (only when ``skip_corrupt`` is set).

    Raises:
        RecordsError: a shard is missing; it holds more records than the
            manifest lists (even with ``skip_corrupt``: the records past the
            manifest's count would be dropped without a word); or it is
            truncated, damaged or short and ``skip_corrupt`` is off.

    Example:
        >>> check_shard_files(plan.shards, skip_corrupt=False)  # doctest: +SKIP
        []
    """
    for path in shards.paths:
        if not Path(path).is_file():
            raise RecordsError(f"shard {path} is listed in manifest.json but missing")
    problems = []
    framed = _count_records(shards)
    for path, count, size, frames in zip(
        shards.paths, shards.counts, shards.sizes, framed, strict=True
    ):
        problem = _shard_problem(Path(path), count, size, frames)
        if problem is None:
            continue
        if not skip_corrupt:
            raise RecordsError(
                f"{problem}; rebuild the records, or set input.skip_corrupt: true to skip "
                "the damaged part"
            )
        problems.append(problem)
    return problems


# Threads counting records: os.pread releases the GIL, so reads from disk overlap
# (10,000 records of 107 kB not in the page cache: 0.8-1.6 s with one thread,
# 0.4-0.5 s with 8; from the page cache ~30 ms of CPU either way).
_COUNT_THREADS = 8


def _count_records(shards: ShardSet) -> list[FrameCount | None]:
    """Each shard's framing (None for GZIP shards, which cannot seek)."""
    if shards.compression == "gzip" or not shards.paths:
        return [None] * len(shards.paths)
    with ThreadPoolExecutor(min(_COUNT_THREADS, len(shards.paths))) as pool:
        return list(pool.map(_frames, shards.paths))


def _frames(path: str) -> FrameCount:
    try:
        return count_frames(path)
    except OSError as err:  # e.g. no permission to read it
        raise RecordsError(f"cannot read shard {path}: {err.strerror or err}") from None


def _shard_problem(path: Path, count: int, size: int, frames: FrameCount | None) -> str | None:
    """What is wrong with one shard (None: it fits the manifest).

    Raises:
        RecordsError: the shard holds more records than the manifest lists.
    """
    actual = path.stat().st_size
    on_disk = f"{actual} bytes on disk, manifest.json says {size}"
    if frames is None:
        return None if actual == size else f"shard {path} is truncated or corrupt: {on_disk}"
    if frames.records > count:
        raise RecordsError(
            f"shard {path} holds {frames.records} records (counted from its TFRecord "
            f"framing) but manifest.json lists {count}: the manifest does not describe "
            "this shard, and the records past its count would be dropped silently; "
            "rebuild the records (input.skip_corrupt does not apply)"
        )
    if frames.records == count and frames.damage is None and actual == size:
        return None
    notes = "; ".join(n for n in (frames.damage, on_disk if actual != size else None) if n)
    return (
        f"shard {path} is truncated or corrupt: manifest.json lists {count} records, its "
        f"TFRecord framing holds {frames.records}" + (f" ({notes})" if notes else "")
    )


def read_shards(
    shards: ShardSet, cfg: InputConfig, training: bool, key: tf.Tensor
) -> tf.data.Dataset:
    """Serialized records of ``shards`` for the epoch whose key is ``key``.

    Training: shard order and shard starts are drawn from ``key``
    (stateless, so the epoch can be rebuilt from its key alone); otherwise
    manifest order from the first record.
    """
    counts = tf.constant(shards.counts, tf.int64)
    paths = tf.constant(list(shards.paths))
    if training and cfg.shuffle_files:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(shards.paths)), seed=mix_key(key, _ORDER_SALT)
        )
        paths, counts = tf.gather(paths, order), tf.gather(counts, order)
        draws = uniform(mix_key(key, _OFFSET_SALT), len(shards.paths), stream=0)
        offsets = tf.cast(tf.floor(draws * tf.cast(counts, tf.float32)), tf.int64)
        offsets = tf.minimum(offsets, tf.maximum(counts - 1, 0))
    else:
        offsets = tf.zeros_like(counts)
    files = tf.data.Dataset.from_tensor_slices((paths, counts, offsets))
    return read_shard_files(files, shards, cfg, training)


def read_shard_files(
    files: tf.data.Dataset, shards: ShardSet, cfg: InputConfig, training: bool
) -> tf.data.Dataset:
    """Records of ``files`` (``(path, count[, offset])`` elements), shards read side by side."""
    compression = "GZIP" if shards.compression == "gzip" else ""
    skip = cfg.skip_corrupt

    def read_one(
        path: tf.Tensor, count: tf.Tensor, offset: tf.Tensor | None = None
    ) -> tf.data.Dataset:
        start = tf.constant(0, tf.int64) if offset is None else offset
        return _read_shard(path, count, start, compression, skip)

    deterministic = cfg.deterministic if training else True
    # An explicit default: AUTOTUNE may settle on reading one shard at a time,
    # which leaves the record shuffle alone to mix shards.
    cycle = cfg.cycle_length or min(len(shards.paths), DEFAULT_CYCLE_LENGTH)
    return files.interleave(
        _plain(read_one),
        cycle_length=cycle,
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )


def _read_shard(
    path: tf.Tensor, count: tf.Tensor, offset: tf.Tensor, compression: str, skip_corrupt: bool
) -> tf.data.Dataset:
    def records() -> tf.data.Dataset:
        # ignore_errors ends the stream at the first bad record (TFRecord cannot
        # resynchronise after a CRC error); the count check below reports it.
        return tf.data.TFRecordDataset(path, compression_type=compression).ignore_errors()

    # Measured and not kept: skipping in the TFRecord reader itself (skip before
    # ignore_errors) costs 3x less CPU per skipped record (~3 % of the pipeline),
    # but RSS grew more over 10 epochs (median 2.6 % against 2.1 % in 10 paired
    # fresh processes, up to 9.5 % against 3.4 %).
    rotated = records().skip(offset).concatenate(records().take(offset))
    return _check_count(rotated, path, count, skip_corrupt)


def _check_count(
    records: tf.data.Dataset, path: tf.Tensor, expected: tf.Tensor, skip_corrupt: bool
) -> tf.data.Dataset:
    """Exactly ``expected`` records; a short shard fails with its name (or is logged, skipped).

    Without ``skip_corrupt`` a short shard is topped up with records that are
    the error message itself: not a valid ``tf.train.Example`` (its first byte
    is a protobuf end-group tag), so parsing fails on them, and TensorFlow's
    parse error quotes the value. Why not count in a ``scan``: a function per
    record cost ~0.25 ms of CPU per image, 15 % of the whole pipeline; ``take``
    and ``concatenate`` run no function. (Records past ``expected``, which a
    manifest never promises, are left out.)
    """
    if skip_corrupt:
        return _count_and_log(records, path, expected)
    notice = _text(
        "tfpipe.data: shard ",
        path,
        " is corrupt or truncated: it has fewer than the ",
        expected,
        " records that manifest.json lists; rebuild the records, or set "
        "input.skip_corrupt: true to skip the damaged part",
    )
    return records.concatenate(tf.data.Dataset.from_tensors(notice).repeat()).take(expected)


def _count_and_log(
    records: tf.data.Dataset, path: tf.Tensor, expected: tf.Tensor
) -> tf.data.Dataset:
    """Pass records through; at the end of the shard log how many were lost."""
    end = tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(True)))
    marked = records.map(_plain(lambda r: (r, tf.constant(False)))).concatenate(end)

    def step(seen: tf.Tensor, item: tuple[tf.Tensor, tf.Tensor]):
        is_end = item[1]
        checked = tf.cond(
            is_end,
            lambda: _log_short_shard(seen, expected, path),
            lambda: seen + 1,
        )
        return checked, item

    scanned = marked.scan(tf.constant(0, tf.int64), _plain(step))
    kept = scanned.filter(_plain(lambda record, is_end: tf.logical_not(is_end)))
    return kept.map(_plain(lambda record, is_end: record))


def _log_short_shard(seen: tf.Tensor, expected: tf.Tensor, path: tf.Tensor) -> tf.Tensor:
    message = _text(
        "tfpipe.data: skipped ",
        expected - seen,
        " unreadable records of shard ",
        path,
        " (read ",
        seen,
        " of ",
        expected,
        "; input.skip_corrupt is on)",
    )
    logged = tf.cond(
        tf.greater_equal(seen, expected),
        lambda: tf.constant(True),
        lambda: _print_true(message),
    )
    with tf.control_dependencies([logged]):
        return tf.identity(seen)


def _print_true(message: tf.Tensor) -> tf.Tensor:
    with tf.control_dependencies([tf.print(message, output_stream=sys.stderr)]):
        return tf.constant(True)


def _text(*parts: str | tf.Tensor) -> tf.Tensor:
    """Join literal text and scalar tensors into one string tensor (no quoting)."""
    return tf.strings.join(
        [
            p if isinstance(p, str) or p.dtype == tf.string else tf.strings.as_string(p)
            for p in parts
        ]
    )
