"""Dice per class of multi-class predictions (``tfpipe evaluate`` with several classes).

With ``data.mask_classes`` of K > 1 classes, ``tfpipe predict`` writes one RLE
per slide and class (``id,class,predicted``), class-index masks (0, 1..K) and
``(h, w, K)`` probability maps. This module scores them class by class, in the
same memory-bounded currency as the binary case (run intervals,
:mod:`tfpipe.predict.intervals`):

* **pred**: a CSV ``id,class,predicted``, a folder of class-index mask images,
  or a folder of ``(h, w, K)`` probability maps (``--save-probs``; a pixel's
  class is the most probable above the saved thresholds, as in ``predict``);
* **truth**: a CSV ``id,class,encoding``, or a folder of class-index mask
  images (the ``mask_images`` layout: value k is class k; 255, ignore, counts
  as background here).

For every class: dice per slide, their mean and the global dice (a binary
:class:`~tfpipe.predict.evaluate.EvalReport` each); overall: the means of
those over the classes. With probability maps the sweep applies one threshold
to every class at a time and reports each class's best (set them per class with
``predict.threshold: {class: t}``). A class absent from a CSV for a slide is an
empty mask there.

Example:
    >>> report = evaluate_classes("sub.csv", "masks/", ["healthy", "sclerotic"])  # doctest: +SKIP
    >>> report.class_dice()  # doctest: +SKIP
    {'healthy': 0.81, 'sclerotic': 0.64}
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfpipe.errors import ConfigError, InputDataError
from tfpipe.io.masks import csv_columns, open_mask_image, read_class_rle_csv
from tfpipe.io.rle import decode_window, parse_rle
from tfpipe.predict.evaluate import (
    DEFAULT_THRESHOLDS,
    EvalReport,
    SlideScore,
    print_report,
    score_runs,
    sweep_rows,
    write_report_json,
)
from tfpipe.predict.intervals import StripRleEncoder
from tfpipe.predict.sources import MaskSource, ProbabilityMap, SlideMasks, slide_shapes
from tfpipe.predict.stitch import class_index, iter_class_strips, iter_prob_strips, strip_width


@dataclass
class ClassEvalReport:
    """One :class:`EvalReport` per class; the overall scores are means over the classes."""

    classes: dict[str, EvalReport]

    @property
    def slides(self) -> list[SlideScore]:
        """Every (slide, class) score."""
        return [s for report in self.classes.values() for s in report.slides]

    @property
    def mean_dice(self) -> float:
        """Mean over classes of each class's mean dice per slide."""
        return float(np.mean([r.mean_dice for r in self.classes.values()]))

    @property
    def global_dice(self) -> float:
        """Mean over classes of each class's global dice."""
        return float(np.mean([r.global_dice for r in self.classes.values()]))

    def class_dice(self) -> dict[str, float]:
        """Each class's mean dice per slide."""
        return {name: r.mean_dice for name, r in self.classes.items()}

    def to_dict(self) -> dict:
        """Plain values for JSON."""
        return {
            "classes": {name: r.to_dict() for name, r in self.classes.items()},
            "class_dice": self.class_dice(),
            "mean_dice": self.mean_dice,
            "global_dice": self.global_dice,
        }


class ClassMaskSource(SlideMasks):
    """Per-class masks of several slides from a class CSV, index masks or probability maps.

    Args:
        path: CSV ``id,class,<encoding|predicted>``, or a folder of class-index
            mask images or of ``(h, w, K)`` probability maps.
        role: ``"pred"`` or ``"truth"``, named in error messages.
        names: The class names; mask value / map channel k is ``names[k - 1]``.
    """

    def __init__(self, path: str | Path, role: str, names: Sequence[str]) -> None:
        self.path, self.role, self.names = Path(path), role, list(names)
        self.rles: dict[str, dict[str, str]] = {}
        self.masks: dict[str, Path] = {}
        self.probs: dict[str, ProbabilityMap] = {}
        if self.path.is_file():
            self._read_csv()
        else:  # a folder of masks or probability maps, found as for one class
            folder = MaskSource(self.path, role)
            self.masks, self.probs = folder.masks, folder.probs

    def runs(self, image_id: str, shape: tuple[int, int], k: int) -> np.ndarray:
        """``(N, 2)`` column-major runs of class ``k`` (1..K) on slide ``image_id``."""
        if image_id not in self.ids:
            raise InputDataError(f"{self.role} {self.path} has no masks for slide {image_id!r}")
        if image_id in self.rles:
            rle = self.rles[image_id].get(self.names[k - 1], "")
            return parse_rle(rle, shape, f"{self.path} id={image_id} class={self.names[k - 1]}")
        enc = StripRleEncoder(shape[0])
        for x0, strip in self._index_strips(image_id, shape):
            enc.add(x0, (strip == k).view(np.uint8))
        return enc.runs()

    def _index_strips(
        self, image_id: str, shape: tuple[int, int]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Column strips of the slide's class-index mask, left to right."""
        if image_id in self.probs:
            pm = self.probs[image_id]
            prob = pm.load()
            if prob.ndim != 3 or prob.shape[-1] != len(self.names):
                raise InputDataError(
                    f"probability map {pm.path} has shape {prob.shape}; evaluating "
                    f"{len(self.names)} classes needs (h, w, {len(self.names)})"
                )
            thresholds = _thresholds(pm.threshold, len(self.names))
            yield from iter_class_strips(prob, pm.scale, shape, thresholds)
            return
        path = self.masks[image_id]
        with open_mask_image(path, binary=False) as m:
            if (m.height, m.width) != tuple(shape):
                raise InputDataError(
                    f"mask {path} is {m.height}x{m.width} but its slide is {shape[0]}x{shape[1]}"
                )
            step = strip_width(m.height, 1)
            for x0 in range(0, m.width, step):
                yield x0, m.read_window(0, x0, m.height, min(step, m.width - x0))

    def _read_csv(self) -> None:
        if "class" not in csv_columns(self.path):
            raise InputDataError(
                f"{self.role} {self.path} has no 'class' column; evaluating classes "
                f"{self.names} needs a CSV id,class,<encoding|predicted> (or a mask folder)"
            )
        self.rles = read_class_rle_csv(self.path)
        unknown = sorted({n for per in self.rles.values() for n in per} - set(self.names))
        if unknown:
            raise InputDataError(
                f"{self.role} {self.path} has class {unknown[0]!r}, which is not one of "
                f"the classes evaluated {self.names}"
            )


def csv_class_names(path: str | Path) -> list[str] | None:
    """The class names of a CSV ``id,class,...`` in order of first appearance (None: no
    ``class`` column, or not a CSV file)."""
    path = Path(path)
    if not path.is_file() or "class" not in csv_columns(path):
        return None
    names: dict[str, None] = {}
    for per_class in read_class_rle_csv(path).values():
        names.update(dict.fromkeys(per_class))
    return list(names)


def evaluate_classes(
    pred: str | Path,
    truth: str | Path,
    names: Sequence[str],
    images: str | Path | None = None,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    json_path: str | Path | None = None,
    verbose: bool = True,
) -> ClassEvalReport:
    """Score multi-class predictions against the truth, class by class and slide by slide.

    Args:
        pred, truth: See the module notes.
        names: Class names in mask-value order (``data.mask_classes``).
        images: Slide folder, for sizes the inputs do not give (CSV only).
        thresholds: Thresholds of the sweep (probability maps only).
        json_path: Also write the report (:meth:`ClassEvalReport.to_dict`) as JSON here.
        verbose: Print a table per class and the class summary.

    Raises:
        InputDataError: a predicted slide has no truth, a size is unknown, an
            input is malformed or names a class not in ``names``.
    """
    if len(names) != len(set(names)) or not names:
        raise ConfigError(f"classes to evaluate must be distinct names; got {list(names)}")
    pred_src = ClassMaskSource(pred, "pred", names)
    truth_src = ClassMaskSource(truth, "truth", names)
    missing = [i for i in pred_src.ids if i not in truth_src.ids]
    if missing:
        raise InputDataError(
            f"truth {truth_src.path} has no mask for predicted slide(s) {', '.join(missing)}"
        )
    ids = pred_src.ids
    # slide_shapes asks each source for .shape(id): these answer like MaskSource.
    shapes = slide_shapes(ids, Path(images) if images else None, pred_src, truth_src)
    reports = {name: EvalReport(slides=[]) for name in names}
    counts = np.zeros((len(names), len(ids), len(thresholds), 2), np.int64)
    for j, image_id in enumerate(ids):
        truth_runs = [
            truth_src.runs(image_id, shapes[image_id], k) for k in range(1, len(names) + 1)
        ]
        for k, name in enumerate(names, start=1):
            pred_runs = pred_src.runs(image_id, shapes[image_id], k)
            reports[name].slides.append(score_runs(image_id, pred_runs, truth_runs[k - 1]))
        if pred_src.has_probabilities:
            counts[:, j] = sweep_classes(pred_src.probs[image_id], truth_runs, thresholds)
    if pred_src.has_probabilities:
        for k, name in enumerate(names):
            truth_pixels = np.array([s.truth_pixels for s in reports[name].slides], np.int64)
            reports[name].sweep = sweep_rows(thresholds, counts[k], truth_pixels)
    report = ClassEvalReport(reports)
    if json_path is not None:
        write_report_json(Path(json_path), report.to_dict())
    if verbose:
        print_class_report(report)
    return report


def sweep_classes(
    pm: ProbabilityMap, truth: list[np.ndarray], thresholds: Sequence[float]
) -> np.ndarray:
    """``(K, len(thresholds), 2)`` intersection and predicted pixels of each class, with one
    threshold for every class at a time (the class of a pixel as ``predict`` decides it)."""
    height, classes = pm.height, len(truth)
    counts = np.zeros((classes, len(thresholds), 2), np.int64)
    for x0, strip in iter_prob_strips(pm.load(), pm.scale, pm.shape):
        width = strip.shape[1]
        truth_strips = [decode_window(t, height, 0, x0, height, width) > 0 for t in truth]
        for i, t in enumerate(thresholds):
            index = class_index(strip, [t] * classes)
            for k in range(classes):
                predicted = index == k + 1
                counts[k, i, 0] += np.count_nonzero(predicted & truth_strips[k])
                counts[k, i, 1] += np.count_nonzero(predicted)
    return counts


def print_class_report(report: ClassEvalReport) -> None:
    """Each class's tables (as the binary report), then dice per class and the means."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for name, r in report.classes.items():
        console.rule(f"class {name}")
        print_report(r)
    table = Table(title="dice per class")
    for col in ("class", "mean dice", "global dice", "best threshold"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, r in report.classes.items():
        best = r.best_threshold
        table.add_row(
            name, f"{r.mean_dice:.4f}", f"{r.global_dice:.4f}", "" if best is None else f"{best}"
        )
    console.print(table)
    console.print(
        f"mean over {len(report.classes)} classes: mean dice {report.mean_dice:.4f}   "
        f"global dice {report.global_dice:.4f}"
    )


def _thresholds(value: float | list[float], classes: int) -> list[float]:
    values = value if isinstance(value, list) else [float(value)] * classes
    if len(values) != classes:
        raise InputDataError(f"{classes} class maps need {classes} thresholds; got {values}")
    return values
