"""tfpipe.io.png: the fast PNG path gives libpng's pixels; other PNGs fall back; damage is named."""

from __future__ import annotations

import cv2
import imagecodecs
import numpy as np
import pytest

from tfpipe.io import png
from tfpipe.records.format import encode_image


def _tile(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth ramps plus noise: rows differ, so the "up" filter leaves real work to undo.
    ramp = np.add.outer(np.arange(shape[0]), np.arange(shape[1])).astype(np.uint8)
    noise = rng.integers(0, 40, shape, dtype=np.uint8)
    base = ramp if len(shape) == 2 else ramp[..., None]
    return (base + noise).astype(np.uint8)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_up_filtered_tiles_decode_exactly_on_the_fast_path(channels, monkeypatch):
    image = _tile((200, 96, channels))
    data = encode_image(image[..., 0] if channels == 1 else image, "png")
    if channels == 4:  # encode_image writes RGB/gray; RGBA comes straight from OpenCV
        params = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
        data = cv2.imencode(".png", image[..., [2, 1, 0, 3]], params)[1].tobytes()
    monkeypatch.setattr(png, "decode_with_libpng", _fail)  # prove the fast path ran
    decoded = png.decode_png(data, channels)
    assert decoded.shape == (200, 96, channels) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize("height", [1, 2, 3, 4, 5, 8, 9, 33, 256, 257])
def test_the_scan_is_exact_for_every_height(height, monkeypatch):
    # The scan's steps are powers of two below the height; its zero rows cover the top.
    image = _tile((height, 24, 3), seed=height)
    monkeypatch.setattr(png, "decode_with_libpng", _fail)
    np.testing.assert_array_equal(png.decode_png(encode_image(image, "png"), 3), image)
    again = np.full_like(image, 7)  # a second tile in the same thread reuses the buffers
    np.testing.assert_array_equal(png.decode_png(encode_image(again, "png"), 3), again)


def _fail(*_):
    raise AssertionError("fell back to libpng")


def test_other_filters_fall_back_to_libpng_with_the_same_pixels():
    image = _tile((64, 64, 3), seed=1)
    params = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH]
    data = cv2.imencode(".png", image[..., ::-1], params)[1].tobytes()
    out = np.zeros((64, 64, 3), np.uint8)
    assert png.decode_png(data, 3, out=out) is out
    np.testing.assert_array_equal(out, image)


def test_sixteen_bit_pngs_go_to_libpng_and_are_refused():
    deep = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    with pytest.raises(ValueError, match=r"uint16 with 1 channels; expected uint8 with 1"):
        png.decode_png(cv2.imencode(".png", deep)[1].tobytes(), 1)


def test_out_receives_the_pixels_in_place():
    image = _tile((32, 48, 3), seed=2)
    out = np.empty((32, 48, 3), np.uint8)
    assert png.decode_png(encode_image(image, "png"), 3, out=out) is out
    np.testing.assert_array_equal(out, image)


def test_wrong_channels_or_shape_are_named():
    data = encode_image(_tile((16, 16, 3)), "png")
    with pytest.raises(ValueError, match=r"PNG has 3 channels; expected 1"):
        png.decode_png(data, 1)
    with pytest.raises(ValueError, match=r"PNG is 16x16x3; expected 8x8x3"):
        png.decode_png(data, 3, out=np.empty((8, 8, 3), np.uint8))


def test_damaged_or_foreign_data_is_a_value_error():
    data = bytearray(encode_image(_tile((64, 64, 3)), "png"))
    with pytest.raises(ValueError, match="not a PNG file"):
        png.decode_png(b"GIF89a" + bytes(data[6:]), 3)
    truncated = bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="damaged PNG image data"):
        png.decode_png(truncated, 3)
    scrambled = bytes(data[:60]) + bytes(len(data) - 60)  # IDAT payload zeroed
    with pytest.raises(ValueError, match="damaged PNG"):
        png.decode_png(scrambled, 3)


def test_fast_path_matches_libpng_on_every_demo_like_tile():
    # Many tiles of different content: each must equal libpng's decode exactly.
    for seed in range(12):
        image = _tile((64, 80, 3), seed=seed)
        data = encode_image(image, "png")
        np.testing.assert_array_equal(png.decode_png(data, 3), imagecodecs.png_decode(data))


def test_the_scan_compiles_without_a_disk_cache_when_numba_has_nowhere_to_write(monkeypatch):
    import numba

    real_njit = numba.njit

    def njit(**options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")
        return real_njit(**options)

    monkeypatch.setattr(numba, "njit", njit)
    scan = png._compiled(png._undo_up_filter.py_func)
    rows = np.array([[2, 1, 2], [2, 3, 4], [2, 250, 10]], np.uint8)  # filter byte, then pixels
    out = np.zeros((3, 2), np.uint8)
    scan(rows, out)
    np.testing.assert_array_equal(out, [[1, 2], [4, 6], [254, 16]])
