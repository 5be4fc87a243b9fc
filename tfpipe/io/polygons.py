"""GeoJSON polygon annotations (the HuBMAP layout), read and checked without rasterio.

The HuBMAP kidney competition ships, next to each slide ``<id>.tiff``, a file
``<id>.json`` of glomeruli and ``<id>-anatomical-structure.json`` of regions
(cortex, medulla): a JSON list of GeoJSON Features (or a FeatureCollection,
or one Feature), each like::

    {"type": "Feature",
     "geometry": {"type": "Polygon", "coordinates": [[[x, y], [x, y], ...], <holes>...]},
     "properties": {"classification": {"name": "glomerulus", "colorRGB": -3140401}}}

Coordinates are pixel ``(x, y)`` of the slide's full-resolution level, with
the origin at the top-left corner of the top-left pixel (so pixel ``(r, c)``
has its centre at ``(c + 0.5, r + 0.5)``). ``Polygon`` and ``MultiPolygon``
geometries are read; a polygon's first ring is its outline and the others
are holes. A ring needs at least three distinct positions; an open ring is
closed. Anything else (bad JSON, another geometry type, a malformed ring,
coordinates that are not finite numbers) is an :class:`InputDataError`
naming the file, the feature's index in it and the rule.

Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> square = [[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]]
    >>> feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square},
    ...            "properties": {"classification": {"name": "glomerulus"}}}
    >>> _ = path.write_text(json.dumps([feature]))
    >>> (shape,) = read_features(path)
    >>> shape.name, shape.bounds
    ('glomerulus', (0.0, 0.0, 4.0, 4.0))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfpipe.errors import InputDataError

GEOMETRY_TYPES = ("Polygon", "MultiPolygon")
DEFAULT_PROPERTY = "classification.name"

Rings = tuple[np.ndarray, ...]
"""One polygon: its outline, then its holes; each ring an ``(n, 2)`` float64 array of ``(x, y)``."""


@dataclass(frozen=True)
class Feature:
    """One annotation: its polygons and the value of the property that names its class.

    Attributes:
        index: Position of the feature in its file (for error messages).
        polygons: One :data:`Rings` per polygon (one for a ``Polygon``).
        name: The property's value as text, or None when the feature lacks it.
    """

    index: int
    polygons: tuple[Rings, ...]
    name: str | None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of all outlines (holes lie inside them)."""
        points = np.concatenate([rings[0] for rings in self.polygons])
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)

    def scaled(self, sx: float, sy: float) -> Feature:
        """The feature with ``x`` multiplied by ``sx`` and ``y`` by ``sy`` (a pyramid level)."""
        factor = np.array([sx, sy])
        polygons = tuple(tuple(ring * factor for ring in rings) for rings in self.polygons)
        return Feature(self.index, polygons, self.name)


def read_features(path: str | Path, property_path: str = DEFAULT_PROPERTY) -> list[Feature]:
    """Read and check every feature of a GeoJSON file.

    Args:
        path: The ``.json`` file.
        property_path: Dotted path of the class name in a feature's
            ``properties`` (HuBMAP: ``classification.name``).

    Returns:
        The features in file order.

    Raises:
        InputDataError: the file is missing or not JSON, or a feature breaks a
            rule of the module notes (named with its index).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputDataError(f"GeoJSON file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputDataError(f"cannot read GeoJSON file {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise InputDataError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    keys = property_path.split(".")
    return [_feature(raw, i, path, keys) for i, raw in enumerate(_feature_list(data, path))]


def _feature_list(data: Any, path: Path) -> list[Any]:
    """The features of a list, a ``FeatureCollection`` or a single ``Feature``."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
        if isinstance(features, list):
            return features
    if isinstance(data, dict) and data.get("type") == "Feature":
        return [data]
    raise InputDataError(
        f"{path} must hold a JSON list of GeoJSON Features or a FeatureCollection; "
        f"got {type(data).__name__}"
        + (f" of type {data.get('type')!r}" if isinstance(data, dict) else "")
    )


def _feature(raw: Any, index: int, path: Path, keys: list[str]) -> Feature:
    where = f"{path} feature {index}"
    geometry = raw.get("geometry") if isinstance(raw, dict) else None
    if not isinstance(geometry, dict):
        raise InputDataError(f"{where} has no geometry object (a Feature needs one)")
    kind = geometry.get("type")
    if kind not in GEOMETRY_TYPES:
        raise InputDataError(
            f"{where} has geometry type {kind!r}; polygon annotations must be one of "
            f"{', '.join(GEOMETRY_TYPES)}"
        )
    coords = geometry.get("coordinates")
    parts = [coords] if kind == "Polygon" else coords
    if not isinstance(parts, list) or not parts:
        raise InputDataError(f"{where}: a {kind} needs a non-empty coordinates list")
    polygons = tuple(_polygon(part, f"{where} polygon {k}") for k, part in enumerate(parts))
    return Feature(index, polygons, _property(raw.get("properties"), keys))


def _polygon(rings: Any, where: str) -> Rings:
    if not isinstance(rings, list) or not rings:
        raise InputDataError(f"{where}: a polygon is a non-empty list of rings")
    return tuple(_ring(ring, f"{where} ring {r}") for r, ring in enumerate(rings))


def _ring(ring: Any, where: str) -> np.ndarray:
    try:
        points = np.array([position[:2] for position in ring], dtype=np.float64)
    except (TypeError, ValueError, IndexError):
        points = None
    if points is None or points.ndim != 2 or points.shape[1] != 2:
        raise InputDataError(f"{where}: a ring is a list of [x, y] number pairs")
    if not np.isfinite(points).all():
        raise InputDataError(f"{where} has a coordinate that is not a finite number")
    distinct = len(np.unique(points, axis=0))
    if distinct < 3:
        raise InputDataError(f"{where} has {distinct} distinct position(s); a ring needs 3")
    if not np.array_equal(points[0], points[-1]):
        points = np.vstack([points, points[:1]])  # GeoJSON rings are closed; close it
    return points


def _property(properties: Any, keys: list[str]) -> str | None:
    """The value at ``keys`` inside ``properties``, as text (None when absent)."""
    value = properties
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return None if value is None else str(value)


def off_slide(
    feature: Feature, height: int, width: int, tolerance: float
) -> tuple[float, float] | None:
    """The first vertex farther than ``tolerance`` pixels outside ``[0, width] x [0, height]``.

    Returns:
        That vertex ``(x, y)``, or None when every vertex is within the bounds.

    Example:
        >>> ring = np.array([[0, 0], [9, 0], [9, 5], [0, 0]], float)
        >>> off_slide(Feature(0, ((ring,),), None), height=4, width=10, tolerance=0.5)
        (9.0, 5.0)
    """
    for rings in feature.polygons:
        for ring in rings:
            x, y = ring[:, 0], ring[:, 1]
            bad = (x < -tolerance) | (y < -tolerance)
            bad |= (x > width + tolerance) | (y > height + tolerance)
            if bad.any():
                k = int(np.argmax(bad))
                return float(x[k]), float(y[k])
    return None


def write_features(path: str | Path, features: list[dict[str, Any]]) -> None:
    """Write GeoJSON features as the HuBMAP files do: a JSON list, one feature per line."""
    lines = ",\n".join(json.dumps(f, separators=(",", ":")) for f in features)
    Path(path).write_text(f"[\n{lines}\n]\n")


def feature(geometry: dict[str, Any], name: str, colour: int) -> dict[str, Any]:
    """A feature in the competition's layout (QuPath export: ``PathAnnotationObject``).

    Example:
        >>> feature({"type": "Polygon", "coordinates": []}, "Cortex", -16711936)["properties"]
        {'classification': {'name': 'Cortex', 'colorRGB': -16711936}, 'isLocked': False}
    """
    return {
        "type": "Feature",
        "id": "PathAnnotationObject",
        "geometry": geometry,
        "properties": {"classification": {"name": name, "colorRGB": colour}, "isLocked": False},
    }
