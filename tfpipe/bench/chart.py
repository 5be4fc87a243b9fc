"""The PNG chart of a bench run: stage throughput (and the ablation) as bar charts.

Left: for each stage, the images/s of the pipeline up to and including that
stage (each prefix timed on its own), median bar with a min–max whisker over
the repeated windows, and the model's compute rate as a dashed line, so one
look tells whether the input keeps up. The bars need not shrink from stage
to stage: a later prefix can be faster than an earlier one when its stage
changes how work is grouped (batching amortises per-element overhead,
prefetch overlaps steps), and two bars whose whiskers overlap are within
the noise of the measurement. Right (when measured): the ablation, each variant
as a fraction of the full pipeline. Drawn with matplotlib's Agg backend (no
display needed) and written atomically.

Example:
    >>> from tfpipe.bench.chart import write_chart
    >>> write_chart(report, "runs/bench-x/stages.png")   # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tfpipe.bench.measure import Measurement

if TYPE_CHECKING:
    from tfpipe.bench.report import BenchReport

STAGE_COLOR = "#4C72B0"
ABLATION_COLOR = "#DD8452"
MODEL_COLOR = "#C44E52"
LOG_RANGE = 20.0
"""Fastest ÷ slowest stage above which the stage axis is logarithmic."""


def write_chart(report: BenchReport, path: str | Path) -> Path:
    """Draw the stage (and ablation) bars of ``report`` into the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if report.ablation else 1
    height = max(3.2, 0.55 * max(len(report.stages), len(report.ablation)) + 1.6)
    fig, axes = plt.subplots(1, panels, figsize=(7.0 * panels, height), squeeze=False)
    draw_stages(axes[0][0], report)
    if report.ablation:
        draw_ablation(axes[0][1], report.ablation)
    s = report.settings
    fig.suptitle(
        f"tfpipe bench-input — {report.experiment}: batch {s.get('batch_size', '?')}, "
        f"{s.get('encoding', '?')} tiles {s.get('tile_shape', '?')}, "
        f"{report.machine.get('cpu_count', '?')} CPUs, GPU {report.machine.get('gpu') or 'none'}",
        fontsize=11,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def draw_stages(ax, report: BenchReport) -> None:
    """Horizontal bars: median images/s of the pipeline up to each stage, whiskers min–max."""
    stages = report.stages
    names = [f"{i + 1}. {m.name}" for i, m in enumerate(stages)]
    medians, lows, highs = whiskers(stages)
    y = list(range(len(stages)))[::-1]
    ax.barh(
        y,
        medians,
        xerr=[lows, highs],
        color=STAGE_COLOR,
        capsize=3,
        error_kw={"ecolor": "#333333", "lw": 1},
    )
    ax.set_yticks(y, names)
    rate = report.model.best_compute.median if report.model is not None else None
    shown = [v for v in [*medians, rate or 0.0] if v > 0]
    top = 1.35 * max([*(m.max for m in stages), *shown], default=1.0)
    log = bool(shown) and top / min(shown) > LOG_RANGE
    if log:
        # raw reads can be 100x faster than decode (and the model far slower than both):
        # a linear axis would hide the slow bars
        ax.set_xscale("log")
        ax.set_xlim(min(shown) / 2, top * 8)
    else:
        ax.set_xlim(0, top * 1.3)
    for yi, m in zip(y, stages, strict=True):
        # the label starts past the whisker so the two never overlap
        x = m.max * (1.15 if log else 1.0) + (0 if log else 0.02 * top)
        ax.text(x, yi, f"{m.median:,.0f}/s, {m.mb_per_s:,.0f} MB/s", va="center", fontsize=8)
    if rate is not None:
        ax.axvline(
            rate, color=MODEL_COLOR, ls="--", lw=1.5, label=f"model compute: {rate:,.3g} images/s"
        )
        ax.legend(loc="lower right", fontsize=8)
    unit = "images/s, log scale" if log else "images/s"
    ax.set_xlabel(f"{unit}; {spread_note(stages)}")
    ax.set_title(
        "Throughput of the pipeline up to and including each stage\n"
        "(each prefix timed separately; a later one can be faster)",
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3)


def draw_ablation(ax, ablation: list[Measurement]) -> None:
    """Horizontal bars: each variant's images/s as a fraction of the full pipeline."""
    full = ablation[0].median or 1.0
    names = [m.name for m in ablation]
    fractions = [m.median / full for m in ablation]
    y = list(range(len(ablation)))[::-1]
    colors = [STAGE_COLOR if i == 0 else ABLATION_COLOR for i in range(len(ablation))]
    ax.barh(y, fractions, color=colors)
    ax.set_yticks(y, names)
    for yi, frac, m in zip(y, fractions, ablation, strict=True):
        ax.text(frac, yi, f"  {frac:.2f}  ({m.median:,.0f}/s)", va="center", fontsize=8)
    ax.axvline(1.0, color="#333333", lw=1)
    ax.set_xlabel("throughput relative to the full pipeline (1.0 = full)")
    ax.set_title("Ablation: one optimisation off at a time", fontsize=10)
    ax.set_xlim(0, 1.35 * max([*fractions, 1.0]))
    ax.grid(axis="x", alpha=0.3)


def spread_note(ms: list[Measurement]) -> str:
    """What the bar and whisker of a stage stand for, given how many windows were timed."""
    windows = min((len(m.rates) for m in ms), default=0)
    if windows < 2:
        return "one timed window per stage: no spread shown (bench.repeats >= 2 adds it)"
    return f"bar = median of {windows} timed windows, whisker = min–max"


def whiskers(ms: list[Measurement]) -> tuple[list[float], list[float], list[float]]:
    """Medians and the distances down to min and up to max, for error bars."""
    medians = [m.median for m in ms]
    lows = [max(0.0, m.median - m.min) for m in ms]
    highs = [max(0.0, m.max - m.median) for m in ms]
    return medians, lows, highs
