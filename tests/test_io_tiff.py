"""Windowed TIFF readers: every HuBMAP layout, both backends, padding, errors, memory."""

import tracemalloc

import numpy as np
import pytest
import tifffile

from tfpipe.errors import InputDataError
from tfpipe.io.tiff import BACKENDS, open_slide, to_uint8

H, W = 200, 300
WINDOWS = [
    (0, 0, 64, 64),  # inside
    (37, 101, 50, 70),  # unaligned with tiles/strips
    (-10, -20, 64, 64),  # past the top-left corner
    (H - 30, W - 40, 64, 64),  # past the bottom-right corner
    (-5, -5, H + 10, W + 10),  # larger than the slide
    (H + 5, 0, 16, 16),  # entirely outside
]


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (H, W, 3), np.uint8)


def expected_window(image: np.ndarray, y: int, x: int, h: int, w: int) -> np.ndarray:
    """Reference: slice of the image zero-padded by a margin larger than any window."""
    pad = 400
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    return padded[y + pad : y + pad + h, x + pad : x + pad + w]


def write_layout(path, layout: str, rgb: np.ndarray) -> np.ndarray:
    """Write ``rgb`` in one of the real-data layouts; return what a reader must see."""
    planar = rgb.transpose(2, 0, 1)
    if layout == "interleaved_tiled":
        tifffile.imwrite(path, rgb, photometric="rgb", tile=(64, 64))
    elif layout == "interleaved_strips":
        tifffile.imwrite(path, rgb, photometric="rgb", rowsperstrip=16)
    elif layout == "planar":
        tifffile.imwrite(path, planar, photometric="rgb", planarconfig="separate")
    elif layout == "planar_singleton_axes":
        tifffile.imwrite(path, planar[None, None], photometric="rgb", planarconfig="separate")
    elif layout == "bigtiff_deflate":
        tifffile.imwrite(
            path, rgb, photometric="rgb", tile=(64, 64), bigtiff=True, compression="zlib"
        )
    elif layout == "grayscale":
        tifffile.imwrite(path, rgb[..., 0], tile=(32, 32))
        return rgb[..., :1]
    elif layout == "uint16":
        tifffile.imwrite(path, rgb.astype(np.uint16) * 257, photometric="rgb", tile=(64, 64))
    elif layout == "rgba":
        alpha = np.full((H, W, 1), 255, np.uint8)
        tifffile.imwrite(
            path, np.concatenate([rgb, alpha], -1), photometric="rgb", extrasamples=[2]
        )
    else:
        raise AssertionError(layout)
    return rgb


LAYOUTS = [
    "interleaved_tiled",
    "interleaved_strips",
    "planar",
    "planar_singleton_axes",
    "bigtiff_deflate",
    "grayscale",
    "uint16",
    "rgba",
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_windows_equal_source(tmp_path, rgb, layout, backend):
    path = tmp_path / f"{layout}.tiff"
    image = write_layout(path, layout, rgb)
    with open_slide(path, backend=backend) as slide:
        assert (slide.height, slide.width, slide.channels) == image.shape
        assert slide.level == 0 and slide.levels == 1
        for y, x, h, w in WINDOWS:
            got = slide.read_window(y, x, h, w)
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, expected_window(image, y, x, h, w))


def write_subifd_pyramid(path, rgb: np.ndarray) -> None:
    with tifffile.TiffWriter(path) as tw:
        tw.write(rgb, photometric="rgb", tile=(64, 64), subifds=2)
        tw.write(rgb[::2, ::2], photometric="rgb", tile=(64, 64), subfiletype=1)
        tw.write(rgb[::4, ::4], photometric="rgb", tile=(64, 64), subfiletype=1)


def write_reduced_pages_pyramid(path, rgb: np.ndarray) -> None:
    with tifffile.TiffWriter(path) as tw:
        tw.write(rgb, photometric="rgb", tile=(64, 64))
        tw.write(rgb[::2, ::2], photometric="rgb", tile=(64, 64), subfiletype=1)
        tw.write(rgb[::4, ::4], photometric="rgb", tile=(64, 64), subfiletype=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("writer", [write_subifd_pyramid, write_reduced_pages_pyramid])
@pytest.mark.parametrize("level", [0, 1, 2])
def test_pyramid_levels(tmp_path, rgb, writer, level, backend):
    path = tmp_path / "pyramid.tiff"
    writer(path, rgb)
    image = rgb[:: 2**level, :: 2**level]
    with open_slide(path, level=level, backend=backend) as slide:
        assert slide.levels == 3 and slide.level == level
        assert (slide.height, slide.width) == image.shape[:2]
        np.testing.assert_array_equal(
            slide.read_window(-3, 5, 80, 90), expected_window(image, -3, 5, 80, 90)
        )


def test_levels_stored_as_separate_series(tmp_path, rgb):
    # Full-resolution pages of decreasing size, no reduced-image flag: tifffile
    # reports one series per level.
    path = tmp_path / "series_levels.tiff"
    with tifffile.TiffWriter(path) as tw:
        tw.write(rgb, photometric="rgb", tile=(64, 64))
        tw.write(rgb[::2, ::2], photometric="rgb", tile=(64, 64))
    with open_slide(path, level=1) as slide:
        assert slide.levels == 2
        np.testing.assert_array_equal(slide.read_window(0, 0, H // 2, W // 2), rgb[::2, ::2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_level_out_of_range(tmp_path, rgb, backend):
    path = tmp_path / "flat.tiff"
    tifffile.imwrite(path, rgb, photometric="rgb")
    with pytest.raises(InputDataError, match=r"level 1 does not exist; .*flat\.tiff has 1 level"):
        open_slide(path, level=1, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_and_not_a_tiff(tmp_path, backend):
    with pytest.raises(InputDataError, match=r"slide not found: .*nope\.tiff"):
        open_slide(tmp_path / "nope.tiff", backend=backend)
    text = tmp_path / "notes.tiff"
    text.write_text("this is not an image\n")
    with pytest.raises(InputDataError, match=r"notes\.tiff"):
        open_slide(text, backend=backend)


def test_truncated_tiff_names_file(tmp_path, rgb):
    path = tmp_path / "cut.tiff"
    tifffile.imwrite(path, rgb, photometric="rgb", tile=(64, 64), compression="zlib")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputDataError, match=r"cut\.tiff"), open_slide(path) as slide:
        slide.read_window(0, 0, H, W)


def test_unknown_backend_and_multiplane(tmp_path, rgb):
    path = tmp_path / "a.tiff"
    tifffile.imwrite(path, rgb, photometric="rgb")
    with pytest.raises(InputDataError, match="backend must be one of"):
        open_slide(path, backend="pillow")
    stack = tmp_path / "stack.tiff"
    tifffile.imwrite(stack, np.zeros((5, 2, 16, 16), np.uint8))
    with pytest.raises(InputDataError, match=r"more than one image plane .*stack\.tiff"):
        open_slide(stack)


def test_to_uint8_scaling():
    np.testing.assert_array_equal(
        to_uint8(np.array([0, 128, 257, 32896, 65535], np.uint16)), [0, 0, 1, 128, 255]
    )
    np.testing.assert_array_equal(
        to_uint8(np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), value_range=(0.0, 1.0)),
        [0, 0, 128, 255, 255],
    )
    np.testing.assert_array_equal(to_uint8(np.array([True, False])), [255, 0])
    with pytest.raises(InputDataError, match="int32"):
        to_uint8(np.array([1], np.int32), "x.tiff")


def test_read_raw_keeps_file_dtype(tmp_path, rgb):
    path = tmp_path / "u16.tiff"
    values = rgb.astype(np.uint16) * 200
    tifffile.imwrite(path, values, photometric="rgb", tile=(64, 64))
    with open_slide(path) as slide:
        raw = slide.read_raw(10, 10, 20, 20)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, values[10:30, 10:30])


def test_window_read_does_not_load_whole_slide(tmp_path):
    # 3072 x 3072 x 3 = 27 MB of pixels in 256 px deflate tiles; a 256 px
    # window touches at most 4 tiles (< 1 MB decoded).
    side, tile = 3072, 256
    path = tmp_path / "large.tiff"

    def tiles():
        rng = np.random.default_rng(1)
        for _ in range((side // tile) ** 2):
            yield rng.integers(0, 256, (tile, tile, 3), np.uint8)

    tifffile.imwrite(
        path,
        tiles(),
        shape=(side, side, 3),
        dtype=np.uint8,
        photometric="rgb",
        tile=(tile, tile),
        compression="zlib",
    )
    full = side * side * 3
    with open_slide(path) as slide:
        slide.read_window(0, 0, 16, 16)  # warm up zarr metadata and caches
        tracemalloc.start()
        window = slide.read_window(1000, 1900, 256, 256)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert window.shape == (256, 256, 3) and window.any()
    assert peak < full / 10, f"peak {peak} bytes for a {full} byte slide"


@pytest.mark.parametrize("backend", BACKENDS)
def test_unsupported_pixel_type_is_refused_at_open(tmp_path, backend):
    path = tmp_path / "int32.tiff"
    tifffile.imwrite(path, np.zeros((16, 16), np.int32))
    with pytest.raises(
        InputDataError, match=r"uint8, uint16, float or 1-bit; got int32 in .*int32"
    ):
        open_slide(path, backend=backend)


# ------------------------------------------------------------------ float pixels


def test_float_rule_picks_the_range_from_the_largest_value():
    # The documented rule: max <= 1 -> [0, 1]; max <= 255 -> 0-255 levels; else an error.
    np.testing.assert_array_equal(to_uint8(np.array([0.0, 0.25, 1.0])), [0, 64, 255])
    np.testing.assert_array_equal(to_uint8(np.array([0.0, 3.0, 200.0, 255.0])), [0, 3, 200, 255])
    np.testing.assert_array_equal(to_uint8(np.array([np.nan, 1.0], np.float32)), [0, 255])
    np.testing.assert_array_equal(
        to_uint8(np.array([0.0, 2048.0, 4095.0]), value_range=(0.0, 4095.0)), [0, 128, 255]
    )
    with pytest.raises(InputDataError, match=r"maximum of 4095 in x\.tiff.*data\.float_range"):
        to_uint8(np.array([0.0, 4095.0]), "x.tiff")


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_slide_in_0_255_is_not_clipped_to_white(tmp_path, rgb, backend):
    # The whole slide's maximum decides, so a dark window of a 0-255 slide keeps its levels.
    path = tmp_path / "float255.tiff"
    tifffile.imwrite(path, rgb.astype(np.float32), photometric="rgb", tile=(64, 64))
    with open_slide(path, backend=backend) as slide:
        assert slide.value_range == (0.0, 255.0)
        np.testing.assert_array_equal(slide.read_window(0, 0, H, W), rgb)
    unit = tmp_path / "float1.tiff"
    tifffile.imwrite(unit, rgb.astype(np.float32) / 255, photometric="rgb", tile=(64, 64))
    with open_slide(unit, backend=backend) as slide:
        assert slide.value_range == (0.0, 1.0)
        np.testing.assert_array_equal(slide.read_window(0, 0, H, W), rgb)
    # A given range wins over the rule (here: the top half of 0-255 maps to 0-255).
    with open_slide(path, backend=backend, value_range=(128.0, 255.0)) as slide:
        window = slide.read_window(0, 0, H, W)
    expected = np.clip((rgb.astype(np.float32) - 128) * (255 / 127), 0, 255) + 0.5
    np.testing.assert_array_equal(window, expected.astype(np.uint8))


def test_float_slide_range_comes_from_the_smallest_level(tmp_path):
    # A pyramid is scanned at its smallest level only (cheap on a giant slide). Here that
    # level is deliberately inconsistent (max 0.5 under a 200 base) to show which one decided.
    path = tmp_path / "pyramid.tiff"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.full((256, 256), 200.0, np.float32), tile=(64, 64), subifds=1)
        tif.write(np.full((64, 64), 0.5, np.float32), tile=(64, 64), subfiletype=1)
    with open_slide(path) as slide:
        assert slide.levels == 2
        assert slide.value_range == (0.0, 1.0)
    with open_slide(path, level=1) as small:
        assert small.read_window(0, 0, 8, 8).max() == 128
