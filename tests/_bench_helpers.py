"""Fixtures for the bench tests: tiny records folders and synthetic reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfpipe.bench.measure import Measurement
from tfpipe.bench.report import BenchReport, ModelTiming
from tfpipe.records import format as fmt
from tfpipe.records.manifest import Manifest, ShardInfo, SourceStats, sha256_file, write_manifest


def write_tiny_records(
    root: Path,
    *,
    n: int = 24,
    size: int = 32,
    folds: int = 2,
    shards_per_fold: int = 2,
    encoding: str = "png",
    seed: int = 0,
) -> Path:
    """Write ``n`` random segmentation tiles as sharded records + manifest.json into ``root``."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    total = folds * shards_per_fold
    shards, sources = [], {}
    for s in range(total):
        fold, index = divmod(s, shards_per_fold)
        name = fmt.shard_name(fold, index, shards_per_fold)
        count = len(range(s, n, total))
        with tf.io.TFRecordWriter(str(root / name)) as writer:
            for i in range(count):
                tile = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                mask = (rng.random((size, size)) < 0.2).astype(np.uint8)
                sid = fmt.source_id(f"slide{fold}", (index * n + i) * size, 0)
                ex = fmt.make_example(
                    fmt.encode_image(tile, encoding),
                    encoding,
                    tile.shape,
                    source_id=sid,
                    mask=fmt.encode_image(mask, "png" if encoding != "raw" else "raw"),
                    mask_format="png" if encoding != "raw" else "raw",
                    positive_fraction=float(mask.mean()),
                )
                writer.write(ex.SerializeToString())
        path = root / name
        shards.append(ShardInfo(name, fold, count, path.stat().st_size, sha256_file(path)))
        stats = sources.setdefault(f"slide{fold}", SourceStats(fold=fold))
        stats.kept += count
        stats.tiles_total += count
    manifest = Manifest(
        root=root,
        task="segmentation",
        tile_height=size,
        tile_width=size,
        channels=3,
        encoding=encoding,
        compression="none",
        num_folds=folds,
        shards=shards,
        sources=sources,
    )
    write_manifest(manifest)
    return root


def measurement(
    name: str, rate: float, *, spread: float = 0.0, bytes_per_image: float = 1e5, **extra
) -> Measurement:
    """A Measurement whose three windows run at rate·(1−spread), rate, rate·(1+spread)."""
    rates = [rate * (1 - spread), rate, rate * (1 + spread)]
    return Measurement(
        name, [100 / r for r in rates], [100, 100, 100], bytes_per_image, extra=extra
    )


def fake_report(
    stage_rates: dict[str, float] | None = None,
    *,
    model_rate: float | None = 50.0,
    ablation: list[Measurement] | None = None,
    settings: dict | None = None,
    cpu_count: int = 2,
    e2e_rate: float | None = None,
) -> BenchReport:
    """A report with chosen stage rates (images/s) and model compute rate."""
    stage_rates = stage_rates or {
        "read": 5000,
        "parse": 4000,
        "decode": 400,
        "augment": 300,
        "batch": 300,
        "prefetch": 310,
    }
    stages = [measurement(k, v) for k, v in stage_rates.items()]
    model = None
    if model_rate is not None:
        e2e = measurement("end-to-end", e2e_rate) if e2e_rate else None
        model = ModelTiming(
            "unet-efficientnetb0",
            "CPU (2 cores)",
            16,
            [32, 32, 3],
            compute=measurement("compute float32", model_rate),
            end_to_end=e2e,
        )
    base = {
        "batch_size": 16,
        "encoding": "png",
        "shards": 8,
        "parallel_reads": 2,
        "records": 100,
        "tile_shape": [32, 32, 3],
    }
    return BenchReport(
        experiment="kidney",
        records="records/kidney",
        machine={"cpu_count": cpu_count, "gpu": None, "tensorflow": "2.21.0"},
        settings={**base, **(settings or {})},
        stages=stages,
        ablation=ablation or [],
        model=model,
    )
