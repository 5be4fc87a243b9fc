"""Stitching window predictions into one probability map, and upscaling it strip by strip.

Memory is the constraint: a 20,000 x 20,000 slide has 400 million pixels.
The :class:`Stitcher` therefore accumulates at the *low* resolution the model
works at (``1/scale²`` of the pixels: one float32 array of 25 million cells,
100 MB, for that slide at ``scale=4``), and :func:`iter_mask_strips` produces
the full-resolution mask one column strip at a time from it.

Several classes: the maps are ``(h, w, K)`` (one channel per class, background
dropped) and are blended and upscaled channel by channel alike; a pixel's class
is the most probable of the classes above their thresholds
(:func:`class_index`), 0 when none is, so the classes never overlap.

Upscaling is bilinear (``cv2.resize``) with exact integer scale, so low-res
cell ``i`` covers source pixels ``[i*scale, (i+1)*scale)``. A block is
resized together with a one-cell margin, which makes every block identical,
bit for bit, to the same region of one whole-map resize: strips, tiles and
the whole map agree exactly, whichever way the output is cut.

Example:
    >>> import numpy as np
    >>> from tfpipe.predict.stitch import Stitcher
    >>> from tfpipe.predict.windows import Window
    >>> s = Stitcher((4, 6), np.ones((4, 4), np.float32))
    >>> s.add(Window(0, 0, 4), np.full((4, 4), 0.2, np.float32))
    >>> s.add(Window(0, 2, 4), np.full((4, 4), 0.6, np.float32))
    >>> s.probabilities()[0].astype(float).round(2).tolist()   # middle columns: the mean
    [0.2, 0.2, 0.4, 0.4, 0.6, 0.6]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from tfpipe.predict.windows import Window

# Output pixels per column strip: ~32 MB of float32 whatever the slide height.
STRIP_PIXELS = 1 << 23


class Stitcher:
    """Weighted average of overlapping window predictions on the low-resolution grid.

    Each window adds ``weight * prediction``; :meth:`probabilities` divides by
    the sum of the weights of the windows that covered each cell, so the
    effective weights sum to one. Cells that no window reached (skipped
    background) are 0. Only the weighted sum is a full-size array: the weight
    sum is rebuilt band by band from the list of added windows at the end,
    adding the same numbers in the same order as a second accumulator would.

    Args:
        shape: ``(h, w)`` of the low-resolution grid.
        weights: ``(n, n)`` blending weight of one window (see ``blend_weights``).
        classes: Class maps per window: 1 takes ``(n, n)`` predictions and gives an
            ``(h, w)`` map; K > 1 takes ``(n, n, K)`` and gives ``(h, w, K)``.

    Example:
        >>> s = Stitcher((2, 2), np.ones((2, 2), np.float32))
        >>> s.probabilities().tolist()
        [[0.0, 0.0], [0.0, 0.0]]
    """

    def __init__(self, shape: tuple[int, int], weights: np.ndarray, classes: int = 1) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.weights = np.asarray(weights, np.float32)
        self.classes = int(classes)
        channels = () if self.classes == 1 else (self.classes,)
        self._sum = np.zeros((*self.shape, *channels), np.float32)
        self._added: list[Window] = []

    @property
    def windows_added(self) -> int:
        return len(self._added)

    def add(self, window: Window, prediction: np.ndarray) -> None:
        """Accumulate one ``(n, n)`` (or ``(n, n, K)``) prediction; parts past the grid edge
        are dropped."""
        rows, cols, weight = self._clip(window, 0, self.shape[0])
        if self.classes > 1:
            weight = weight[..., None]
        self._sum[rows, cols] += weight * prediction[: weight.shape[0], : weight.shape[1]]
        self._added.append(window)

    def probabilities(self) -> np.ndarray:
        """The ``(h, w)`` (or ``(h, w, K)``) float32 blended probabilities; the accumulator
        is released.

        The division happens in place, one band of window-height rows at a time.
        """
        prob, self._sum = self._sum, np.zeros((0, 0), np.float32)
        band = max(self.weights.shape[0], 1)
        for r0 in range(0, self.shape[0], band):
            r1 = min(r0 + band, self.shape[0])
            weight = np.zeros((r1 - r0, self.shape[1]), np.float32)
            for window in self._added:
                if window.y < r1 and window.y + window.size > r0:
                    rows, cols, part = self._clip(window, r0, r1)
                    weight[rows.start - r0 : rows.stop - r0, cols] += part
            if self.classes > 1:
                weight = weight[..., None]
            np.divide(prob[r0:r1], weight, out=prob[r0:r1], where=weight > 0)
        return prob

    def _clip(self, window: Window, r0: int, r1: int) -> tuple[slice, slice, np.ndarray]:
        """Rows (within ``r0:r1``), columns and weights of ``window`` inside the grid."""
        top, bottom = max(window.y, r0), min(window.y + window.size, r1, self.shape[0])
        right = min(window.x + window.size, self.shape[1])
        weight = self.weights[top - window.y : bottom - window.y, : right - window.x]
        return slice(top, bottom), slice(window.x, right), weight


def upscale_block(prob: np.ndarray, scale: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Rows ``y0:y1`` and columns ``x0:x1`` of ``prob`` upscaled ``scale`` times (bilinear).

    Equal, bit for bit, to ``cv2.resize(prob, (w*scale, h*scale))[y0:y1, x0:x1]``
    while only resizing the cells the block needs plus a one-cell margin.

    Example:
        >>> p = np.array([[0.0, 1.0]], np.float32)
        >>> upscale_block(p, 2, 0, 1, 0, 4).tolist()
        [[0.0, 0.25, 0.75, 1.0]]
    """
    import cv2

    h, w = prob.shape[:2]
    # Output pixel y samples cell (y + 0.5) / scale - 0.5: one cell either side suffices.
    top, bottom = max(y0 // scale - 1, 0), min(-(-y1 // scale) + 1, h)
    left, right = max(x0 // scale - 1, 0), min(-(-x1 // scale) + 1, w)
    cells = np.ascontiguousarray(prob[top:bottom, left:right], np.float32)
    size = ((right - left) * scale, (bottom - top) * scale)
    up = cv2.resize(cells, size, interpolation=cv2.INTER_LINEAR)
    if up.ndim < cells.ndim:  # OpenCV drops a single channel axis
        up = up[..., None]
    return up[y0 - top * scale : y1 - top * scale, x0 - left * scale : x1 - left * scale]


def strip_width(height: int, scale: int, pixels: int = STRIP_PIXELS) -> int:
    """Columns per strip so that one strip holds about ``pixels`` pixels (a multiple of scale).

    Example:
        >>> strip_width(20000, 4)
        416
    """
    return max(scale, (pixels // max(height, 1)) // scale * scale)


def iter_prob_strips(
    prob: np.ndarray, scale: int, shape: tuple[int, int], width: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Full-resolution ``(H, w)`` float32 probability strips, left to right, as ``(x0, strip)``.

    Args:
        prob: ``(h, w)`` low-resolution probabilities.
        scale: Source pixels per low-resolution cell.
        shape: ``(H, W)`` of the slide; the upscaled map is cropped to it.
        width: Columns per strip; default :func:`strip_width`.

    Example:
        >>> p = np.array([[0.0, 1.0]], np.float32)
        >>> [(x0, s.shape) for x0, s in iter_prob_strips(p, 2, (2, 3), width=2)]
        [(0, (2, 2)), (2, (2, 1))]
    """
    height, total = shape
    step = width or strip_width(height, scale)
    for x0 in range(0, total, step):
        yield x0, upscale_block(prob, scale, 0, height, x0, min(x0 + step, total))


def iter_mask_strips(
    prob: np.ndarray,
    scale: int,
    shape: tuple[int, int],
    threshold: float,
    width: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Full-resolution ``(H, w)`` uint8 0/1 mask strips, left to right, as ``(x0, strip)``.

    Column strips are what a column-major RLE needs: strip after strip, the
    flat pixel order is the RLE order. A pixel is foreground when its
    probability is above ``threshold``; other arguments as :func:`iter_prob_strips`.

    Example:
        >>> p = np.array([[0.0, 1.0]], np.float32)
        >>> [(x0, s.tolist()) for x0, s in iter_mask_strips(p, 2, (1, 3), 0.5, width=2)]
        [(0, [[0, 0]]), (2, [[1]])]
    """
    for x0, strip in iter_prob_strips(prob, scale, shape, width):
        yield x0, (strip > threshold).view(np.uint8)


def iter_mask_tiles(
    prob: np.ndarray,
    scale: int,
    shape: tuple[int, int],
    threshold: float,
    tile: int,
) -> Iterator[np.ndarray]:
    """Full-resolution mask tiles in row-major order (what a tiled TIFF writer expects).

    Edge tiles are cropped to the slide. Each tile equals the same region of
    the strips from :func:`iter_mask_strips` exactly.

    Example:
        >>> p = np.array([[0.0, 1.0]], np.float32)
        >>> [t.shape for t in iter_mask_tiles(p, 2, (2, 3), 0.5, tile=2)]
        [(2, 2), (2, 1)]
    """
    height, width = shape
    for y0 in range(0, height, tile):
        y1 = min(y0 + tile, height)
        for x0 in range(0, width, tile):
            x1 = min(x0 + tile, width)
            yield (upscale_block(prob, scale, y0, y1, x0, x1) > threshold).view(np.uint8)


def class_index(probs: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """uint8 class of each pixel of ``(..., K)`` maps: the most probable class above its
    threshold (1..K), or 0 when no class is.

    Example:
        >>> p = np.array([[0.7, 0.6], [0.2, 0.9], [0.1, 0.3]], np.float32)
        >>> class_index(p, [0.5, 0.5]).tolist()
        [1, 2, 0]
    """
    above = probs > np.asarray(thresholds, np.float32)
    best = np.argmax(np.where(above, probs, -1.0), axis=-1)
    return np.where(above.any(axis=-1), best + 1, 0).astype(np.uint8)


def iter_class_strips(
    prob: np.ndarray,
    scale: int,
    shape: tuple[int, int],
    thresholds: Sequence[float],
    width: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Full-resolution ``(H, w)`` uint8 class-index strips of ``(h, w, K)`` maps, left to right.

    Like :func:`iter_mask_strips` (same upscaling, same cut-independence), with
    :func:`class_index` in place of the threshold. Strips are ``K`` times narrower
    so an upscaled strip of all classes stays about :data:`STRIP_PIXELS` floats.

    Example:
        >>> p = np.array([[[0.9, 0.1], [0.1, 0.8]]], np.float32)
        >>> [(x0, s.tolist()) for x0, s in iter_class_strips(p, 1, (1, 2), [0.5, 0.5])]
        [(0, [[1, 2]])]
    """
    step = width or strip_width(shape[0], scale, STRIP_PIXELS // prob.shape[-1])
    for x0, strip in iter_prob_strips(prob, scale, shape, step):
        yield x0, class_index(strip, thresholds)


def iter_class_tiles(
    prob: np.ndarray,
    scale: int,
    shape: tuple[int, int],
    thresholds: Sequence[float],
    tile: int,
) -> Iterator[np.ndarray]:
    """Full-resolution class-index tiles of ``(h, w, K)`` maps, row-major (see
    :func:`iter_mask_tiles`); each equals the same region of :func:`iter_class_strips`.

    Example:
        >>> p = np.array([[[0.9, 0.1], [0.1, 0.8]]], np.float32)
        >>> [t.tolist() for t in iter_class_tiles(p, 1, (1, 2), [0.5, 0.5], tile=1)]
        [[[1]], [[2]]]
    """
    height, width = shape
    for y0 in range(0, height, tile):
        y1 = min(y0 + tile, height)
        for x0 in range(0, width, tile):
            x1 = min(x0 + tile, width)
            yield class_index(upscale_block(prob, scale, y0, y1, x0, x1), thresholds)
