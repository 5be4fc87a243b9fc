"""The sliding-window grid over a slide and the weights that blend overlapping windows.

Prediction works on a *low-resolution grid*: the slide reduced by the
training ``downscale`` factor ``d``, where one model input of ``n x n``
pixels covers ``n*d x n*d`` source pixels. Window positions are chosen in
that grid (so every window maps to whole source pixels) with a stride of
``n * (1 - overlap)``; the last window of each row and column is moved back
to end exactly at the edge, so every pixel is covered whatever the slide size.

Overlapping predictions are blended with a smooth 2-D weight (Hann by
default): window borders, where a convolutional network sees the least
context, count the least. :class:`tfpipe.predict.stitch.Stitcher` divides
by the accumulated weight, so the normalised weights sum to one per pixel.

Example:
    >>> from tfpipe.predict.windows import window_grid, blend_weights
    >>> grid = window_grid((1300, 700), window=256, overlap=0.25, scale=4)
    >>> len(grid), grid[0].source_box(4)
    (2, (0, 0, 1024, 1024))
    >>> blend_weights(4, "pyramid")[1].tolist()
    [0.1875, 0.5625, 0.5625, 0.1875]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

BlendKind = Literal["hann", "pyramid", "uniform"]


@dataclass(frozen=True)
class Window:
    """One model input: its top-left corner and side in the low-resolution grid."""

    y: int
    x: int
    size: int

    def source_box(self, scale: int) -> tuple[int, int, int, int]:
        """``(y, x, h, w)`` of the window at source resolution."""
        return self.y * scale, self.x * scale, self.size * scale, self.size * scale


def lowres_shape(shape: tuple[int, int], scale: int) -> tuple[int, int]:
    """``(h, w)`` of the low-resolution grid: each cell covers ``scale x scale`` source pixels.

    A partial cell at the right or bottom edge still gets a cell (its missing
    source pixels read as zero), so the grid covers the whole slide.

    Example:
        >>> lowres_shape((1001, 1000), 4)
        (251, 250)
    """
    return math.ceil(shape[0] / scale), math.ceil(shape[1] / scale)


def stride_for(window: int, overlap: float) -> int:
    """Step between windows for a fractional ``overlap`` in ``[0, 1)``; at least one pixel.

    Example:
        >>> stride_for(256, 0.25)
        192
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1); got {overlap}")
    return max(1, round(window * (1.0 - overlap)))


def axis_starts(length: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis of ``length`` cells so that every cell is covered.

    The last start is pulled back to ``length - window`` (the window ends at
    the edge) instead of running past it; an axis shorter than the window
    gets one window at 0 that reaches past the edge.

    Example:
        >>> axis_starts(10, 4, 3)
        [0, 3, 6]
        >>> axis_starts(11, 4, 3)
        [0, 3, 6, 7]
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def window_grid(shape: tuple[int, int], window: int, overlap: float, scale: int) -> list[Window]:
    """Every window over a slide of source ``shape``, row by row.

    Args:
        shape: ``(H, W)`` of the slide at source resolution.
        window: Model input side in low-resolution pixels.
        overlap: Fraction of the window shared with its neighbour, in ``[0, 1)``.
        scale: Source pixels per low-resolution pixel (the training downscale).

    Returns:
        The windows in row-major order; their union covers the whole low-resolution grid.

    Example:
        >>> [(w.y, w.x) for w in window_grid((600, 300), 64, 0.5, 4)]
        [(0, 0), (0, 11), (32, 0), (32, 11), (64, 0), (64, 11), (86, 0), (86, 11)]
    """
    h, w = lowres_shape(shape, scale)
    stride = stride_for(window, overlap)
    return [
        Window(y, x, window)
        for y in axis_starts(h, window, stride)
        for x in axis_starts(w, window, stride)
    ]


def blend_weights(size: int, kind: BlendKind = "hann") -> np.ndarray:
    """The ``(size, size)`` float32 weight of one window's prediction when stitching.

    All kinds are strictly positive, so a pixel covered only by a window's
    border still gets a prediction after normalisation.

    Args:
        size: Window side in pixels.
        kind: ``"hann"`` (raised cosine, smooth), ``"pyramid"`` (linear ramp
            to the centre) or ``"uniform"`` (plain average).

    Example:
        >>> float(blend_weights(8, "hann").max()) <= 1.0
        True
    """
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    if kind == "hann":
        # Sampled at pixel centres, so the border weight is small but not zero.
        profile = np.sin(np.pi * centres) ** 2
    elif kind == "pyramid":
        profile = 1.0 - np.abs(2.0 * centres - 1.0)
    elif kind == "uniform":
        profile = np.ones(size)
    else:
        raise ValueError(f"blend must be one of hann, pyramid, uniform; got {kind!r}")
    return np.outer(profile, profile).astype(np.float32)
