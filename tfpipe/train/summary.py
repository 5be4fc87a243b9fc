"""Results of a cross-validated run: one :class:`FoldResult` per fold, one :class:`RunSummary`.

The score of a fold is its validation metric at the best epoch: Dice for
segmentation (with IoU beside it), mean ROC AUC over labels for multi-label
classification (with the AUC of every label). The run's summary gives the
mean, standard deviation and minimum over folds, wall time and training
throughput, and prints as a table.

Example:
    >>> s = summarize("20250101-120000-kidney", "dice", [FoldResult(0, "dice", 0.84),
    ...                                                  FoldResult(1, "dice", 0.80)], 60.0)
    >>> round(s.mean, 2), round(s.min, 2)
    (0.82, 0.8)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class FoldResult:
    """One fold: best-epoch validation scores and how long it took."""

    fold: int
    metric: str
    score: float
    iou: float | None = None
    best_epoch: int = 0
    """1-based epoch of the best checkpoint."""
    epochs: int = 0
    steps: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    """Training throughput, first epoch (tracing, warm-up) excluded when there are several."""
    label_auc: dict[str, float | None] | None = None
    """Classification: ROC AUC of each label (None where the fold has one class only)."""
    class_dice: dict[str, float] | None = None
    """Several mask classes: each class's validation dice at the best epoch (``score`` is
    their mean)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FoldResult:
        return cls(**data)


@dataclass
class RunSummary:
    """What ``train_experiment`` returns and writes to ``summary.json``."""

    run: str
    metric: str
    folds: list[FoldResult] = field(default_factory=list)
    mean: float = math.nan
    std: float = math.nan
    min: float = math.nan
    seconds: float = 0.0
    images_per_second: float = 0.0

    @property
    def scores(self) -> dict[int, float]:
        """``{fold: score}``."""
        return {f.fold: f.score for f in self.folds}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["folds"] = [f.to_json() for f in self.folds]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSummary:
        data = dict(data)
        folds = [FoldResult.from_json(f) for f in data.pop("folds", [])]
        return cls(folds=folds, **data)


def summarize(run: str, metric: str, folds: list[FoldResult], seconds: float) -> RunSummary:
    """Aggregate fold results: mean, population std, min of the scores, mean throughput."""
    scores = np.array([f.score for f in folds], np.float64)
    rates = [f.images_per_second for f in folds if f.images_per_second > 0]
    return RunSummary(
        run=run,
        metric=metric,
        folds=sorted(folds, key=lambda f: f.fold),
        mean=float(scores.mean()) if len(scores) else math.nan,
        std=float(scores.std()) if len(scores) else math.nan,
        min=float(scores.min()) if len(scores) else math.nan,
        seconds=float(seconds),
        images_per_second=float(np.mean(rates)) if rates else 0.0,
    )


def format_seconds(seconds: float) -> str:
    """``95.3`` → ``1m35s``; ``4000`` → ``1h06m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def print_summary(summary: RunSummary, console: Any = None) -> None:
    """Print the per-fold table and the cross-validation line (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{summary.run}: validation {summary.metric} per fold")
    has_iou = any(f.iou is not None for f in summary.folds)
    for column in ("fold", summary.metric, *(["iou"] if has_iou else []), "best epoch"):
        table.add_column(column, justify="right")
    for column in ("steps", "time", "images/s"):
        table.add_column(column, justify="right")
    for f in summary.folds:
        table.add_row(
            str(f.fold),
            f"{f.score:.4f}",
            *([f"{f.iou:.4f}" if f.iou is not None else "-"] if has_iou else []),
            f"{f.best_epoch}/{f.epochs}",
            str(f.steps),
            format_seconds(f.seconds),
            f"{f.images_per_second:.1f}",
        )
    console.print(table)
    for f in summary.folds:
        if f.label_auc:
            labels = ", ".join(
                f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in f.label_auc.items()
            )
            console.print(f"fold {f.fold} AUC per label: {labels}")
        if f.class_dice:
            classes = ", ".join(f"{k} {v:.4f}" for k, v in f.class_dice.items())
            console.print(f"fold {f.fold} dice per class: {classes}")
    console.print(
        f"CV {summary.metric}: {summary.mean:.4f} ± {summary.std:.4f} (min {summary.min:.4f}) "
        f"over {len(summary.folds)} fold(s) in {format_seconds(summary.seconds)}, "
        f"{summary.images_per_second:.1f} images/s"
    )
