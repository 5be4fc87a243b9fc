"""One slide to one low-resolution probability map: read, filter, batch, predict, stitch.

The slide is read as row bands of windows (``tfpipe.records.tiling.iter_bands``,
the same reader build-records uses: a strip-organised TIFF is decoded once,
not once per overlapping window). Each window is reduced to the model input
with the training resize (``resize_image``, ``cv2.INTER_AREA``) and dropped
when the build-records tissue filter calls it background, so the model only
sees what it was trained on. Reading runs in a background thread while the
model works on the previous batch.

Example:
    >>> from tfpipe.predict.infer import SlidePlan, predict_probabilities
    >>> prob, stats = predict_probabilities("slide.tiff", predictor, plan)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfpipe.config import TissueFilter
from tfpipe.errors import ConfigError
from tfpipe.io.tiff import open_slide
from tfpipe.predict.stitch import Stitcher
from tfpipe.predict.windows import (
    BlendKind,
    Window,
    blend_weights,
    lowres_shape,
    window_grid,
)
from tfpipe.records.tiling import Decision, decide, iter_bands, resize_image

# Maps a uint8 batch (B, n, n, C) to probabilities (B, n, n), or (B, n, n, K) for K classes.
Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SlidePlan:
    """How windows are laid out, filtered and batched (from the experiment's data/predict)."""

    window: int
    """Model input side (pixels of the low-resolution grid)."""
    scale: int
    """Source pixels per model pixel: the training ``data.downscale``."""
    overlap: float = 0.25
    blend: BlendKind = "hann"
    batch_size: int = 8
    tissue: TissueFilter | None = field(default_factory=TissueFilter)
    """Skip windows this filter calls background; None predicts every window."""
    classes: int = 1
    """Class maps the predictor returns: 1 (``(B, n, n)``) or K (``(B, n, n, K)``)."""

    @property
    def source_window(self) -> int:
        return self.window * self.scale


@dataclass
class Batch:
    """Windows to predict together, and how many background windows were skipped before them."""

    windows: list[Window]
    images: np.ndarray
    skipped: int


@dataclass
class SlideStats:
    """Counts of one slide's prediction."""

    height: int
    width: int
    windows: int
    predicted: int


def predict_probabilities(
    path: str | Path,
    predict: Predict,
    plan: SlidePlan,
    progress: bool = True,
) -> tuple[np.ndarray, SlideStats]:
    """Predict every window of a slide and stitch them at low resolution.

    Args:
        path: The slide (TIFF, read windowed via ``open_slide``).
        predict: Batch predictor, e.g. an ``EnsemblePredictor``.
        plan: Window size, scale, overlap, blending, batching and tissue filter.
        progress: Show a tqdm bar over the windows.

    Returns:
        The ``(ceil(H/scale), ceil(W/scale))`` float32 probability map (with a
        last axis of ``plan.classes`` for several classes) and counts.

    Raises:
        ConfigError: the predictor returns another number of class maps than
            ``plan.classes``.
    """
    from tqdm.auto import tqdm

    path = Path(path)
    with open_slide(path) as slide:
        shape = (slide.height, slide.width)
        grid = window_grid(shape, plan.window, plan.overlap, plan.scale)
        weights = blend_weights(plan.window, plan.blend)
        stitcher = Stitcher(lowres_shape(shape, plan.scale), weights, plan.classes)
        batches = iter_batches(slide.read_window, grid, plan, lowres_shape(shape, plan.scale)[1])
        with tqdm(total=len(grid), desc=path.stem, unit="win", disable=not progress) as bar:
            for batch in prefetch(batches):
                if batch.windows:
                    probs = check_classes(predict(batch.images), plan.classes)
                    for window, prob in zip(batch.windows, probs, strict=True):
                        stitcher.add(window, prob)
                bar.update(len(batch.windows) + batch.skipped)
    stats = SlideStats(shape[0], shape[1], len(grid), stitcher.windows_added)
    return stitcher.probabilities(), stats


def check_classes(probs: np.ndarray, classes: int) -> np.ndarray:
    """``probs`` if it holds ``classes`` maps per window (one class: ``(B, n, n)``, or
    ``(B, n, n, 1)`` given as that).

    Raises:
        ConfigError: another shape, naming both counts.
    """
    got = 1 if probs.ndim == 3 else int(probs.shape[-1]) if probs.ndim == 4 else -1
    if got != classes or (classes > 1 and probs.ndim != 4):
        raise ConfigError(
            f"the model predicts {got} class map(s) per window (output shape "
            f"{tuple(probs.shape)}) but predict expects {classes} (data.mask_classes / "
            "model.classes); use the checkpoint trained on these classes"
        )
    return probs[..., 0] if classes == 1 and probs.ndim == 4 else probs


def iter_batches(
    read: Callable[[int, int, int, int], np.ndarray],
    grid: list[Window],
    plan: SlidePlan,
    lowres_width: int,
) -> Iterator[Batch]:
    """Batches of resized tissue windows, in grid order, from row bands of the slide."""
    rows: dict[int, list[Window]] = {}
    for window in grid:
        rows.setdefault(window.y, []).append(window)
    src = plan.source_window
    ys = [y * plan.scale for y in rows]
    windows: list[Window] = []
    images: list[np.ndarray] = []
    skipped = 0
    # A slide narrower than one window still gets whole windows (zero-padded).
    width = max(lowres_width, plan.window) * plan.scale
    for y_src, band in iter_bands(read, ys, src, width):
        for window in rows[y_src // plan.scale]:
            x_src = window.x * plan.scale
            image = resize_image(band[:, x_src : x_src + src], plan.window)
            if image.shape[-1] == 1:  # grayscale slide, RGB model
                image = np.repeat(image, 3, axis=-1)
            if plan.tissue is not None and _is_background(image, plan.tissue):
                skipped += 1
                continue
            windows.append(window)
            images.append(image)
            if len(windows) == plan.batch_size:
                yield Batch(windows, np.stack(images), skipped)
                windows, images, skipped = [], [], 0
    if windows or skipped:
        stacked = (
            np.stack(images) if images else np.zeros((0, plan.window, plan.window, 3), np.uint8)
        )
        yield Batch(windows, stacked, skipped)


def _is_background(image: np.ndarray, tissue: TissueFilter) -> bool:
    # build-records' own rule for an unlabelled tile (no mask, so no empty-tile sampling).
    return decide(image, None, tissue, 1.0, (0, "", 0, 0)) is Decision.BACKGROUND


def prefetch(batches: Iterator[Batch]) -> Iterator[Batch]:
    """Read the next batch in a worker thread while the caller predicts the current one.

    Decoding (tifffile/zarr, OpenCV) and TensorFlow both release the GIL, so
    the two overlap; exceptions from the reader surface in the caller.
    """
    done = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfpipe-read") as pool:
        pending = pool.submit(next, batches, done)
        while True:
            batch = pending.result()
            if batch is done:
                return
            pending = pool.submit(next, batches, done)
            yield batch
