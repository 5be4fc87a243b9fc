"""Tile grid, band reading, resize rules, the tissue filter and RLE row bands."""

import itertools

import cv2
import numpy as np
import pytest

from tfpipe.io.rle import decode_rle, encode_rle, parse_rle
from tfpipe.records import bandmask
from tfpipe.records.bandmask import RowSegments
from tfpipe.records.tiling import (
    Decision,
    TileSpec,
    TissueRule,
    decide,
    grid_positions,
    grid_size,
    iter_bands,
    keep_empty,
    pad_to_square,
    resize_image,
    resize_mask,
    tissue_fraction,
)

FILTER = TissueRule(saturation_min=40, brightness_max=220, min_tissue_fraction=0.25)


@pytest.mark.parametrize(
    ("length", "tile", "stride", "expected"),
    [
        (256, 64, 64, [0, 64, 128, 192]),  # exact fit: no padded tile
        (300, 64, 64, [0, 64, 128, 192, 256]),  # last tile padded
        (40, 64, 64, [0]),  # image smaller than a tile
        (200, 64, 32, [0, 32, 64, 96, 128, 160]),  # overlap stops once the edge is reached
    ],
)
def test_grid_positions_cover_the_image(length, tile, stride, expected):
    positions = grid_positions(length, tile, stride)
    assert positions == expected
    assert positions[-1] + tile >= length


def test_grid_size_counts_rows_times_columns():
    assert grid_size(300, 130, TileSpec(64, 64, 2)) == 5 * 3
    assert TileSpec(1024, 1024, 4).out_size == 256


class _CountingReader:
    """A zero-padded window reader over an array that records the rows it was asked for."""

    def __init__(self, image):
        self.image = image
        self.rows_read = 0

    def __call__(self, y, x, h, w):
        self.rows_read += h
        out = np.zeros((h, w, *self.image.shape[2:]), self.image.dtype)
        part = self.image[max(y, 0) : y + h, max(x, 0) : x + w]
        out[: part.shape[0], : part.shape[1]] = part
        return out


@pytest.mark.parametrize("stride", [64, 32, 48])
def test_bands_equal_direct_windows_and_reuse_overlap(stride):
    image = np.random.default_rng(0).integers(0, 255, (200, 150, 3), dtype=np.uint8)
    reader = _CountingReader(image)
    ys = grid_positions(200, 64, stride)
    bands = list(iter_bands(reader, ys, 64, 192))
    for y, band in bands:
        np.testing.assert_array_equal(band, _CountingReader(image)(y, 0, 64, 192))
    # Overlapping rows are read once: total rows = first band + each step.
    assert reader.rows_read == 64 + sum(b - a for a, b in itertools.pairwise(ys))


def test_resize_image_is_inter_area_and_mask_is_nearest():
    rng = np.random.default_rng(1)
    tile = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = (rng.random((64, 64)) > 0.7).astype(np.uint8)
    small = resize_image(tile, 16)
    # INTER_AREA at an integer factor is the rounded mean of each 4x4 block.
    blocks = tile.reshape(16, 4, 16, 4, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(small.astype(np.float64) - blocks).max() <= 0.5 + 1e-9
    np.testing.assert_array_equal(small, cv2.resize(tile, (16, 16), interpolation=cv2.INTER_AREA))
    small_mask = resize_mask(mask, 16)
    np.testing.assert_array_equal(
        small_mask, cv2.resize(mask, (16, 16), interpolation=cv2.INTER_NEAREST)
    )
    assert set(np.unique(small_mask)) <= {0, 1}
    np.testing.assert_array_equal(resize_image(tile, 64), tile)  # downscale 1: unchanged


def test_tissue_fraction_follows_hsv_thresholds():
    white = np.full((8, 8, 3), 245, np.uint8)
    pink = np.zeros((8, 8, 3), np.uint8) + np.array([200, 110, 170], np.uint8)
    half = white.copy()
    half[:, :4] = pink[:, :4]
    assert tissue_fraction(white, FILTER) == 0.0
    assert tissue_fraction(pink, FILTER) == 1.0
    assert tissue_fraction(half, FILTER) == 0.5
    assert tissue_fraction(np.zeros((8, 8, 3), np.uint8), FILTER) == 0.0  # padding is background


def test_decide_keeps_mask_tiles_drops_background_and_samples_empty():
    white = np.full((8, 8, 3), 245, np.uint8)
    pink = np.zeros((8, 8, 3), np.uint8) + np.array([200, 110, 170], np.uint8)
    key = (0, "s", 0, 0)
    assert decide(white, True, FILTER, 0.0, key) is Decision.KEPT  # mask pixel: always kept
    assert decide(white, False, FILTER, 1.0, key) is Decision.BACKGROUND
    assert decide(pink, False, FILTER, 1.0, key) is Decision.KEPT
    assert decide(pink, False, FILTER, 0.0, key) is Decision.EMPTY
    assert decide(pink, None, FILTER, 0.0, key) is Decision.KEPT  # unlabelled: no sampling


def test_keep_empty_is_a_deterministic_hash_with_the_right_rate():
    keys = [(7, f"slide{i % 5}", (i // 5) * 64, (i % 13) * 64) for i in range(20000)]
    first = [keep_empty(*k, 0.3) for k in keys]
    again = [keep_empty(*k, 0.3) for k in reversed(keys)][::-1]  # other call order
    assert first == again
    assert abs(np.mean(first) - 0.3) < 0.015  # binomial std is 0.0032
    other_seed = [keep_empty(8, *k[1:], 0.3) for k in keys]
    assert first != other_seed


def test_pad_to_square_pads_bottom_right():
    image = np.ones((3, 5, 3), np.uint8)
    out = pad_to_square(image)
    assert out.shape == (5, 5, 3)
    assert out[:3].all() and not out[3:].any()


@pytest.mark.parametrize("loop_max", [0, 10_000])  # dense running sum / interval painting
@pytest.mark.parametrize("shape", [(37, 23), (64, 64), (5, 90)])
def test_row_segments_read_the_same_windows_as_decode_rle(shape, loop_max, monkeypatch):
    monkeypatch.setattr(bandmask, "LOOP_FILL_MAX", loop_max)
    rng = np.random.default_rng(shape[0])
    mask = (rng.random(shape) > 0.6).astype(np.uint8)
    mask[:, 3:6] = 1  # runs that span whole columns and cross column boundaries
    rle = encode_rle(mask)
    segments = RowSegments.from_runs(parse_rle(rle, shape), shape)
    full = decode_rle(rle, shape)
    np.testing.assert_array_equal(segments.read_window(0, 0, *shape), full)
    padded = np.pad(full, 64)  # windows past the edges read zeros
    for y, x, h, w in [(0, 0, 16, 16), (5, 2, 20, 40), (-3, -4, 12, 12), (30, 10, 32, 32)]:
        expected = padded[y + 64 : y + 64 + h, x + 64 : x + 64 + w]
        np.testing.assert_array_equal(segments.read_window(y, x, h, w), expected)
        band = segments.select_rows(y, y + h)
        np.testing.assert_array_equal(band.read_window(y, x, h, w), expected)
