"""Turning one slide's probability map into its outputs: RLE, mask file, saved probabilities.

Everything is produced from the low-resolution map without building the
full-resolution mask: the RLE from column strips
(:class:`tfpipe.predict.intervals.StripRleEncoder`), a large mask as a tiled,
compressed TIFF written tile by tile in row-major order (tifffile accepts an
iterator of tiles). Small slides (up to ``PNG_MAX_PIXELS``) get a PNG, which
any viewer opens. Masks hold 0 and 255. Files are written under a temporary
name and renamed, so a failure never leaves half a file behind.

Because cut-independent upscaling (:func:`tfpipe.predict.stitch.upscale_block`)
produces strips and tiles, the RLE decodes exactly to the saved mask.

Several classes (``(h, w, K)`` maps, ``data.mask_classes``): each pixel gets
one class, the most probable above its threshold
(:func:`tfpipe.predict.stitch.class_index`); the RLE of each class is encoded
from the same strips (:class:`ClassRleEncoder`), a saved mask holds the class
index (0 background, k = class k: the ``mask_images`` layout, so it can be
evaluated or trained on), and the CSV has one row per slide and class,
``id,class,predicted`` (:func:`write_predictions`; binary stays ``id,predicted``).

Example:
    >>> from tfpipe.predict.outputs import encode_slide
    >>> rle = encode_slide(prob, 4, (8192, 8192), 0.5).rle()  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfpipe.io.masks import write_class_rle_csv, write_rle_csv
from tfpipe.predict.intervals import StripRleEncoder
from tfpipe.predict.stitch import (
    iter_class_strips,
    iter_class_tiles,
    iter_mask_strips,
    iter_mask_tiles,
)

PNG_MAX_PIXELS = 1 << 24  # 4096 x 4096
TIFF_TILE = 512
DEFAULT_THRESHOLD = 0.5


def encode_slide(
    prob: np.ndarray,
    scale: int,
    shape: tuple[int, int],
    threshold: float | list[float],
    png: Path | None = None,
) -> StripRleEncoder | ClassRleEncoder:
    """Runs of the thresholded, upscaled map, gathered strip by strip.

    ``(h, w, K)`` maps with K thresholds give a :class:`ClassRleEncoder`.

    Args:
        prob: ``(h, w)`` low-resolution probabilities.
        scale: Source pixels per cell.
        shape: ``(H, W)`` of the slide.
        threshold: Foreground when the probability is above it.
        png: Also write the mask as this PNG (the slide must be small; the
            strips are assembled in memory).

    Returns:
        The encoder: ``.rle()`` gives the competition RLE, ``.positive_pixels``
        the foreground count.

    Example:
        >>> enc = encode_slide(np.array([[0.0, 1.0]], np.float32), 2, (2, 4), 0.5)
        >>> enc.rle(), enc.positive_pixels
        ('5 4', 4)
    """
    classes = prob.ndim == 3
    encoder = ClassRleEncoder(shape[0], prob.shape[-1]) if classes else StripRleEncoder(shape[0])
    strips: list[np.ndarray] = []
    if classes:
        pieces = iter_class_strips(prob, scale, shape, _per_class(threshold, prob.shape[-1]))
    else:
        pieces = iter_mask_strips(prob, scale, shape, _single(threshold))
    for x0, strip in pieces:
        encoder.add(x0, strip)
        if png is not None:
            strips.append(strip)
    if png is not None:
        _write_png(png, np.concatenate(strips, axis=1), 1 if classes else 255)
    return encoder


class ClassRleEncoder:
    """One :class:`StripRleEncoder` per class, fed from the same class-index strips.

    Example:
        >>> enc = ClassRleEncoder(height=1, classes=2)
        >>> enc.add(0, np.array([[1, 2, 2, 0]], np.uint8))
        >>> enc.rle(), enc.positive_pixels
        (['1 1', '2 2'], 3)
    """

    def __init__(self, height: int, classes: int) -> None:
        self.encoders = [StripRleEncoder(height) for _ in range(classes)]

    def add(self, x0: int, strip: np.ndarray) -> None:
        """Add a uint8 class-index strip (columns ``x0 ..``; see ``StripRleEncoder.add``)."""
        for k, encoder in enumerate(self.encoders, start=1):
            encoder.add(x0, (strip == k).view(np.uint8))

    @property
    def positive_pixels(self) -> int:
        """Pixels of any class."""
        return sum(e.positive_pixels for e in self.encoders)

    def class_pixels(self) -> list[int]:
        """Pixels of each class."""
        return [e.positive_pixels for e in self.encoders]

    def rle(self) -> list[str]:
        """The competition RLE of each class, in class order."""
        return [e.rle() for e in self.encoders]


def class_thresholds(
    threshold: float | dict[str, float], names: list[str] | None
) -> float | list[float]:
    """``predict.threshold`` for the classes: one number for binary, else one per class.

    Classes a mapping does not name keep 0.5.

    Example:
        >>> class_thresholds({"b": 0.3}, ["a", "b"])
        [0.5, 0.3]
        >>> class_thresholds(0.4, ["a"])
        0.4
    """
    names = names or []
    if isinstance(threshold, dict):
        values = [float(threshold.get(n, DEFAULT_THRESHOLD)) for n in names]
    else:
        values = [float(threshold)] * max(len(names), 1)
    return values if len(values) > 1 else values[0]


def write_predictions(
    path: Path, rles: dict[str, str | list[str]], names: list[str] | None
) -> None:
    """The submission CSV: ``id,predicted`` for binary, ``id,class,predicted`` for classes.

    Example:
        >>> write_predictions(Path("sub.csv"), {"a": ["1 2", ""]}, ["x", "y"])  # doctest: +SKIP
    """
    if len(names or []) <= 1:
        write_rle_csv(path, {i: str(r) for i, r in rles.items()})
        return
    per_class = {
        i: dict(zip(names or [], r, strict=True)) for i, r in rles.items() if isinstance(r, list)
    }
    write_class_rle_csv(path, per_class)


def _single(threshold: float | list[float]) -> float:
    """The threshold of a one-class map (a one-item list is that item)."""
    if isinstance(threshold, list):
        if len(threshold) != 1:
            raise ValueError(f"a one-class map needs one threshold; got {threshold}")
        return float(threshold[0])
    return float(threshold)


def _per_class(threshold: float | list[float], classes: int) -> list[float]:
    values = threshold if isinstance(threshold, list) else [float(threshold)] * classes
    if len(values) != classes:
        raise ValueError(f"{classes} class maps need {classes} thresholds; got {values}")
    return values


def mask_path(folder: Path, image_id: str, shape: tuple[int, int]) -> Path:
    """``<id>.png`` for a small slide, ``<id>.tiff`` otherwise."""
    small = shape[0] * shape[1] <= PNG_MAX_PIXELS
    return folder / f"{image_id}{'.png' if small else '.tiff'}"


def write_mask_tiff(
    path: Path,
    prob: np.ndarray,
    scale: int,
    shape: tuple[int, int],
    threshold: float | list[float],
) -> Path:
    """Write the full-resolution mask as a tiled, zlib-compressed TIFF, tile by tile.

    Binary: 0 / 255; ``(h, w, K)`` maps: class indices 0..K.
    """
    import tifffile

    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if prob.ndim == 3:
        thresholds = _per_class(threshold, prob.shape[-1])
        tiles = iter_class_tiles(prob, scale, shape, thresholds, TIFF_TILE)
    else:
        cut = _single(threshold)
        tiles = (t * np.uint8(255) for t in iter_mask_tiles(prob, scale, shape, cut, TIFF_TILE))
    try:
        tifffile.imwrite(
            tmp,
            tiles,
            shape=shape,
            dtype=np.uint8,
            tile=(TIFF_TILE, TIFF_TILE),
            compression="zlib",
            photometric="minisblack",
        )
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_png(path: Path, mask: np.ndarray, gain: int = 255) -> None:
    import cv2

    tmp = path.with_name(f".{path.stem}.tmp.png")
    if not cv2.imwrite(str(tmp), mask * np.uint8(gain)):
        raise OSError(f"could not write {tmp}")
    tmp.replace(path)
