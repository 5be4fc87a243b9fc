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

Example:
    >>> from tfpipe.predict.outputs import encode_slide
    >>> rle = encode_slide(prob, 4, (8192, 8192), 0.5).rle()  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfpipe.predict.intervals import StripRleEncoder
from tfpipe.predict.stitch import iter_mask_strips, iter_mask_tiles

PNG_MAX_PIXELS = 1 << 24  # 4096 x 4096
TIFF_TILE = 512


def encode_slide(
    prob: np.ndarray,
    scale: int,
    shape: tuple[int, int],
    threshold: float,
    png: Path | None = None,
) -> StripRleEncoder:
    """Runs of the thresholded, upscaled map, gathered strip by strip.

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
    encoder = StripRleEncoder(shape[0])
    strips: list[np.ndarray] = []
    for x0, strip in iter_mask_strips(prob, scale, shape, threshold):
        encoder.add(x0, strip)
        if png is not None:
            strips.append(strip)
    if png is not None:
        _write_png(png, np.concatenate(strips, axis=1))
    return encoder


def mask_path(folder: Path, image_id: str, shape: tuple[int, int]) -> Path:
    """``<id>.png`` for a small slide, ``<id>.tiff`` otherwise."""
    small = shape[0] * shape[1] <= PNG_MAX_PIXELS
    return folder / f"{image_id}{'.png' if small else '.tiff'}"


def write_mask_tiff(
    path: Path, prob: np.ndarray, scale: int, shape: tuple[int, int], threshold: float
) -> Path:
    """Write the full-resolution mask as a tiled, zlib-compressed TIFF, tile by tile."""
    import tifffile

    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    tiles = (t * np.uint8(255) for t in iter_mask_tiles(prob, scale, shape, threshold, TIFF_TILE))
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


def _write_png(path: Path, mask: np.ndarray) -> None:
    import cv2

    tmp = path.with_name(f".{path.stem}.tmp.png")
    if not cv2.imwrite(str(tmp), mask * np.uint8(255)):
        raise OSError(f"could not write {tmp}")
    tmp.replace(path)
