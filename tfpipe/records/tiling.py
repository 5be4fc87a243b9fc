"""Tile geometry, row-band reading, the tissue filter and the resize rules.

Rules (what the records mean):

* **Grid.** Tiles are ``tile_size`` pixels at source resolution, ``stride``
  apart (default ``tile_size``: no overlap). Positions start at 0 and go on
  until a tile reaches the image edge, so every pixel is covered; the last
  row/column of tiles is **zero-padded** past the edge (black, which the
  tissue filter counts as background, so mostly-empty edge tiles drop out).
* **Bands.** A slide is read as row bands (``tile_size`` rows x full width)
  with ``Slide.read_window``; tiles are cut from the band in memory. Strip- or
  tile-organised TIFFs are then read once, instead of once per overlapping
  window. With overlap (``stride < tile_size``) the shared rows of the previous
  band are reused, not read again.
* **Resize.** Each tile is reduced by ``downscale`` with ``cv2.INTER_AREA``
  (pixel-area averaging); masks use ``cv2.INTER_NEAREST`` so labels stay labels.
* **Filter.** A pixel is tissue when its HSV saturation is above
  ``saturation_min`` and its brightness (max of R, G, B) below ``brightness_max``;
  the fraction is measured on the resized tile (the pixels that get written).
  Tiles with any pixel in the written (resized) mask are always kept, so
  ``tile/positive_fraction > 0`` exactly for those; of the remaining tissue
  tiles without mask pixels, ``keep_empty_fraction`` is kept,
  decided by a hash of ``(seed, image id, y, x)`` so the choice does not depend
  on worker count or processing order.

Example:
    >>> grid_positions(300, 128, 128)
    [0, 128, 256]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # workers import this module; pydantic config stays out of them
    from tfpipe.config import DataConfig, TissueFilter

ReadWindow = Callable[[int, int, int, int], np.ndarray]


@dataclass(frozen=True)
class TileSpec:
    """Tile geometry: size and stride at source resolution, and the downscale factor."""

    tile_size: int
    stride: int
    downscale: int

    @property
    def out_size(self) -> int:
        """Side of the written tile (``tile_size // downscale``)."""
        return self.tile_size // self.downscale

    @classmethod
    def from_config(cls, cfg: DataConfig) -> TileSpec:
        """The geometry of ``cfg`` (``stride`` defaults to ``tile_size``)."""
        return cls(cfg.tile_size, cfg.stride or cfg.tile_size, cfg.downscale)


@dataclass(frozen=True)
class TissueRule:
    """The tissue filter thresholds as a plain value (see ``config.TissueFilter``)."""

    saturation_min: int = 40
    brightness_max: int = 220
    min_tissue_fraction: float = 0.25

    @classmethod
    def from_config(cls, flt: TissueFilter) -> TissueRule:
        """The rule of a ``data.filter`` section."""
        return cls(flt.saturation_min, flt.brightness_max, flt.min_tissue_fraction)


class Decision(Enum):
    """What the filter does with one tile."""

    KEPT = "kept"
    BACKGROUND = "dropped_background"
    EMPTY = "dropped_empty"


def grid_positions(length: int, tile_size: int, stride: int) -> list[int]:
    """Tile start offsets along one axis: from 0 until a tile reaches ``length``.

    Example:
        >>> grid_positions(1000, 512, 256)
        [0, 256, 512]
    """
    count = 1 + max(0, -(-(length - tile_size) // stride))
    return [i * stride for i in range(count)]


def grid_size(height: int, width: int, spec: TileSpec) -> int:
    """Number of tiles in the grid of an image of ``height`` x ``width``."""
    rows = grid_positions(height, spec.tile_size, spec.stride)
    cols = grid_positions(width, spec.tile_size, spec.stride)
    return len(rows) * len(cols)


def iter_bands(
    read: ReadWindow, ys: list[int], tile_size: int, width: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(y, band)`` with ``band = read(y, 0, tile_size, width)`` for each ``y``.

    Rows shared with the previous band (overlapping strides) are copied from it
    instead of being read again. ``width`` may exceed the image (zero padding).
    """
    prev_y, prev = None, None
    for y in ys:
        if prev is not None and prev_y is not None and 0 < y - prev_y < tile_size:
            shared = tile_size - (y - prev_y)
            fresh = read(y + shared, 0, tile_size - shared, width)
            band = np.concatenate([prev[tile_size - shared :], fresh], axis=0)
        else:
            band = read(y, 0, tile_size, width)
        yield y, band
        prev_y, prev = y, band


def resize_image(tile: np.ndarray, out_size: int) -> np.ndarray:
    """Reduce an image tile to ``out_size`` square with ``cv2.INTER_AREA``."""
    if tile.shape[0] == out_size and tile.shape[1] == out_size:
        return np.ascontiguousarray(tile)
    out = cv2.resize(tile, (out_size, out_size), interpolation=cv2.INTER_AREA)
    return out if out.ndim == tile.ndim else out[..., None]


def resize_mask(mask: np.ndarray, out_size: int) -> np.ndarray:
    """Reduce a 2-D mask to ``out_size`` square with nearest-neighbour sampling."""
    if mask.shape[0] == out_size and mask.shape[1] == out_size:
        return np.ascontiguousarray(mask)
    return cv2.resize(mask, (out_size, out_size), interpolation=cv2.INTER_NEAREST)


def tissue_fraction(tile: np.ndarray, flt: TissueRule) -> float:
    """Fraction of pixels that are tissue under the HSV rule of ``flt``.

    Example:
        >>> tissue_fraction(np.zeros((4, 4, 3), np.uint8), TissueRule())
        0.0
    """
    rgb = tile if tile.shape[-1] == 3 else np.repeat(tile[..., :1], 3, axis=-1)
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    tissue = (hsv[..., 1] > flt.saturation_min) & (hsv[..., 2] < flt.brightness_max)
    return float(tissue.mean())


def keep_empty(seed: int, image_id: str, y: int, x: int, fraction: float) -> bool:
    """Whether a tissue tile without mask pixels is kept: a seeded hash, not an RNG stream.

    Example:
        >>> keep_empty(42, "slide", 0, 0, 1.0), keep_empty(42, "slide", 0, 0, 0.0)
        (True, False)
    """
    if fraction >= 1.0:
        return True
    if fraction <= 0.0:
        return False
    digest = hashlib.blake2b(f"{seed}:{image_id}:{y}:{x}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


def decide(
    tile: np.ndarray,
    mask_any: bool | None,
    flt: TissueRule,
    keep_empty_fraction: float,
    key: tuple[int, str, int, int],
) -> Decision:
    """Apply the filter rules to one resized tile.

    Args:
        tile: The resized image tile.
        mask_any: Whether the resized mask has a pixel > 0; None for
            unlabelled sources (no empty-tile sampling then).
        flt: Tissue thresholds.
        keep_empty_fraction: Share of tissue tiles without mask pixels to keep.
        key: ``(seed, image id, y, x)`` for the deterministic keep decision.
    """
    if mask_any:
        return Decision.KEPT
    if tissue_fraction(tile, flt) < flt.min_tissue_fraction:
        return Decision.BACKGROUND
    if mask_any is not None and not keep_empty(*key, keep_empty_fraction):
        return Decision.EMPTY
    return Decision.KEPT


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Zero-pad an image at the bottom/right to a square (classification images)."""
    h, w = image.shape[:2]
    side = max(h, w)
    if h == w:
        return image
    out = np.zeros((side, side, *image.shape[2:]), image.dtype)
    out[:h, :w] = image
    return out
