"""Contact sheets: a grid of record tiles with the mask outlined and the source id below.

Tiles smaller than :data:`CELL` pixels are enlarged with nearest-neighbour
sampling (pixels stay visible as pixels); masks are drawn as 2-px contours
(OpenCV ``findContours`` on the enlarged mask) over a light tint, so the
tissue under the label stays visible.

Example:
    >>> import numpy as np

from tfpipe.errors import RecordsError
    >>> cell = draw_cell(np.zeros((32, 32, 3), np.uint8), None, "slide:0:0")
    >>> cell.shape[1] == CELL
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tfpipe.errors import RecordsError

CELL = 192  # displayed tile side, pixels
CAPTION = 30  # caption strip under each tile
GAP = 6
OUTLINE = (255, 230, 0)  # RGB yellow: visible on pink H&E and on gray X-rays
TINT = 0.25
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class SheetTile:
    """One tile to show: image (RGB), optional mask, and two caption lines."""

    image: np.ndarray
    mask: np.ndarray | None
    title: str
    note: str = ""


def draw_cell(image: np.ndarray, mask: np.ndarray | None, title: str, note: str = "") -> np.ndarray:
    """One ``(CELL + CAPTION, CELL, 3)`` RGB cell: the tile, its mask outline, a caption."""
    shown = _fit(image, cv2.INTER_AREA if image.shape[0] > CELL else cv2.INTER_NEAREST)
    if shown.ndim == 2 or shown.shape[2] == 1:
        shown = np.repeat(shown.reshape(CELL, CELL, 1), 3, axis=2)
    shown = np.ascontiguousarray(shown)
    if mask is not None and mask.any():
        big = _fit(mask.astype(np.uint8), cv2.INTER_NEAREST) > 0
        shown[big] = ((1 - TINT) * shown[big] + TINT * np.array(OUTLINE)).astype(np.uint8)
        contours, _ = cv2.findContours(big.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(shown, contours, -1, OUTLINE, 2)
    cell = np.full((CELL + CAPTION, CELL, 3), 255, np.uint8)
    cell[:CELL] = shown
    _text(cell, _clip(title, CELL), (3, CELL + 12), 0.36)
    _text(cell, _clip(note, CELL), (3, CELL + 25), 0.36)
    return cell


def compose(tiles: list[SheetTile], title: str, columns: int = 8) -> np.ndarray:
    """All cells in a grid under a title line; RGB uint8."""
    columns = max(1, min(columns, len(tiles)))
    rows = max(1, -(-len(tiles) // columns))
    head = 34
    width = columns * (CELL + GAP) + GAP
    height = head + rows * (CELL + CAPTION + GAP) + GAP
    sheet = np.full((height, width, 3), 235, np.uint8)
    _text(sheet, title, (GAP, 22), 0.55, thickness=1)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y = head + GAP + r * (CELL + CAPTION + GAP)
        x = GAP + c * (CELL + GAP)
        sheet[y : y + CELL + CAPTION, x : x + CELL] = draw_cell(
            tile.image, tile.mask, tile.title, tile.note
        )
    return sheet


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB image as PNG atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    try:
        if not cv2.imwrite(str(tmp), rgb[..., ::-1]):
            raise OSError(f"OpenCV could not write {tmp}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def decode_field(data: bytes, encoding: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Decode an image/mask field: PNG/JPEG with OpenCV (to RGB), raw by ``shape``.

    Raises:
        RecordsError: the bytes do not decode (corrupt record).
    """
    if encoding == b"raw":
        if len(data) != int(np.prod(shape)):
            raise RecordsError(f"raw field holds {len(data)} bytes; shape {shape} needs more")
        return np.frombuffer(data, np.uint8).reshape(shape)
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise RecordsError(f"a {encoding.decode()} field does not decode (corrupt record)")
    return pixels[..., ::-1] if pixels.ndim == 3 else pixels


def _fit(array: np.ndarray, interpolation: int) -> np.ndarray:
    return cv2.resize(array, (CELL, CELL), interpolation=interpolation)


def _clip(text: str, width: int, scale: float = 0.36) -> str:
    """Shorten ``text`` with a leading ellipsis until it fits ``width`` pixels."""
    while text and cv2.getTextSize(text, FONT, scale, 1)[0][0] > width - 6:
        text = "..." + text[4:]
    return text


def _text(
    img: np.ndarray, text: str, org: tuple[int, int], scale: float, thickness: int = 1
) -> None:
    cv2.putText(img, text, org, FONT, scale, (20, 20, 20), thickness, cv2.LINE_AA)
