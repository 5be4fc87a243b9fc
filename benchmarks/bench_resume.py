"""Resume cost: ``load(repeat=True, start_step=N)`` against decoding the skipped batches.

A run resumed at step N needs batch N of the training stream. ``load()``
skips the batches before it as serialized records (read, never parsed or
decoded); the alternatives are to decode and drop them (``load(...).skip(N)``,
what a pipeline with no resume support must do) or to restore a saved
iterator (``tf.train.Checkpoint(iterator=...)``). This script times, on one
large epoch of small PNG tiles (with masks, batch 8, ``deterministic=True``,
flips and rotations on):

* time to first batch (``load()`` + iterator + first batch) at ``start_step=0``
  and at ``start_step=10,000``, interleaved, median of the repeats (one
  untimed warm-up call of each first);
* decoding 10,000 batches: time to first batch of ``load(...).skip(10,000)``;
* restoring an iterator checkpoint saved at step 10,000: restore + first
  batch, and the checkpoint's size;

and checks that all three hand out the same batch (its tiles' ids). Wall and
CPU seconds of this process. The records are built once and kept under
``--work`` (a temporary folder by default).

Results: ``benchmarks/results/resume.json`` and ``resume.md`` (``resume-quick.*``).

Usage:
    python benchmarks/bench_resume.py            # 88,000 tiles, resume at 10,000, 5 repeats
    python benchmarks/bench_resume.py --quick    # 4,000 tiles, resume at 400, 2 repeats
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import numpy as np  # noqa: E402

from benchmarks._common import parse_args, write_results  # noqa: E402
from tfpipe.bench.measure import interleave, time_call  # noqa: E402

SIZE, BATCH, SHARDS = 32, 8, 8
FULL = {"records": 88_000, "start": 10_000, "repeats": 5, "skip_repeats": 2}
QUICK = {"records": 4_000, "start": 400, "repeats": 2, "skip_repeats": 1}
SETTINGS = {
    "batch_size": BATCH,
    "deterministic": True,
    "with_ids": True,
    "augment": {"flip": True, "rot90": True},
}


def build_records(root: Path, count: int) -> Path:
    """``count`` 32 x 32 PNG tiles with masks in ``SHARDS`` shards, one fold each (cached)."""
    import tensorflow as tf

    from tfpipe.records import format as fmt
    from tfpipe.records.manifest import (
        Manifest,
        ShardInfo,
        SourceStats,
        read_manifest,
        sha256_file,
        write_manifest,
    )

    if (root / "manifest.json").is_file() and read_manifest(root).num_records == count:
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    shards, sources, per_shard = [], {}, count // SHARDS
    for s in range(SHARDS):
        name = fmt.shard_name(s, s, SHARDS)
        with tf.io.TFRecordWriter(str(root / name)) as writer:
            for k in range(per_shard):
                # Flat colour, noise and a disc: ~2.7 kB per record (tile and mask PNGs).
                base = rng.integers(60, 200, 3)
                image = (base + rng.integers(0, 24, (SIZE, SIZE, 3))).astype(np.uint8)
                cy, cx = rng.integers(0, SIZE, 2)
                mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < 36).astype(np.uint8)
                example = fmt.make_example(
                    fmt.encode_image(image, "png"),
                    "png",
                    image.shape,
                    source_id=fmt.source_id(f"img{s}", k * SIZE, 0),
                    mask=fmt.encode_image(mask, "png"),
                    mask_format="png",
                    positive_fraction=float(mask.mean()),
                )
                writer.write(example.SerializeToString())
        path = root / name
        shards.append(ShardInfo(name, s, per_shard, path.stat().st_size, sha256_file(path)))
        sources[f"img{s}"] = SourceStats(fold=s, kept=per_shard, positive=per_shard)
    manifest = Manifest(
        root=root,
        task="segmentation",
        tile_height=SIZE,
        tile_width=SIZE,
        channels=3,
        encoding="png",
        compression="none",
        num_folds=SHARDS,
        shards=shards,
        sources=sources,
    )
    write_manifest(manifest)
    return root


def first_batch_ids(call: Callable[[], Any]) -> tuple[dict, list[bytes]]:
    """Wall and CPU seconds of ``call()`` (a first batch), and the ids of that batch."""
    batch, wall, cpu = time_call(call)
    return {"wall_s": wall, "cpu_s": cpu}, batch[2].numpy().tolist()


def variants(records: Path, start: int, work: Path) -> dict[str, Callable[[], Any]]:
    """The ways to get batch ``start`` of the stream; each builds its dataset from scratch."""
    import tensorflow as tf

    from tfpipe.data import load

    def stream(first: int = 0) -> Any:
        return load(records, repeat=True, start_step=first, **SETTINGS)

    def restored() -> Any:
        it = iter(stream())
        tf.train.Checkpoint(iterator=it).restore(str(work / "ckpt-1")).assert_consumed()
        return next(it)

    return {
        "start_step=0": lambda: next(iter(stream())),
        f"start_step={start:,}": lambda: next(iter(stream(start))),
        f"decode and drop {start:,} batches": lambda: next(iter(stream().skip(start))),
        "restore an iterator checkpoint": restored,
    }


def save_checkpoint(records: Path, start: int, work: Path) -> dict:
    """Iterate ``start`` batches, save the iterator; its size in bytes and the save time."""
    import tensorflow as tf

    from tfpipe.data import load

    for old in work.glob("ckpt-*"):
        old.unlink()
    it = iter(load(records, repeat=True, **SETTINGS))
    for _ in range(start):
        next(it)
    _, seconds, _ = time_call(lambda: tf.train.Checkpoint(iterator=it).save(str(work / "ckpt")))
    size = sum(p.stat().st_size for p in work.glob("ckpt-1*"))
    return {"save_s": seconds, "bytes": size}


def measure(records: Path, p: dict, work: Path) -> dict:
    """Warm up each variant once, then interleaved repeats; medians and the batch ids."""
    calls = variants(records, p["start"], work)
    slow = [name for name in calls if name.startswith("decode")]
    for name, call in calls.items():
        if name not in slow:
            time_call(call)  # warm-up: the first call of a kind pays for tracing
    timed = {name: functools.partial(first_batch_ids, call) for name, call in calls.items()}
    runs = interleave(timed, p["repeats"], limit=dict.fromkeys(slow, p["skip_repeats"]))
    out: dict[str, Any] = {}
    for name, results in runs.items():
        samples = [sample for sample, _ in results]
        out[name] = {
            "wall_s": statistics.median(s["wall_s"] for s in samples),
            "cpu_s": statistics.median(s["cpu_s"] for s in samples),
            "repeats": len(samples),
            "wall_s_each": [round(s["wall_s"], 4) for s in samples],
        }
    ids = [results[-1][1] for results in runs.values()]
    out["same_batch"] = all(i == ids[1] for i in ids[1:])
    return out


def markdown(report: dict) -> str:
    start, t = report["start_step"], report["first_batch"]
    base = t["start_step=0"]["wall_s"]
    lines = [
        "# Resume cost: first batch at step 0 and at a later step",
        "",
        f"Command: `python benchmarks/bench_resume.py{' --quick' if report['quick'] else ''}`. "
        f"{report['machine']}.",
        "",
        f"Records: {report['records']:,} PNG tiles {SIZE} x {SIZE} RGB with masks, "
        f"{SHARDS} shards; batch {BATCH} ({report['batches_per_epoch']:,} batches per epoch), "
        "deterministic, flips and rotations. Time to first batch = `load()` + iterator + "
        "first batch, median of the repeats after a warm-up call; CPU = this process.",
        "",
        "| first batch of | wall s | CPU s | × start_step=0 | repeats |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in t.items():
        if not isinstance(row, dict):
            continue
        lines.append(
            f"| {name} | {row['wall_s']:.3f} | {row['cpu_s']:.2f} | {row['wall_s'] / base:.1f} "
            f"| {row['repeats']} |"
        )
    ckpt = report["checkpoint"]
    lines += [
        "",
        f"All ways hand out the same batch: {t['same_batch']}. The iterator checkpoint at step "
        f"{start:,}: {ckpt['bytes'] / 1024:.0f} kB, saved in {ckpt['save_s']:.2f} s.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args(__doc__, "tfpipe-bench-resume", "small epoch, two repeats")
    p = QUICK if args.quick else FULL
    load_before = os.getloadavg()
    import tensorflow as tf

    work = args.work / ("quick" if args.quick else "full")
    records, build_s, _ = time_call(lambda: build_records(work / "records", p["records"]))
    checkpoint = save_checkpoint(records, p["start"], work)
    first_batch = measure(records, p, work)
    after = os.getloadavg()
    report = {
        "benchmark": "resume",
        "quick": args.quick,
        "machine": f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} before, "
        f"{after[0]:.2f} after; TensorFlow {tf.__version__}",
        "records": p["records"],
        "batches_per_epoch": p["records"] // BATCH,
        "start_step": p["start"],
        "build_records_s": round(build_s, 1),
        "first_batch": first_batch,
        "checkpoint": checkpoint,
    }
    write_results("resume-quick" if args.quick else "resume", report, markdown(report))


if __name__ == "__main__":
    main()
