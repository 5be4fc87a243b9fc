"""Dice of whole-slide predictions against ground truth, a threshold sweep and an overlay.

``tfpipe evaluate --pred P --truth T`` reports, per slide and overall:

* **dice per slide** ``2|P∩T| / (|P|+|T|)`` and its **mean**, and the
  **global dice** over all pixels of all slides (large slides weigh more);
* a **threshold sweep** (0.30 to 0.70 in steps of 0.05) when ``P`` is a folder
  of probability maps from ``tfpipe predict --save-probs``: run it on the
  validation folds and pick the threshold there, never on the leaderboard;
* an **overlay PNG** of true positives, false positives and false negatives;
* with several classes (``classes``, or a ``pred`` CSV ``id,class,predicted``),
  all of the above but the overlay per class, and their means over the classes
  (:mod:`tfpipe.predict.class_eval`).

Memory stays bounded for any slide size: masks are compared as run intervals
(:func:`tfpipe.predict.intervals.intersection_size`, no pixels decoded), and the
sweep upscales one column strip at a time.

Example:
    >>> from tfpipe.predict.evaluate import evaluate
    >>> report = evaluate("submission.csv", "data/test.csv", images="data/test")  # doctest: +SKIP
    >>> round(report.global_dice, 3)  # doctest: +SKIP
    0.912
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tfpipe.errors import ConfigError, InputDataError
from tfpipe.io.rle import decode_window
from tfpipe.predict.intervals import dice_score, intersection_size, run_pixels
from tfpipe.predict.overlay import write_overlay
from tfpipe.predict.sources import MaskSource, ProbabilityMap, find_slides, slide_shapes
from tfpipe.predict.stitch import iter_prob_strips

if TYPE_CHECKING:
    from tfpipe.predict.class_eval import ClassEvalReport

DEFAULT_THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(9))


@dataclass
class SlideScore:
    """Dice of one slide and the pixel counts behind it."""

    id: str
    dice: float
    intersection: int
    pred_pixels: int
    truth_pixels: int


@dataclass
class SweepRow:
    """Dice of all slides at one threshold."""

    threshold: float
    global_dice: float
    mean_dice: float


@dataclass
class EvalReport:
    """What ``evaluate`` found; ``global_dice`` and ``mean_dice`` summarise ``slides``."""

    slides: list[SlideScore]
    sweep: list[SweepRow] = field(default_factory=list)
    overlay: Path | None = None

    @property
    def global_dice(self) -> float:
        """Dice over all pixels of all slides."""
        return dice_score(
            sum(s.intersection for s in self.slides),
            sum(s.pred_pixels for s in self.slides),
            sum(s.truth_pixels for s in self.slides),
        )

    @property
    def mean_dice(self) -> float:
        """Mean of the per-slide dice (each slide counts once, as on the leaderboard)."""
        return float(np.mean([s.dice for s in self.slides])) if self.slides else 0.0

    @property
    def best_threshold(self) -> float | None:
        """Threshold of the sweep with the highest mean dice (None without a sweep)."""
        if not self.sweep:
            return None
        return max(self.sweep, key=lambda r: (r.mean_dice, -abs(r.threshold - 0.5))).threshold

    def to_dict(self) -> dict:
        """Plain values for JSON."""
        d = asdict(self)
        d.update(
            overlay=str(self.overlay) if self.overlay else None,
            global_dice=self.global_dice,
            mean_dice=self.mean_dice,
            best_threshold=self.best_threshold,
        )
        return d


def evaluate(
    pred: str | Path,
    truth: str | Path,
    images: str | Path | None = None,
    overlay: str | Path | None = None,
    *,
    overlay_id: str | None = None,
    region: tuple[int, int, int, int] | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    json_path: str | Path | None = None,
    verbose: bool = True,
    classes: Sequence[str] | None = None,
) -> EvalReport | ClassEvalReport:
    """Score predicted masks against the truth, slide by slide (and class by class).

    Args:
        pred: Submission CSV (``id,predicted``), folder of mask images, or folder
            of probability maps (``--save-probs``; enables the threshold sweep).
        truth: RLE CSV (``id,encoding``) or folder of mask images.
        images: Slide folder: gives slide sizes for RLE-only inputs and the
            overlay's background.
        overlay: Write an overlay PNG of one slide here.
        overlay_id: Slide drawn in the overlay; default the first one.
        region: ``(y, x, h, w)`` drawn in the overlay; default the whole slide.
        thresholds: Thresholds of the sweep.
        json_path: Also write the report (:meth:`EvalReport.to_dict`) as JSON here.
        verbose: Print the tables.
        classes: Class names in mask-value order (``data.mask_classes``): score each
            class (:mod:`tfpipe.predict.class_eval`). Default: the classes of a
            ``pred`` CSV with a ``class`` column, else one binary mask.

    Returns:
        An :class:`EvalReport` over the slides of ``pred``, or a
        :class:`~tfpipe.predict.class_eval.ClassEvalReport` for classes.

    Raises:
        InputDataError: a slide of ``pred`` has no truth, a size is unknown, or
            an input is missing or malformed.

    Example:
        >>> r = evaluate("probs/", "data/hubmap/train.csv")  # doctest: +SKIP
        >>> r.best_threshold  # doctest: +SKIP
        0.45
    """
    from tfpipe.predict.class_eval import csv_class_names, evaluate_classes

    names = list(classes) if classes else csv_class_names(pred)
    if names is not None:
        if overlay is not None:
            raise ConfigError(
                f"--overlay draws one binary mask; got classes {names} (evaluate them without it)"
            )
        return evaluate_classes(
            pred, truth, names, images, thresholds=thresholds, json_path=json_path, verbose=verbose
        )
    pred_src, truth_src = MaskSource(pred, "pred"), MaskSource(truth, "truth")
    images = Path(images) if images is not None else None
    ids = matched_ids(pred_src, truth_src)
    shapes = slide_shapes(ids, images, pred_src, truth_src)
    report = EvalReport(slides=[])
    counts = np.zeros((len(ids), len(thresholds), 2), np.int64)
    for k, image_id in enumerate(ids):
        pred_runs = pred_src.runs(image_id, shapes[image_id])
        truth_runs = truth_src.runs(image_id, shapes[image_id])
        score = score_runs(image_id, pred_runs, truth_runs)
        report.slides.append(score)
        if pred_src.has_probabilities:
            counts[k] = sweep_slide(pred_src.probs[image_id], truth_runs, thresholds)
        if overlay is not None and image_id == (overlay_id or ids[0]):
            slide = find_slides(images).get(image_id) if images is not None else None
            title = f"{image_id}  dice {score.dice:.4f}"
            report.overlay = write_overlay(
                overlay, pred_runs, truth_runs, shapes[image_id], slide, region, title=title
            )
    if overlay is not None and report.overlay is None:
        raise InputDataError(f"overlay slide {overlay_id!r} is not among the predictions {ids}")
    if pred_src.has_probabilities:
        truth_pixels = np.array([s.truth_pixels for s in report.slides], np.int64)
        report.sweep = sweep_rows(thresholds, counts, truth_pixels)
    if json_path is not None:
        write_report_json(Path(json_path), report.to_dict())
    if verbose:
        print_report(report)
    return report


def matched_ids(pred: MaskSource, truth: MaskSource) -> list[str]:
    """The predicted slides; each must have a truth mask (truth may hold more slides)."""
    missing = [i for i in pred.ids if i not in truth.ids]
    if missing:
        raise InputDataError(
            f"truth {truth.path} has no mask for predicted slide(s) {', '.join(missing)}"
        )
    return pred.ids


def parse_region(text: str) -> tuple[int, int, int, int]:
    """``"Y,X,H,W"`` to a region tuple.

    Raises:
        ConfigError: not four integers, or a negative offset or empty size.

    Example:
        >>> parse_region("0,1024,512,512")
        (0, 1024, 512, 512)
    """
    try:
        y, x, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--region must be Y,X,H,W (four integers); got {text!r}") from None
    if y < 0 or x < 0 or h <= 0 or w <= 0:
        raise ConfigError(f"--region needs Y, X >= 0 and H, W > 0; got {text!r}")
    return y, x, h, w


def score_runs(image_id: str, pred: np.ndarray, truth: np.ndarray) -> SlideScore:
    """Dice of two run lists (see :mod:`tfpipe.predict.intervals`)."""
    inter, p, t = intersection_size(pred, truth), run_pixels(pred), run_pixels(truth)
    return SlideScore(image_id, dice_score(inter, p, t), inter, p, t)


def sweep_slide(pm: ProbabilityMap, truth: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """``(len(thresholds), 2)`` counts of intersection and predicted pixels per threshold.

    The map is upscaled one column strip at a time, exactly as ``predict``
    does before thresholding, and each strip is compared with the same
    columns of the truth decoded from its runs.
    """
    height = pm.height
    counts = np.zeros((len(thresholds), 2), np.int64)
    for x0, strip in iter_prob_strips(pm.load(), pm.scale, pm.shape):
        truth_strip = decode_window(truth, height, 0, x0, height, strip.shape[1]).astype(bool)
        on_truth = strip[truth_strip]
        for i, t in enumerate(thresholds):
            counts[i, 0] += np.count_nonzero(on_truth > t)
            counts[i, 1] += np.count_nonzero(strip > t)
    return counts


def sweep_rows(
    thresholds: Sequence[float], counts: np.ndarray, truth_pixels: np.ndarray
) -> list[SweepRow]:
    """Global and mean dice per threshold from per-slide ``(inter, pred)`` counts.

    Example:
        >>> c = np.array([[[2, 2], [1, 1]]])          # one slide, two thresholds
        >>> [(r.threshold, r.global_dice) for r in sweep_rows([0.4, 0.6], c, np.array([4]))]
        [(0.4, 0.6666666666666666), (0.6, 0.4)]
    """
    rows = []
    for i, t in enumerate(thresholds):
        inter, pred = counts[:, i, 0], counts[:, i, 1]
        per_slide = [
            dice_score(int(a), int(b), int(c))
            for a, b, c in zip(inter, pred, truth_pixels, strict=True)
        ]
        rows.append(
            SweepRow(
                float(t),
                dice_score(int(inter.sum()), int(pred.sum()), int(truth_pixels.sum())),
                float(np.mean(per_slide)) if per_slide else 0.0,
            )
        )
    return rows


def write_report_json(path: Path, data: dict) -> None:
    """Write a report's JSON under a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def print_report(report: EvalReport) -> None:
    """Per-slide table, the sweep table and the overall numbers, with rich."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="dice per slide")
    for col in ("slide", "dice", "predicted px", "truth px", "intersection px"):
        table.add_column(col, justify="left" if col == "slide" else "right")
    for s in report.slides:
        table.add_row(
            s.id,
            f"{s.dice:.4f}",
            f"{s.pred_pixels:,}",
            f"{s.truth_pixels:,}",
            f"{s.intersection:,}",
        )
    console.print(table)
    if report.sweep:
        sweep = Table(title="threshold sweep")
        for col in ("threshold", "global dice", "mean dice"):
            sweep.add_column(col, justify="right")
        best = report.best_threshold
        for r in report.sweep:
            mark = " *" if r.threshold == best else ""
            sweep.add_row(f"{r.threshold:.2f}{mark}", f"{r.global_dice:.4f}", f"{r.mean_dice:.4f}")
        console.print(sweep)
        console.print(f"best threshold (mean dice): {best:.2f}")
    console.print(
        f"global dice {report.global_dice:.4f}   mean dice {report.mean_dice:.4f}   "
        f"slides {len(report.slides)}"
    )
    if report.overlay:
        console.print(f"overlay: {report.overlay}")
