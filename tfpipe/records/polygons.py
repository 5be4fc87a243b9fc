"""Polygon labels and regions: GeoJSON features rasterized window by window with rasterio.

``data.source: polygons`` reads, for every slide ``<id>.tif*``, the file
``<id>.json`` in ``data.masks`` (default: beside the slides), the HuBMAP
layout of :mod:`tfpipe.io.polygons`. The same machinery reads the anatomy
files of ``data.sampling.anatomy`` (``<id>-anatomical-structure.json``: cortex,
medulla), whose regions weight the tiles (:mod:`tfpipe.records.sampling`).

Rules:

* **Class.** Without ``data.polygon_classes`` every feature is class 1. With
  it, the feature property ``data.polygon_property`` (default
  ``classification.name``) is looked up in the mapping: a class name of
  ``data.mask_classes`` (class k = position k, from 1; any name when
  ``mask_classes`` is unset, a binary mask) or null to drop the feature. A
  value the mapping lacks is an error naming the file, the feature and the value.
* **Rasterization.** A pixel belongs to a polygon when its centre does
  (``rasterio.features.rasterize``, ``all_touched=False``): pixel ``(r, c)``
  has its centre at ``(c + 0.5, r + 0.5)`` in the file's coordinates. Holes
  are left out. Where features overlap the later one in the file wins.
* **Windows.** The slide's mask is never made whole: each window rasterizes
  only the features whose bounds meet it, with a transform offset by the
  window's origin, and a work unit carries only the features of its rows
  (:meth:`PolygonMask.select_rows`, like :class:`~tfpipe.records.bandmask.RowSegments`).
* **Checks, up front.** A missing file, bad JSON, another geometry type, a
  vertex more than :data:`EDGE_TOLERANCE` pixels off the slide, or an
  unmapped class name fail discovery with an :class:`InputDataError`.
* **Levels.** Coordinates are full-resolution pixels; with ``data.level > 0``
  they are scaled to the level read.

rasterio is the ``[rasterio]`` extra: discovery asks for it
(:func:`~tfpipe.errors.require_extra`), so a missing extra is one clear line.

Example:
    >>> ring = np.array([[1, 1], [3, 1], [3, 2], [1, 2], [1, 1]], float)
    >>> mask = PolygonMask(3, 4, (Shape(1, ((ring,),)),))
    >>> mask.read_window(0, 0, 3, 4).tolist()  # doctest: +SKIP
    [[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tfpipe.errors import InputDataError, require_extra
from tfpipe.io.polygons import Feature, Rings, off_slide, read_features
from tfpipe.io.tiff import open_slide

if TYPE_CHECKING:  # workers import this module; pydantic config stays out of them
    from tfpipe.config import DataConfig
    from tfpipe.records.sources import SourceItem

EDGE_TOLERANCE = 8.0
"""Pixels a vertex may lie past the slide's edge (annotation tools overshoot a little)."""
OUTSIDE = "outside"
"""The ``data.sampling.anatomy`` key of pixels in no region."""


@dataclass(frozen=True)
class Shape:
    """One feature ready to burn: its mask value and polygons (slide pixel coordinates)."""

    value: int
    polygons: tuple[Rings, ...]

    def geometry(self) -> dict:
        return {"type": "MultiPolygon", "coordinates": [list(rings) for rings in self.polygons]}


@dataclass
class PolygonMask:
    """A slide's labels as polygons; a :class:`~tfpipe.records.bandmask.MaskReader`.

    Attributes:
        height, width: Slide size at the level read.
        shapes: Features in file order (later ones win where they overlap).
    """

    height: int
    width: int
    shapes: tuple[Shape, ...]
    boxes: np.ndarray = field(init=False, repr=False)
    """``(n, 4)`` float64 ``(x0, y0, x1, y1)`` of each shape's outlines."""

    def __post_init__(self) -> None:
        boxes = [_bounds([rings[0] for rings in s.polygons]) for s in self.shapes]
        self.boxes = np.array(boxes, np.float64).reshape(-1, 4)

    def _meeting(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        b = self.boxes
        return (b[:, 2] > x) & (b[:, 0] < x + w) & (b[:, 3] > y) & (b[:, 1] < y + h)

    def select_rows(self, y0: int, y1: int) -> PolygonMask:
        """Only the shapes whose bounds meet rows ``[y0, y1)`` (what one work unit needs)."""
        b = self.boxes
        keep = np.flatnonzero((b[:, 3] > y0) & (b[:, 1] < y1))
        return PolygonMask(self.height, self.width, tuple(self.shapes[i] for i in keep))

    def read_window(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """The ``(h, w)`` uint8 values at ``(y, x)``: 0 where no polygon covers a pixel centre."""
        near = np.flatnonzero(self._meeting(y, x, h, w))
        if near.size == 0:
            return np.zeros((h, w), np.uint8)
        from rasterio.features import rasterize
        from rasterio.transform import Affine

        return rasterize(
            [(self.shapes[i].geometry(), self.shapes[i].value) for i in near],
            out_shape=(h, w),
            transform=Affine.translation(x, y),
            fill=0,
            dtype=np.uint8,
        )

    def close(self) -> None:
        """Nothing to release (the polygons are plain arrays)."""

    def objects(self) -> list[tuple[float, float, float, float]]:
        """``(x0, y0, x1, y1)`` of every object: each polygon of a shape with a value > 0.

        A polygon whose bounds lie inside those of a larger polygon of the same
        shape (an island in a hole) is part of that object, not one of its own.
        """
        out: list[tuple[float, float, float, float]] = []
        for shape in self.shapes:
            if shape.value <= 0:
                continue
            boxes = sorted((_bounds([rings[0]]) for rings in shape.polygons), key=_area)
            kept: list[tuple[float, float, float, float]] = []
            for box in reversed(boxes):  # largest first
                if not any(_inside(box, k) for k in kept):
                    kept.append(box)
            out += kept
        return out


def _bounds(rings: list[np.ndarray]) -> tuple[float, float, float, float]:
    points = np.concatenate(rings)
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def _area(box: tuple[float, float, float, float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _inside(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return b[0] <= a[0] and b[1] <= a[1] and a[2] <= b[2] and a[3] <= b[3]


def region_fractions(regions: np.ndarray, count: int) -> np.ndarray:
    """Fraction of a window's pixels in each region value ``0..count`` (0 = outside).

    Example:
        >>> region_fractions(np.array([[0, 1], [1, 2]], np.uint8), 2).tolist()
        [0.25, 0.5, 0.25]
    """
    counts = np.bincount(regions.ravel(), minlength=count + 1)[: count + 1]
    return counts / regions.size


def attach_polygons(items: list[SourceItem], cfg: DataConfig) -> None:
    """Read, check and attach every slide's ``<id>.json`` (``data.source: polygons``).

    Raises:
        MissingExtraError: rasterio (the ``[rasterio]`` extra) is not installed.
        InputDataError: a file is missing or breaks a rule of the module notes.
    """
    from tfpipe.records.bandmask import LabelSpec

    require_extra("rasterio", "data.source=polygons")
    folder = _folder(cfg)
    for item in items:
        path = folder / f"{item.image_id}.json"
        if not path.is_file():
            raise InputDataError(
                f"slide {item.path} has no polygon file {path} (data.source=polygons needs "
                f"<id>.json for every slide in data.masks, default beside the slides; use "
                "data.source=unlabelled for slides without labels)"
            )
        shapes = read_shapes(path, item, cfg, lambda f, p: polygon_value(f, p, cfg))
        item.labels = LabelSpec(polygons=PolygonMask(item.height, item.width, shapes))


def attach_regions(items: list[SourceItem], cfg: DataConfig, names: list[str]) -> None:
    """Attach every slide's anatomy regions (``data.sampling.anatomy_file``) as values 1..R.

    Args:
        items: Slides found by discovery.
        cfg: The ``data`` section.
        names: Region names in value order (``names[k - 1]`` is value k).

    Raises:
        MissingExtraError: rasterio (the ``[rasterio]`` extra) is not installed.
        InputDataError: a file is missing, breaks a rule of the module notes, or
            names a region that ``data.sampling.anatomy`` does not weight.
    """
    require_extra("rasterio", "data.sampling.anatomy")
    folder = _folder(cfg)
    index = {name: k + 1 for k, name in enumerate(names)}

    def value(feature: Feature, path: Path) -> int:
        if feature.name not in index:
            raise InputDataError(
                f"{path} feature {feature.index} is region "
                f"{cfg.polygon_property}={feature.name!r}, which data.sampling.anatomy does "
                f"not weight; give it a weight (regions: {', '.join(names)}, plus {OUTSIDE})"
            )
        return index[feature.name]

    for item in items:
        path = folder / cfg.sampling.anatomy_file.format(id=item.image_id)
        if not path.is_file():
            raise InputDataError(
                f"slide {item.path} has no anatomy file {path} (data.sampling.anatomy needs "
                f"data.sampling.anatomy_file={cfg.sampling.anatomy_file!r} for every slide)"
            )
        item.regions = PolygonMask(item.height, item.width, read_shapes(path, item, cfg, value))


def polygon_value(feature: Feature, path: Path, cfg: DataConfig) -> int | None:
    """The mask value of a feature under ``data.polygon_classes`` (None: dropped).

    Example:
        >>> from tfpipe.config import DataConfig
        >>> cfg = DataConfig(mask_classes=["healthy", "sclerotic"],
        ...                  polygon_classes={"glomerulus": "healthy",
        ...                                   "sclerotic glomerulus": "sclerotic", "other": None})
        >>> polygon_value(Feature(0, (), "sclerotic glomerulus"), Path("a.json"), cfg)
        2
    """
    mapping = cfg.polygon_classes
    if mapping is None:
        return 1
    if feature.name not in mapping:
        got = "no such property" if feature.name is None else repr(feature.name)
        raise InputDataError(
            f"{path} feature {feature.index} has {cfg.polygon_property}: {got}, which "
            f"data.polygon_classes does not map (it maps {sorted(mapping)}); map it to a "
            "class of data.mask_classes or to null to drop such features"
        )
    target = mapping[feature.name]
    if target is None:
        return None
    return cfg.mask_classes.index(target) + 1 if cfg.mask_classes else 1


def read_shapes(
    path: Path,
    item: SourceItem,
    cfg: DataConfig,
    value: Callable[[Feature, Path], int | None],
) -> tuple[Shape, ...]:
    """The features of ``path`` as shapes of ``item``'s level, checked against its size.

    Features whose ``value`` is None are dropped.
    """
    features = read_features(path, cfg.polygon_property)
    height, width = item.height, item.width
    if cfg.level:
        with open_slide(item.path) as full:
            height, width = full.height, full.width
    shapes = []
    for feature in features:
        vertex = off_slide(feature, height, width, EDGE_TOLERANCE)
        if vertex is not None:
            raise InputDataError(
                f"{path} feature {feature.index} has vertex (x={vertex[0]:g}, y={vertex[1]:g}) "
                f"off slide {item.path} ({width}x{height} WxH at full resolution; vertices "
                f"may overshoot the edges by {EDGE_TOLERANCE:g} px at most): is it this "
                "slide's file?"
            )
        mask_value = value(feature, path)
        if mask_value is None:
            continue
        if cfg.level:
            feature = feature.scaled(item.width / width, item.height / height)
        shapes.append(Shape(mask_value, feature.polygons))
    return tuple(shapes)


def _folder(cfg: DataConfig) -> Path:
    folder = Path(cfg.masks or cfg.images)
    if not folder.is_dir():
        raise InputDataError(f"data.masks folder not found: {folder}")
    return folder
