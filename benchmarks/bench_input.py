"""Input benchmark: tfpipe.data against the usual ways of feeding a Keras model.

One run, one data set (demo slides cut into 256 x 256 RGB tiles + masks, PNG
records built by ``build_records``, and the same tiles re-encoded raw), every
variant measured in the same process in interleaved rounds (A B C … A B C …)
so that load from other processes hits all of them alike; the figure is the
median of the rounds. Each measurement starts a fresh iterator, discards
``WARMUP`` batches, then times a fixed number of batches. Variants:

* ``full``: ``tfpipe.data.load`` as a user gets it: the raw records
  (``data.encoding: raw``, the default) with the ``input`` section of
  experiments/kidney.yaml as is. It sets ``augment.colour_in_model: true``,
  so tf.data does the geometry (flips, quarter turns) and the colour jitter
  runs in the model (``tfpipe.data.Augment``, on the accelerator), which this
  benchmark does not time: it has no GPU. ``tfpipe bench-input`` on a GPU
  host times the in-model augmentation against the model step.
* ``full_host_colour``: ``full`` with ``colour_in_model: false``: the same
  augmentation all in tf.data, colour on the host CPU.
* ``decode_only``: ``full`` with augmentation off.
* ``full_png``, ``decode_only_png``: the same on the PNG records;
  ``decode_only_png`` is the ceiling of decoding with ``tf.io.decode_png``.
* ``naive``: serial map, no prefetch, no interleave, the same host ops as
  ``full`` (``_input_baselines``).
* ``onthefly``: tiles read from the TIFFs in a Python generator (no records).
* ``torch``: PyTorch DataLoader, 2 workers, the same tiles as PNG files,
  flips, quarter turns and colour in the workers (what a PyTorch user does).
* ``torch_geometric``: ``torch`` without the colour step (as if it ran on
  the GPU too): the like-for-like baseline of ``full``.

The targets of issue 18 are measured on ``full``; ``full_host_colour`` and
``torch_geometric`` give informative ratios beside them (``_input_report``).

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

import functools
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from tqdm import tqdm  # noqa: E402

from benchmarks._common import machine, parse_args, write_results  # noqa: E402
from benchmarks._input_data import BATCH, op_cost_table, prepare  # noqa: E402
from benchmarks._input_report import check_targets, informative, markdown, ratios  # noqa: E402
from tfpipe.bench.measure import (  # noqa: E402
    cpu_seconds,
    interleave,
    merge,
    time_call,
    time_iterator,
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
WARMUP = 2
SLOW = {"naive", "onthefly"}
"""Variants timed over ``Scale.slow_batches`` batches."""
TORCH = {"torch", "torch_geometric"}
"""Variants whose CPU time includes the DataLoader worker processes."""


def main() -> None:
    args = parse_args(__doc__, "tfpipe-bench-input", "tiny data, one round")
    p = QUICK if args.quick else FULL
    load_before = os.getloadavg()
    import tensorflow as tf

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
        "colour_runs": colour_runs(data.input_config.augment),
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
    report["informative"] = informative(report)
    write_results("input-quick" if args.quick else "input", report, markdown(report))


# ---------------------------------------------------------------- measuring


def make_variants(data: Any) -> dict[str, Callable[[], Iterator[Any]]]:
    """Each value starts a fresh, endless iterator of batches.

    The order is the order of each round. The two torch variants sit apart:
    each one's CPU clock counts every child process, and a DataLoader's
    workers finish their prefetched batches after its window closes.
    """
    import tfpipe.data as td
    from benchmarks import _input_baselines as base

    cfg = data.input_config
    off = augment_off(cfg.augment)

    def tfpipe_iter(augment: Any, records: Path = data.raw_records) -> Callable[[], Iterator[Any]]:
        # load() applies augment.host_ops(): with colour_in_model, no colour in tf.data.
        return lambda: iter(td.load(records, config=cfg, augment=augment, repeat=True))

    variants = {"full": tfpipe_iter(cfg.augment)}
    if cfg.augment.colour_in_model:  # else `full` is this already: not timed twice
        host_colour = cfg.augment.model_copy(update={"colour_in_model": False})
        variants["full_host_colour"] = tfpipe_iter(host_colour)
    variants |= {
        "decode_only": tfpipe_iter(off),
        "full_png": tfpipe_iter(cfg.augment, data.records),
        "decode_only_png": tfpipe_iter(off, data.records),
    }
    loaders = {}
    if data.torch:
        loaders = {
            "torch": base.torch_loader(data.png_pairs, cfg.augment, BATCH),
            "torch_geometric": base.torch_loader(data.png_pairs, cfg.augment, BATCH, colour=False),
        }
        variants["torch"] = lambda: base.cycle(loaders["torch"])
    variants |= {
        "naive": lambda: iter(base.naive_dataset(data.plan, cfg.augment, BATCH).repeat()),
        "onthefly": lambda: iter(base.onthefly_dataset(data.slides, data.data_config, BATCH)),
    }
    if data.torch:
        variants["torch_geometric"] = lambda: base.cycle(loaders["torch_geometric"])
    return variants


def colour_runs(augment: Any) -> dict[str, str]:
    """Where each variant's colour jitter (brightness, contrast, saturation, hue) runs."""
    full = (
        "in the model (accelerator): not timed here"
        if augment.colour_in_model
        else "tf.data (host CPU)"
    )
    return {
        "full": full,
        "full_host_colour": "tf.data (host CPU)",
        "decode_only": "none (no augmentation)",
        "full_png": full,
        "decode_only_png": "none (no augmentation)",
        "torch": "DataLoader workers (host CPU)",
        "naive": full,
        "onthefly": "none (no augmentation)",
        "torch_geometric": "skipped (left to the accelerator): not timed here",
    }


def augment_off(augment: Any) -> Any:
    """``augment`` with every op of kidney.yaml switched off: the decode-only ceiling."""
    return augment.model_copy(
        update=dict(flip=False, rot90=False, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    )


def interleaved_rounds(variants: dict[str, Callable[[], Iterator[Any]]], p: Scale) -> dict:
    """Images/s and CPU ms per image of every variant, in interleaved rounds.

    Each round starts a fresh iterator per variant, discards ``WARMUP``
    batches and times ``p.batches`` (slow variants: ``p.slow_batches``); the
    torch variants' CPU time includes their DataLoader worker processes.
    """
    batches = {name: p.slow_batches if name in SLOW else p.batches for name in variants}

    def one(name: str) -> Callable[[], Any]:
        cpu = functools.partial(cpu_seconds, children=name in TORCH)
        return lambda: time_iterator(
            variants[name](), name, batches=batches[name], warmup=WARMUP, cpu_clock=cpu
        )

    with tqdm(total=p.rounds * len(variants), desc="throughput", unit="run") as bar:
        runs = interleave({name: one(name) for name in variants}, p.rounds, tick=bar.update)
    out = {}
    for name, rounds in runs.items():
        m = merge(rounds)
        out[name] = {
            "images_per_s": m.median,
            "min": m.min,
            "max": m.max,
            "cpu_ms_per_image": m.cpu_ms_per_image,
            "batches_timed": batches[name],
            "rounds": m.rates,
        }
    return out


def time_to_first_batch(data: Any) -> dict:
    """Seconds of ``load()`` (``_build``) and of it plus the first batch, twice in a row."""
    import tfpipe.data as td

    out = {}
    for label in ("first_call", "later_call"):
        ds, built, _ = time_call(lambda: td.load(data.raw_records, config=data.input_config))
        _, first, _ = time_call(lambda ds=ds: next(iter(ds)))
        out[label] = built + first
        out[f"{label}_build"] = built
    return out


if __name__ == "__main__":
    main()
