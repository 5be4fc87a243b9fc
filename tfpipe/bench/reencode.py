"""Re-encode a subset of existing records with another encoding or compression.

``--sweep data.encoding=png,jpeg,raw`` needs the same tiles written several
ways. Rebuilding from the slides (``build-records``) would need the source
images and minutes of ETL; instead the bench takes up to ``limit`` records of
the existing folder, decodes each tile and mask, encodes them again with
``tfpipe.records.format.encode_image`` exactly as the ETL does (masks: PNG,
or raw with raw tiles), and writes them with the records writer into a
temporary folder with the same fold/shard layout and a manifest. Every value
of the sweep is measured on identical pixels, so only the codec differs.
JPEG is lossy, so a JPEG subset re-encoded from PNG is what build-records
would have written, up to JPEG's own rounding. :func:`rewrite_shards` is the
copy underneath, for any rewrite of the serialized records.

Example:
    >>> from tfpipe.records.manifest import read_manifest
    >>> src = read_manifest("records/kidney")                          # doctest: +SKIP
    >>> reencode_subset(src, "raw", "none", Path("/tmp/raw"), limit=64)  # doctest: +SKIP
    PosixPath('/tmp/raw')
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tfpipe.records import format as fmt
from tfpipe.records.manifest import Manifest, ShardInfo, write_manifest
from tfpipe.records.writer import ShardWriter, frame_record


def reencode_subset(
    src: Manifest,
    encoding: str,
    compression: str,
    out: Path,
    *,
    limit: int = 256,
    quality: int = 95,
) -> Path:
    """Write up to ``limit`` records of ``src`` into ``out`` with a new encoding/compression.

    ``encoding``: ``png``, ``jpeg`` (at ``quality``) or ``raw``; ``compression``:
    ``none`` or ``gzip``; the rest as :func:`rewrite_shards`.
    """
    return rewrite_shards(
        src,
        out,
        lambda record: reencode_record(record, src.task, encoding, quality),
        compression=compression,
        limit=limit,
        encoding=encoding,
    )


def rewrite_shards(
    src: Manifest,
    out: Path,
    rewrite: Callable[[bytes], bytes],
    *,
    compression: str | None = None,
    limit: int | None = None,
    **changes: Any,
) -> Path:
    """Copy ``src`` into ``out`` with every serialized record passed through ``rewrite``.

    Every source shard contributes its share of a ``limit``, so folds and the
    number of shards (what parallel interleave sees) stay as in ``src``.

    Args:
        src: Manifest of the existing records.
        out: New folder (created; must not hold a dataset already).
        rewrite: One serialized ``tf.train.Example`` to another.
        compression: ``none`` or ``gzip`` (default: as ``src``).
        limit: Records to keep in total, each shard its share (default: all).
        changes: Other manifest fields of the copy (e.g. ``encoding``).

    Returns:
        ``out``, a complete records folder with ``manifest.json``.
    """
    compression = compression or src.compression
    share = 1.0 if limit is None else min(1.0, limit / max(1, src.num_records))
    out.mkdir(parents=True, exist_ok=True)
    per_fold = collections.Counter(info.fold for info in src.shards)
    index: dict[int, int] = {}
    shards = []
    for info in src.shards:
        i = index[info.fold] = index.get(info.fold, -1) + 1
        name = fmt.shard_name(info.fold, i, per_fold[info.fold], compression)
        take = max(1, math.ceil(info.records * share))
        with ShardWriter(out / name, compression) as writer:
            for record in read_records(src.root / info.path, src.compression, take):
                writer.write(frame_record(rewrite(record)))
        result = writer.result
        shards.append(ShardInfo(name, info.fold, result.records, result.bytes, result.sha256))
    manifest = dataclasses.replace(src, root=out, compression=compression, shards=shards, **changes)
    write_manifest(manifest)
    return out


def read_records(path: Path, compression: str, limit: int = -1) -> Iterator[bytes]:
    """The first ``limit`` serialized records of one shard (all of them with -1)."""
    import tensorflow as tf

    kind = "GZIP" if compression == "gzip" else ""
    for record in tf.data.TFRecordDataset(str(path), compression_type=kind).take(limit):
        yield record.numpy()


def reencode_record(record: bytes, task: str, encoding: str, quality: int = 95) -> bytes:
    """Decode one serialized Example and serialize it again with ``encoding``."""
    import tensorflow as tf

    ex = tf.io.parse_single_example(record, fmt.feature_spec(task))
    shape = [int(ex[k]) for k in (fmt.IMAGE_HEIGHT, fmt.IMAGE_WIDTH, fmt.IMAGE_CHANNELS)]
    image = decode_array(ex[fmt.IMAGE_ENCODED], ex[fmt.IMAGE_FORMAT], shape)
    kwargs: dict[str, Any] = {}
    if task == "segmentation":
        mask = decode_array(ex[fmt.MASK_ENCODED], ex[fmt.MASK_FORMAT], [*shape[:2], 1])[..., 0]
        mask_format = "raw" if encoding == "raw" else "png"
        kwargs.update(mask=fmt.encode_image(mask, mask_format), mask_format=mask_format)
    else:
        kwargs["labels"] = tf.sparse.to_dense(ex[fmt.CLASS_LABEL]).numpy().tolist()
    example = fmt.make_example(
        fmt.encode_image(image, encoding, quality),
        encoding,
        shape,
        source_id=ex[fmt.SOURCE_ID].numpy().decode(),
        positive_fraction=float(ex[fmt.POSITIVE_FRACTION]),
        **kwargs,
    )
    return example.SerializeToString()


def decode_array(encoded: Any, format_: Any, shape: list[int]) -> np.ndarray:
    """A PNG/JPEG/raw tile back to a uint8 array of ``shape`` (H, W, C)."""
    import tensorflow as tf

    if format_.numpy() == b"raw":
        return tf.reshape(tf.io.decode_raw(encoded, tf.uint8), shape).numpy()
    return tf.io.decode_image(encoded, channels=shape[2], expand_animations=False).numpy()
