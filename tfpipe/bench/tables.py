"""Markdown tables of a bench report, and of two reports side by side (``--compare``).

Plain Markdown (GitHub pipe tables) so the same text reads in a terminal, in
``bench.md`` and pasted into an issue.

Example:
    >>> from tfpipe.bench.tables import markdown_table
    >>> print(markdown_table(["a", "b"], [[1, 2.5]]))
    | a | b |
    |---|---|
    | 1 | 2.5 |
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tfpipe.bench.measure import Measurement, ratio

if TYPE_CHECKING:
    from tfpipe.bench.report import BenchReport


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub pipe table; cells are written with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float, digits: int = 1) -> str:
    """A number for a table: thousands separators, ``n/a`` for NaN/inf."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:,.{digits}f}"


def fmt_ratio(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2f}×"


def spread(m: Measurement) -> str:
    return f"{fmt(m.min)} – {fmt(m.max)}"


def stages_table(report: BenchReport) -> str:
    from tfpipe.bench.report import stage_shares

    shares = stage_shares(report.stages)
    rows = [
        [
            m.name,
            fmt(m.median),
            spread(m),
            fmt(m.mb_per_s),
            fmt(m.ms_per_image, 2),
            f"{100 * shares[m.name]:.0f}%",
            m.note,
        ]
        for m in report.stages
    ]
    header = [
        "stage (cumulative)",
        "images/s (median)",
        "min – max",
        "MB/s",
        "ms/image",
        "share of time",
        "what it adds",
    ]
    return markdown_table(header, rows)


def ablation_table(report: BenchReport) -> str:
    full = report.ablation[0]
    rows = [
        [m.name, m.note, fmt(m.median), spread(m), fmt_ratio(ratio(full.median, m.median))]
        for m in report.ablation
    ]
    header = ["variant", "change", "images/s (median)", "min – max", "full ÷ variant"]
    return markdown_table(header, rows)


def sweeps_table(report: BenchReport) -> str:
    rows = []
    for s in report.sweeps:
        base = s.baseline
        for value, m in zip(s.values, s.measurements, strict=True):
            mark = " (current)" if value == s.current else ""
            mark += " **best**" if value == s.best else ""
            vs = fmt_ratio(ratio(m.median, base.median)) if base else "n/a"
            rows.append(
                [f"{s.key}={value}{mark}", fmt(m.median), spread(m), fmt(m.mb_per_s), vs, m.note]
            )
    header = ["setting", "images/s (median)", "min – max", "MB/s", "vs current", "note"]
    return markdown_table(header, rows)


def model_table(report: BenchReport) -> str:
    t = report.model
    assert t is not None
    rows = []
    for label, m in (
        ("compute, float32", t.compute),
        ("compute, mixed_float16", t.compute_mixed),
        (f"end-to-end on the pipeline ({t.end_to_end_precision})", t.end_to_end),
    ):
        if m is None:
            continue
        lo, hi = 1000 * t.batch_size / m.max, 1000 * t.batch_size / m.min
        rows.append(
            [label, fmt(1000 * t.batch_size / m.median), f"{fmt(lo)} – {fmt(hi)}", fmt(m.median)]
        )
    if t.end_to_end is not None:
        rows.append(["stall per step (end-to-end − compute)", fmt(t.stall_ms), "", ""])
    header = ["step", "ms/step (median)", "min – max ms", "images/s"]
    return markdown_table(header, rows)


def augment_table(report: BenchReport) -> str:
    """Augmentation on the CPU in the pipeline against the ``Augment`` layer in the model step."""
    from tfpipe.bench.report import step_ms

    a, t = report.augment_in_model, report.model
    assert a is not None and t is not None
    b = t.batch_size
    rows = []
    for label, pipeline, compute, end_to_end in (
        ("in the pipeline (CPU, tf.data)", report.pipeline.median, t.step_ms, t.end_to_end_ms),
        (
            "in the model (tfpipe.data.Augment)",
            a.pipeline.median,
            step_ms(a.compute, b),
            step_ms(a.end_to_end, b),
        ),
    ):
        rows.append(
            [label, fmt(pipeline), fmt(compute), fmt(end_to_end), fmt(ratio(1000 * b, end_to_end))]
        )
    header = [
        "augmentation",
        "pipeline images/s",
        "compute ms/step",
        "end-to-end ms/step",
        "end-to-end images/s",
    ]
    return markdown_table(header, rows)


def verdict_text(report: BenchReport) -> str:
    v = report.verdict
    if v is None:
        return ""
    head = (
        f"**{v.bound}** — pipeline {fmt(v.pipeline_images_per_s)} images/s, model "
        f"{fmt(v.model_images_per_s)} images/s, headroom {fmt_ratio(v.headroom)}"
    )
    return "\n".join([head, ""] + [f"- {a.message}" for a in v.advice])


def report_markdown(report: BenchReport) -> str:
    """Every section of the report as one Markdown document."""
    s = report.settings
    parts = [
        f"# tfpipe bench-input: {report.experiment}",
        "",
        f"Records `{report.records}` ({s.get('records', '?')} records in "
        f"{s.get('shards', '?')} shards, {s.get('encoding', '?')}, tiles "
        f"{s.get('tile_shape', '?')}), batch {s.get('batch_size', '?')}; "
        f"{s.get('batches', '?')} batches × {s.get('repeats', '?')} repeats per figure after "
        f"{s.get('warmup', '?')} warm-up batches; {report.machine.get('cpu_count', '?')} CPUs, "
        f"GPU: {report.machine.get('gpu') or 'none'}, TF {report.machine.get('tensorflow', '?')}.",
        "",
        "## Stages",
        "",
        stages_table(report),
    ]
    if report.ablation:
        parts += ["", "## Ablation (one optimisation off at a time)", "", ablation_table(report)]
    if report.sweeps:
        parts += ["", "## Sweeps", "", sweeps_table(report)]
    if report.model is not None:
        t = report.model
        parts += [
            "",
            f"## Model step ({t.model}, batch {t.batch_size}, input {t.input_shape}, {t.device})",
            "",
            model_table(report),
        ]
    if report.augment_in_model is not None and report.model is not None:
        parts += [
            "",
            f"## Augmentation: pipeline or model ({', '.join(report.augment_in_model.ops)})",
            "",
            augment_table(report),
        ]
    if report.verdict is not None:
        parts += ["", "## Verdict", "", verdict_text(report)]
    parts += ["", f"Wall time: {report.wall_seconds:.0f} s."]
    return "\n".join(parts) + "\n"


def compare_markdown(a: BenchReport, b: BenchReport, label_a: str, label_b: str) -> str:
    """Two reports side by side: every shared figure of A and B, and B ÷ A."""
    from tfpipe.bench.report import step_ms

    rows: list[list[str]] = []

    def add(section: str, name: str, va: float, vb: float, unit: str) -> None:
        rows.append([section, name, unit, fmt(va), fmt(vb), fmt_ratio(ratio(vb, va))])

    for section, ms_a, ms_b in (
        ("stage", a.stages, b.stages),
        ("ablation", a.ablation, b.ablation),
    ):
        by_name = {m.name: m for m in ms_b}
        for m in ms_a:
            if m.name in by_name:
                add(section, m.name, m.median, by_name[m.name].median, "images/s")
    if a.model and b.model:
        add("model", "compute step", a.model.step_ms, b.model.step_ms, "ms")
        add("model", "end-to-end step", a.model.end_to_end_ms, b.model.end_to_end_ms, "ms")
        add("model", "stall per step", a.model.stall_ms, b.model.stall_ms, "ms")
    if a.augment_in_model and b.augment_in_model and a.model and b.model:
        ea, eb = (step_ms(r.augment_in_model.end_to_end, r.model.batch_size) for r in (a, b))
        add("model", "end-to-end step, Augment in the model", ea, eb, "ms")
    if a.verdict and b.verdict:
        add("verdict", "headroom", a.verdict.headroom, b.verdict.headroom, "×")
    header = ["section", "figure", "unit", f"A: {label_a}", f"B: {label_b}", "B ÷ A"]
    machines = [
        f"- A: {label_a} — {describe_machine(a)}; verdict {a.verdict.bound if a.verdict else '?'}",
        f"- B: {label_b} — {describe_machine(b)}; verdict {b.verdict.bound if b.verdict else '?'}",
    ]
    return (
        "\n".join(["# tfpipe bench-input: A vs B", "", *machines, "", markdown_table(header, rows)])
        + "\n"
    )


def describe_machine(r: BenchReport) -> str:
    m = r.machine
    return (
        f"{r.experiment}, {m.get('cpu_count', '?')} CPUs, GPU {m.get('gpu') or 'none'}, "
        f"TF {m.get('tensorflow', '?')}, commit {str(m.get('git_commit') or '?')[:10]}, "
        f"batch {r.settings.get('batch_size', '?')}, {r.settings.get('encoding', '?')}"
    )
