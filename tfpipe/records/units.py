"""The map stage: one work unit = one slide's range of row bands (or a batch of images).

A worker process runs :func:`run_unit`: windowed read -> tile -> filter ->
resize -> encode -> serialise -> frame, appending each framed TFRecord to the
unit's spill file, and returns only small metadata (positions, offsets,
lengths, counts, pixel sums). Units split slides by rows so that one giant
slide keeps every worker busy. This module must stay free of TensorFlow:
workers import it (see :mod:`tfpipe.records.example`).

``data.sampling`` (:mod:`tfpipe.records.sampling`) adds two kinds of slide
unit: bands of the half-tile shifted grid (``offset``), and object-centred
tiles, each read as its own window (``windows``). With anatomy regions, the
regions are read in step with the image and give each kept tile its
``tile/weight``.

Classification images are not tiled: each image is zero-padded at the
bottom/right to a square and resized whole (``cv2.INTER_AREA``) to
``tile_size // downscale`` pixels; gray images are replicated to RGB, and
every image is kept (the tissue filter does not apply).

Float pixels are scaled by the slide's value range (see
:func:`tfpipe.io.tiff.float_range`): discovery finds it once per slide
(or takes ``data.float_range``) and every unit of that slide uses it, so all
tiles of a slide share one scale; a whole classification image is scaled by
its own range.

Example:
    >>> unit_rows(10, 4)
    [(0, 4), (4, 8), (8, 10)]
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from tfpipe.errors import InputDataError
from tfpipe.io.tiff import open_slide, to_uint8
from tfpipe.records import format as fmt
from tfpipe.records.bandmask import LabelSpec, MaskReader, open_labels
from tfpipe.records.example import serialize_example
from tfpipe.records.polygons import PolygonMask
from tfpipe.records.pseudo import class_pixels
from tfpipe.records.sampling import grid_rows, tile_weight
from tfpipe.records.tiling import (
    Decision,
    TileSpec,
    TissueRule,
    decide,
    iter_bands,
    pad_to_square,
    resize_image,
    resize_mask,
    tissue_fraction,
)
from tfpipe.records.writer import frame_record


@dataclass(frozen=True)
class MapSettings:
    """Everything a worker needs besides the unit itself (same for all units)."""

    spec: TileSpec
    filter: TissueRule
    keep_empty_fraction: float
    seed: int
    encoding: str
    jpeg_quality: int
    level: int
    float_range: tuple[float, float] | None = None
    """``data.float_range`` for float pixels; None = detect per image ("auto")."""
    region_weights: tuple[float, ...] | None = None
    """Tile weight per anatomy region value (0 = outside), or None: no ``tile/weight``."""


@dataclass
class WorkUnit:
    """One task for a worker: bands ``ys`` of one slide, object tiles ``windows``, or images.

    The tiles of a band unit are the grid shifted by ``offset`` (0: the grid);
    a window unit reads each of its ``windows`` (tile corners) on its own.
    """

    index: int
    spill: Path
    image_id: str = ""
    path: Path | None = None
    ys: list[int] = field(default_factory=list)
    width: int = 0
    labels: LabelSpec = field(default_factory=LabelSpec)
    images: list[tuple[str, Path, tuple[int, ...]]] = field(default_factory=list)
    tiles: int = 0  # grid tiles in the unit (for the progress bar)
    value_range: tuple[float, float] | None = None  # float slides: pixel values -> 0..255
    offset: int = 0  # grid shift in x and y (the half-tile shifted grid of data.sampling)
    windows: list[tuple[int, int]] = field(default_factory=list)  # object tiles (y, x)
    regions: PolygonMask | None = None  # anatomy regions of the unit's rows (tile weights)


@dataclass
class UnitResult:
    """What a worker sends back: where each record is, and what it did per source."""

    index: int
    records: list[tuple[str, int, int, int, int, float]] = field(default_factory=list)
    """``(image id, y, x, offset, length, positive fraction)`` per record."""
    counts: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per source id: tiles_total, kept, dropped_background, dropped_empty, positive (counts),
    and weight_sum (the kept tiles' ``tile/weight``, only when they carry one)."""
    pixel_sum: np.ndarray = field(default_factory=lambda: np.zeros(3))
    pixel_sq: np.ndarray = field(default_factory=lambda: np.zeros(3))
    pixels: int = 0
    source_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    tiles: int = 0
    informative: dict[str, int] = field(default_factory=dict)
    """Per source id: tiles that show tissue and are not constant (0 for a blank slide).
    Positive tiles count only if they pass the tissue rule too (they are kept either way)."""


def unit_rows(bands: int, per_unit: int) -> list[tuple[int, int]]:
    """Split ``bands`` row bands into ranges of ``per_unit`` (the last may be shorter)."""
    return [(i, min(i + per_unit, bands)) for i in range(0, bands, per_unit)]


def run_unit(unit: WorkUnit, settings: MapSettings) -> UnitResult:
    """Map one unit into its spill file (runs in a worker process).

    Args:
        unit: The slide bands or images to process.
        settings: Tile geometry, filter and encoding.

    Returns:
        The unit's record locations and statistics.
    """
    start = time.perf_counter()
    result = UnitResult(unit.index, tiles=unit.tiles)
    with open(unit.spill, "wb") as spill:
        if unit.images:
            _map_images(unit, settings, _Sink(spill, result, settings))
        else:
            _map_slide(unit, settings, _Sink(spill, result, settings))
            result.source_seconds[unit.image_id] = time.perf_counter() - start
    result.seconds = time.perf_counter() - start
    return result


class _Sink:
    """Encodes kept tiles, appends them to the spill file and keeps the books."""

    def __init__(self, spill: BinaryIO, result: UnitResult, settings: MapSettings) -> None:
        self.spill, self.result, self.settings = spill, result, settings
        self.offset = 0

    def count(self, image_id: str, key: str) -> None:
        counts = self.result.counts.setdefault(image_id, _zero_counts())
        counts[key] += 1

    def add(
        self,
        image_id: str,
        y: int,
        x: int,
        tile: np.ndarray,
        mask: np.ndarray | None = None,
        classes: tuple[int, ...] | None = None,
        weight: float | None = None,
    ) -> None:
        s = self.settings
        # Ignored pixels (255, pseudo-labels' uncertain band) are not positive.
        positive = float(class_pixels(mask).mean()) if mask is not None else 0.0
        mask_format = "raw" if s.encoding == "raw" else "png"
        data = serialize_example(
            fmt.encode_image(tile, s.encoding, s.jpeg_quality),
            s.encoding,
            tile.shape,
            source_id=fmt.source_id(image_id, y, x),
            mask=fmt.encode_image(mask, mask_format) if mask is not None else None,
            mask_format=mask_format if mask is not None else None,
            labels=classes,
            positive_fraction=positive,
            weight=weight,
        )
        if weight is not None:  # multiples of 2**-16: the sum is exact in any unit order
            counts = self.result.counts.setdefault(image_id, _zero_counts())
            counts["weight_sum"] = counts.get("weight_sum", 0.0) + weight
        frame = frame_record(data)
        self.spill.write(frame)
        self.result.records.append((image_id, y, x, self.offset, len(frame), positive))
        self.offset += len(frame)
        self._add_pixels(tile)
        self.count(image_id, "kept")
        if positive > 0:
            self.count(image_id, "positive")

    def _add_pixels(self, tile: np.ndarray) -> None:
        """Per-channel sums and sums of squares, for the dataset's mean and std."""
        # cv2.meanStdDev is one C pass; NumPy needed a float64 copy of every tile.
        mean, std = (v.ravel() for v in cv2.meanStdDev(tile))
        pixels = tile.shape[0] * tile.shape[1]
        self.result.pixel_sum = self.result.pixel_sum + mean * pixels
        self.result.pixel_sq = self.result.pixel_sq + (std**2 + mean**2) * pixels
        self.result.pixels += pixels


def _zero_counts() -> dict[str, int]:
    keys = ("tiles_total", "kept", "dropped_background", "dropped_empty", "positive")
    return dict.fromkeys(keys, 0)


def _map_slide(unit: WorkUnit, s: MapSettings, sink: _Sink) -> None:
    """Read the unit's row bands (image, mask and regions in step) and map every tile in them."""
    if unit.windows:
        _map_windows(unit, s, sink)
        return
    tile_size = s.spec.tile_size
    xs = grid_rows(unit.width, unit.offset, s.spec)
    width = xs[-1] + tile_size
    mask_reader = open_labels(unit.labels)
    try:
        with open_slide(unit.path, level=s.level, value_range=unit.value_range) as slide:
            bands = iter_bands(slide.read_window, unit.ys, tile_size, width)
            masks = _bands(mask_reader, unit.ys, tile_size, width)
            regions = _bands(unit.regions, unit.ys, tile_size, width)
            for (y, band), (_, mask_band), (_, region_band) in zip(
                bands, masks, regions, strict=False
            ):
                for x in xs:
                    cut = slice(x, x + tile_size)
                    source_mask = None if mask_band is None else mask_band[:, cut]
                    region = None if region_band is None else region_band[:, cut]
                    _map_tile(unit.image_id, y, x, band[:, cut], source_mask, s, sink, region)
    finally:
        if mask_reader is not None:
            mask_reader.close()


def _bands(
    reader: MaskReader | None, ys: list[int], tile_size: int, width: int
) -> Iterator[tuple[int | None, np.ndarray | None]]:
    """The row bands of a mask or region reader, or ``(None, None)`` forever without one."""
    if reader is None:
        return itertools.repeat((None, None))
    return iter_bands(reader.read_window, ys, tile_size, width)


def _map_windows(unit: WorkUnit, s: MapSettings, sink: _Sink) -> None:
    """Read each object tile of the unit as its own window (image, mask and regions)."""
    size = s.spec.tile_size
    mask_reader = open_labels(unit.labels)
    try:
        with open_slide(unit.path, level=s.level, value_range=unit.value_range) as slide:
            for y, x in unit.windows:
                window = (y, x, size, size)
                mask = None if mask_reader is None else mask_reader.read_window(*window)
                regions = None if unit.regions is None else unit.regions.read_window(*window)
                tile = slide.read_window(*window)
                _map_tile(unit.image_id, y, x, tile, mask, s, sink, regions)
    finally:
        if mask_reader is not None:
            mask_reader.close()


def _map_tile(
    image_id: str,
    y: int,
    x: int,
    window: np.ndarray,
    source_mask: np.ndarray | None,
    s: MapSettings,
    sink: _Sink,
    regions: np.ndarray | None = None,
) -> None:
    """Resize one tile (and its mask), apply the filter, and hand kept tiles to the sink.

    ``regions`` (the tile's anatomy region values) gives a kept tile its weight.
    """
    small = _rgb(resize_image(window, s.spec.out_size))
    mask = None if source_mask is None else resize_mask(source_mask, s.spec.out_size)
    mask_any = None if mask is None else bool(class_pixels(mask).any())
    decision = decide(small, mask_any, s.filter, s.keep_empty_fraction, (s.seed, image_id, y, x))
    sink.count(image_id, "tiles_total")
    if _informative(small, decision, bool(mask_any), s.filter):
        sink.result.informative[image_id] = sink.result.informative.get(image_id, 0) + 1
    if decision is Decision.KEPT:
        weights = s.region_weights
        weight = None if regions is None or weights is None else tile_weight(regions, weights)
        sink.add(image_id, y, x, small, mask, weight=weight)
    else:
        sink.count(image_id, decision.value)


def _informative(small: np.ndarray, decision: Decision, positive: bool, rule: TissueRule) -> bool:
    """Whether a tile shows tissue and is not one flat colour (how blank slides are found)."""
    if positive:  # kept without the tissue test: run it here
        tissue = tissue_fraction(small, rule) >= rule.min_tissue_fraction
    else:
        tissue = decision is not Decision.BACKGROUND
    return tissue and int(small.max()) != int(small.min())


def _map_images(unit: WorkUnit, s: MapSettings, sink: _Sink) -> None:
    """Resize whole classification images and attach their multi-hot labels."""
    for image_id, path, classes in unit.images:
        start = time.perf_counter()
        image = _rgb(read_image(path, s.float_range))
        small = resize_image(pad_to_square(image), s.spec.out_size)
        sink.count(image_id, "tiles_total")
        sink.add(image_id, 0, 0, small, classes=classes)
        sink.result.source_seconds[image_id] = time.perf_counter() - start


def _rgb(tile: np.ndarray) -> np.ndarray:
    """Tiles are written as RGB: gray sources are replicated to three channels."""
    if tile.ndim == 2:
        tile = tile[..., None]
    return np.repeat(tile, 3, axis=-1) if tile.shape[-1] == 1 else tile


def read_image(path: Path, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Decode a whole image as ``(H, W, C)`` uint8 RGB or gray (TIFF via tfpipe.io).

    Float pixels are scaled from ``value_range``, or from the range the
    image's own maximum gives (:func:`~tfpipe.io.tiff.float_range`).

    Raises:
        InputDataError: the file cannot be decoded.

    Example:
        >>> read_image(Path("images/00001.png")).dtype  # doctest: +SKIP
        dtype('uint8')
    """
    if path.suffix.lower() in (".tif", ".tiff"):
        with open_slide(path) as slide:
            pixels = slide.read_raw(0, 0, slide.height, slide.width)
        return to_uint8(pixels, path, value_range)
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise InputDataError(f"cannot decode image {path} (OpenCV could not read it)")
    pixels = to_uint8(pixels, path, value_range)
    if pixels.ndim == 2:
        return pixels[..., None]
    if pixels.shape[2] == 2:  # gray + alpha
        return pixels[..., :1]
    return np.ascontiguousarray(pixels[..., 2::-1])  # BGR(A) -> RGB, alpha dropped
