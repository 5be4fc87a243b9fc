"""Where slides, predictions and ground truth come from, as column-major runs.

``tfpipe evaluate`` compares masks given in three forms, each read here into
the same currency, ``(N, 2)`` run intervals (see :mod:`tfpipe.predict.intervals`):

* an RLE CSV (``id,encoding`` truth or ``id,predicted`` submission);
* a folder of mask images ``<id>.png|.tif|.tiff`` (any value > 0 is foreground),
  read column strip by column strip;
* a folder of low-resolution probability maps written by ``tfpipe predict
  --save-probs``: ``<id>.npy`` (the stitched float32 map at ``1/scale``, kept
  at full precision so thresholding it reproduces predict's masks exactly) and
  ``<id>.json`` (``{"height", "width", "scale", "threshold"}``). These also
  allow the threshold sweep.

Example:
    >>> from tfpipe.predict.sources import find_slides
    >>> find_slides("data/hubmap/test")  # doctest: +SKIP
    {'aaa': PosixPath('data/hubmap/test/aaa.tiff')}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfpipe.errors import InputDataError
from tfpipe.io.masks import open_mask_image, read_rle_csv
from tfpipe.io.rle import parse_rle
from tfpipe.io.tiff import open_slide
from tfpipe.predict.intervals import StripRleEncoder
from tfpipe.predict.stitch import iter_mask_strips, strip_width

MASK_SUFFIXES = (".png", ".tif", ".tiff")
PROB_SUFFIX = ".npy"


def find_slides(folder: str | Path, pattern: str = "*.tif*") -> dict[str, Path]:
    """``{id: path}`` of the slides in ``folder`` matching ``pattern`` (id = file stem).

    Raises:
        InputDataError: the folder is missing or holds no matching file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputDataError(f"slide folder not found: {folder}")
    slides = {p.stem: p for p in sorted(folder.glob(pattern)) if p.is_file()}
    if not slides:
        raise InputDataError(f"no slides matching {pattern!r} in {folder}")
    return slides


@dataclass
class ProbabilityMap:
    """A saved low-resolution probability map and what is needed to upscale it."""

    path: Path
    height: int
    width: int
    scale: int
    threshold: float | list[float]
    """predict's threshold; one per class for ``(h, w, K)`` maps."""

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def load(self) -> np.ndarray:
        """The ``(h, w)`` map (``(h, w, K)`` for several classes) as float32."""
        return np.load(self.path).astype(np.float32)


def save_probability_map(
    folder: Path,
    image_id: str,
    prob: np.ndarray,
    shape: tuple[int, int],
    scale: int,
    threshold: float | list[float],
) -> Path:
    """Write ``<id>.npy`` (float32) and its ``<id>.json`` sidecar; each via temp file + rename.

    Maps of several classes are ``(h, w, K)`` with one threshold per class."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{image_id}{PROB_SUFFIX}"
    tmp = folder / f".{image_id}.tmp.npy"
    np.save(tmp, prob.astype(np.float32))
    tmp.replace(target)
    meta = {"height": shape[0], "width": shape[1], "scale": scale, "threshold": threshold}
    tmp_meta = folder / f".{image_id}.json.tmp"
    tmp_meta.write_text(json.dumps(meta))
    tmp_meta.replace(folder / f"{image_id}.json")
    return target


class SlideMasks:
    """What every mask source knows: its slides (RLE text, mask images or probability maps)."""

    rles: dict
    masks: dict[str, Path]
    probs: dict[str, ProbabilityMap]

    @property
    def ids(self) -> list[str]:
        return sorted(self.rles or self.masks or self.probs)

    @property
    def has_probabilities(self) -> bool:
        return bool(self.probs)

    def shape(self, image_id: str) -> tuple[int, int] | None:
        """``(H, W)`` when this source knows it (mask images, probability maps), else None."""
        if image_id in self.probs:
            return self.probs[image_id].shape
        if image_id in self.masks:
            with open_mask_image(self.masks[image_id]) as m:
                return m.height, m.width
        return None


class MaskSource(SlideMasks):
    """Masks of several slides from a CSV, a mask folder or a probability folder.

    Args:
        path: RLE CSV file, or a folder of mask images / probability maps.
        role: ``"pred"`` or ``"truth"``, named in error messages.

    Example:
        >>> src = MaskSource("submission.csv", "pred")  # doctest: +SKIP
        >>> src.runs("aaa", (2048, 2048)).shape  # doctest: +SKIP
        (412, 2)
    """

    def __init__(self, path: str | Path, role: str) -> None:
        self.path, self.role = Path(path), role
        self.rles: dict[str, str] = {}
        self.masks: dict[str, Path] = {}
        self.probs: dict[str, ProbabilityMap] = {}
        if self.path.is_file():
            self.rles = read_rle_csv(self.path)
        elif self.path.is_dir():
            self.probs = _read_probability_folder(self.path)
            if not self.probs:
                self.masks = {
                    p.stem: p
                    for p in sorted(self.path.iterdir())
                    if p.suffix.lower() in MASK_SUFFIXES
                }
            if not self.probs and not self.masks:
                raise InputDataError(
                    f"{role} folder {self.path} holds no mask images ({', '.join(MASK_SUFFIXES)}) "
                    f"and no probability maps (*.npy with .json)"
                )
        else:
            raise InputDataError(f"{role} not found: {self.path} (expected an RLE CSV or a folder)")

    def runs(self, image_id: str, shape: tuple[int, int]) -> np.ndarray:
        """``(N, 2)`` column-major runs of the mask (probability maps: at their threshold)."""
        self._require(image_id)
        if image_id in self.rles:
            return parse_rle(self.rles[image_id], shape, f"{self.path} id={image_id}")
        if image_id in self.masks:
            return mask_image_runs(self.masks[image_id], shape)
        pm = self.probs[image_id]
        enc = StripRleEncoder(shape[0])
        for x0, strip in iter_mask_strips(pm.load(), pm.scale, shape, pm.threshold):
            enc.add(x0, strip)
        return enc.runs()

    def _require(self, image_id: str) -> None:
        if image_id not in self.ids:
            raise InputDataError(
                f"{self.role} {self.path} has no mask for slide {image_id!r}; it has "
                f"{', '.join(self.ids[:5])}{' ...' if len(self.ids) > 5 else ''}"
            )


def mask_image_runs(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Runs of a mask image, read column strip by column strip (memory ~ one strip)."""
    with open_mask_image(path) as m:
        if (m.height, m.width) != tuple(shape):
            raise InputDataError(
                f"mask {path} is {m.height}x{m.width} but its slide is {shape[0]}x{shape[1]}"
            )
        enc = StripRleEncoder(m.height)
        step = strip_width(m.height, 1)
        for x0 in range(0, m.width, step):
            enc.add(x0, m.read_window(0, x0, m.height, min(step, m.width - x0)))
    return enc.runs()


def slide_shapes(
    ids: list[str], images: Path | None, *sources: MaskSource
) -> dict[str, tuple[int, int]]:
    """``(H, W)`` of each slide: from the sources when they know it, else from ``images``.

    Raises:
        InputDataError: a shape is unknown (RLE only) and no slide folder was given.
    """
    slides = find_slides(images) if images is not None else {}
    shapes: dict[str, tuple[int, int]] = {}
    for image_id in ids:
        known = next((s for src in sources if (s := src.shape(image_id)) is not None), None)
        if known is None and image_id in slides:
            with open_slide(slides[image_id]) as slide:
                known = (slide.height, slide.width)
        if known is None:
            where = f"in {images}" if images is not None else "(pass --images DIR)"
            raise InputDataError(
                f"the size of slide {image_id!r} is unknown: RLE masks need the slide {where}"
            )
        shapes[image_id] = known
    return shapes


def _read_probability_folder(folder: Path) -> dict[str, ProbabilityMap]:
    maps = {}
    for npy in sorted(folder.glob(f"*{PROB_SUFFIX}")):
        meta_path = npy.with_suffix(".json")
        if not meta_path.is_file():
            raise InputDataError(f"probability map {npy} has no sidecar {meta_path.name}")
        try:
            meta = json.loads(meta_path.read_text())
            maps[npy.stem] = ProbabilityMap(
                npy,
                int(meta["height"]),
                int(meta["width"]),
                int(meta["scale"]),
                _threshold(meta.get("threshold", 0.5)),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise InputDataError(
                f"{meta_path} must hold height, width, scale (and threshold); got error {err}"
            ) from None
    return maps


def _threshold(value: float | str | list[float]) -> float | list[float]:
    """A sidecar's threshold: a number, or a list of numbers (one per class)."""
    if isinstance(value, list):
        return [float(v) for v in value]
    return float(value)
