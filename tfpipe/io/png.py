"""PNG tiles decoded ~3x faster than libpng, bit for bit the same pixels.

Why: decoding the PNG is the largest cost of a training step's input
(``tf.io.decode_png`` ~1.9 ms per 256 x 256 RGB tile on the 2-core reference
machine, OpenCV's libpng the same), and two thirds of it is zlib's inflate.
libdeflate, through imagecodecs (already a dependency for the TIFF codecs),
inflates the same stream ~2.8x faster when it is told the output size, which
the PNG header gives. The tiles ``build-records`` writes use the "up" row
filter on every row (:func:`tfpipe.records.format.encode_image`), and undoing
"up" is a prefix sum down each column, mod 256: one compiled pass (numba),
without the GIL.
``benchmarks/bench_png_decode.py`` measures it.

Any other PNG (another row filter, 16 bits, a palette, interlacing) goes to
libpng through imagecodecs: every PNG decodes, the ones we write fast.
Chunk CRCs are not checked on the fast path; damaged image data still fails,
on the zlib stream's Adler-32 checksum (and a record's bytes are covered by
the TFRecord CRC before they get here).

Example:
    >>> import cv2
    >>> tile = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    >>> png = cv2.imencode(".png", tile, [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP])[1]
    >>> bool(np.array_equal(decode_png(png.tobytes(), 3), tile[..., ::-1]))  # cv2 writes BGR
    True
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

import imagecodecs
import numba
import numpy as np

from tfpipe.io.scratch import thread_buffer

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> channels, 8-bit types only
_FILTER_NONE, _FILTER_UP = 0, 2
_CHUNK = struct.Struct(">I4s")  # a chunk's length and type


def decode_png(data: bytes, channels: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a PNG to a ``uint8`` ``[height, width, channels]`` array.

    Args:
        data: The PNG file's bytes.
        channels: Channels the caller expects (1 gray, 3 RGB, 4 RGBA).
        out: Where to write the pixels (a C-contiguous ``uint8`` array of the
            image's shape); a new array when None.

    Returns:
        ``out``, or the new array.

    Raises:
        ValueError: ``data`` is not a PNG, is damaged, or holds another number
            of channels or another bit depth than 8.
    """
    image = decode_up_filtered(data, channels, out)
    return image if image is not None else decode_with_libpng(data, channels, out)


def decode_up_filtered(
    data: bytes, channels: int, out: np.ndarray | None = None
) -> np.ndarray | None:
    """:func:`decode_png`'s fast path: None, with nothing written, for any other PNG.

    A caller decoding many PNGs of one encoder can stop trying after the first
    None (the try inflates the image data once more than libpng alone).
    """
    header = _read_header(data)
    if header is None:
        return None
    height, width, file_channels = header
    if file_channels != channels:
        raise ValueError(f"PNG has {file_channels} channels; expected {channels}")
    if out is not None and out.shape != (height, width, channels):
        raise ValueError(
            f"PNG is {height}x{width}x{channels}; expected {'x'.join(map(str, out.shape))}"
        )
    # The rows inflate into this thread's buffer: no new array per tile (a 200 kB
    # one per tile, freed on another thread than the next one is taken on,
    # spreads glibc's heap arenas).
    rows = thread_buffer("inflated rows", (height, width * channels + 1))
    _inflate(data, rows)
    # The filter byte of every row, compared as bytes: NumPy's per-call cost on
    # a few hundred bytes is all Python time, which holds the GIL.
    filters = rows[:, 0].tobytes()
    if filters[0] not in (_FILTER_NONE, _FILTER_UP) or filters[1:] != _up_filters(height - 1):
        return None
    if out is None:
        out = np.empty((height, width, channels), np.uint8)
    # Row 0's "up" filter adds the zero row above it: the same as no filter.
    _undo_up_filter(rows, out.reshape(height, width * channels))
    return out


def _read_header(data: bytes) -> tuple[int, int, int] | None:
    """``(height, width, channels)`` of an 8-bit, non-interlaced PNG; None for other PNGs."""
    if data[:8] != _SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file (bad signature or header)")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if depth != 8 or interlace or colour not in _CHANNELS:
        return None
    return height, width, _CHANNELS[colour]


def _inflate(data: bytes, rows: np.ndarray) -> None:
    """Inflate every IDAT chunk at once into ``rows``: the filtered rows, C-contiguous."""
    view, pos, parts = memoryview(data), 33, []  # 33: signature + IHDR chunk
    while pos + 8 <= len(data):
        length, kind = _CHUNK.unpack_from(data, pos)
        if kind == b"IDAT":
            parts.append(view[pos + 8 : pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += length + 12  # length, type, data, CRC
    stream = parts[0] if len(parts) == 1 else b"".join(parts)
    try:
        raw = imagecodecs.deflate_decode(stream, out=rows.reshape(-1))
    except imagecodecs.DeflateError as err:
        raise ValueError(f"damaged PNG image data: {err}") from None
    if len(raw) != rows.size:
        raise ValueError(f"damaged PNG image data: {len(raw)} bytes inflated, {rows.size} expected")


def _compiled(function: Callable[..., None]) -> Callable[..., None]:
    """``function`` compiled without the GIL; cached on disk where numba finds a writable place.

    Without one (a read-only install and home), numba refuses ``cache=True`` at
    import: compile in each process instead (~0.65 s on the first call).
    """
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:
        return numba.njit(nogil=True)(function)


@_compiled
def _undo_up_filter(rows: np.ndarray, out: np.ndarray) -> None:
    """Running sum down each column of ``rows`` without its first (filter) column, mod 256.

    Compiled (numba) and run without the GIL: one pass over the tile, ~7 µs
    against ~90 µs for the eight whole-tile NumPy adds of a log-step scan, whose
    calls also hold the GIL between them, so that two decoding threads got only
    ~1.7x one thread. ``uint8`` wraps, so the sums are mod 256.
    """
    height, width = out.shape
    for j in range(width):
        out[0, j] = rows[0, j + 1]
    for i in range(1, height):
        for j in range(width):
            out[i, j] = out[i - 1, j] + rows[i, j + 1]


@functools.lru_cache(maxsize=16)
def _up_filters(rows: int) -> bytes:
    return bytes([_FILTER_UP]) * rows


def decode_with_libpng(data: bytes, channels: int, out: np.ndarray | None = None) -> np.ndarray:
    """:func:`decode_png` through libpng (imagecodecs): any PNG, at libpng's speed."""
    try:
        image = imagecodecs.png_decode(data)
    except imagecodecs.PngError as err:
        raise ValueError(f"damaged PNG: {err}") from None
    image = image[..., None] if image.ndim == 2 else image
    if image.dtype != np.uint8 or image.shape[-1] != channels:
        raise ValueError(
            f"PNG tile is {image.dtype} with {image.shape[-1]} channels; "
            f"expected uint8 with {channels}"
        )
    if out is None:
        return image
    if out.shape != image.shape:
        shape = "x".join(map(str, image.shape))
        raise ValueError(f"PNG is {shape}; expected {'x'.join(map(str, out.shape))}")
    out[...] = image
    return out
