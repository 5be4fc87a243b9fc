"""Input benchmark: tfpipe.data against the usual ways of feeding a Keras model.

One run, one data set (demo slides cut into 256 x 256 RGB tiles + masks, PNG
records built by ``build_records``, and the same tiles re-encoded raw), every
variant measured in the same process in interleaved rounds (A B C … A B C …)
so that load from other processes hits all of them alike; the figure is the
median of the rounds. Each measurement starts a fresh iterator, discards
``WARMUP`` batches, then times a fixed number of batches. Variants:

* ``full``: ``tfpipe.data.load`` as a user gets it: the raw records
  (``data.encoding: raw``, the default) with the augmentation of
  experiments/kidney.yaml.
* ``full_geometric``: ``full`` with flips/rotations only (no colour jitter).
* ``decode_only``: ``full`` with augmentation off.
* ``full_png``, ``decode_only_png``: the same on the PNG records;
  ``decode_only_png`` is the ceiling of decoding with ``tf.io.decode_png``.
* ``naive``: serial map, no prefetch, no interleave (``_input_baselines``).
* ``onthefly``: tiles read from the TIFFs in a Python generator (no records).
* ``torch``: PyTorch DataLoader, 2 workers, the same tiles as PNG files.

Also: time to first batch (``load()`` + first batch on the raw records, first
call in the process and a later one), RSS over epochs of the full pipeline in three fresh
processes each (``_input_rss``: as ``load()`` gives it, and with
``MALLOC_ARENA_MAX=2``), disk bytes per tile of the PNG and raw records, and
the CPU cost of every augmentation op (serial map, one thread, on decoded
tiles). Results: ``benchmarks/results/input.json`` and ``input.md``
(``input-quick.*`` with ``--quick``).

Usage:
    python benchmarks/bench_input.py            # ~600 tiles, 5 rounds, 10 epochs of RSS
    python benchmarks/bench_input.py --quick    # tiny data, 1 round: a smoke run
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import psutil  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks._input_report import (  # noqa: E402
    check_targets,
    machine,
    ratios,
    write_results,
)


@dataclass(frozen=True)
class Scale:
    """How much data and how many repeats one run takes; the defaults are the full run's."""

    slides: int = 6
    size: int = 12288
    rounds: int = 5
    batches: int = 30
    slow_batches: int = 6
    epochs: int = 10
    rss_processes: int = 3
    op_images: int = 640


FULL = Scale()
QUICK = Scale(2, 4096, rounds=1, batches=4, slow_batches=2, epochs=6, rss_processes=1, op_images=64)
BATCH, WARMUP = 16, 2


def parse_args(doc: str) -> argparse.Namespace:
    """``--quick`` and ``--work``, shared with the other scripts that use these records."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, one round")
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "tfpipe-bench-input"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args(__doc__)
    p = QUICK if args.quick else FULL
    load_before = os.getloadavg()
    import tensorflow as tf

    from benchmarks._input_data import op_cost_table, prepare
    from benchmarks._input_rss import rss_over_epochs

    data = prepare(args.work / ("quick" if args.quick else "full"), p.slides, p.size)
    ttfb = time_to_first_batch(data)  # first, while nothing is traced yet
    variants = make_variants(data)
    throughput = interleaved_rounds(variants, p)
    rss = functools.partial(
        rss_over_epochs, data.raw_records, data.input_config, p.epochs, p.rss_processes
    )
    report = {
        "benchmark": "input",
        "quick": args.quick,
        "machine": machine(load_before, tf.__version__),
        "data": data.describe(),
        "throughput": throughput,
        "ratios": ratios(throughput),
        "time_to_first_batch_s": ttfb,
        "rss": rss(),
        # glibc keeps one heap arena per thread that allocates; what the tf.data threads
        # free stays in them. Two arenas bound that, if the growth above is high.
        "rss_malloc_arena_max_2": rss(env={"MALLOC_ARENA_MAX": "2"}),
        # CPU and wall µs per 256 x 256 tile of each augmentation op, alone.
        "augment_op_cost_us": op_cost_table(data, p.op_images),
    }
    report["targets"] = check_targets(report)
    write_results(report, "input-quick" if args.quick else "input")


# ---------------------------------------------------------------- measuring


def make_variants(data: Any) -> dict[str, Callable[[], Iterator[Any]]]:
    """Each value starts a fresh, endless iterator of batches."""
    import tfpipe.data as td
    from benchmarks import _input_baselines as base

    cfg = data.input_config
    geometric = cfg.augment.model_copy(
        update=dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, noise_std=0.0)
    )
    off = augment_off(cfg.augment)

    def tfpipe_iter(augment: Any, records: Path = data.raw_records) -> Callable[[], Iterator[Any]]:
        return lambda: iter(td.load(records, config=cfg, augment=augment, repeat=True))

    torch_loader = base.torch_loader(data.png_pairs, cfg.augment, BATCH) if data.torch else None
    variants = {
        "full": tfpipe_iter(cfg.augment),
        "full_geometric": tfpipe_iter(geometric),
        "decode_only": tfpipe_iter(off),
        "full_png": tfpipe_iter(cfg.augment, data.records),
        "decode_only_png": tfpipe_iter(off, data.records),
        "naive": lambda: iter(base.naive_dataset(data.plan, cfg.augment, BATCH).repeat()),
        "onthefly": lambda: iter(base.onthefly_dataset(data.slides, data.data_config, BATCH)),
    }
    if torch_loader is not None:
        variants["torch"] = lambda: base.cycle(torch_loader)
    return variants


def augment_off(augment: Any) -> Any:
    """``augment`` with every op of kidney.yaml switched off: the decode-only ceiling."""
    return augment.model_copy(
        update=dict(flip=False, rot90=False, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    )


def interleaved_rounds(variants: dict[str, Callable[[], Iterator[Any]]], p: Scale) -> dict:
    slow = {"naive", "onthefly"}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    steps = [(r, name) for r in range(p.rounds) for name in variants]
    for _, name in tqdm(steps, desc="throughput", unit="run"):
        batches = p.slow_batches if name in slow else p.batches
        runs[name].append(measure(variants[name], batches, children=name == "torch"))
    out = {}
    for name, rs in runs.items():
        rates = [r["images_per_s"] for r in rs]
        out[name] = {
            "images_per_s": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "cpu_ms_per_image": statistics.median(r["cpu_ms_per_image"] for r in rs),
            "batches_timed": rs[0]["batches"],
            "rounds": rates,
        }
    return out


def measure(start: Callable[[], Iterator[Any]], batches: int, children: bool = False) -> dict:
    """Images/s and CPU ms per image over ``batches`` batches after the warm-up."""
    it = start()
    for _ in range(WARMUP):
        next(it)
    cpu0, t0 = cpu_seconds(children), time.perf_counter()
    images = sum(len(next(it)[0]) for _ in range(batches))
    seconds, cpu = time.perf_counter() - t0, cpu_seconds(children) - cpu0
    del it
    return {
        "images_per_s": images / seconds,
        "cpu_ms_per_image": 1000 * cpu / images,
        "batches": batches,
    }


def cpu_seconds(children: bool) -> float:
    procs = [psutil.Process()]
    if children:
        procs += psutil.Process().children(recursive=True)
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def time_to_first_batch(data: Any) -> dict:
    import tfpipe.data as td

    out = {}
    for label in ("first_call", "later_call"):
        t0 = time.perf_counter()
        ds = td.load(data.raw_records, config=data.input_config)
        built = time.perf_counter()
        next(iter(ds))
        out[label] = time.perf_counter() - t0
        out[f"{label}_build"] = built - t0
    return out


if __name__ == "__main__":
    main()
