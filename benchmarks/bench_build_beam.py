"""Beam benchmark: ``build-records`` on Apache Beam's DirectRunner against the local builder.

Same 4 synthetic slides (each side >= 10,000 px; kidney.yaml's ETL settings:
1024 px tiles -> 256 px raw records, 4 folds), same seed, 2 workers each:

* ``local, 2 workers``: ``build_records`` with ``runner: local`` (a fork-server
  process pool);
* ``beam DirectRunner, 2 workers``: ``runner: beam`` with its defaults
  (``direct_running_mode=multi_processing``, ``direct_num_workers=2``).

Each run is a fresh child process (this script with ``--child``); the slides
are read once first (page cache), one untimed warm-up run of each variant
follows, then ``--repeats`` rounds, variants interleaved; the figure is the
best run. Wall time is the child's ``build_records`` call (imports excluded).
A psutil sampler (20 ms) records each process's peak RSS and CPU seconds,
grouped as the launching process, its workers (the fork server's children,
or Beam's SDK worker processes), and the rest (fork server, resource
tracker). The shards of the two variants are compared by sha256.
Results: ``benchmarks/results/build_beam.json`` and ``.md``.

Usage:
    python benchmarks/bench_build_beam.py             # 4 slides of 10-11k px (cached)
    python benchmarks/bench_build_beam.py --quick     # 4 slides of ~2.5k px, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
sys.path[:0] = [str(HERE.parent)]
# Nothing heavier at module level: the local builder's fork server imports this file
# (as __mp_main__) in the --child runs, and tfpipe.bench would bring TensorFlow.
from benchmarks._tree_sampler import TreeSampler  # noqa: E402  (psutil only)

# make_demo_data varies each side by +-20 %; seed 146 gives 4 slides of 10,073-11,077 px.
FULL = dict(size=10500, seed=146)
QUICK = dict(size=2500, seed=146)
VARIANTS = {"local, 2 workers": "local", "beam DirectRunner, 2 workers": "beam"}
TARGETS = {"beam_vs_local": 1.5, "worker_peak_rss_mb": 1024.0}


def process_role(p: psutil.Process, root: int) -> str:
    """launcher (the measured child), worker (a Beam SDK or local pool worker) or other."""
    if p.pid == root:
        return "launcher"
    command = " ".join(p.cmdline())
    if "sdk_worker_main" in command:
        return "worker"  # a Beam SDK worker process
    if "forkserver" in command and p.ppid() != root:
        return "worker"  # forked by the fork server: a local pool worker
    return "other"


def run_child(kind: str, data: Path, out: Path) -> dict:
    """One build in a fresh process; its JSON line plus the sampled RSS and CPU."""
    load = os.getloadavg()[0]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, __file__, "--child", kind, str(data), str(out)]
    log = WORK / f"bench-build-{kind}.stderr"  # a file: Beam's workers inherit it
    with log.open("w") as err:
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    sampler = TreeSampler(child.pid, process_role)
    sampler.start()
    stdout, _ = child.communicate()
    sampler.stop()
    if child.returncode:
        raise SystemExit(f"{kind} build failed ({child.returncode}):\n{log.read_text()[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    roles = sampler.by_role()
    workers = roles.get("worker", {"peak_rss_mb": [0.0], "cpu_s": [0.0]})
    return {
        **result,
        "load_before": round(load, 2),
        "tree_peak_rss_mb": round(sampler.tree_peak_mb, 1),
        "launcher_peak_rss_mb": roles["launcher"]["peak_rss_mb"][0],
        "worker_peak_rss_mb": workers["peak_rss_mb"],
        "cpu_s": round(sum(sampler.cpu.values()), 2),
        "cpu_by_role": {role: entry["cpu_s"] for role, entry in roles.items()},
    }


def child(kind: str, data: str, out: str) -> None:
    """``--child``: build the records once and print one JSON line."""
    from tfpipe.config import DataConfig
    from tfpipe.records.build import build_records

    cfg = DataConfig(
        images=Path(data) / "train",
        labels=Path(data) / "train.csv",
        output=Path(out),
        workers=2,
        runner=kind,
    )
    start = time.perf_counter()
    manifest = build_records(cfg, overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    shards = [(s.path, s.sha256) for s in manifest.shards]
    print(json.dumps({"seconds": seconds, "records": manifest.num_records, "shards": shards}))


def ensure_data(size: int, seed: int) -> Path:
    """The cached 4-slide demo dataset under benchmarks/_work/."""
    from tfpipe.synthetic.datasets import make_demo_data

    root = WORK / f"beam-{size}-s{seed}"
    if not (root / "train.csv").is_file():
        print(f"making 4 demo slides (size {size}, seed {seed}) in {root} ...", flush=True)
        make_demo_data(root, n=4, size=size, seed=seed, overwrite=True)
    return root


def measure(quick: bool, repeats: int) -> dict:
    from benchmarks._common import machine
    from tfpipe.bench.measure import interleave
    from tfpipe.io.tiff import open_slide

    load_before = os.getloadavg()
    data = ensure_data(**(QUICK if quick else FULL))

    slides = {}
    for path in sorted((data / "train").glob("*.tiff")):
        with open_slide(path) as s:
            slides[path.stem] = [s.height, s.width]
        with open(path, "rb") as f:  # into the page cache
            while f.read(1 << 24):
                pass
    outs = {name: WORK / f"records-{kind}" for name, kind in VARIANTS.items()}
    print("warm-up run of each variant (not counted) ...", flush=True)
    for name, kind in VARIANTS.items():
        run_child(kind, data, outs[name])
    calls = {
        name: (lambda kind=kind, out=outs[name]: run_child(kind, data, out))
        for name, kind in VARIANTS.items()
    }
    runs = interleave(calls, repeats, tick=lambda: print(".", end="", flush=True))
    print()
    variants = {}
    for name, results in runs.items():
        best = min(results, key=lambda r: r["seconds"])
        variants[name] = {
            **{k: v for k, v in best.items() if k != "shards"},
            "seconds": round(best["seconds"], 2),
            "wall_s_all": [round(r["seconds"], 2) for r in results],
            "worker_peak_rss_mb": max(max(r["worker_peak_rss_mb"]) for r in results),
            "launcher_peak_rss_mb": max(r["launcher_peak_rss_mb"] for r in results),
            "tree_peak_rss_mb": max(r["tree_peak_rss_mb"] for r in results),
        }
    local, beam = (runs[name] for name in VARIANTS)
    identical = all(r["shards"] == local[0]["shards"] for r in [*local, *beam])
    lv, bv = (variants[name] for name in VARIANTS)
    ratios = {
        "beam_vs_local_wall": round(bv["seconds"] / lv["seconds"], 3),
        "beam_vs_local_cpu": round(bv["cpu_s"] / lv["cpu_s"], 3),
    }
    checks = {
        "beam <= 1.5x local (wall)": ratios["beam_vs_local_wall"] <= TARGETS["beam_vs_local"],
        "peak RSS < 1 GB per worker (both)": max(lv["worker_peak_rss_mb"], bv["worker_peak_rss_mb"])
        < TARGETS["worker_peak_rss_mb"],
        "identical shards (sha256)": identical,
    }
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    return {
        "slides": slides,
        "records": lv["records"],
        "shards": len(local[0]["shards"]),
        "repeats": repeats,
        "machine": machine(load_before, "not imported"),
        "variants": variants,
        "ratios": ratios,
        "targets": checks,
    }


def markdown(result: dict, quick: bool) -> str:
    from benchmarks._common import ratio_and_target_tables

    sizes = ", ".join(f"{h} x {w}" for h, w in result["slides"].values())
    m = result["machine"]
    lines = [
        f"# build-records: Beam DirectRunner vs local ({'quick' if quick else 'full'})",
        "",
        f"4 slides ({sizes} px), {result['records']} records in {result['shards']} shards "
        f"(raw 256 px tiles, 4 folds); {m['cpus']} CPU cores shared with other work (load "
        f"average {m['load_average_before'][0]} before, {m['load_average_after'][0]} after); "
        f"warm-up excluded, best of {result['repeats']}. "
        "Command: `python benchmarks/bench_build_beam.py" + (" --quick`" if quick else "`"),
        "",
        "| variant | wall s (best) | all runs | CPU s (tree) | launcher peak RSS MB "
        "| worker peak RSS MB (max) | tree peak RSS MB | load before |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, v in result["variants"].items():
        lines.append(
            f"| {name} | {v['seconds']:.1f} | {', '.join(f'{s:.1f}' for s in v['wall_s_all'])} "
            f"| {v['cpu_s']:.1f} | {v['launcher_peak_rss_mb']:.0f} "
            f"| {v['worker_peak_rss_mb']:.0f} | {v['tree_peak_rss_mb']:.0f} "
            f"| {v['load_before']:.1f} |"
        )
    lines += ratio_and_target_tables(result)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 small slides, one round")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (best of)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from benchmarks._common import write_results

    repeats = args.repeats or (1 if args.quick else 2)
    result = measure(args.quick, repeats)
    stem = "build_beam-quick" if args.quick else "build_beam"
    write_results(stem, result, markdown(result, args.quick))


if __name__ == "__main__":
    main()
