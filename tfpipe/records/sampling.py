"""Tile plans besides the fixed grid, and tile weights from anatomy regions (``data.sampling``).

``data.sampling.tiles`` is a union of tile sets, all decided up front in
discovery (so every worker count cuts the same tiles):

* ``grid`` — the fixed grid of :mod:`tfpipe.records.tiling` (the default).
* ``shifted_grid`` — a second grid shifted by half a tile in x and y: its
  tiles are centred on the corners of the first, so an object cut by a grid
  line lies whole in one of them. With a stride that divides half a tile the
  shifted grid is part of the grid and adds nothing (it is then left out).
* ``objects`` — one tile per labelled object: centred on the middle of the
  object's bounding box, moved by a jitter of up to ``jitter * tile_size``
  along each axis (a hash of seed, image id and object position: no RNG
  stream, so the tiles do not depend on order or worker count), then clamped
  into the slide. An object is a polygon of a ``polygons`` source (an island
  in a polygon's hole belongs to it) or an 8-connected component of an
  ``rle_csv`` mask (found from the RLE's column intervals, never a whole-slide
  mask). Object tiles are read window by window; one that falls exactly on
  a grid tile, or on another object's, is cut once.

``data.sampling.anatomy`` weights tiles by region: with region weights
``w_r`` (``outside`` for pixels in no region), a tile's weight is
``sum_r fraction_r * w_r`` over the tile's pixels (zero padding past the
slide counts as outside), rasterized from the slide's anatomy file
(:mod:`tfpipe.records.polygons`) in step with the image. Weights are rounded
to multiples of 2**-16, exact in float32 and summed exactly in float64, so
the per-source sums in the manifest (``weight_sum``) are the same whatever
the worker count; ``tfpipe.data`` draws tiles by them (``input.weighted``).

Example:
    >>> grid_rows(1000, 0, TileSpec(512, 512, 4)), grid_rows(1000, 256, TileSpec(512, 512, 4))
    ([0, 512], [256, 768])
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from tfpipe.errors import ConfigError
from tfpipe.records.polygons import OUTSIDE, attach_regions, region_fractions
from tfpipe.records.tiling import TileSpec, grid_positions

if TYPE_CHECKING:  # workers import this module; pydantic config stays out of them
    from tfpipe.config import DataConfig
    from tfpipe.records.bandmask import RowSegments
    from tfpipe.records.sources import SourceItem, SourcePlan

WEIGHT_STEPS = 1 << 16
"""Tile weights are multiples of ``1 / WEIGHT_STEPS`` (exact sums, see the module notes)."""
Box = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` of an object, in slide pixel-edge coordinates."""


def grid_rows(length: int, offset: int, spec: TileSpec) -> list[int]:
    """Tile starts along one axis of the grid shifted by ``offset`` (none if it is too short).

    Example:
        >>> grid_rows(200, 256, TileSpec(512, 512, 4))
        []
    """
    if length <= offset:
        return []
    return [offset + p for p in grid_positions(length - offset, spec.tile_size, spec.stride)]


def grid_offsets(tiles: list[str], spec: TileSpec) -> tuple[int, ...]:
    """Offsets of the grids to cut: 0 for ``grid``, half a tile for ``shifted_grid``.

    Example:
        >>> grid_offsets(["grid", "shifted_grid"], TileSpec(512, 512, 4))
        (0, 256)
        >>> grid_offsets(["grid", "shifted_grid"], TileSpec(512, 128, 4))  # part of the grid
        (0,)
    """
    half = spec.tile_size // 2
    offsets = [0] if "grid" in tiles else []
    if "shifted_grid" in tiles and not (offsets and half % spec.stride == 0):
        offsets.append(half)
    return tuple(offsets)


def region_names(anatomy: dict[str, float]) -> list[str]:
    """Region names in value order (1, 2, …): the anatomy keys but ``outside``."""
    return [name for name in anatomy if name != OUTSIDE]


def region_weights(anatomy: dict[str, float] | None) -> tuple[float, ...] | None:
    """Weight per region value: ``outside`` (default 0) first, then :func:`region_names`.

    Example:
        >>> region_weights({"Cortex": 0.46, "Medulla": 0.17, "outside": 0.02})
        (0.02, 0.46, 0.17)
    """
    if anatomy is None:
        return None
    return (float(anatomy.get(OUTSIDE, 0.0)), *(float(anatomy[n]) for n in region_names(anatomy)))


def tile_weight(regions: np.ndarray, weights: tuple[float, ...]) -> float:
    """A tile's weight from its region values: fractions times weights, on the 2**-16 grid.

    Example:
        >>> tile_weight(np.array([[0, 1], [1, 1]], np.uint8), (0.0, 0.5))
        0.375
    """
    fractions = region_fractions(regions, len(weights) - 1)
    weight = float(fractions @ np.asarray(weights, np.float64))
    return float(np.floor(weight * WEIGHT_STEPS + 0.5)) / WEIGHT_STEPS


def apply_sampling(plan: SourcePlan, cfg: DataConfig) -> None:
    """Decide the grids, object tiles and regions of every slide of ``plan`` (discovery).

    Raises:
        ConfigError: ``objects`` for a source without objects (mask images,
            pseudo-labels, unlabelled slides).
        InputDataError: an anatomy file is missing or wrong (see :func:`attach_regions`).
    """
    sampling = cfg.sampling
    spec = TileSpec.from_config(cfg)
    plan.grid_offsets = grid_offsets(sampling.tiles, spec)
    if sampling.anatomy is not None:
        attach_regions(plan.items, cfg, region_names(sampling.anatomy))
    if "objects" not in sampling.tiles:
        return
    if cfg.source not in ("polygons", "rle_csv"):
        raise ConfigError(
            "data.sampling.tiles: objects centres tiles on labelled objects, from "
            f"data.source=polygons or rle_csv; got data.source={cfg.source}"
        )
    for item in plan.items:
        boxes = object_boxes(item)
        item.windows = object_tiles(boxes, item, spec, (cfg.seed, sampling.jitter))
        item.windows = _without_grid(item.windows, item, spec, plan.grid_offsets)


def object_boxes(item: SourceItem) -> list[Box]:
    """The objects of a slide's labels: polygons, or the RLE mask's connected components."""
    if item.labels.polygons is not None:
        return item.labels.polygons.objects()
    if item.labels.segments is not None:
        return segment_boxes(item.labels.segments)
    return []


def object_tiles(
    boxes: list[Box], item: SourceItem, spec: TileSpec, jitter: tuple[int, float]
) -> list[tuple[int, int]]:
    """One tile ``(y, x)`` per object box, jittered and clamped into the slide; sorted, unique.

    Args:
        boxes: Object boxes.
        item: The slide (id and size).
        spec: Tile geometry.
        jitter: ``(seed, fraction of tile_size)``.
    """
    seed, fraction = jitter
    size = spec.tile_size
    tiles = set()
    for x0, y0, x1, y1 in boxes:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        dx, dy = _jitter(seed, item.image_id, cx, cy) * (2 * fraction * size)
        y = _clamp(cy + dy - size / 2, item.height - size)
        x = _clamp(cx + dx - size / 2, item.width - size)
        tiles.add((y, x))
    return sorted(tiles)


def _jitter(seed: int, image_id: str, cx: float, cy: float) -> np.ndarray:
    """Two numbers in ``[-0.5, 0.5)`` from a hash of the seed, the slide and the object."""
    key = f"{seed}:{image_id}:objects:{cx:.3f}:{cy:.3f}".encode()
    digest = hashlib.blake2b(key, digest_size=16).digest()
    words = np.frombuffer(digest, "<u8").astype(np.float64)
    return words / 2.0**64 - 0.5


def _clamp(start: float, last: int) -> int:
    """``start`` rounded half up, within ``[0, last]`` (0 when the slide is smaller than a tile)."""
    return int(min(max(np.floor(start + 0.5), 0), max(last, 0)))


def _without_grid(
    tiles: list[tuple[int, int]], item: SourceItem, spec: TileSpec, offsets: tuple[int, ...]
) -> list[tuple[int, int]]:
    """Object tiles that no grid of ``offsets`` cuts already."""
    grids = [
        (set(grid_rows(item.height, o, spec)), set(grid_rows(item.width, o, spec))) for o in offsets
    ]
    return [(y, x) for y, x in tiles if not any(y in ys and x in xs for ys, xs in grids)]


def segment_boxes(segments: RowSegments) -> list[Box]:
    """Bounding boxes of the 8-connected components of a mask held as column intervals.

    Intervals of neighbouring columns that touch (rows overlapping, or meeting
    at a corner) are joined, as are touching intervals of one column; labels
    spread by repeated minimum and pointer jumping, all in NumPy.

    Example:
        >>> from tfpipe.records.bandmask import RowSegments
        >>> col, r0, r1 = (np.array(v, np.int32) for v in ([0, 1, 3], [0, 1, 3], [1, 2, 4]))
        >>> seg = RowSegments(4, 4, col, r0, r1)
        >>> segment_boxes(seg)
        [(0.0, 0.0, 2.0, 2.0), (3.0, 3.0, 4.0, 4.0)]
    """
    order = np.lexsort((segments.r0, segments.col))
    col = segments.col[order].astype(np.int64)
    r0, r1 = segments.r0[order].astype(np.int64), segments.r1[order].astype(np.int64)
    if col.size == 0:
        return []
    a, b = _touching(col, r0, r1, segments.height + 2)
    labels = _components(col.size, a, b)
    roots, inverse = np.unique(labels, return_inverse=True)
    boxes = np.zeros((roots.size, 4), np.int64)
    boxes[:, :2] = np.iinfo(np.int64).max
    np.minimum.at(boxes[:, 0], inverse, col)
    np.minimum.at(boxes[:, 1], inverse, r0)
    np.maximum.at(boxes[:, 2], inverse, col + 1)
    np.maximum.at(boxes[:, 3], inverse, r1)
    return [tuple(float(v) for v in box) for box in boxes]


def _touching(
    col: np.ndarray, r0: np.ndarray, r1: np.ndarray, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs of intervals that touch (8-connectivity), as two arrays."""
    starts, ends = col * stride + r0, col * stride + r1  # both sorted: columns dominate
    # In column c + 1, the intervals with r1 >= r0_i and r0 <= r1_i (rows meet or touch diagonally).
    lo = np.searchsorted(ends, (col + 1) * stride + r0, side="left")
    hi = np.searchsorted(starts, (col + 1) * stride + r1, side="right")
    counts = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(col.size), counts)
    b = np.repeat(lo, counts) + np.arange(a.size) - np.repeat(np.cumsum(counts) - counts, counts)
    same = np.flatnonzero((col[1:] == col[:-1]) & (r0[1:] <= r1[:-1]))  # touching in one column
    return np.concatenate([a, same]), np.concatenate([b, same + 1])


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component label (its smallest member) of each of ``n`` nodes joined by edges ``a``-``b``."""
    labels = np.arange(n)
    while True:
        low = np.minimum(labels[a], labels[b])
        new = labels.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]  # pointer jumping: a label's label is at most as large
        if np.array_equal(new, labels):
            return labels
        labels = new
