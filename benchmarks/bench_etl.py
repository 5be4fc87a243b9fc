"""ETL benchmark: ``build-records`` on one giant slide against a plain windowed read + encode.

One run, same data, every variant in a fresh child process
(``benchmarks/_etl_variants.py``, so imports and memory of one variant do not
leak into the next), the file already in the page cache (a warm-up read
first), variants interleaved, best of ``--repeats`` wall times:

* ``read+encode`` (baseline): the least any tiler must do: read the slide by
  row bands with ``Slide.read_window``, cut 1024 px tiles, ``INTER_AREA`` to
  256 px and PNG-encode every tile; one process, nothing written.
* ``build, 1 worker`` / ``build, 2 workers``: the whole ``build_records``
  (RLE masks, tissue filter, encode, spill, shuffle, shards, sha256, manifest).
* ``writer: tf.io.TFRecordWriter`` / ``writer: tfpipe``: the records of the
  build written once more by each writer (plus the sha256 the manifest needs),
  with TensorFlow's import counted in RSS and CPU (why tfpipe frames records
  itself, see tfpipe/records/writer.py).

Peak RSS is the sum over the child and all its descendants, sampled every
20 ms with psutil. Results: ``benchmarks/results/etl.json`` and ``etl.md``
(``etl-quick.*`` with ``--quick``).

Usage:
    python benchmarks/bench_etl.py            # 20,201 x 20,196 px demo slide (cached)
    python benchmarks/bench_etl.py --quick    # ~4k px slide, one repeat: a smoke run
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
sys.path[:0] = [str(HERE.parent)]

from benchmarks._common import ratio_and_target_tables, write_results  # noqa: E402
from benchmarks._tree_sampler import TreeSampler  # noqa: E402
from tfpipe.bench.measure import interleave, time_call  # noqa: E402

# make_demo_data varies each side by +-20 %; seed 28 gives 20,201 x 20,196 px at size 20000.
FULL = dict(size=20000, seed=28)
QUICK = dict(size=4096, seed=0)
TARGETS = {"peak_rss_mb": 1024.0, "build_vs_baseline": 2.0, "speedup_2_workers": 1.6}


def process_role(p: psutil.Process, root: int) -> str:
    """main / forkserver / worker / other: where the build's CPU seconds went."""
    if p.pid == root:
        return "main"
    command = " ".join(p.cmdline())
    if "resource_tracker" in command:
        return "other"
    # Workers are forks of the fork server and share its command line.
    return "forkserver" if p.ppid() == root and "forkserver" in command else "worker"


def run_child(args: list[str]) -> dict:
    """Run this script as a child variant; return its JSON plus the tree's peak RSS and CPU."""
    load = os.getloadavg()[0]  # others' work on a shared machine skews wall times
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, str(HERE / "_etl_variants.py"), *args]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    sampler = TreeSampler(child.pid, process_role)
    sampler.start()
    (out, _), process_wall, _ = time_call(child.communicate)
    sampler.stop()
    if child.returncode:
        raise SystemExit(f"variant {args} failed with exit code {child.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(sampler.tree_peak_mb, 1)
    result["load_before"] = round(load, 2)
    # CPU seconds of the whole tree, imports included: unlike wall time, barely
    # affected by other load on a shared machine.
    result["cpu_s"] = round(sum(sampler.cpu.values()), 2)
    result["cpu_by_role"] = {r: e["cpu_s"] for r, e in sampler.by_role().items()}
    result["cores_got"] = round(result["cpu_s"] / process_wall, 2)
    return result


def best_of(variants: dict[str, list[str]], repeats: int) -> dict[str, dict]:
    """Run the variants round-robin ``repeats`` times; keep each one's fastest run.

    Interleaving gives every variant a similar share of a shared machine's
    load; the fastest run is the least disturbed one. Peak RSS is the max.
    """
    calls = {name: functools.partial(run_child, args) for name, args in variants.items()}
    runs = interleave(calls, repeats)
    out = {}
    for name, results in runs.items():
        best = min(results, key=lambda r: r["seconds"])
        out[name] = {
            **best,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "wall_s_all": [round(r["seconds"], 3) for r in results],
            "runs": len(results),
        }
    return out


def ensure_demo(size: int, seed: int) -> Path:
    """The cached demo dataset (one training slide) under benchmarks/_work/."""
    from tfpipe.synthetic.datasets import make_demo_data

    root = WORK / f"demo-{size}-s{seed}"
    if not (root / "train.csv").is_file():
        print(f"making the demo slide (size {size}, seed {seed}) in {root} ...", flush=True)
        make_demo_data(root, n=1, size=size, seed=seed, overwrite=True)
    return root


def warm_cache(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def measure(quick: bool, repeats: int) -> dict:
    params = QUICK if quick else FULL
    data = ensure_demo(**params)
    slide = next((data / "train").glob("*.tiff"))
    from tfpipe.io.tiff import open_slide

    with open_slide(slide) as s:
        height, width = s.height, s.width
    warm_cache(slide)
    out = WORK / ("records-quick" if quick else "records")
    runs = {
        "read+encode (baseline)": ["baseline", str(slide)],
        "build, 1 worker": ["build", str(data), str(out), "1"],
        "build, 2 workers": ["build", str(data), str(out), "2"],
    }
    variants = best_of(runs, repeats)
    writers = {  # they read the records the builds left in ``out``
        "writer: tf.io.TFRecordWriter": ["writer", str(out), str(WORK / "w.tf"), "tf"],
        "writer: tfpipe": ["writer", str(out), str(WORK / "w.own"), "own"],
    }
    variants |= best_of(writers, 1)
    for name in ("w.tf", "w.own"):
        (WORK / name).unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    megapixels = height * width / 1e6
    for v in variants.values():
        v["megapixels_per_s"] = round(megapixels / v["seconds"], 2)
        v["seconds"] = round(v["seconds"], 3)
    base = variants["read+encode (baseline)"]["seconds"]
    one = variants["build, 1 worker"]["seconds"]
    two = variants["build, 2 workers"]["seconds"]
    ratios = {
        "build_vs_baseline": round(one / base, 3),
        "build_2_workers_vs_baseline": round(two / base, 3),
        "speedup_2_workers": round(one / two, 3),
        "tf_writer_vs_tfpipe_writer": round(
            variants["writer: tf.io.TFRecordWriter"]["seconds"]
            / variants["writer: tfpipe"]["seconds"],
            3,
        ),
    }
    one, two = variants["build, 1 worker"], variants["build, 2 workers"]
    ratios["projected_speedup_2_free_cores"] = projected_speedup(one, two)
    ratios["projected_speedup_no_overlap"] = projected_speedup(one, two, overlap=False)
    build_rss = max(variants[k]["peak_rss_mb"] for k in ("build, 1 worker", "build, 2 workers"))
    checks = {
        "peak_rss_mb < 1024 (builds)": build_rss < TARGETS["peak_rss_mb"],
        "build (1 worker) <= 2x baseline": ratios["build_vs_baseline"] <= 2.0,
        "2 workers >= 1.6x faster than 1": ratios["speedup_2_workers"] >= 1.6,
        "2 workers >= 1.6x, projected from CPU s": ratios["projected_speedup_2_free_cores"] >= 1.6,
    }
    return {
        "slide": {"path": str(slide.relative_to(HERE.parent)), "height": height, "width": width},
        "megapixels": round(megapixels, 1),
        "cpu_cores": len(os.sched_getaffinity(0)),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "repeats": repeats,
        "variants": variants,
        "ratios": ratios,
        "targets": checks,
    }


def projected_speedup(one: dict, two: dict, overlap: bool = True) -> float:
    """Speedup of 2 workers on 2 otherwise idle cores, from CPU seconds, not wall time.

    On a shared machine with autogroup scheduling the whole benchmark tree gets
    a fixed share of the CPUs, however many workers it runs, so the wall-time
    speedup cannot show. The critical path of the 2-worker build is the main
    process plus the busiest worker; the fork server's start-up runs beside
    source discovery (``overlap``), or, pessimistically, before everything.
    The 1-worker build runs in one process, effectively single-threaded (zarr
    decodes in its loop thread while the caller waits), so its CPU seconds
    are its idle-machine wall time.
    """
    roles = two["cpu_by_role"]
    critical = sum(roles.get("main", [])) + max(roles.get("worker", [0.0]))
    if not overlap:
        critical += sum(roles.get("forkserver", []))
    return round(one["cpu_s"] / critical, 3)


def markdown(result: dict, quick: bool) -> str:
    s = result["slide"]
    lines = [
        f"# ETL benchmark ({'quick' if quick else 'full'})",
        "",
        f"Slide {s['height']} x {s['width']} px ({result['megapixels']} MP), "
        f"{result['cpu_cores']} CPU cores (load average {result['load_average_1min']} at the "
        f"end: other work shares them), best of {result['repeats']}. "
        "Command: `python benchmarks/bench_etl.py" + (" --quick`" if quick else "`"),
        "",
        "| variant | wall s | source MP/s | peak RSS MB (tree) | CPU s (tree) | cores got "
        "| load avg before |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in result["variants"].items():
        lines.append(
            f"| {name} | {v['seconds']:.2f} | {v['megapixels_per_s']:.1f} "
            f"| {v['peak_rss_mb']:.0f} | {v['cpu_s']:.1f} | {v['cores_got']:.2f} "
            f"| {v['load_before']:.1f} |"
        )
    lines += [
        "",
        "`cores got` = CPU s / wall s of the whole child process (imports included): "
        "the CPU share the variant actually received. "
        "Wall-time ratios compare like with like only when it is close to what the "
        "variant can use (1 for one process, 2 for two workers); "
        "`projected_speedup_2_free_cores` uses CPU seconds instead (see the script).",
    ]
    lines += ratio_and_target_tables(result)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small slide, one repeat")
    parser.add_argument("--repeats", type=int, default=None, help="runs per variant (best of)")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 2)
    result = measure(args.quick, repeats)
    write_results("etl-quick" if args.quick else "etl", result, markdown(result, args.quick))


if __name__ == "__main__":
    main()
