"""How a TIFF series becomes ``(h, w, C)`` uint8 windows: its axes and its pixel type.

A slide's series may carry extra singleton axes (``QQSYX``), planar colour
(``SYX``) or colour planes as pages (``IYX``): :func:`axis_plan` finds Y, X and
the channel axis and refuses anything with a second image plane.
:func:`to_uint8` scales uint16 over its full range, floats from their value
range and 1-bit images to 0/255; :func:`check_pixel_type` refuses other types
up front.

Float pixels carry no standard range, so tfpipe applies one rule
(:func:`float_range`), per slide, from the slide's largest value: at most
1.0 means ``[0, 1]``; at most 255 means 0-255 levels; anything larger is an
error asking for the range (``data.float_range: [lo, hi]``, which also
overrides the rule). Values are mapped linearly from ``[lo, hi]`` to 0-255,
clipped, and NaN becomes 0.

Example:
    >>> plan = axis_plan("SYX", (3, 4, 5), Path("x.tiff"))
    >>> plan.read(np.zeros((3, 4, 5), np.uint8), 0, 2, 0, 3).shape
    (2, 3, 3)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tfpipe.errors import InputDataError

# Axes that may carry the colour samples, in order of preference.
_CHANNEL_AXES = ("S", "C")


class AxisPlan:
    """How to cut a 2-D window out of an N-D TIFF series (axes like ``QQSYX``)."""

    def __init__(self, axes: str, channel_axis: str | None) -> None:
        self.axes = axes
        self.channel_axis = channel_axis

    def read(self, array: Any, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``y0:y1`` and columns ``x0:x1`` of ``array`` as ``(h, w, C)``."""
        index: list[Any] = []
        kept = ""
        for axis in self.axes:
            if axis == "Y":
                index.append(slice(y0, y1))
            elif axis == "X":
                index.append(slice(x0, x1))
            elif axis == self.channel_axis:
                index.append(slice(None))
            else:
                index.append(0)
                continue
            kept += axis
        data = np.asarray(array[tuple(index)])
        if self.channel_axis is None:
            return data[..., None] if kept == "YX" else data.T[..., None]
        order = [kept.index(a) for a in ("Y", "X", self.channel_axis)]
        return np.transpose(data, order)


def axis_plan(axes: str, shape: tuple[int, ...], path: Path) -> AxisPlan:
    """Find Y, X and the channel axis; every other axis must have length 1."""
    if "Y" not in axes or "X" not in axes:
        raise InputDataError(
            f"a slide must be a 2-D image with Y and X axes; got TIFF axes {axes!r} "
            f"(shape {shape}) in {path}"
        )
    sizes = dict(zip(axes, shape, strict=True))
    others = [a for a in axes if a not in "YX" and sizes[a] > 1]
    channel = next((a for a in _CHANNEL_AXES if a in others), None)
    if channel is None and len(others) == 1 and sizes[others[0]] in (3, 4):
        # Colour planes stored as separate pages (axes like 'IYX' or 'QYX').
        channel = others[0]
    extra = [a for a in others if a != channel]
    if extra:
        raise InputDataError(
            f"a slide must be one 2-D gray or RGB image; got more than one image plane "
            f"(TIFF axes {axes!r}, shape {shape}) in {path}"
        )
    return AxisPlan(axes, channel)


def is_reduction(candidate: Any, base: Any) -> bool:
    """True when ``candidate`` looks like a lower-resolution copy of ``base``."""
    axes = base.get_axes(False)
    if candidate.get_axes(False) != axes:
        return False
    a, b = candidate.get_shape(False), base.get_shape(False)
    return (
        all((n <= m) if axis in "YX" else (n == m) for axis, n, m in zip(axes, a, b, strict=True))
        and a != b
    )


def to_uint8(
    pixels: np.ndarray, path: Path | str = "", value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Convert slide pixels to uint8 (uint16 full-range, floats by range, bool to 0/255).

    Args:
        pixels: Pixels in the file's dtype.
        path: The file, for error messages.
        value_range: ``(lo, hi)`` of float pixels; None applies
            :func:`float_range` to ``pixels`` themselves (right for a whole
            image; a window of a slide must get the slide's range).

    Example:
        >>> to_uint8(np.array([0, 257, 65535], np.uint16)).tolist()
        [0, 1, 255]
        >>> to_uint8(np.array([0.0, 0.5, 1.0])).tolist(), to_uint8(np.array([0.0, 128.0])).tolist()
        ([0, 128, 255], [0, 128])
    """
    kind = pixels.dtype
    if kind == np.uint8:
        return pixels
    if kind == np.uint16:
        return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if kind == np.bool_:
        return pixels.astype(np.uint8) * 255
    check_pixel_type(kind, path)
    if value_range is None:
        value_range = float_range(float_max(pixels), path)
    lo, hi = value_range
    scaled = (pixels.astype(np.float32) - lo) * np.float32(255.0 / (hi - lo))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    return (scaled + 0.5).astype(np.uint8)


def float_max(pixels: np.ndarray) -> float:
    """The largest non-NaN value of ``pixels`` (0.0 when there is none)."""
    top = np.fmax.reduce(pixels, axis=None) if pixels.size else np.nan  # fmax skips NaN
    return 0.0 if np.isnan(top) else float(top)


def float_range(maximum: float, path: Path | str = "") -> tuple[float, float]:
    """The value range of float pixels whose largest value is ``maximum`` (see module notes).

    Raises:
        InputDataError: ``maximum`` is above 255 (or infinite): no rule fits.

    Example:
        >>> float_range(0.93), float_range(201.0)
        ((0.0, 1.0), (0.0, 255.0))
    """
    if maximum <= 1.0:
        return (0.0, 1.0)
    if maximum <= 255.0:
        return (0.0, 255.0)
    raise InputDataError(
        f"float pixels must lie in [0, 1] or in 0-255 for tfpipe to scale them to 8 bits; "
        f"got a maximum of {maximum:g} in {path}: set data.float_range: [lo, hi] to the "
        f"range of these pixels"
    )


def check_pixel_type(dtype: np.dtype, path: Path | str = "") -> None:
    """Raise InputDataError unless ``dtype`` is one :func:`to_uint8` can scale.

    Example:
        >>> check_pixel_type(np.dtype("uint16"))
    """
    kind = np.dtype(dtype)
    if kind in (np.uint8, np.uint16, np.bool_) or np.issubdtype(kind, np.floating):
        return
    raise InputDataError(
        f"slide pixels must be uint8, uint16, float or 1-bit; got {kind} in {path}"
    )
