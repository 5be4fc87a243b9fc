"""RSS of the full pipeline over epochs, in fresh processes: ``bench_input.py``'s memory figure.

Each measurement is a new process that iterates ``load()``'s dataset for a
number of epochs (a new iterator per epoch, as Keras does) and reads, after
every epoch, the process RSS and, where glibc says (``mallinfo2``), the heap
bytes in use. Fresh processes because the variants timed before in the
benchmark's own process (PyTorch workers, the other pipelines) leave the
allocator's heap at a size that is theirs, not the pipeline's.

Why several processes: RSS read at one moment swings by a few percent with
how much freed memory glibc's heap arenas happen to hold (the heap in use
stays flat), so one 10-epoch run can land either side of a 5 % line. The
report gives every process's growth and their median.

Usage (the child side; ``bench_input.py`` runs it):
    python benchmarks/_input_rss.py RECORDS EPOCHS CONFIG_JSON
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


_MALLINFO2_FIELDS = [
    "arena",
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",
    "usmblks",
    "fsmblks",
    "uordblks",
    "fordblks",
    "keepcost",
]


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS]


def heap_in_use_mb() -> float | None:
    """glibc heap bytes in use (all arenas, plus mmapped blocks), MiB; None without glibc 2.33+."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


def rss_over_epochs(
    records: Path,
    input_config: Any,
    epochs: int,
    processes: int = 3,
    env: dict[str, str] | None = None,
) -> dict:
    """RSS and heap in use after every epoch, in ``processes`` fresh processes.

    Growth compares the median of the last three epochs with the median of
    the first three (single readings swing as TensorFlow's allocator keeps or
    returns buffers); ``growth_pct`` is the median over the processes.
    ``env``: extra environment variables for the children (e.g.
    ``MALLOC_ARENA_MAX``).
    """
    config = json.dumps(input_config.model_dump(mode="json"))
    args = [sys.executable, str(Path(__file__)), str(records), str(epochs), config]
    runs = []
    for _ in range(processes):
        done = subprocess.run(
            args, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}
        )
        runs.append(_growth(json.loads(done.stdout.strip().splitlines()[-1])))
    return {
        "epochs": epochs,
        "processes": processes,
        "env": env or {},
        "runs": runs,
        "growth_pct": statistics.median(r["growth_pct"] for r in runs),
        "max_growth_pct": max(r["growth_pct"] for r in runs),
    }


def _growth(child: dict) -> dict:
    mb, heap = child["rss_mb"], child["heap_mb"]
    first, last = statistics.median(mb[:3]), statistics.median(mb[-3:])
    out = {
        "rss_mb_after_each_epoch": mb,
        "growth_pct": 100.0 * (last - first) / first,
        "last_vs_first_pct": 100.0 * (mb[-1] - mb[0]) / mb[0],
        "heap_in_use_mb_after_each_epoch": heap,
    }
    if heap and None not in heap:
        out["heap_growth_pct"] = 100.0 * (
            statistics.median(heap[-3:]) / statistics.median(heap[:3]) - 1
        )
    return out


def rss_markdown(rss: dict, how: str) -> list[str]:
    """One paragraph: each process's RSS series and growth, then the median."""
    epochs = rss["epochs"]
    lines = ["", f"RSS after each of {epochs} epochs of the full pipeline, {how}; MiB:", ""]
    for i, run in enumerate(rss["runs"], 1):
        mb = ", ".join(f"{x:.0f}" for x in run["rss_mb_after_each_epoch"])
        heap = run.get("heap_growth_pct")
        heap_text = "" if heap is None else f"; heap in use {heap:+.1f} %"
        lines.append(f"- process {i}: {mb}; growth {run['growth_pct']:.1f} %{heap_text}")
    lines += [
        "",
        f"Growth, median of the {rss['processes']} processes: {rss['growth_pct']:.1f} % "
        f"(largest {rss['max_growth_pct']:.1f} %). Growth is the median of the last 3 "
        "epochs against the first 3; heap in use is glibc's count of allocated bytes.",
    ]
    return lines


def _child(records: str, epochs: int, config: str) -> None:
    """Iterate ``epochs`` epochs; print one JSON object of MiB per epoch."""
    sys.path[:0] = [str(HERE.parent)]
    import psutil
    from tqdm import tqdm

    import tfpipe.data as td
    from tfpipe.config import InputConfig

    ds = td.load(records, config=InputConfig.model_validate(json.loads(config)))
    rss, heap = [], []
    for _ in tqdm(range(epochs), desc="RSS epochs", unit="epoch"):
        for _batch in ds:
            pass
        rss.append(psutil.Process().memory_info().rss / 2**20)
        heap.append(heap_in_use_mb())
    print(json.dumps({"rss_mb": rss, "heap_mb": heap}))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _child(sys.argv[1], int(sys.argv[2]), sys.argv[3])
