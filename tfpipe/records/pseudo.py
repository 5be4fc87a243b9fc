"""Pseudo-labels: a predicted probability map and a confidence band become a mask.

``data.source: pseudo_labels`` builds ordinary segmentation records from
unlabelled slides (``data.images``) and the probability maps that
``tfpipe predict --probabilities DIR`` wrote for them (``data.probabilities:
DIR``, one ``<id>.tiff`` per slide, :mod:`tfpipe.io.probmap`). Each map pixel
gets a label by the band ``data.pseudo_band: [lo, hi]``:

* ``p >= hi`` -> 1 (confident foreground),
* ``p <= lo`` -> 0 (confident background),
* in between -> 255 (:data:`~tfpipe.io.masks.IGNORE_VALUE`): the model is not
  told either way; losses and metrics skip the pixel (the mask value convention).

The label is decided on the map, then each map pixel is repeated
``scale x scale`` times (nearest): a record at the prediction scale
(``data.downscale`` = the map's scale) holds exactly the predicted pixels'
labels, without interpolation blurring the band. The ETL reads the map
window by window, one row band at a time, like any other mask.

A tile is "positive" (always kept, counted in ``tile/positive_fraction`` for
``input.balance``) only for confident foreground pixels: tiles whose only
labels are ignored pixels go through the tissue filter and
``keep_empty_fraction`` like empty tiles.

Example:
    >>> band_labels(np.array([0, 76, 77, 178, 179, 255], np.uint8), (0.3, 0.7)).tolist()
    [0, 0, 255, 255, 1, 1]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tfpipe.errors import ConfigError, InputDataError
from tfpipe.io.masks import IGNORE_VALUE
from tfpipe.io.probmap import SUFFIX, open_probability_tiff, read_probability_header

if TYPE_CHECKING:  # workers import this module; pydantic config stays out of them
    from tfpipe.config import DataConfig
    from tfpipe.records.sources import SourceItem


def check_band(band: tuple[float, float], where: str = "data.pseudo_band") -> tuple[float, float]:
    """``band`` as floats when ``0 <= lo < hi <= 1``.

    Raises:
        ConfigError: the rule is broken (named with the value).

    Example:
        >>> check_band((0.2, 0.9))
        (0.2, 0.9)
    """
    lo, hi = (float(v) for v in band)
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"{where} must be [lo, hi] with 0 <= lo < hi <= 1; got [{lo}, {hi}]")
    return lo, hi


def band_table(band: tuple[float, float]) -> np.ndarray:
    """The label of each of the 256 quantised probabilities ``q / 255`` (a lookup table)."""
    lo, hi = check_band(band)
    p = np.arange(256, dtype=np.float64) / 255.0
    table = np.full(256, IGNORE_VALUE, np.uint8)
    table[p >= hi] = 1
    table[p <= lo] = 0
    return table


def band_labels(quantized: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """Labels 0 / 1 / 255 (ignore) of uint8 quantised probabilities (``q / 255``).

    Example:
        >>> band_labels(np.array([[0, 128, 255]], np.uint8), (0.25, 0.75)).tolist()
        [[0, 255, 1]]
    """
    return band_table(band)[quantized]


def class_pixels(mask: np.ndarray) -> np.ndarray:
    """Where ``mask`` holds a class (1..254): neither background (0) nor ignored (255).

    Example:
        >>> class_pixels(np.array([0, 1, 2, 255], np.uint8)).tolist()
        [False, True, True, False]
    """
    return (mask > 0) & (mask != IGNORE_VALUE)


@dataclass(frozen=True)
class PseudoSpec:
    """How a worker reads one slide's pseudo-labels: the map file and the band."""

    path: Path
    band: tuple[float, float]


class PseudoLabels:
    """A :class:`~tfpipe.records.bandmask.MaskReader` over a probability TIFF.

    ``read_window`` takes source-pixel coordinates and returns uint8 labels
    0 / 1 / 255 (ignore); pixels past the slide read 0 (like the zero
    padding of the image).

    Example:
        >>> with PseudoLabels(PseudoSpec(Path("probs/aaa.tiff"), (0.3, 0.7))) as m:
        ...     m.read_window(0, 0, 1024, 4096).shape  # doctest: +SKIP
        (1024, 4096)
    """

    def __init__(self, spec: PseudoSpec) -> None:
        self._map = open_probability_tiff(spec.path)
        self.scale = self._map.header.scale
        self.height, self.width = self._map.header.height, self._map.header.width
        self._table = band_table(spec.band)

    def __enter__(self) -> PseudoLabels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_window(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """The ``(h, w)`` labels at source pixel ``(y, x)`` (nearest map pixel)."""
        s = self.scale
        my0, mx0 = y // s, x // s
        my1, mx1 = -(-(y + h) // s), -(-(x + w) // s)
        labels = self._table[self._map.read_window(my0, mx0, my1 - my0, mx1 - mx0)]
        full = np.repeat(np.repeat(labels, s, axis=0), s, axis=1)
        top, left = y - my0 * s, x - mx0 * s
        out = np.ascontiguousarray(full[top : top + h, left : left + w])
        # Map pixels at the right/bottom edge cover source pixels past the slide: 0 there.
        out[max(0, self.height - y) :, :] = 0
        out[:, max(0, self.width - x) :] = 0
        return out

    def close(self) -> None:
        self._map.close()


def attach_pseudo_labels(items: list[SourceItem], cfg: DataConfig) -> None:
    """Pair each slide with its probability map and check the map fits it.

    Raises:
        ConfigError: ``data.probabilities`` is unset, ``data.level`` is not 0,
            or the band is not ``0 <= lo < hi <= 1``.
        InputDataError: the folder or a slide's map is missing, unreadable, or
            made for a slide of another size.
    """
    from tfpipe.records.bandmask import LabelSpec

    band = check_band(tuple(cfg.pseudo_band))
    if cfg.probabilities is None:
        raise ConfigError(
            "data.probabilities is required for data.source=pseudo_labels (the folder that "
            "`tfpipe predict --probabilities DIR` wrote); got null"
        )
    if cfg.level != 0:
        raise ConfigError(
            "probability maps are in full-resolution slide pixels: data.source=pseudo_labels "
            f"needs data.level=0; got data.level={cfg.level}"
        )
    if len(cfg.mask_classes or []) > 1:
        raise ConfigError(
            "pseudo-labels are binary (one probability per pixel, one class); got "
            f"{len(cfg.mask_classes)} data.mask_classes {cfg.mask_classes}"
        )
    folder = Path(cfg.probabilities)
    if not folder.is_dir():
        raise InputDataError(f"data.probabilities folder not found: {folder}")
    for item in items:
        # predict names a map after the slide's file stem ("a.ome" for a.ome.tiff), the
        # records after its id ("a"): either is accepted.
        found = [p for p in _candidates(folder, item) if p.is_file()]
        path = found[0] if found else folder / f"{item.image_id}{SUFFIX}"
        if not found:
            raise InputDataError(
                f"no probability map for slide {item.path}: expected {path} (write the maps "
                f"with `tfpipe predict --images {cfg.images} --probabilities {folder}`)"
            )
        header = read_probability_header(path)
        if (header.height, header.width) != (item.height, item.width):
            raise InputDataError(
                f"probability map {path} was predicted for a {header.height}x{header.width} "
                f"(HxW) slide but slide {item.path} is {item.height}x{item.width}; predict "
                "that slide again"
            )
        item.labels = LabelSpec(pseudo=PseudoSpec(path, band))


def _candidates(folder: Path, item: SourceItem) -> list[Path]:
    return [folder / f"{item.image_id}{SUFFIX}", folder / f"{item.path.stem}{SUFFIX}"]


def open_pseudo_labels(spec: PseudoSpec) -> PseudoLabels:
    """Open the reader of one slide's pseudo-labels (in a worker)."""
    return PseudoLabels(spec)
