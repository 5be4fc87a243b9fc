"""Data, per-op costs and the Markdown report of ``bench_input.py``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

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


# Extra RSS measurements of the report and how each one differs from the plain one.
RSS_VARIANTS = {
    "rss_heap_kept": "with `input.release_heap: false` (glibc's per-thread heap arenas keep "
    "what the tf.data threads free)",
    "rss_heap_kept_malloc_arena_max_2": "with `input.release_heap: false` and "
    "`MALLOC_ARENA_MAX=2` (at most two glibc heap arenas instead of one per thread)",
}


@dataclass
class BenchData:
    """Everything the variants read, built once per work folder."""

    records: Path
    slides: Path | None
    input_config: Any
    data_config: Any
    plan: Any
    built_with: str
    png_pairs: list[tuple[Path, Path]] = field(default_factory=list)
    torch: bool = False

    def describe(self) -> dict:
        layout = self.plan.layout
        return {
            "records": self.plan.num_records,
            "tile": [layout.height, layout.width, layout.channels],
            "encoding": layout.encoding,
            "record_kb": sum(self.plan.shards.sizes) / self.plan.num_records / 1024,
            "shards": len(self.plan.shards.paths),
            "built_with": self.built_with,
            "batch_size": BATCH,
            "augment (full)": self.input_config.augment.model_dump(mode="json"),
        }


def prepare(work: Path, slides: int, size: int) -> BenchData:
    """Demo slides -> records (cached in ``work``), PNG copies of the tiles for PyTorch."""
    from tfpipe.config import load_experiment
    from tfpipe.data.pipeline import resolve_config
    from tfpipe.data.plan import plan_input
    from tfpipe.records.manifest import read_manifest

    exp = load_experiment(EXPERIMENT)
    records, demo = work / "records", work / "demo"
    built_with = (work / "built_with.txt").read_text() if (work / "built_with.txt").exists() else ""
    if not (records / "manifest.json").is_file():
        built_with = _build(exp, demo, records, slides, size)
        (work / "built_with.txt").write_text(built_with)
    cfg = resolve_config(exp.input, batch_size=BATCH)
    plan = plan_input(read_manifest(records), None, cfg, True)
    data = BenchData(
        records,
        demo if demo.is_dir() else None,
        cfg,
        _data_config(exp, demo, records, slides),
        plan,
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
        if len(pairs) != plan.num_records:
            data.png_pairs = export_pngs(plan.shards, folder)
        else:
            data.png_pairs = [(p, p.with_name(p.name.replace("image", "mask"))) for p in pairs]
    _check_colour_matrix()
    return data


def _build(exp: Any, demo: Path, records: Path, slides: int, size: int) -> str:
    try:
        from tfpipe.records.build import build_records
        from tfpipe.records.demo import make_demo_data
    except ImportError:
        from tests._data_helpers import write_records

        write_records(records, size=256, folds=3, shards_per_fold=2, per_shard=80)
        return "tests/_data_helpers.write_records (random tiles; no slides for on-the-fly)"
    make_demo_data(demo, n=slides, size=size, overwrite=True)
    build_records(_data_config(exp, demo, records, slides), overwrite=True)
    return (
        f"build_records on make_demo_data(n={slides}, size={size}) with kidney.yaml's data section"
    )


def _data_config(exp: Any, demo: Path, records: Path, slides: int) -> Any:
    """kidney.yaml's ETL settings (1024 px tiles / 4 = 256 px) on the demo slides."""
    return exp.data.model_copy(
        update=dict(
            images=demo / "train",
            labels=demo / "train.csv",
            output=records,
            folds=min(exp.data.folds, slides),
            workers=2,
        )
    )


def _check_colour_matrix() -> None:
    """The PyTorch baseline's NumPy colour matrix must be tfpipe's."""
    import numpy as np

    from benchmarks._input_baselines import colour_matrix_np
    from tfpipe.data.colour import colour_matrix

    np.testing.assert_allclose(colour_matrix(1.1, 0.03).numpy(), colour_matrix_np(1.1, 0.03), 1e-5)


def op_cost_table(data: BenchData, images: int) -> dict:
    """Microseconds per tile of each op alone (serial map, one thread), minus ``none``."""
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
    configs["kidney.yaml (all of the above that it enables)"] = data.input_config.augment
    out: dict[str, dict] = {}
    for name, settings in configs.items():
        cfg = settings if isinstance(settings, AugmentConfig) else _only(settings)
        aug = Augmenter(cfg, (layout.height, layout.width), size)
        cpu, wall = _serial_cost(tiles, aug, images, batched=False)
        cv_cpu, cv_wall = _serial_cost(tiles, aug, images, batched=bool(aug.ops))
        out[name] = {
            "cpu_us": cpu,
            "wall_us": wall,
            "opencv_cpu_us": cv_cpu,
            "opencv_wall_us": cv_wall,
        }
    base = out["none"]
    for v in out.values():
        v["cpu_us_over_none"] = v["cpu_us"] - base["cpu_us"]
        v["opencv_cpu_us_over_none"] = v["opencv_cpu_us"] - base["opencv_cpu_us"]
    return out


def _only(settings: dict) -> Any:
    from tfpipe.config import AugmentConfig

    return AugmentConfig(**{"flip": False, "rot90": False, **settings})


def _serial_cost(tiles: Any, aug: Any, images: int, batched: bool) -> tuple[float, float]:
    """CPU and wall µs per tile; ``batched``: the OpenCV engine (draw per tile, apply per batch)."""
    import tensorflow as tf

    seeds = tf.data.Dataset.counter().map(lambda i: tf.stack([i, 3 * i + 1]))
    pairs = tf.data.Dataset.zip(tiles, seeds)
    if batched:
        ds = pairs.map(lambda t, s: (t[0], t[1], aug.draw(s))).batch(BATCH)
        ds = ds.map(aug.apply_batch)
    else:
        ds = pairs.map(lambda t, s: aug(t[0], t[1], s)).batch(BATCH)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    it = iter(ds.with_options(options))
    for _ in range(2):
        next(it)
    proc = psutil.Process()
    c0, t0 = proc.cpu_times(), time.perf_counter()
    for _ in range(max(1, images // BATCH)):
        next(it)
    c1, t1 = proc.cpu_times(), time.perf_counter()
    n = max(1, images // BATCH) * BATCH
    return 1e6 * (c1.user + c1.system - c0.user - c0.system) / n, 1e6 * (t1 - t0) / n


# ------------------------------------------------------------------ Markdown


def markdown(r: dict) -> str:
    from benchmarks._input_floors import floor_markdown
    from benchmarks._input_rss import rss_markdown

    t = r["throughput"]
    lines = [
        "# Input benchmark" + (" (--quick)" if r["quick"] else ""),
        "",
        f"Data: {r['data']['records']} records of {r['data']['tile']} {r['data']['encoding']} "
        f"tiles ({r['data']['record_kb']:.0f} kB each), {r['data']['built_with']}; batch "
        f"{r['data']['batch_size']}. Machine: {r['machine']['cpus']} CPUs, load average "
        f"{r['machine']['load_average_before'][0]} before / "
        f"{r['machine']['load_average_after'][0]} after; TensorFlow "
        f"{r['machine']['tensorflow']}. Command: `python benchmarks/bench_input.py"
        f"{' --quick' if r['quick'] else ''}`.",
        "",
        "| variant | images/s (median) | min - max | full ÷ variant | per round "
        "| CPU ms/image | full ÷ variant by CPU time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in t.items():
        ratio = r["ratios"].get(f"full / {name}", 1.0)
        rounds = r["ratios"].get(f"full / {name}, rounds", [1.0])
        by_cpu = r["ratios"].get(f"cpu: full / {name}", 1.0)
        lines.append(
            f"| {name} | {v['images_per_s']:.1f} | {v['min']:.1f} - {v['max']:.1f} | "
            f"{ratio:.2f} | {min(rounds):.2f} - {max(rounds):.2f} | "
            f"{v['cpu_ms_per_image']:.2f} | {by_cpu:.2f} |"
        )
    lines += [
        "",
        "`full ÷ variant` > 1: the full pipeline is faster. It is the median over rounds "
        "of each round's ratio (a round times every variant back to back; `per round` "
        "gives their range). The CPU-time column is the "
        "ratio an idle, CPU-bound machine would give (process CPU time per image; for "
        "torch including its worker processes).",
    ]
    ttfb, rss = r["time_to_first_batch_s"], r["rss"]
    lines += [
        "",
        "How to read it: all variants ran in the same process on the same tiles, in "
        "interleaved rounds, warm-up batches excluded; other processes shared the 2 cores "
        "(load average above), so wall-clock figures move between runs and the CPU-time "
        "ratios are the steadier ones. `onthefly` reads the demo's zstd-tiled TIFFs from "
        "the page cache and does no augmentation (the best case for it). The gap between "
        "`decode_only` and `full` is the augmentation: see the per-op table below; "
        "`full_tf_engine` is `full` with TensorFlow ops instead of OpenCV.",
    ]
    lines += floor_markdown(r.get("floors"))
    lines += [
        "",
        "| target | wanted | measured | met |",
        "|---|---|---:|---|",
    ]
    for g in r["targets"]:
        value = "n/a" if g["value"] is None else f"{g['value']:.2f}"
        lines.append(f"| {g['name']} | {g['target']} | {value} | {_yes(g['met'])} |")
    lines += [
        "",
        f"Time to first batch (`load()` + first batch): first call in the process "
        f"{ttfb['first_call']:.2f} s (building {ttfb['first_call_build']:.2f} s), later call "
        f"{ttfb['later_call']:.2f} s (building {ttfb['later_call_build']:.2f} s).",
    ]
    lines += rss_markdown(
        rss,
        "as `load()` gives it (freed heap returned to the OS as each epoch starts), "
        f"in {rss['processes']} fresh processes",
    )
    for key, how in RSS_VARIANTS.items():
        if r.get(key) is not None:
            lines += rss_markdown(r[key], how)
    lines += [
        "",
        "Augmentation cost per 256 x 256 tile (one op at a time, serial map, one thread), "
        "for both engines: TensorFlow ops per tile (`augment.engine: tensorflow`) and "
        "OpenCV per batch (the default):",
        "",
        "| op | TF CPU µs/tile | TF over none | OpenCV CPU µs/tile | OpenCV over none |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, v in r["augment_op_cost_us"].items():
        lines.append(
            f"| {name} | {v['cpu_us']:.0f} | {v['cpu_us_over_none']:.0f} "
            f"| {v['opencv_cpu_us']:.0f} | {v['opencv_cpu_us_over_none']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _yes(met: bool | None) -> str:
    return "n/a" if met is None else ("yes" if met else "**no**")
