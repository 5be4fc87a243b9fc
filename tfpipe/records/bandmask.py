"""RLE masks read by row band, and the label readers a worker opens.

The ETL reads *row* bands (``tile_size`` rows x full width, see
:mod:`tfpipe.records.tiling`) in worker processes. ``tfpipe.io.rle.RleMask``
keeps the runs as column-major flat offsets, so every band of a slide would
search and split all of its runs, and each worker would need all of them.
:class:`RowSegments` splits the validated runs (``tfpipe.io.rle.parse_rle``)
into per-column row intervals once: a band reads only the intervals that
cross its rows, and the main process hands each work unit just those.

Example:
    >>> import numpy as np
    >>> from tfpipe.io.rle import parse_rle
    >>> seg = RowSegments.from_runs(parse_rle("1 2 5 1", (2, 3)), (2, 3))
    >>> seg.read_window(0, 0, 2, 3).tolist()
    [[1, 0, 1], [1, 0, 0]]
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from tfpipe.io.masks import open_mask_image
from tfpipe.io.rle import column_segments
from tfpipe.records.polygons import PolygonMask
from tfpipe.records.pseudo import PseudoSpec, open_pseudo_labels

# Below this many intervals a window is painted interval by interval (a glomerulus
# mask band has a few thousand); above it, a running sum over the window is cheaper.
LOOP_FILL_MAX = 50_000


class MaskReader(Protocol):
    """Anything with ``read_window(y, x, h, w) -> (h, w) uint8`` and ``close()``."""

    def read_window(self, y: int, x: int, h: int, w: int) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass
class RowSegments:
    """A binary mask as per-column row intervals ``[r0, r1)`` (int32 arrays, sorted by column).

    Attributes:
        height, width: Mask size.
        col, r0, r1: One entry per interval of foreground pixels in one column.
    """

    height: int
    width: int
    col: np.ndarray
    r0: np.ndarray
    r1: np.ndarray

    @classmethod
    def from_runs(cls, runs: np.ndarray, shape: tuple[int, int]) -> RowSegments:
        """Split column-major flat runs ``[start, end)`` at column boundaries.

        Args:
            runs: ``(N, 2)`` 0-based ``[start, end)`` runs from ``parse_rle``.
            shape: ``(H, W)`` of the mask.
        """
        height, width = (int(s) for s in shape)
        col, r0, r1 = column_segments(runs, height)
        return cls(height, width, col.astype(np.int32), r0.astype(np.int32), r1.astype(np.int32))

    def select_rows(self, y0: int, y1: int) -> RowSegments:
        """Only the intervals that cross rows ``[y0, y1)`` (what one work unit needs)."""
        keep = (self.r1 > y0) & (self.r0 < y1)
        return RowSegments(self.height, self.width, self.col[keep], self.r0[keep], self.r1[keep])

    def read_window(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """The ``(h, w)`` uint8 0/1 window at ``(y, x)``; zero past the edges."""
        keep = (self.r1 > y) & (self.r0 < y + h) & (self.col >= x) & (self.col < x + w)
        col = self.col[keep] - x
        top = np.clip(self.r0[keep] - y, 0, h)
        bottom = np.clip(self.r1[keep] - y, 0, h)
        if col.size <= LOOP_FILL_MAX:
            return _fill_intervals(h, w, col, top, bottom)
        return _fill_dense(h, w, col.astype(np.int64), top, bottom)

    def close(self) -> None:
        """Nothing to release (the intervals are plain arrays)."""


def _fill_intervals(
    h: int, w: int, col: np.ndarray, top: np.ndarray, bottom: np.ndarray
) -> np.ndarray:
    """Paint each interval as a column slice: cost ~ number of intervals (a few thousand)."""
    out = np.zeros((h, w), np.uint8)
    for c, a, b in zip(col.tolist(), top.tolist(), bottom.tolist(), strict=True):
        out[a:b, c] = 1
    return out


def _fill_dense(h: int, w: int, col: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """+1/-1 steps in a column-major buffer and a running sum: cost ~ window area."""
    steps = np.zeros(w * h + 1, np.int8)
    np.add.at(steps, col * h + top, 1)
    np.add.at(steps, col * h + bottom, -1)
    np.cumsum(steps, out=steps, dtype=np.int8)
    # cv2.transpose is a blocked transpose: ~10x faster than a NumPy .T copy here.
    return cv2.transpose(steps[:-1].view(np.uint8).reshape(w, h))


@dataclass(frozen=True)
class LabelSpec:
    """How a worker gets the mask of one slide: RLE intervals, a mask image, pseudo-labels
    (a probability map and a band, :mod:`tfpipe.records.pseudo`), or none."""

    segments: RowSegments | None = None
    mask_path: Path | None = None
    classes: int = 0
    """Mask image values are class ids 0..classes (255 = ignore), checked as bands are read;
    0: a binary mask (every value > 0 is 1)."""
    pseudo: PseudoSpec | None = None
    polygons: PolygonMask | None = None
    """GeoJSON features rasterized per window (:mod:`tfpipe.records.polygons`)."""

    @property
    def labelled(self) -> bool:
        return (
            self.segments is not None
            or self.mask_path is not None
            or self.pseudo is not None
            or self.polygons is not None
        )

    def select_rows(self, y0: int, y1: int) -> LabelSpec:
        """The labels of rows ``[y0, y1)`` only: what one work unit carries to its worker."""
        segments = None if self.segments is None else self.segments.select_rows(y0, y1)
        polygons = None if self.polygons is None else self.polygons.select_rows(y0, y1)
        return replace(self, segments=segments, polygons=polygons)


def open_labels(spec: LabelSpec) -> MaskReader | None:
    """Open the mask reader described by ``spec`` (None for unlabelled slides)."""
    if spec.segments is not None:
        return spec.segments
    if spec.polygons is not None:
        return spec.polygons
    if spec.pseudo is not None:
        return open_pseudo_labels(spec.pseudo)
    if spec.mask_path is not None:
        if spec.classes:
            return open_mask_image(spec.mask_path, binary=False, classes=spec.classes)
        return open_mask_image(spec.mask_path)
    return None
