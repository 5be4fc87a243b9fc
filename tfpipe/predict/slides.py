"""``tfpipe predict``: whole-slide segmentation of a folder of slides into a submission CSV.

For each slide: sliding windows at the training scale (``data.tile_size``
source pixels reduced by ``data.downscale``; the model input size is read
from the checkpoint), background windows skipped with the build-records
tissue filter, fold ensemble and TTA averaged (:mod:`.ensemble`), overlaps
blended (:mod:`.stitch`), the map upscaled and thresholded strip by strip,
and written as competition RLE (``id,predicted``, atomic). With several
``data.mask_classes`` there is one map per class, each pixel takes the most
probable class above its ``predict.threshold``, and the CSV has one RLE per
slide and class, ``id,class,predicted`` (:mod:`.outputs`).

Optional outputs: ``--save-masks DIR`` (full-resolution masks, PNG for small
slides, tiled TIFF otherwise) and ``--save-probs DIR`` (the low-resolution
probability maps ``<id>.npy`` + ``<id>.json``, which ``tfpipe evaluate`` uses
for its threshold sweep), and ``--probabilities DIR`` (the same maps as uint8 tiled
TIFFs ``<id>.tiff``, read window by window by ``data.source: pseudo_labels``).

Memory: the low-resolution accumulators (8 bytes per ``downscale²`` source
pixels, 200 MB for a 20,000² slide at downscale 4) plus one row band of
windows and one column strip; never the full-resolution slide or mask.

Example:
    >>> from tfpipe.config import load_experiment
    >>> from tfpipe.predict.slides import predict_slides
    >>> exp = load_experiment("experiments/kidney.yaml")
    >>> summary = predict_slides(exp, "latest", images="data/hubmap/test")  # doctest: +SKIP
    >>> summary.out  # doctest: +SKIP
    PosixPath('submission.csv')
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tfpipe.config import Experiment
from tfpipe.errors import ConfigError
from tfpipe.io.probmap import write_probability_tiff
from tfpipe.predict.ensemble import (
    EnsemblePredictor,
    check_run_scale,
    resolve_checkpoints,
    trained_input_size,
)
from tfpipe.predict.infer import Predict, SlidePlan, predict_probabilities
from tfpipe.predict.outputs import (
    class_thresholds,
    encode_slide,
    mask_path,
    write_mask_tiff,
    write_predictions,
)
from tfpipe.predict.sources import find_slides, save_probability_map


@dataclass
class SlideResult:
    """What prediction did on one slide."""

    id: str
    height: int
    width: int
    windows: int
    predicted: int
    """Windows sent to the model; the rest were background."""
    positive_pixels: int
    seconds: float
    mask: Path | None = None
    probabilities: Path | None = None
    probability_map: Path | None = None
    """The window-readable ``<id>.tiff`` (``--probabilities``)."""


@dataclass
class PredictSummary:
    """The result of :func:`predict_slides`."""

    out: Path
    checkpoints: list[Path]
    tta: list[str]
    input_size: int
    scale: int
    threshold: float | list[float]
    """``predict.threshold``; one per class with several ``data.mask_classes``."""
    slides: list[SlideResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def windows_per_second(self) -> float:
        """Windows (predicted or skipped) per second of wall time."""
        return sum(s.windows for s in self.slides) / self.seconds if self.seconds else 0.0

    @property
    def megapixels_per_second(self) -> float:
        """Source megapixels per second of wall time."""
        pixels = sum(s.height * s.width for s in self.slides)
        return pixels / 1e6 / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        """Plain values for JSON."""
        return {
            **asdict(self),
            "out": str(self.out),
            "checkpoints": [str(p) for p in self.checkpoints],
            "slides": [
                {
                    **asdict(s),
                    "mask": _str(s.mask),
                    "probabilities": _str(s.probabilities),
                    "probability_map": _str(s.probability_map),
                }
                for s in self.slides
            ],
            "windows_per_second": self.windows_per_second,
            "megapixels_per_second": self.megapixels_per_second,
        }


def predict_slides(
    exp: Experiment,
    checkpoint: str | Path,
    images: str | Path | None = None,
    out: str | Path | None = None,
    save_masks: str | Path | None = None,
    *,
    save_probabilities: str | Path | None = None,
    probabilities: str | Path | None = None,
    predictor: Predict | None = None,
    progress: bool = True,
) -> PredictSummary:
    """Predict every slide in a folder and write the RLE submission CSV.

    Args:
        exp: The experiment (``data`` gives the scale and tissue filter,
            ``predict`` the overlap, TTA, threshold, batch size, blending).
        checkpoint: ``.keras`` file, fold folder, run folder (fold ensemble) or ``"latest"``.
        images: Slide folder; default ``predict.images``.
        out: Submission CSV; default ``predict.out``.
        save_masks: Also write full-resolution masks here; default ``predict.save_masks``.
        save_probabilities: Also write low-resolution probability maps here;
            default ``predict.save_probabilities``.
        probabilities: Also write each slide's probability map as a window-readable
            ``<id>.tiff`` here (:mod:`tfpipe.io.probmap`, for ``data.source:
            pseudo_labels``); default ``predict.probabilities``.
        predictor: Use this batch predictor instead of loading ``checkpoint``
            (tests, custom models); it maps ``(B, n, n, 3)`` uint8 to ``(B, n, n)``.
        progress: Show progress bars and print the summary.

    Returns:
        A :class:`PredictSummary`.

    Raises:
        InputDataError: no slides, or no checkpoint where one was named.
        ConfigError: the checkpoint was trained at another scale, or
            ``data.level`` is not 0.
    """
    cfg = exp.predict
    if exp.data.level != 0:
        raise ConfigError(
            f"predict reads full-resolution slides (data.level=0) so the RLE is in slide "
            f"pixels; got data.level={exp.data.level}"
        )
    slides = find_slides(images or cfg.images, exp.data.image_glob)
    checkpoints: list[Path] = []
    if predictor is None:
        checkpoints = resolve_checkpoints(checkpoint, exp.train.runs_dir)
        check_run_scale(checkpoints, exp.data.downscale)
        predictor = EnsemblePredictor.load(checkpoints, cfg.tta)
    plan = slide_plan(exp, predictor, checkpoints)
    summary = PredictSummary(
        out=Path(out or cfg.out),
        checkpoints=checkpoints,
        tta=list(cfg.tta),
        input_size=plan.window,
        scale=plan.scale,
        threshold=class_thresholds(cfg.threshold, exp.data.mask_classes),
    )
    masks_dir = _folder(save_masks or cfg.save_masks)
    probs_dir = _folder(save_probabilities or cfg.save_probabilities)
    maps_dir = _folder(probabilities or cfg.probabilities)
    if maps_dir is not None and plan.classes > 1:
        raise ConfigError(
            "--probabilities (predict.probabilities) writes one-class maps for pseudo-labels; "
            f"got a model of {plan.classes} classes (data.mask_classes)"
        )
    start = time.perf_counter()
    rles: dict[str, str | list[str]] = {}
    for image_id, path in slides.items():
        result, rles[image_id] = predict_one(
            image_id,
            path,
            predictor,
            plan,
            summary.threshold,
            masks_dir,
            probs_dir,
            progress,
            maps_dir,
        )
        summary.slides.append(result)
    write_predictions(summary.out, rles, exp.data.mask_classes)
    summary.seconds = time.perf_counter() - start
    if progress:
        print_summary(summary)
    return summary


def slide_plan(exp: Experiment, predictor: Predict, checkpoints: list[Path]) -> SlidePlan:
    """Window layout at the training scale, from the experiment and the model.

    The window side is the model's own input size, else the tile size its run
    trained on (``config.yaml``), else the experiment's ``tile_size // downscale``.
    """
    cfg = exp.predict
    window = (
        getattr(predictor, "input_size", None)
        or trained_input_size(checkpoints)
        or exp.data.tile_size // exp.data.downscale
    )
    return SlidePlan(
        window=window,
        scale=exp.data.downscale,
        overlap=cfg.overlap,
        blend=cfg.blend,
        batch_size=cfg.batch_size,
        tissue=exp.data.filter if cfg.skip_background else None,
        classes=len(exp.data.mask_classes or []) or 1,
    )


def predict_one(
    image_id: str,
    path: Path,
    predictor: Predict,
    plan: SlidePlan,
    threshold: float | list[float],
    masks_dir: Path | None,
    probs_dir: Path | None,
    progress: bool,
    maps_dir: Path | None = None,
) -> tuple[SlideResult, str | list[str]]:
    """Predict one slide; returns its result row and its RLE (one per class for several)."""
    start = time.perf_counter()
    prob, stats = predict_probabilities(path, predictor, plan, progress)
    shape = (stats.height, stats.width)
    mask_file = mask_path(masks_dir, image_id, shape) if masks_dir else None
    png = mask_file if mask_file is not None and mask_file.suffix == ".png" else None
    encoder = encode_slide(prob, plan.scale, shape, threshold, png=png)
    if mask_file is not None and png is None:
        write_mask_tiff(mask_file, prob, plan.scale, shape, threshold)
    prob_file = None
    if probs_dir is not None:
        prob_file = save_probability_map(probs_dir, image_id, prob, shape, plan.scale, threshold)
    map_file = None
    if maps_dir is not None:
        map_file = write_probability_tiff(
            maps_dir / f"{image_id}.tiff", prob, shape, plan.scale, threshold
        )
    del prob  # the RLE text can be large (noisy masks): make room first
    rle = encoder.rle()
    result = SlideResult(
        image_id,
        stats.height,
        stats.width,
        stats.windows,
        stats.predicted,
        encoder.positive_pixels,
        time.perf_counter() - start,
        mask_file,
        prob_file,
        map_file,
    )
    return result, rle


def print_summary(summary: PredictSummary) -> None:
    """One table row per slide and the totals, with rich."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"predict -> {summary.out}")
    for col in ("slide", "size", "windows", "predicted", "positive %", "seconds"):
        table.add_column(col, justify="left" if col == "slide" else "right")
    for s in summary.slides:
        table.add_row(
            s.id,
            f"{s.height}x{s.width}",
            str(s.windows),
            str(s.predicted),
            f"{100 * s.positive_pixels / (s.height * s.width):.2f}",
            f"{s.seconds:.1f}",
        )
    console = Console()
    console.print(table)
    models = f"{len(summary.checkpoints)} checkpoint(s)" if summary.checkpoints else "given model"
    console.print(
        f"{models}, TTA {['identity', *summary.tta]}, "
        f"input {summary.input_size} px x{summary.scale}, "
        f"threshold {summary.threshold}: {summary.windows_per_second:.1f} windows/s, "
        f"{summary.megapixels_per_second:.1f} Mpx/s"
    )


def _folder(path: str | Path | None) -> Path | None:
    if path is None:
        return None
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None
