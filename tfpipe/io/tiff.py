"""Windowed readers for giant TIFF slides; a whole slide is never loaded.

:func:`open_slide` returns a :class:`Slide` whose :meth:`Slide.read_window`
reads one ``(h, w)`` window as ``(h, w, C)`` uint8, zero-padded where the
window lies past the slide edges. Memory grows with the window, not the slide.

Layouts seen in the HuBMAP data and handled here: RGB interleaved
``(H, W, 3)``; planar ``(3, H, W)``; extra singleton axes such as
``(1, 1, 3, H, W)``; strip- or tile-organised; BigTIFF; pyramids (SubIFDs,
reduced-resolution pages or series levels: pick one with ``level``);
grayscale (``C = 1``).

Two backends, same results:

* ``"tifffile"`` (default): ``TiffPageSeries.aszarr`` opened with zarr; only
  the strips/tiles that overlap the window are read and decoded.
* ``"rasterio"``: GDAL windows; pyramid level ``k > 0`` is GDAL overview ``k - 1``
  (needs the ``[rasterio]`` extra).

Pixel values: ``uint8`` is returned as is; ``uint16`` is scaled over its full
range to ``uint8`` (``round(v / 257)``, so 65535 -> 255); 1-bit images give
0/255; floats are scaled from the slide's value range: the one given to
:func:`open_slide`, else the rule of :func:`~tfpipe.io.tiff.float_range`
applied to the slide's largest value (maximum <= 1: ``[0, 1]``; <= 255:
0-255 levels; else an error), found once per open slide by scanning its
smallest pyramid level in row bands. An alpha channel is dropped (RGBA -> RGB,
gray+alpha -> gray).

Example:
    >>> from tfpipe.io.tiff import open_slide
    >>> with open_slide("data/hubmap/train/aaa.tiff") as slide:  # doctest: +SKIP
    ...     tile = slide.read_window(0, 0, 1024, 1024)
    >>> tile.shape, tile.dtype  # doctest: +SKIP
    ((1024, 1024, 3), dtype('uint8'))

How a series becomes windows (:func:`axis_plan`): extra singleton axes
(``QQSYX``), planar colour (``SYX``) or colour planes as pages (``IYX``) are
mapped to Y, X and the channel axis; a second image plane is refused, as is
any pixel type :func:`to_uint8` cannot scale (:func:`check_pixel_type`).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from tfpipe.errors import InputDataError, require_extra

BACKENDS = ("tifffile", "rasterio")
SCAN_VALUES = 1 << 24  # values read at once while scanning a float slide for its maximum


class Slide(ABC):
    """An open slide at one pyramid level; use as a context manager.

    Attributes:
        path: The file.
        height, width: Size of the chosen level in pixels.
        channels: 1 (grayscale) or 3 (RGB) channels returned by ``read_window``.
        level: The pyramid level read (0 = full resolution).
        levels: Number of pyramid levels in the file.
        dtype: The pixel type stored in the file (before scaling to uint8).
        backend: ``"tifffile"`` or ``"rasterio"``.
    """

    backend: str

    path: Path
    height: int
    width: int
    channels: int
    level: int
    levels: int
    dtype: np.dtype
    _value_range: tuple[float, float] | None = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(height, width, channels)`` of the chosen level."""
        return self.height, self.width, self.channels

    def read_window(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Read the window with top-left ``(y, x)`` and size ``(h, w)``.

        Returns:
            ``(h, w, channels)`` uint8 (see the module notes on scaling);
            pixels past the slide edges are 0.

        Example:
            >>> slide.read_window(-10, 0, 64, 64)[:10].max()  # doctest: +SKIP
            0
        """
        return to_uint8(self.read_raw(y, x, h, w), self.path, self.value_range)

    @property
    def value_range(self) -> tuple[float, float] | None:
        """``(lo, hi)`` that float pixels are scaled from (None for integer slides).

        Given to :func:`open_slide`, or found from the slide's largest value
        on first use (a scan of its smallest level; see the module notes).

        Example:
            >>> open_slide("float.tiff").value_range  # doctest: +SKIP
            (0.0, 255.0)
        """
        if not np.issubdtype(self.dtype, np.floating):
            return None
        if self._value_range is None:
            self._value_range = float_range(self._scan_max(), self.path)
        return self._value_range

    def _scan_max(self) -> float:
        """The largest value of the smallest pyramid level, read in row bands."""
        smallest = open_slide(self.path, self.levels - 1, self.backend, value_range=(0.0, 1.0))
        with smallest:
            rows = max(1, SCAN_VALUES // max(1, smallest.width * smallest.channels))
            return max(
                (
                    float_max(smallest.read_raw(y, 0, rows, smallest.width))
                    for y in range(0, smallest.height, rows)
                ),
                default=0.0,
            )

    def read_raw(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Like :meth:`read_window` but in the file's own dtype (for masks holding class ids).

        Example:
            >>> slide.read_raw(0, 0, 2, 2).dtype  # doctest: +SKIP
            dtype('uint16')
        """
        y0, y1 = max(y, 0), min(y + h, self.height)
        x0, x1 = max(x, 0), min(x + w, self.width)
        if y0 >= y1 or x0 >= x1:
            return np.zeros((h, w, self.channels), self.dtype)
        try:
            pixels = self._read(y0, y1, x0, x1)[..., : self.channels]
        except Exception as err:  # corrupt strips/tiles surface as codec errors
            raise InputDataError(
                f"cannot read window y={y} x={x} h={h} w={w} of {self.path}: {err}"
            ) from err
        if (y1 - y0, x1 - x0) == (h, w):
            return np.ascontiguousarray(pixels)  # inside the slide: no padding copy
        out = np.zeros((h, w, self.channels), self.dtype)
        out[y0 - y : y1 - y, x0 - x : x1 - x] = pixels
        return out

    @abstractmethod
    def close(self) -> None:
        """Release the file; further reads fail."""

    @abstractmethod
    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels inside the slide as ``(y1-y0, x1-x0, C_file)`` in the file's dtype."""

    def _set_geometry(self, height: int, width: int, file_channels: int) -> None:
        """Record the size and check the layout; closes the file when it is unusable."""
        try:
            check_pixel_type(self.dtype, self.path)
        except InputDataError:
            self.close()
            raise
        self.height, self.width = int(height), int(width)
        if file_channels not in (1, 2, 3, 4):
            self.close()
            raise InputDataError(
                f"slides must have 1 (gray), 3 (RGB) or 4 (RGBA) channels; "
                f"got {file_channels} in {self.path}"
            )
        # Alpha carries no tissue information: drop it.
        self.channels = 1 if file_channels <= 2 else 3


def open_slide(
    path: str | Path,
    level: int = 0,
    backend: str = "tifffile",
    value_range: tuple[float, float] | None = None,
) -> Slide:
    """Open a TIFF slide for windowed reads.

    Args:
        path: The TIFF file.
        level: Pyramid level (0 = full resolution).
        backend: ``"tifffile"`` (zarr store) or ``"rasterio"`` (GDAL windows).
        value_range: ``(lo, hi)`` that float pixels are scaled from (e.g. the
            slide's range found once by the caller); None finds it on first
            read (see :attr:`Slide.value_range`). Ignored for integer pixels.

    Returns:
        A :class:`Slide`; close it (or use ``with``) when done.

    Raises:
        InputDataError: missing, unreadable or not a TIFF; level out of range;
            a layout that is not one 2-D image (e.g. several planes).

    Example:
        >>> with open_slide("slide.tiff", level=1, backend="rasterio") as s:  # doctest: +SKIP
        ...     print(s.height, s.width, s.channels)
    """
    path = Path(path)
    if backend not in BACKENDS:
        raise InputDataError(f"backend must be one of {BACKENDS}; got backend={backend!r}")
    if not path.is_file():
        raise InputDataError(f"slide not found: {path}")
    if level < 0:
        raise InputDataError(f"level must be >= 0; got level={level} for {path}")
    slide = RasterioSlide(path, level) if backend == "rasterio" else TifffileSlide(path, level)
    slide._value_range = value_range
    return slide


class TifffileSlide(Slide):
    """Windowed reads through tifffile's zarr store (only overlapping tiles are decoded)."""

    backend = "tifffile"

    def __init__(self, path: Path, level: int = 0) -> None:
        import tifffile
        import zarr

        self.path, self.level = path, level
        try:
            self._tif = tifffile.TiffFile(path)
        except Exception as err:  # tifffile raises several types for bad files
            raise InputDataError(f"cannot read {path} as a TIFF: {err}") from None
        try:
            owner, index = self._pick_level(level)
            series = owner.levels[index]
            axes, shape = series.get_axes(False), series.get_shape(False)
            self._index = axis_plan(axes, shape, path)
            self._store = owner.aszarr(level=index, squeeze=False)
            self._array = zarr.open(self._store, mode="r")
        except InputDataError:
            self._tif.close()
            raise
        except Exception as err:
            self._tif.close()
            raise InputDataError(f"cannot read {path} as a TIFF: {err}") from err
        ch = shape[axes.index(self._index.channel_axis)] if self._index.channel_axis else 1
        self.dtype = np.dtype(series.dtype)
        self._set_geometry(shape[axes.index("Y")], shape[axes.index("X")], ch)

    def _pick_level(self, level: int) -> tuple[Any, int]:
        """``(series, level index in it)``: SubIFDs/reduced pages, else separate series."""
        series = self._tif.series
        if not series:
            raise InputDataError(f"{self.path} holds no image")
        levels = [(series[0], i) for i in range(len(series[0].levels))]
        if len(levels) == 1:
            # Some writers store each level as its own series of decreasing size.
            levels += [(s, 0) for s in series[1:] if is_reduction(s, series[0])]
        self.levels = len(levels)
        if level >= len(levels):
            raise InputDataError(
                f"level {level} does not exist; {self.path} has {len(levels)} level(s) "
                f"(0..{len(levels) - 1})"
            )
        return levels[level]

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self._index.read(self._array, y0, y1, x0, x1)

    def close(self) -> None:
        store = getattr(self, "_store", None)
        if store is not None:
            store.close()
        self._tif.close()


class RasterioSlide(Slide):
    """Windowed reads through rasterio/GDAL; level ``k > 0`` is GDAL overview ``k - 1``."""

    backend = "rasterio"

    def __init__(self, path: Path, level: int = 0) -> None:
        require_extra("rasterio", 'backend="rasterio"')  # not in the base install
        import rasterio

        self.path, self.level = path, level
        kwargs = {"overview_level": level - 1} if level > 0 else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning: slides have no CRS
            try:
                with rasterio.open(path) as base:
                    self.levels = len(base.overviews(1)) + 1
                if level >= self.levels:
                    raise InputDataError(
                        f"level {level} does not exist; {path} has {self.levels} level(s) "
                        f"(0..{self.levels - 1}) as seen by rasterio"
                    )
                self._ds = rasterio.open(path, **kwargs)
            except rasterio.errors.RasterioIOError as err:
                raise InputDataError(f"cannot read {path} with rasterio: {err}") from None
        self.dtype = np.dtype(self._ds.dtypes[0])
        self._set_geometry(self._ds.height, self._ds.width, self._ds.count)

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        from rasterio.windows import Window

        bands = list(range(1, min(self._ds.count, 3) + 1))
        data = self._ds.read(bands, window=Window(x0, y0, x1 - x0, y1 - y0))
        return np.moveaxis(data, 0, -1)

    def close(self) -> None:
        self._ds.close()


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
