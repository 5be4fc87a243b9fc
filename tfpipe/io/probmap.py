"""Probability maps on disk: one uint8 tiled TIFF per slide, read window by window.

``tfpipe predict --probabilities DIR`` writes ``DIR/<id>.tiff`` for every
slide: the stitched probability map (fold ensemble, TTA and overlap blending
done) at the prediction scale, one map pixel per ``scale x scale`` source
pixels, so map pixel ``(i, j)`` covers source rows ``[i*scale, (i+1)*scale)``
and columns ``[j*scale, (j+1)*scale)``. Format:

* level 0 only, ``ceil(H / scale) x ceil(W / scale)`` pixels, one channel;
* values quantised to uint8, ``q = round(255 * p)`` (steps of 1/255 = 0.004,
  finer than any confidence band needs; a quarter of float32's bytes);
* 256 x 256 tiles, zlib-compressed: a reader decodes only the tiles a window
  touches, so a 30,000 x 40,000 slide (a 7,500 x 10,000 map at scale 4, 75 MB
  as uint8) is never loaded whole;
* the ImageDescription holds JSON: ``{"tfpipe": "probabilities", "version": 1,
  "height": H, "width": W, "scale": s, "threshold": t}`` (slide size in
  source pixels, the map's scale, predict's threshold).

Any TIFF viewer opens the files as gray images (bright = likely foreground).
They are written under a temporary name and renamed, so a failed predict
never leaves half a file behind.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.tiff"
    >>> _ = write_probability_tiff(path, np.array([[0.0, 1.0]], np.float32), (4, 8), 4)
    >>> with open_probability_tiff(path) as m:
    ...     m.header.scale, m.read_window(0, 0, 1, 3).tolist()
    (4, [[0, 255, 0]])
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfpipe.errors import ConfigError, InputDataError
from tfpipe.io.tiff import Slide, open_slide

MAP_TILE = 256
"""Tile side of the written map, in map pixels."""
FORMAT_NAME = "probabilities"
FORMAT_VERSION = 1
SUFFIX = ".tiff"


@dataclass(frozen=True)
class ProbabilityHeader:
    """What a probability TIFF says about itself.

    Attributes:
        path: The file.
        height, width: Size of the slide it was predicted from, in source pixels.
        scale: Source pixels per map pixel (the training ``data.downscale``).
        threshold: ``predict.threshold`` when it was written.
    """

    path: Path
    height: int
    width: int
    scale: int
    threshold: float

    @property
    def map_shape(self) -> tuple[int, int]:
        """``(h, w)`` of the map: ``ceil(H / scale), ceil(W / scale)``."""
        return math.ceil(self.height / self.scale), math.ceil(self.width / self.scale)


def quantize(prob: np.ndarray) -> np.ndarray:
    """Probabilities in ``[0, 1]`` to uint8 ``round(255 p)`` (clipped first).

    Example:
        >>> quantize(np.array([0.0, 0.3, 0.5, 1.2], np.float32)).tolist()
        [0, 76, 128, 255]
    """
    return np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_probability_tiff(
    path: str | Path,
    prob: np.ndarray,
    shape: tuple[int, int],
    scale: int,
    threshold: float = 0.5,
) -> Path:
    """Write one slide's ``(h, w)`` probability map as a quantised, tiled TIFF (atomic).

    Tiles are quantised one at a time, so the only map-sized array is ``prob``
    itself.

    Args:
        path: Target file (``<id>.tiff``).
        prob: Float probabilities at ``1/scale`` of the slide.
        shape: ``(H, W)`` of the slide in source pixels.
        scale: Source pixels per map pixel.
        threshold: Predict's threshold, recorded for readers.

    Raises:
        ConfigError: ``prob`` has several classes (``(h, w, K)``, ``K > 1``).
        ValueError: ``prob`` is not ``ceil(H/scale) x ceil(W/scale)``.
    """
    import tifffile

    path = Path(path)
    if prob.ndim == 3 and prob.shape[-1] == 1:
        prob = prob[..., 0]
    if prob.ndim == 3:
        raise ConfigError(
            "probability TIFFs hold one class (pseudo-labels are binary); got a map of "
            f"{prob.shape[-1]} classes for {path.name}"
        )
    header = ProbabilityHeader(path, int(shape[0]), int(shape[1]), int(scale), float(threshold))
    if prob.shape != header.map_shape:
        raise ValueError(
            f"a probability map for a {shape[0]}x{shape[1]} slide at scale {scale} must be "
            f"{header.map_shape[0]}x{header.map_shape[1]}; got {prob.shape}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        tifffile.imwrite(
            tmp,
            _tiles(prob),
            shape=prob.shape,
            dtype=np.uint8,
            tile=(MAP_TILE, MAP_TILE),
            compression="zlib",
            photometric="minisblack",
            description=_description(header),
            metadata=None,
        )
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _tiles(prob: np.ndarray) -> Iterator[np.ndarray]:
    """Quantised tiles in row-major order (what tifffile's tiled writer expects)."""
    h, w = prob.shape
    for y in range(0, h, MAP_TILE):
        for x in range(0, w, MAP_TILE):
            yield quantize(prob[y : y + MAP_TILE, x : x + MAP_TILE])


def _description(header: ProbabilityHeader) -> str:
    return json.dumps(
        {
            "tfpipe": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "height": header.height,
            "width": header.width,
            "scale": header.scale,
            "threshold": header.threshold,
        }
    )


def read_probability_header(path: str | Path) -> ProbabilityHeader:
    """The header of a probability TIFF, checked against its pixels.

    Raises:
        InputDataError: missing file, not a TIFF, no tfpipe description, or a
            map whose size does not fit the slide size and scale it records.

    Example:
        >>> read_probability_header("probs/aaa.tiff").scale  # doctest: +SKIP
        4
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"probability map not found: {path}")
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            text, map_shape = page.description, (int(page.imagelength), int(page.imagewidth))
    except Exception as err:  # tifffile raises several types for bad files
        raise InputDataError(f"cannot read {path} as a TIFF: {err}") from None
    try:
        meta = json.loads(text)
        if meta.get("tfpipe") != FORMAT_NAME:
            raise KeyError("tfpipe")
        header = ProbabilityHeader(
            path, int(meta["height"]), int(meta["width"]), int(meta["scale"]), meta["threshold"]
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputDataError(
            f"{path} is not a probability map written by tfpipe predict --probabilities "
            f'(its ImageDescription must be JSON with "tfpipe": "{FORMAT_NAME}", height, '
            f"width, scale, threshold); got {text[:80]!r}"
        ) from None
    if map_shape != header.map_shape:
        raise InputDataError(
            f"probability map {path} is {map_shape[0]}x{map_shape[1]} pixels but its header "
            f"says a {header.height}x{header.width} slide at scale {header.scale}, which "
            f"needs {header.map_shape[0]}x{header.map_shape[1]}"
        )
    return header


class ProbabilityTiff:
    """An open probability TIFF: its header and windowed reads in map pixels.

    Use :func:`open_probability_tiff`; close it (or use ``with``) when done.
    """

    def __init__(self, header: ProbabilityHeader, slide: Slide) -> None:
        self.header, self._slide = header, slide

    def __enter__(self) -> ProbabilityTiff:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_window(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """The ``(h, w)`` uint8 window at map pixel ``(y, x)``; 0 past the edges."""
        return self._slide.read_raw(y, x, h, w)[..., 0]

    def read_probabilities(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Like :meth:`read_window` as float32 probabilities ``q / 255``."""
        return self.read_window(y, x, h, w).astype(np.float32) / np.float32(255.0)

    def close(self) -> None:
        self._slide.close()


def open_probability_tiff(path: str | Path) -> ProbabilityTiff:
    """Open a probability TIFF for windowed reads (header checked first).

    Raises:
        InputDataError: see :func:`read_probability_header`.
    """
    header = read_probability_header(path)
    return ProbabilityTiff(header, open_slide(header.path))
