"""Learning curves: training and validation loss and metric per epoch, per fold, as PNGs.

Every run keeps ``curves.png`` in its folder: one column per fold, the loss
above and the run's metric (dice, or AUC for classification) below;
training solid, validation dashed in the same colour; a star on the best
epoch (highest validation metric: the epoch ``best.keras`` holds) and the
epochs after it shaded. A validation curve that falls in the shaded span
while the training curve keeps improving is overfitting, visible at a glance.

The trainer redraws the figure after every epoch from the folds'
``history.csv`` files (:class:`tfpipe.train.callbacks.LearningCurves`),
through a temporary file renamed into place: a killed run keeps the curve of
its last epoch, and a resumed run continues it (its history survives the
interruption). ``tfpipe runs --plot`` (:func:`plot_runs`) draws several
runs' validation curves, averaged over their folds, on one figure.

This module imports no TensorFlow; matplotlib (the ``[train]`` extra) is
imported only when drawing, with the Agg backend (no display needed).

Example:
    >>> from tfpipe.train.curves import run_curves, write_run_curves
    >>> [c.best_epoch for c in run_curves("runs/20250101-120000-kidney")]  # doctest: +SKIP
    [6, 5, 7, 6]
    >>> write_run_curves("runs/20250101-120000-kidney")                     # doctest: +SKIP
    PosixPath('runs/20250101-120000-kidney/curves.png')
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tfpipe.errors import ConfigError
from tfpipe.train.rundir import RunDir, list_runs, resolve_run

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CURVES_NAME = "curves.png"
MAX_OVERLAY = 8
"""Runs that ``tfpipe runs --plot`` draws when none are named: the newest finished ones."""
METRICS = ("dice", "auc")
LOSS_COLOR = "tab:blue"
METRIC_COLOR = "tab:orange"
AFTER_BEST_COLOR = "tab:red"


@dataclass(frozen=True)
class Curve:
    """Series drawn for one fold (or one run's mean over folds); epochs are 1-based and a
    value the history lacks is NaN."""

    label: str
    metric: str
    epochs: list[int]
    loss: list[float]
    val_loss: list[float]
    score: list[float]
    """The metric on the training batches (the history's ``dice`` / ``auc``)."""
    val_score: list[float]

    @property
    def best(self) -> tuple[int, float] | None:
        """``(epoch, validation score)`` of the best epoch (the first of equals), or None."""
        found: tuple[int, float] | None = None
        for epoch, value in zip(self.epochs, self.val_score, strict=True):
            if math.isfinite(value) and (found is None or value > found[1]):
                found = (epoch, value)
        return found


def history_metric(rows: Sequence[dict[str, float]]) -> str:
    """The metric a history logs: ``dice`` (segmentation) or ``auc`` (classification)."""
    for metric in METRICS:
        if any(f"val_{metric}" in row or metric in row for row in rows):
            return metric
    return METRICS[0]


def fold_curve(label: str, rows: Sequence[dict[str, float]], metric: str | None = None) -> Curve:
    """The series of one fold from its ``history.csv`` rows (:func:`~rundir.read_history`).

    Example:
        >>> c = fold_curve("fold 0", [{"epoch": 0, "loss": 0.9, "val_loss": 0.8,
        ...                            "dice": 0.3, "val_dice": 0.4}])
        >>> c.epochs, c.val_score, c.best
        ([1], [0.4], (1, 0.4))
    """
    metric = metric or history_metric(rows)

    def column(key: str) -> list[float]:
        return [float(row.get(key, math.nan)) for row in rows]

    return Curve(
        label=label,
        metric=metric,
        epochs=[int(row["epoch"]) + 1 for row in rows],
        loss=column("loss"),
        val_loss=column("val_loss"),
        score=column(metric),
        val_score=column(f"val_{metric}"),
    )


def run_curves(run: RunDir | str | Path, metric: str | None = None) -> list[Curve]:
    """One :class:`Curve` per fold of ``run`` with at least one finished epoch, in fold order."""
    run = run if isinstance(run, RunDir) else RunDir(Path(run))
    curves = []
    for folder in run.fold_dirs():
        rows = run.history(int(folder.name[4:]))
        if rows:
            curves.append(fold_curve(f"fold {folder.name[4:]}", rows, metric))
    return curves


def mean_curve(label: str, curves: Sequence[Curve]) -> Curve:
    """The mean over folds at every epoch (over the folds that reached it; NaN ignored)."""
    epochs = sorted({e for c in curves for e in c.epochs})

    def mean(field: str) -> list[float]:
        out = []
        for epoch in epochs:
            values = [
                v
                for c in curves
                for e, v in zip(c.epochs, getattr(c, field), strict=True)
                if e == epoch and math.isfinite(v)
            ]
            out.append(statistics.fmean(values) if values else math.nan)
        return out

    metrics = {c.metric for c in curves}
    return Curve(
        label=label,
        metric=metrics.pop() if len(metrics) == 1 else "/".join(sorted(metrics)),
        epochs=epochs,
        loss=mean("loss"),
        val_loss=mean("val_loss"),
        score=mean("score"),
        val_score=mean("val_score"),
    )


def write_run_curves(
    run: RunDir | str | Path, metric: str | None = None, out: str | Path | None = None
) -> Path | None:
    """Draw ``run``'s learning curves into ``out`` (default ``<run>/curves.png``), atomically.

    Returns:
        The PNG's path, or None when no fold has finished an epoch yet.
    """
    run = run if isinstance(run, RunDir) else RunDir(Path(run))
    curves = run_curves(run, metric)
    if not curves:
        return None
    return save_png(draw_run(run.name, curves), Path(out) if out else run.path / CURVES_NAME)


def plot_runs(
    runs_dir: str | Path, specs: Sequence[str] = (), out: str | Path | None = None
) -> Path:
    """``tfpipe runs --plot``: several runs' validation curves (mean over folds) on one PNG.

    Args:
        runs_dir: Folder holding the run folders.
        specs: Runs to draw (folder, name, name suffix or ``latest``); none: the
            :data:`MAX_OVERLAY` newest finished runs.
        out: The PNG (default ``<runs_dir>/curves.png``).

    Returns:
        The PNG's path (also printed).

    Raises:
        ConfigError: an unknown run, a named run with no finished epoch, or no
            finished run to draw.

    Example:
        >>> plot_runs("runs", ["latest"], out="latest.png")  # doctest: +SKIP
        learning curves of 1 run(s) (20250101-120000-kidney): latest.png
    """
    runs = select_runs(Path(runs_dir), specs)
    means = []
    for run in runs:
        curves = run_curves(run)
        means.append(mean_curve(f"{run.name} ({len(curves)} fold(s))", curves))
    path = save_png(draw_overlay(means), Path(out) if out else Path(runs_dir) / CURVES_NAME)
    print(f"learning curves of {len(runs)} run(s) ({', '.join(r.name for r in runs)}): {path}")
    return path


def select_runs(runs_dir: Path, specs: Sequence[str]) -> list[RunDir]:
    """The named runs (each once), or the newest finished runs that have a history."""
    if specs:
        runs: dict[Path, RunDir] = {}
        for spec in specs:
            run = resolve_run(runs_dir, spec)
            runs.setdefault(run.path.resolve(), run)
        empty = [r.name for r in runs.values() if not run_curves(r)]
        if empty:
            raise ConfigError(
                f"--plot draws finished epochs; no fold of {', '.join(empty)} has a row in "
                "its history.csv yet"
            )
        return list(runs.values())
    runs = list_runs(runs_dir)
    done = [r for r in runs if r.finished and run_curves(r)]
    if not done:
        raise ConfigError(
            f"--plot without run names draws the finished runs that have a history.csv; got "
            f"none in {runs_dir} ({len(runs)} run folder(s), {sum(r.finished for r in runs)} "
            "finished). Name the runs to draw (folder, name or 'latest') to include unfinished ones"
        )
    return done[-MAX_OVERLAY:]


def _figure(width: float, height: float) -> Figure:
    # No pyplot: no global figure registry to leak into, no backend switch for the process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def draw_run(title: str, curves: Sequence[Curve]) -> Figure:
    """One column per fold: loss above, metric below; training solid, validation dashed."""
    fig = _figure(max(5.5, 3.8 * len(curves)), 6.4)
    axes = fig.subplots(2, len(curves), squeeze=False, sharex="col")
    for k, curve in enumerate(curves):
        loss_ax, metric_ax = axes[0][k], axes[1][k]
        draw_pair(loss_ax, curve.epochs, curve.loss, curve.val_loss, LOSS_COLOR, "loss")
        draw_pair(metric_ax, curve.epochs, curve.score, curve.val_score, METRIC_COLOR, curve.metric)
        metric_ax.set_xlabel("epoch")
        best = curve.best
        last = max(curve.epochs)
        if best is None:
            loss_ax.set_title(f"{curve.label}: no validation score yet", fontsize=10)
            continue
        for ax in (loss_ax, metric_ax):
            mark_after_best(ax, best[0], last)
        metric_ax.plot(*best, "*", color=METRIC_COLOR, markersize=14, markeredgecolor="black")
        loss_ax.set_title(
            f"{curve.label}: best val {curve.metric} {best[1]:.4f}, epoch {best[0]}/{last}",
            fontsize=10,
        )
    fig.suptitle(
        f"{title}\ntraining solid, validation dashed; ★ best epoch, shaded: epochs after it",
        fontsize=11,
    )
    return fig


def draw_pair(
    ax: Axes, epochs: list[int], train: list[float], val: list[float], color: str, name: str
) -> None:
    """Training (solid) and validation (dashed, hollow markers) of one quantity, one colour."""
    from matplotlib.ticker import MaxNLocator

    ax.plot(epochs, train, "-o", color=color, markersize=3, label=f"train {name}")
    ax.plot(epochs, val, "--o", color=color, markersize=4, mfc="white", label=f"val {name}")
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)


def mark_after_best(ax: Axes, best: int, last: int) -> None:
    """A dotted line at the best epoch and the epochs after it shaded."""
    ax.axvline(best, color="grey", linestyle=":", linewidth=1)
    if last > best:
        ax.axvspan(best, last, color=AFTER_BEST_COLOR, alpha=0.08, linewidth=0)


def draw_overlay(curves: Sequence[Curve]) -> Figure:
    """Validation loss and metric of several runs, one colour per run, best epoch starred."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(13.0, 5.0)
    loss_ax, metric_ax = fig.subplots(1, 2)
    metrics = sorted({c.metric for c in curves})
    for k, curve in enumerate(curves):
        color = f"C{k % 10}"
        best = curve.best
        loss_ax.plot(curve.epochs, curve.val_loss, "-o", color=color, markersize=3)
        label = curve.label + (f": best {best[1]:.4f} @ epoch {best[0]}" if best else "")
        metric_ax.plot(curve.epochs, curve.val_score, "-o", color=color, markersize=3, label=label)
        if best is not None:
            metric_ax.plot(*best, "*", color=color, markersize=14, markeredgecolor="black")
    for ax, name in ((loss_ax, "loss"), (metric_ax, "/".join(metrics))):
        ax.set_title(f"validation {name} (mean over folds)", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"val {name}")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    metric_ax.legend(fontsize=8)
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """``fig`` as a PNG at ``path``, through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
