"""Tiny records folders for the tfpipe.data tests (and the input benchmark).

Writes shards and ``manifest.json`` with the shared record format helpers,
without ``build-records``, so the input layer is tested on its own.
Every record's ``image/source_id`` is ``slide<fold>:<k>:0`` (k counts records
within the fold), so tests can follow the order of records.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfpipe.records import format as fmt
from tfpipe.records.manifest import Manifest, ShardInfo, SourceStats, sha256_file, write_manifest

TileFn = Callable[[int, int, np.random.Generator], tuple[np.ndarray, np.ndarray | None]]


def write_records(
    root: Path,
    *,
    task: str = "segmentation",
    folds: int = 2,
    shards_per_fold: int = 2,
    per_shard: int = 8,
    size: int = 32,
    channels: int = 3,
    encoding: str = "png",
    compression: str = "none",
    positive_every: int = 4,
    num_classes: int = 3,
    tile_fn: TileFn | None = None,
    seed: int = 0,
) -> Path:
    """Write a records folder and return it.

    Args:
        root: Folder to create (must not hold a manifest yet).
        task: ``segmentation`` or ``classification``.
        folds: Number of folds; each fold is one source slide.
        shards_per_fold: Shards per fold.
        per_shard: Records per shard.
        size: Tile side.
        channels: Image channels.
        encoding: ``png``, ``jpeg`` or ``raw``.
        compression: ``none`` or ``gzip``.
        positive_every: Record k of a fold has mask pixels when ``k % positive_every == 0``.
        num_classes: Label vector length (classification).
        tile_fn: ``(fold, k, rng) -> (image, mask)`` to choose tile content.
        seed: Seeds the random tile content.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shards: list[ShardInfo] = []
    sources: dict[str, SourceStats] = {}
    total = folds * shards_per_fold
    for fold in range(folds):
        stats = SourceStats(fold=fold)
        for s in range(shards_per_fold):
            name = fmt.shard_name(fold, s, total, compression)
            options = "GZIP" if compression == "gzip" else None
            with tf.io.TFRecordWriter(str(root / name), options=options) as writer:
                for j in range(per_shard):
                    k = s * per_shard + j
                    example, positive = _example(
                        fold,
                        k,
                        task,
                        size,
                        channels,
                        encoding,
                        positive_every,
                        num_classes,
                        tile_fn,
                        rng,
                    )
                    writer.write(example.SerializeToString())
                    stats.kept += 1
                    stats.tiles_total += 1
                    stats.positive += int(positive)
            path = root / name
            shards.append(ShardInfo(name, fold, per_shard, path.stat().st_size, sha256_file(path)))
        sources[f"slide{fold}"] = stats
    manifest = Manifest(
        root=root,
        task=task,
        tile_height=size,
        tile_width=size,
        channels=channels,
        encoding=encoding,
        compression=compression,
        num_folds=folds,
        shards=shards,
        sources=sources,
        class_names=[f"c{i}" for i in range(num_classes)] if task == "classification" else [],
        created="test",
    )
    write_manifest(manifest)
    return root


def all_ids(root: Path, folds: list[int] | None = None) -> list[str]:
    """Every source id the helper wrote for ``folds`` (all when None)."""
    from tfpipe.records.manifest import read_manifest

    m = read_manifest(root)
    out = []
    for fold in folds if folds is not None else m.folds:
        n = m.records_in_folds([fold])
        out += [fmt.source_id(f"slide{fold}", k, 0) for k in range(n)]
    return out


def _example(fold, k, task, size, channels, encoding, positive_every, num_classes, tile_fn, rng):
    if tile_fn is not None:
        image, mask = tile_fn(fold, k, rng)
    else:
        image = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        if k % positive_every == 0:
            mask[size // 4 : size // 2, size // 4 : size // 2] = 1
    image = image[..., 0] if channels == 1 and image.ndim == 3 else image
    sid = fmt.source_id(f"slide{fold}", k, 0)
    if task == "classification":
        labels = [int((k + c) % 2 == 0) for c in range(num_classes)]
        example = fmt.make_example(
            fmt.encode_image(image, encoding),
            encoding,
            (size, size, channels),
            source_id=sid,
            labels=labels,
        )
        return example, False
    positive = float((mask > 0).mean())
    mask_format = "raw" if encoding == "raw" else "png"
    example = fmt.make_example(
        fmt.encode_image(image, encoding),
        encoding,
        (size, size, channels),
        source_id=sid,
        mask=fmt.encode_image(mask, mask_format),
        mask_format=mask_format,
        positive_fraction=positive,
    )
    return example, positive > 0
