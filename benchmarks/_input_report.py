"""Ratios, targets and the Markdown report of ``bench_input.py``."""

from __future__ import annotations

from tfpipe.bench.measure import round_ratios

CEILING = "decode_only_png"
"""``load()`` on the PNG records with augmentation off: the tf.io.decode_png ceiling."""
TARGETS = {  # name: (minimum or maximum, value)
    "full / decode_only_png": ("min", 1.5),
    "full / torch": ("min", 2.5),
    "full / onthefly": ("min", 20.0),
    "time_to_first_batch_s": ("max", 1.0),
    "rss_growth_pct": ("max", 5.0),
    "rss_growth_pct, MALLOC_ARENA_MAX=2": ("max", 5.0),
}
# Informative ratios beside the targets (not targets): the same augmentation all on the
# host CPU, and full against a DataLoader that also leaves colour to the accelerator.
INFORMATIVE = {
    "full_host_colour / decode_only_png": "colour in tf.data (colour_in_model: false)",
    "full_host_colour / torch": "both with colour on the host CPU",
    "full / torch_geometric": "like for like: neither does colour on the host",
}
# The variants set against the ceiling, besides `full` (which is set against all).
AGAINST_CEILING = ("full", "full_host_colour", "decode_only", "full_png")


def ratios(t: dict) -> dict:
    """``full / x`` for every variant ``x``, and ``x / decode_only_png`` for the ceiling table.

    Each wall-clock ratio is the median over rounds of that round's ratio: a
    round times every variant back to back, so a slow spell on the shared
    machine moves both sides of its ratio (``a / b, rounds`` lists them).
    The CPU-time figures (``cpu: ...``) are what the ratios would be if every
    variant were CPU-bound on an otherwise idle machine.
    """
    out: dict = {}
    pairs = [("full", name) for name in t if name != "full"]
    pairs += [(name, CEILING) for name in AGAINST_CEILING if name != "full" and name in t]
    pairs += [tuple(name.split(" / ")) for name in INFORMATIVE]
    pairs = list(dict.fromkeys(pairs))
    for a, b in pairs:
        if a not in t or b not in t:
            continue
        out[f"{a} / {b}"], per_round = round_ratios(t[a]["rounds"], t[b]["rounds"])
        out[f"{a} / {b}, rounds"] = [round(r, 3) for r in per_round]
        out[f"cpu: {a} / {b}"] = t[b]["cpu_ms_per_image"] / t[a]["cpu_ms_per_image"]
    return out


def check_targets(report: dict) -> list[dict]:
    """Issue 18's targets, all on ``full``; ratios come with their CPU-time figure."""
    values = dict(report["ratios"])
    values["time_to_first_batch_s"] = report["time_to_first_batch_s"]["later_call"]
    values["rss_growth_pct"] = report["rss"]["growth_pct"]
    arena = report.get("rss_malloc_arena_max_2")
    if arena is not None:
        values["rss_growth_pct, MALLOC_ARENA_MAX=2"] = arena["growth_pct"]
    out = []
    for name, (kind, target) in TARGETS.items():
        value = values.get(name)
        met = None if value is None else (value >= target if kind == "min" else value <= target)
        out.append(
            {
                "name": name,
                "target": f"{'>=' if kind == 'min' else '<='} {target}",
                "value": value,
                "cpu": values.get(f"cpu: {name}"),
                "met": met,
            }
        )
    return out


def informative(report: dict) -> list[dict]:
    """The ratios of ``INFORMATIVE`` (wall and CPU time); None where a variant did not run."""
    r = report["ratios"]
    return [
        {"name": name, "what": what, "value": r.get(name), "cpu": r.get(f"cpu: {name}")}
        for name, what in INFORMATIVE.items()
    ]


def markdown(r: dict) -> str:
    d = r["data"]
    lines = [
        "# Input benchmark" + (" (--quick)" if r["quick"] else ""),
        "",
        f"Data: {d['records']} records of {d['tile']} tiles: PNG records, {d['built_with']} "
        f"(the `*_png` variants), and the same tiles re-encoded {d['encoding']} "
        f"({d['record_kb']:.0f} kB each; the default encoding, read by every other variant); "
        f"batch {d['batch_size']}. Machine: {r['machine']['cpus']} "
        f"CPUs, load average {r['machine']['load_average_before'][0]} before / "
        f"{r['machine']['load_average_after'][0]} after; TensorFlow "
        f"{r['machine']['tensorflow']}. Command: `python benchmarks/bench_input.py"
        f"{' --quick' if r['quick'] else ''}`.",
    ]
    lines += throughput_table(r)
    lines += ceiling_table(r)
    lines += target_table(r["targets"])
    lines += informative_table(r["informative"])
    lines += rss_and_first_batch(r)
    lines += op_cost_table(r["augment_op_cost_us"])
    return "\n".join(lines) + "\n"


def throughput_table(r: dict) -> list[str]:
    lines = [
        "",
        "| variant | colour jitter runs | images/s (median) | min - max | full ÷ variant "
        "| per round | CPU ms/image | full ÷ variant by CPU time |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    where = r.get("colour_runs", {})
    for name, v in r["throughput"].items():
        ratio = r["ratios"].get(f"full / {name}", 1.0)
        rounds = r["ratios"].get(f"full / {name}, rounds", [1.0])
        by_cpu = r["ratios"].get(f"cpu: full / {name}", 1.0)
        lines.append(
            f"| {name} | {where.get(name, '')} | {v['images_per_s']:.1f} | "
            f"{v['min']:.1f} - {v['max']:.1f} | {ratio:.2f} | "
            f"{min(rounds):.2f} - {max(rounds):.2f} | "
            f"{v['cpu_ms_per_image']:.2f} | {by_cpu:.2f} |"
        )
    lines += [
        "",
        "`full` is `load()` as a user gets it: the default raw records "
        "(`data.encoding: raw`) and experiments/kidney.yaml's `input` section as is"
        + _full_colour_text(r)
        + " Every variant with augmentation flips and turns the tiles by quarter turns on "
        "the host CPU; the colour jitter runs where the second column says. "
        "`full ÷ variant` > 1: the full pipeline is faster. It is the median over rounds "
        "of each round's ratio (a round times every variant back to back; `per round` "
        "gives their range). The CPU-time column is the ratio an idle, CPU-bound machine "
        "would give (process CPU time per image; for the torch variants including their "
        "DataLoader worker processes). "
        "All variants ran in the same process on the same tiles, in interleaved rounds, "
        "warm-up batches excluded; other processes shared the cores (load average above), "
        "so wall-clock figures move between runs and the CPU-time ratios are the steadier "
        "ones. `onthefly` reads the demo's zstd-tiled TIFFs from the page cache and does no "
        "augmentation (the best case for it).",
    ]
    return lines


def _full_colour_text(r: dict) -> str:
    if not r["data"]["augment (full)"].get("colour_in_model"):
        return ": every augmentation op in tf.data, on the host CPU."
    return (
        ": with `augment.colour_in_model: true`, tf.data does the geometry and the "
        "colour jitter (brightness, contrast, saturation, hue) runs inside the model "
        "(`tfpipe.data.Augment`), on the accelerator. This machine has no GPU, so the "
        "accelerator's cost of that in-model colour is not measured here: `tfpipe "
        "bench-input` times in-model augmentation against the model step when run on a GPU "
        "host. `full_host_colour` is the same augmentation all in tf.data "
        "(`colour_in_model: false`), colour on the host CPU; `torch` does colour in its "
        "DataLoader workers and `torch_geometric` skips it (as if it too left colour to "
        "the GPU)."
    )


def ceiling_table(r: dict) -> list[str]:
    """Every load() variant against the decode-only ceiling of tf.io.decode_png."""
    t, d = r["throughput"], r["data"]
    base = t[CEILING]
    kb = d["disk_kb_per_tile"]
    mb = d["dataset_mb"]
    lines = [
        "",
        f"Against the decode-only ceiling of `tf.io.decode_png` (`{CEILING}`: `load()` on the "
        f"PNG records, augmentation off, {base['images_per_s']:.1f} images/s). `full_png` decodes "
        "the same PNG records with `tf.io.decode_png`; the other variants read the same "
        "tiles from raw records (`data.encoding: raw`, the default: `tf.io.decode_raw`, a "
        "reshape).",
        "",
        f"| variant | records | images/s | ÷ {CEILING} | per round | ÷ {CEILING} by CPU |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in (CEILING, *AGAINST_CEILING):
        if name not in t:
            continue
        ratio = r["ratios"].get(f"{name} / {CEILING}", 1.0)
        rounds = r["ratios"].get(f"{name} / {CEILING}, rounds", [1.0])
        by_cpu = r["ratios"].get(f"cpu: {name} / {CEILING}", 1.0)
        kind = "png" if name.endswith("_png") else "raw"
        lines.append(
            f"| {name} | {kind} | {t[name]['images_per_s']:.1f} | {ratio:.2f} "
            f"| {min(rounds):.2f} - {max(rounds):.2f} | {by_cpu:.2f} |"
        )
    lines += [
        "",
        f"Disk per tile (256 x 256 RGB tile + mask + metadata, one record): png "
        f"{kb['png']:.1f} KiB, raw {kb['raw']:.1f} KiB ({kb['raw'] / kb['png']:.2f}×); "
        f"the whole set: png {mb['png']:.1f} MiB, raw {mb['raw']:.1f} MiB.",
    ]
    return lines


def target_table(targets: list[dict]) -> list[str]:
    lines = [
        "",
        "Targets of issue 18, on `full` (as a kidney.yaml user gets it):",
        "",
        "| target | wanted | measured | by CPU time | met |",
        "|---|---|---:|---:|---|",
    ]
    for g in targets:
        lines.append(
            f"| {g['name']} | {g['target']} | {_num(g['value'])} | {_num(g.get('cpu'), '—')} "
            f"| {_yes(g['met'])} |"
        )
    return lines


def informative_table(rows: list[dict]) -> list[str]:
    lines = [
        "",
        "Informative ratios (not targets):",
        "",
        "| ratio | what | measured | by CPU time |",
        "|---|---|---:|---:|",
    ]
    for g in rows:
        lines.append(f"| {g['name']} | {g['what']} | {_num(g['value'])} | {_num(g['cpu'])} |")
    return lines


def _num(value: float | None, missing: str = "n/a") -> str:
    return missing if value is None else f"{value:.2f}"


def rss_and_first_batch(r: dict) -> list[str]:
    from benchmarks._input_rss import rss_markdown

    ttfb, rss = r["time_to_first_batch_s"], r["rss"]
    lines = [
        "",
        f"Time to first batch (`load()` + first batch): first call in the process "
        f"{ttfb['first_call']:.2f} s (building {ttfb['first_call_build']:.2f} s), later call "
        f"{ttfb['later_call']:.2f} s (building {ttfb['later_call_build']:.2f} s).",
    ]
    lines += rss_markdown(rss, f"as `load()` gives it, in {rss['processes']} fresh processes")
    if r.get("rss_malloc_arena_max_2") is not None:
        lines += rss_markdown(
            r["rss_malloc_arena_max_2"],
            "with `MALLOC_ARENA_MAX=2` (at most two glibc heap arenas instead of one per thread)",
        )
    return lines


def op_cost_table(costs: dict) -> list[str]:
    lines = [
        "",
        "Augmentation cost per 256 x 256 tile (one op at a time, as `load()` runs it: "
        "`Augmenter` per tile, TensorFlow ops; serial map, one thread):",
        "",
        "| op | CPU µs/tile | over none | wall µs/tile |",
        "|---|---:|---:|---:|",
    ]
    for name, v in costs.items():
        lines.append(
            f"| {name} | {v['cpu_us']:.0f} | {v['cpu_us_over_none']:.0f} | {v['wall_us']:.0f} |"
        )
    return lines


def _yes(met: bool | None) -> str:
    return "n/a" if met is None else ("yes" if met else "**no**")
