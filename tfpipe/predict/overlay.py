"""An overlay PNG of prediction against truth: true positives, false positives, false negatives.

The picture shows one region of a slide (the whole slide by default) reduced
by an integer factor to at most ``max_side`` pixels. Colours are mixed by the
fraction of each category inside an output pixel (an exact area average), so
small glomeruli stay visible when a 20,000-pixel slide becomes 1,000 pixels.

Masks are read as column strips (the order of their runs) and the slide as
row bands (the order of most TIFF strips), each pass keeping only reduced
arrays, so memory stays bounded for any slide size.

Example:
    >>> from tfpipe.predict.overlay import write_overlay
    >>> write_overlay("overlay.png", pred_runs, truth_runs, (4096, 4096))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tfpipe.io.rle import decode_window
from tfpipe.io.tiff import open_slide

# RGB colours of true positive, false positive, false negative.
COLOURS = np.array([[40, 200, 60], [235, 50, 50], [40, 120, 255]], np.float32)
LABELS = ("true positive", "false positive", "false negative")
ALPHA = 0.75
FOOTER = 36
BLOCK = 64  # output pixels per strip/band
MIN_WIDTH = 720  # room for the legend and a title


def write_overlay(
    path: str | Path,
    pred: np.ndarray,
    truth: np.ndarray,
    shape: tuple[int, int],
    slide: Path | None = None,
    region: tuple[int, int, int, int] | None = None,
    max_side: int = 1024,
    title: str = "",
) -> Path:
    """Draw prediction vs truth for ``region`` of a slide and write it as PNG (atomically).

    Args:
        path: Output PNG.
        pred, truth: ``(N, 2)`` column-major runs of the two masks.
        shape: ``(H, W)`` of the slide.
        slide: The slide image for a grey background; black when None.
        region: ``(y, x, h, w)`` at source resolution; default the whole slide.
        max_side: Longest side of the picture (before the legend footer).
        title: Text written in the footer next to the legend.

    Returns:
        The written path.
    """
    import cv2

    y, x, h, w = region or (0, 0, *shape)
    factor = max(1, math.ceil(max(h, w) / max_side))
    out_h, out_w = math.ceil(h / factor), math.ceil(w / factor)
    fractions = _category_fractions(pred, truth, shape, (y, x, h, w), factor, (out_h, out_w))
    grey = _background(slide, (y, x, h, w), factor, (out_h, out_w))
    alpha = ALPHA * fractions.sum(axis=-1, keepdims=True)
    mixed = fractions @ COLOURS / np.maximum(fractions.sum(axis=-1, keepdims=True), 1e-6)
    picture = grey[..., None] * (1 - alpha) + mixed * alpha
    picture = _pad_width(picture.astype(np.uint8), MIN_WIDTH)
    picture = np.concatenate([picture, _footer(picture.shape[1], title)], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    tmp.replace(path)
    return path


def _reduce(block: np.ndarray, factor: int) -> np.ndarray:
    """Area average of a 2-D block by an integer factor (zero-padded to a multiple of it).

    Summing with a float32 accumulator avoids a float copy of the whole block.
    """
    h, w = block.shape
    ph, pw = -h % factor, -w % factor
    if ph or pw:
        block = np.pad(block, ((0, ph), (0, pw)))
    hh, ww = block.shape[0] // factor, block.shape[1] // factor
    total = block.reshape(hh, factor, ww, factor).sum(axis=(1, 3), dtype=np.float32)
    return total / (factor * factor)


def _category_fractions(
    pred: np.ndarray,
    truth: np.ndarray,
    shape: tuple[int, int],
    region: tuple[int, int, int, int],
    factor: int,
    out_shape: tuple[int, int],
) -> np.ndarray:
    """``(out_h, out_w, 3)`` fraction of TP, FP, FN pixels per output pixel."""
    height, width = shape
    y, x, h, w = region
    out = np.zeros((*out_shape, 3), np.float32)
    cols = BLOCK * factor
    rows = slice(max(y, 0), min(y + h, height))
    for ox in range(0, out_shape[1], BLOCK):
        x0 = x + ox * factor
        x1 = min(x0 + cols, x + w)
        lo, hi = max(x0, 0), min(x1, width)
        p = np.zeros((h, x1 - x0), bool)
        t = np.zeros((h, x1 - x0), bool)
        if lo < hi and rows.start < rows.stop:
            dst = (slice(rows.start - y, rows.stop - y), slice(lo - x0, hi - x0))
            box = (rows.start, lo, rows.stop - rows.start, hi - lo)
            p[dst] = decode_window(pred, height, *box)
            t[dst] = decode_window(truth, height, *box)
        for c, cat in enumerate((p & t, p & ~t, ~p & t)):
            reduced = _reduce(cat, factor)
            out[:, ox : ox + reduced.shape[1], c] = reduced[: out_shape[0]]
    return out


def _background(
    slide: Path | None, region: tuple[int, int, int, int], factor: int, out_shape: tuple[int, int]
) -> np.ndarray:
    """``(out_h, out_w)`` float32 grey picture of the slide region (black without a slide)."""
    import cv2

    out = np.zeros(out_shape, np.float32)
    if slide is None:
        return out
    y, x, h, w = region
    rows = BLOCK * factor
    with open_slide(slide) as s:
        for oy in range(0, out_shape[0], BLOCK):
            y0 = y + oy * factor
            band = s.read_window(y0, x, min(rows, y + h - y0), w)
            if band.shape[-1] == 3:
                band = cv2.cvtColor(band, cv2.COLOR_RGB2GRAY)
            reduced = _reduce(band.reshape(band.shape[:2]), factor)
            out[oy : oy + reduced.shape[0]] = reduced[:, : out_shape[1]]
    return out


def _pad_width(picture: np.ndarray, width: int) -> np.ndarray:
    """White margin on the right of a picture narrower than ``width``."""
    missing = width - picture.shape[1]
    if missing <= 0:
        return picture
    return np.pad(picture, ((0, 0), (0, missing), (0, 0)), constant_values=255)


def _footer(width: int, title: str) -> np.ndarray:
    """A white band with the colour legend and the title."""
    import cv2

    footer = np.full((FOOTER, max(width, 1), 3), 255, np.uint8)
    x = 8
    for colour, label in zip(COLOURS.astype(int).tolist(), LABELS, strict=True):
        cv2.rectangle(footer, (x, 10), (x + 16, 26), colour, thickness=-1)
        cv2.putText(
            footer, label, (x + 22, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
        x += 30 + 8 * len(label)
    if title:
        cv2.putText(
            footer, title, (x + 10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
    return footer
