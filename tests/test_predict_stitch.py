"""Upscaling the low-resolution map strip by strip and the streaming RLE of the mask."""

import cv2
import numpy as np
import pytest

from tfpipe.io.rle import decode_rle, encode_rle
from tfpipe.predict.intervals import StripRleEncoder, intersection_size
from tfpipe.predict.stitch import (
    iter_mask_strips,
    iter_mask_tiles,
    iter_prob_strips,
    upscale_block,
)


def _smooth_map(shape, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.random(shape).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), 2.0)


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 8])
def test_blocks_equal_one_whole_resize(scale):
    prob = _smooth_map((41, 37), seed=scale)
    full = cv2.resize(prob, (37 * scale, 41 * scale), interpolation=cv2.INTER_LINEAR)
    rng = np.random.default_rng(1)
    for _ in range(50):
        y0 = int(rng.integers(0, full.shape[0]))
        y1 = int(rng.integers(y0 + 1, full.shape[0] + 1))
        x0 = int(rng.integers(0, full.shape[1]))
        x1 = int(rng.integers(x0 + 1, full.shape[1] + 1))
        np.testing.assert_array_equal(
            upscale_block(prob, scale, y0, y1, x0, x1), full[y0:y1, x0:x1]
        )


def _naive_mask(prob, scale, shape, threshold):
    h, w = prob.shape
    full = cv2.resize(prob, (w * scale, h * scale), interpolation=cv2.INTER_LINEAR)
    return (full[: shape[0], : shape[1]] > threshold).astype(np.uint8)


@pytest.mark.parametrize(
    ("shape", "scale", "width"), [((203, 157), 4, 12), ((64, 64), 2, 7), ((90, 31), 3, 31)]
)
def test_streaming_rle_equals_encode_rle_of_full_mask(shape, scale, width):
    prob = _smooth_map((-(-shape[0] // scale), -(-shape[1] // scale)), seed=shape[0])
    naive = _naive_mask(prob, scale, shape, 0.5)
    assert 0 < naive.mean() < 1
    enc = StripRleEncoder(shape[0])
    strips = []
    for x0, strip in iter_mask_strips(prob, scale, shape, 0.5, width=width):
        enc.add(x0, strip)
        strips.append(strip)
    assembled = np.concatenate(strips, axis=1)
    np.testing.assert_array_equal(assembled, naive)
    assert enc.rle() == encode_rle(naive)
    assert enc.positive_pixels == int(naive.sum())
    np.testing.assert_array_equal(decode_rle(enc.rle(), shape), naive)


def test_runs_joined_across_strip_boundary():
    # Column 0 ends in foreground and column 1 starts with it: one column-major run.
    mask = np.array([[0, 1], [1, 0]], np.uint8)
    enc = StripRleEncoder(2)
    enc.add(0, mask[:, :1])
    enc.add(1, mask[:, 1:])
    assert enc.rle() == encode_rle(mask) == "2 2"
    # ... and across several strips in a row (a full column in the middle).
    mask = np.array([[0, 1, 1], [1, 1, 0]], np.uint8)
    enc = StripRleEncoder(2)
    for x in range(3):
        enc.add(x, mask[:, x : x + 1])
    assert enc.rle() == encode_rle(mask) == "2 4"


def test_strips_must_be_consecutive():
    enc = StripRleEncoder(4)
    enc.add(0, np.zeros((4, 2), np.uint8))
    with pytest.raises(ValueError, match="expected x0=2"):
        enc.add(3, np.zeros((4, 2), np.uint8))


def test_tiles_equal_strips():
    shape, scale = (150, 130), 4
    prob = _smooth_map((38, 33), seed=5)
    naive = _naive_mask(prob, scale, shape, 0.45)
    tiles = list(iter_mask_tiles(prob, scale, shape, 0.45, tile=64))
    rows = [np.concatenate(tiles[i : i + 3], axis=1) for i in range(0, len(tiles), 3)]
    np.testing.assert_array_equal(np.concatenate(rows, axis=0), naive)
    strips = [s for _, s in iter_prob_strips(prob, scale, shape, width=50)]
    assert [s.shape[1] for s in strips] == [50, 50, 30]


def test_intersection_matches_pixels():
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = (rng.random((23, 17)) > 0.6).astype(np.uint8)
        b = (rng.random((23, 17)) > 0.4).astype(np.uint8)
        ra, rb = StripRleEncoder(23), StripRleEncoder(23)
        ra.add(0, a)
        rb.add(0, b)
        assert intersection_size(ra.runs(), rb.runs()) == int((a & b).sum())
    assert StripRleEncoder(5).rle() == ""
