"""Ratios, targets and the Markdown report of ``bench_input.py``."""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {  # name: (minimum or maximum, value)
    "full / decode_only": ("min", 0.9),
    "full / torch": ("min", 2.5),
    "full / onthefly": ("min", 20.0),
    "time_to_first_batch_s": ("max", 2.0),
    "rss_growth_pct": ("max", 5.0),
}

# Extra RSS measurements of the report and how each one differs from the plain one.
RSS_VARIANTS = {
    "rss_heap_kept": "with `input.release_heap: false` (glibc's per-thread heap arenas keep "
    "what the tf.data threads free)",
    "rss_heap_kept_malloc_arena_max_2": "with `input.release_heap: false` and "
    "`MALLOC_ARENA_MAX=2` (at most two glibc heap arenas instead of one per thread)",
}


def ratios(t: dict) -> dict:
    """Throughput ratios, plus the same ratios from CPU time per image.

    Each wall-clock ratio is the median over rounds of that round's ratio: a
    round times every variant back to back, so a slow spell on the shared
    machine moves both sides of its ratio (``full / x, rounds`` lists them).
    The CPU-time figures (``cpu: ...``) are what the ratios would be if every
    variant were CPU-bound on an otherwise idle machine.
    """
    full, full_cpu = t["full"]["rounds"], t["full"]["cpu_ms_per_image"]
    out: dict = {}
    for name, v in t.items():
        if name != "full":
            per_round = [f / x for f, x in zip(full, v["rounds"], strict=True)]
            out[f"full / {name}"] = statistics.median(per_round)
            out[f"full / {name}, rounds"] = [round(r, 3) for r in per_round]
            out[f"cpu: full / {name}"] = v["cpu_ms_per_image"] / full_cpu
    return out


def check_targets(report: dict) -> list[dict]:
    values = dict(report["ratios"])
    values["time_to_first_batch_s"] = report["time_to_first_batch_s"]["later_call"]
    values["rss_growth_pct"] = report["rss"]["growth_pct"]
    out = []
    for name, (kind, target) in TARGETS.items():
        value = values.get(name)
        met = None if value is None else (value >= target if kind == "min" else value <= target)
        out.append(
            {
                "name": name,
                "target": f"{'>=' if kind == 'min' else '<='} {target}",
                "value": value,
                "met": met,
            }
        )
    return out


def machine(load_before: tuple[float, ...], tf_version: str) -> dict:
    return {
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "tensorflow": tf_version,
        "python": sys.version.split()[0],
    }


def write_results(report: dict, stem: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    for suffix, text in ((".json", json.dumps(report, indent=2) + "\n"), (".md", markdown(report))):
        path = RESULTS / f"{stem}{suffix}"
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        print(path)
    print(markdown(report))


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
