"""Data and per-op costs of ``bench_input.py``: the demo tiles as PNG and as raw records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfpipe.bench.measure import cpu_seconds, time_iterator

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = REPO / "experiments" / "kidney.yaml"
BATCH = 16
# Ops timed alone: AugmentConfig fields on top of "everything off".
OPS: dict[str, dict[str, Any]] = {
    "none": {},
    "crop (random resized, 0.5-1.0)": {"crop_scale": (0.5, 1.0)},
    "flip": {"flip": True},
    "rot90": {"rot90": True},
    "flip+rot90 (fused)": {"flip": True, "rot90": True},
    "brightness": {"brightness": 0.1},
    "contrast": {"contrast": 0.1},
    "saturation": {"saturation": 0.1},
    "hue": {"hue": 0.02},
    "noise": {"noise_std": 3.0},
}


@dataclass
class BenchData:
    """Everything the variants read, built once per work folder.

    ``records`` holds PNG tiles (as ``build-records`` writes them with
    ``data.encoding: png``); ``raw_records`` the same tiles, pixel for pixel,
    re-encoded raw (``tfpipe.bench.reencode``), same folds and shards.
    """

    records: Path
    raw_records: Path
    slides: Path | None
    input_config: Any
    data_config: Any
    plan: Any
    raw_plan: Any
    built_with: str
    png_pairs: list[tuple[Path, Path]] = field(default_factory=list)
    torch: bool = False

    def describe(self) -> dict:
        layout = self.raw_plan.layout
        return {
            "records": self.raw_plan.num_records,
            "tile": [layout.height, layout.width, layout.channels],
            "encoding": layout.encoding,
            "record_kb": disk_kb_per_tile(self.raw_plan),
            "disk_kb_per_tile": {
                "png": disk_kb_per_tile(self.plan),
                "raw": disk_kb_per_tile(self.raw_plan),
            },
            "dataset_mb": {
                "png": sum(self.plan.shards.sizes) / 2**20,
                "raw": sum(self.raw_plan.shards.sizes) / 2**20,
            },
            "shards": len(self.plan.shards.paths),
            "built_with": self.built_with,
            "batch_size": BATCH,
            "augment (full)": self.input_config.augment.model_dump(mode="json"),
        }


def disk_kb_per_tile(plan: Any) -> float:
    """Shard bytes on disk per record (tile + mask + metadata), KiB."""
    return sum(plan.shards.sizes) / plan.num_records / 1024


def prepare(work: Path, slides: int, size: int) -> BenchData:
    """Demo slides -> PNG records and their raw copy (cached in ``work``), PNG files for PyTorch."""
    from tfpipe.config import load_experiment
    from tfpipe.data.plan import plan_input, resolve_config
    from tfpipe.records.manifest import read_manifest

    exp = load_experiment(EXPERIMENT)
    records, raw, demo = work / "records", work / "records-raw", work / "demo"
    built_with = (work / "built_with.txt").read_text() if (work / "built_with.txt").exists() else ""
    if not (records / "manifest.json").is_file():
        built_with = _build(exp, demo, records, slides, size)
        (work / "built_with.txt").write_text(built_with)
    if not (raw / "manifest.json").is_file():
        from tfpipe.bench.reencode import reencode_subset

        src = read_manifest(records)
        reencode_subset(src, "raw", src.compression, raw, limit=src.num_records)
    cfg = resolve_config(exp.input, batch_size=BATCH)
    data = BenchData(
        records,
        raw,
        demo if demo.is_dir() else None,
        cfg,
        _data_config(exp, demo, records, slides),
        plan_input(read_manifest(records), None, cfg, True),
        plan_input(read_manifest(raw), None, cfg, True),
        built_with,
    )
    try:
        import torch  # noqa: F401

        data.torch = True
    except ImportError:
        print("torch is not installed (pip install -e '.[bench]'): skipping the PyTorch baseline")
    if data.torch:
        from benchmarks._input_baselines import export_pngs

        folder = work / "png"
        pairs = sorted(folder.glob("*-image.png"))
        if len(pairs) != data.plan.num_records:
            data.png_pairs = export_pngs(data.plan.shards, folder)
        else:
            data.png_pairs = [(p, p.with_name(p.name.replace("image", "mask"))) for p in pairs]
    _check_colour_matrix()
    return data


def _build(exp: Any, demo: Path, records: Path, slides: int, size: int) -> str:
    try:
        from tfpipe.records.build import build_records
        from tfpipe.synthetic.datasets import make_demo_data
    except ImportError:
        from tests._data_helpers import write_records

        write_records(records, size=256, folds=3, shards_per_fold=2, per_shard=80)
        return "tests/_data_helpers.write_records (random tiles; no slides for on-the-fly)"
    make_demo_data(demo, n=slides, size=size, overwrite=True)
    build_records(_data_config(exp, demo, records, slides), overwrite=True)
    return (
        f"build_records on make_demo_data(n={slides}, size={size}) with kidney.yaml's data "
        "section, data.encoding: png"
    )


def _data_config(exp: Any, demo: Path, records: Path, slides: int) -> Any:
    """kidney.yaml's ETL settings (1024 px tiles / 4 = 256 px) on the demo slides, PNG tiles."""
    return exp.data.model_copy(
        update=dict(
            images=demo / "train",
            labels=demo / "train.csv",
            output=records,
            folds=min(exp.data.folds, slides),
            workers=2,
            encoding="png",
        )
    )


def _check_colour_matrix() -> None:
    """The PyTorch baseline's NumPy colour matrix must be tfpipe's."""
    import numpy as np

    from benchmarks._input_baselines import colour_matrix_np
    from tfpipe.data.colour import colour_matrix

    np.testing.assert_allclose(colour_matrix(1.1, 0.03).numpy(), colour_matrix_np(1.1, 0.03), 1e-5)


def op_cost_table(data: BenchData, images: int) -> dict:
    """CPU and wall µs per tile of each op alone (serial map, one thread), and over ``none``.

    Each op runs as ``load()`` runs it: ``Augmenter.__call__`` on one decoded
    tile with its seed, TensorFlow ops. The kidney.yaml rows: all its ops, and
    (with ``colour_in_model``) the part ``load()`` keeps in tf.data.
    """
    import tensorflow as tf

    import tfpipe.data as td
    from tfpipe.config import AugmentConfig
    from tfpipe.data.augment import Augmenter

    val = td.load(data.records, training=False, batch_size=64)
    images_, masks = next(iter(val))
    tiles = tf.data.Dataset.from_tensor_slices((images_, masks)).cache().repeat()
    size = data.plan.size
    layout = data.plan.layout
    configs = dict(OPS)
    kidney = data.input_config.augment
    # Augmenter runs whatever it is given; load() gives it host_ops().
    configs["kidney.yaml, all its ops in tf.data (colour_in_model: false)"] = kidney
    if kidney.colour_in_model:
        configs["kidney.yaml, its host ops (colour_in_model: true: geometry)"] = kidney.host_ops()
    out: dict[str, dict] = {}
    for name, settings in configs.items():
        cfg = settings if isinstance(settings, AugmentConfig) else _only(settings)
        aug = Augmenter(cfg, (layout.height, layout.width), size)
        cpu, wall = _serial_cost(tiles, aug, images)
        out[name] = {"cpu_us": cpu, "wall_us": wall}
    base = out["none"]
    for v in out.values():
        v["cpu_us_over_none"] = v["cpu_us"] - base["cpu_us"]
    return out


def _only(settings: dict) -> Any:
    from tfpipe.config import AugmentConfig

    return AugmentConfig(**{"flip": False, "rot90": False, **settings})


def _serial_cost(tiles: Any, aug: Any, images: int) -> tuple[float, float]:
    """CPU and wall µs per tile of ``aug`` in a serial map on one thread."""
    import tensorflow as tf

    seeds = tf.data.Dataset.counter().map(lambda i: tf.stack([i, 3 * i + 1]))
    ds = tf.data.Dataset.zip(tiles, seeds).map(lambda t, s: aug(t[0], t[1], s)).batch(BATCH)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    m = time_iterator(
        iter(ds.with_options(options)),
        "op",
        batches=max(1, images // BATCH),
        warmup=2,
        cpu_clock=cpu_seconds,
    )
    return 1e3 * m.cpu_ms_per_image, 1e6 / m.median
