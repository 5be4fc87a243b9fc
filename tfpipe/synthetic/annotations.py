"""GeoJSON annotations of the demo slides, in the HuBMAP competition's layout.

Beside each slide ``<id>.tiff``, :func:`write_annotations` writes

* ``<id>.json`` — the glomeruli as polygons that rasterize to exactly the
  RLE truth: each outline follows the pixel edges of its blob's mask
  (:func:`outline`), so a pixel centre is inside a polygon exactly when the
  pixel is in the mask (``rasterio.features.rasterize``'s rule). The layouts
  the files may hold are all there: glomerulus 0 of a slide has a square hole
  filled by an island (one ``MultiPolygon``: outline with a hole, plus the
  island), glomeruli 1 and 2 share one ``MultiPolygon`` feature, and those
  two and every third from 3 on (3, 6, …) are named ``sclerotic glomerulus``
  instead of ``glomerulus`` (a second class for multi-class masks, drawn
  pink and smooth in the slides: :func:`.slides.is_sclerotic`);
* ``<id>-anatomical-structure.json`` — a ``Medulla`` ellipse in the middle
  of the slide and a ``Cortex`` ellipse around it with the medulla as its
  hole (the medulla comes first in the file, so a reader that ignored holes
  would paint cortex over it).

Everything is computed from the slide plan, blob by blob (no slide-sized
mask), and written with sorted keys and integer pixel coordinates, so the
files are the same for a seed.

Example:
    >>> outline(np.array([[1, 1], [1, 0]], np.uint8))
    [[[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2], [0, 0]]]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfpipe.io.polygons import feature, write_features
from tfpipe.synthetic.slides import Blob, SlidePlan, blob_radius

GLOMERULUS, SCLEROTIC = "glomerulus", "sclerotic glomerulus"
# QuPath's colours as the competition files have them (ARGB as a signed 32-bit int).
COLOURS = {GLOMERULUS: -3140401, SCLEROTIC: -6895508, "Cortex": -16711936, "Medulla": -256}
ANATOMY_SUFFIX = "-anatomical-structure.json"
HOLE_FRACTION = 0.2  # half side of glomerulus 0's square hole, in blob radii
ELLIPSE_VERTICES = 48
# The left turn (dx, dy) of each heading: taken at a corner shared by two diagonal pixels,
# it keeps an 8-connected piece in one ring (so objects match 8-connected RLE components).
_LEFT = {(1, 0): (0, -1), (0, -1): (-1, 0), (-1, 0): (0, 1), (0, 1): (1, 0)}


def write_annotations(plan: SlidePlan, folder: Path) -> None:
    """Write ``<id>.json`` (glomeruli) and ``<id>-anatomical-structure.json`` into ``folder``."""
    write_features(folder / f"{plan.image_id}.json", glomerulus_features(plan))
    write_features(folder / f"{plan.image_id}{ANATOMY_SUFFIX}", anatomy_features(plan))


def glomerulus_features(plan: SlidePlan) -> list[dict]:
    """The glomeruli of a slide as features (see the module notes for the layouts used)."""
    blobs = [b for b in plan.blobs if b.glomerulus]
    polygons = [blob_polygons(plan, b) for b in blobs]
    features = []
    for k, parts in enumerate(polygons):
        if k == 2:
            continue  # joined to glomerulus 1
        name = SCLEROTIC if blobs[k].sclerotic else GLOMERULUS  # drawn so (slides.py)
        if k == 0:
            parts = with_hole(plan, blobs[0], parts)
        elif k == 1 and len(polygons) > 2:
            parts = parts + polygons[2]
        geometry = (
            {"type": "Polygon", "coordinates": parts[0]}
            if len(parts) == 1
            else {"type": "MultiPolygon", "coordinates": parts}
        )
        features.append(feature(geometry, name, COLOURS[name]))
    return features


def blob_polygons(plan: SlidePlan, blob: Blob) -> list[list[list[list[int]]]]:
    """The polygons (rings of ``[x, y]``) of a blob's mask, in slide coordinates."""
    y0, x0, y1, x1 = blob.box(plan.height, plan.width)
    mask = (blob_radius(blob, y0, x0, y1 - y0, x1 - x0) < 1).astype(np.uint8)
    rings = [[[x + x0, y + y0] for x, y in ring] for ring in outline(mask)]
    return _group(rings)


def with_hole(plan: SlidePlan, blob: Blob, parts: list) -> list:
    """``parts`` with a square hole at the blob's centre and an island filling it.

    The union is unchanged (the island covers the hole exactly: both edges lie
    on pixel edges, so no pixel centre is on them). The hole is left out when
    the square would not lie inside the blob.
    """
    half = max(2, int(HOLE_FRACTION * min(blob.rx, blob.ry)))
    cx, cy = int(blob.x), int(blob.y)
    y0, x0, y1, x1 = blob.box(plan.height, plan.width)
    mask = blob_radius(blob, y0, x0, y1 - y0, x1 - x0) < 1
    square = mask[cy - half - y0 : cy + half - y0, cx - half - x0 : cx + half - x0]
    if len(parts) != 1 or square.size == 0 or not square.all():
        return parts
    left, top, right, bottom = cx - half, cy - half, cx + half, cy + half
    island = [[left, top], [right, top], [right, bottom], [left, bottom], [left, top]]
    return [[*parts[0], island[::-1]], [island]]


def anatomy_features(plan: SlidePlan) -> list[dict]:
    """A medulla ellipse and a cortex ellipse around it (the medulla is the cortex's hole)."""
    h, w = plan.height, plan.width
    medulla = _ellipse(w / 2, h / 2, 0.2 * w, 0.18 * h)
    cortex = _ellipse(w / 2, h / 2, 0.42 * w, 0.4 * h)
    return [
        feature({"type": "Polygon", "coordinates": [medulla]}, "Medulla", COLOURS["Medulla"]),
        feature(
            {"type": "Polygon", "coordinates": [cortex, medulla[::-1]]},
            "Cortex",
            COLOURS["Cortex"],
        ),
    ]


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> list[list[float]]:
    angles = np.linspace(0, 2 * np.pi, ELLIPSE_VERTICES, endpoint=False)
    ring = [[round(cx + rx * np.cos(a), 1), round(cy + ry * np.sin(a), 1)] for a in angles]
    return [*ring, ring[0]]


def outline(mask: np.ndarray) -> list[list[list[int]]]:
    """The rings along the pixel edges of a binary mask: outlines, then holes.

    Coordinates are pixel corners ``[x, y]`` (pixel ``(r, c)`` spans ``x`` in
    ``[c, c + 1]``); outlines have a positive shoelace area, holes a negative
    one; vertices on straight runs are dropped.
    """
    padded = np.pad(mask.astype(bool), 1)
    inside = padded[1:-1, 1:-1]
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    # The side of an inside pixel that faces an outside one, walked with the inside on its left.
    for (dy, dx), start, step in (
        ((-1, 0), (0, 0), (1, 0)),  # top side: left to right
        ((0, 1), (1, 0), (0, 1)),  # right side: downwards
        ((1, 0), (1, 1), (-1, 0)),  # bottom side: right to left
        ((0, -1), (0, 1), (0, -1)),  # left side: upwards
    ):
        facing = padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx]
        for r, c in zip(*np.nonzero(inside & ~facing), strict=True):
            a = (int(c) + start[0], int(r) + start[1])
            edges.setdefault(a, []).append(step)
    rings = []
    while edges:
        rings.append(_walk(edges))
    return sorted(rings, key=lambda ring: _area(ring) < 0)


def _walk(edges: dict[tuple[int, int], list[tuple[int, int]]]) -> list[list[int]]:
    """Follow edges from the smallest vertex back to it, taking them out of ``edges``.

    The smallest vertex is a corner no two outlines share, so the walk ends
    the first time it comes back; at a shared corner it turns left.
    """
    first = point = min(edges)
    heading: tuple[int, int] | None = None
    ring: list[list[int]] = []
    while True:
        steps = edges[point]
        step = steps[0]
        if len(steps) > 1 and heading is not None and _LEFT[heading] in steps:
            step = _LEFT[heading]
        steps.remove(step)
        if not steps:
            del edges[point]
        if step != heading:
            ring.append(list(point))
        point, heading = (point[0] + step[0], point[1] + step[1]), step
        if point == first:
            return [*ring, list(first)]


def _area(ring: list[list[int]]) -> float:
    """Shoelace area with ``x`` right and ``y`` down as plain numbers."""
    xy = np.array(ring, np.float64)
    return float(np.sum(xy[:-1, 0] * xy[1:, 1] - xy[1:, 0] * xy[:-1, 1]) / 2)


def _group(rings: list[list[list[int]]]) -> list[list[list[list[int]]]]:
    """Polygons from rings: each hole goes with the smallest outline around its first vertex."""
    import cv2

    outlines = [r for r in rings if _area(r) > 0]
    polygons: list[list] = [[r] for r in outlines]
    for hole in (r for r in rings if _area(r) < 0):
        point = tuple(float(v) for v in hole[0])
        around = [
            k
            for k, r in enumerate(outlines)
            if cv2.pointPolygonTest(np.array(r, np.float32), point, False) >= 0
        ]
        polygons[min(around, key=lambda k: _area(outlines[k]))].append(hole)
    return polygons
