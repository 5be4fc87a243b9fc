"""Competition RLE codec and windowed RleMask decoding."""

import tracemalloc

import numpy as np
import pytest

from tfpipe.errors import InputDataError
from tfpipe.io.rle import RleMask, decode_rle, encode_rle, find_runs, parse_rle

# 3 rows x 4 columns. Column-major flat order (1-indexed):
#   col 0: 1 2 3   col 1: 4 5 6   col 2: 7 8 9   col 3: 10 11 12
HAND_MASK = np.array(
    [
        [0, 1, 0, 1],
        [1, 1, 0, 0],
        [1, 0, 0, 1],
    ],
    np.uint8,
)
# Foreground flat positions: 2 3 | 4 5 | 10 | 12 -> runs (2,4) (10,1) (12,1)
HAND_RLE = "2 4 10 1 12 1"


def random_mask(rng: np.random.Generator, shape: tuple[int, int], p: float) -> np.ndarray:
    return (rng.random(shape) < p).astype(np.uint8)


def test_hand_worked_example_encodes_and_decodes():
    assert encode_rle(HAND_MASK) == HAND_RLE
    np.testing.assert_array_equal(decode_rle(HAND_RLE, HAND_MASK.shape), HAND_MASK)


def test_run_crossing_column_boundary_is_one_run():
    mask = np.zeros((3, 2), np.uint8)
    mask[2, 0] = mask[0, 1] = mask[1, 1] = 1  # flat 3, 4, 5
    assert encode_rle(mask) == "3 3"


def test_full_and_empty_masks():
    assert encode_rle(np.ones((4, 5), np.uint8)) == "1 20"
    assert encode_rle(np.zeros((4, 5), np.uint8)) == ""
    for empty in ("", "   ", None, float("nan")):
        np.testing.assert_array_equal(decode_rle(empty, (4, 5)), np.zeros((4, 5), np.uint8))


def test_nonbinary_values_count_as_foreground():
    assert encode_rle(HAND_MASK * 255) == HAND_RLE
    assert encode_rle(HAND_MASK.astype(bool)) == HAND_RLE


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1), (37, 53), (128, 64)])
@pytest.mark.parametrize("p", [0.02, 0.5, 0.98])
def test_round_trip_random_masks(shape, p):
    rng = np.random.default_rng(hash((shape, p)) % 2**32)
    mask = random_mask(rng, shape, p)
    decoded = decode_rle(encode_rle(mask), shape)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, mask)


def test_round_trip_matches_reference_flatten():
    # Reference: the competition kernel's formulation on mask.T.flatten().
    rng = np.random.default_rng(3)
    mask = random_mask(rng, (41, 29), 0.3)
    pixels = np.concatenate([[0], mask.T.flatten(), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    assert encode_rle(mask) == " ".join(str(v) for v in runs)


def test_encode_in_row_blocks_matches(monkeypatch):
    # Force many tiny row blocks so runs crossing block borders are exercised.
    import tfpipe.io.rle as rle

    monkeypatch.setattr(rle, "_CHUNK_PIXELS", 7)
    rng = np.random.default_rng(4)
    mask = random_mask(rng, (23, 5), 0.6)
    np.testing.assert_array_equal(decode_rle(encode_rle(mask), mask.shape), mask)
    starts, ends = find_runs(mask)
    assert (starts[1:] > ends[:-1]).all()


@pytest.mark.parametrize(
    ("rle", "reason"),
    [
        ("1 2 3", "odd number of values (3)"),
        ("1 2 x 4", "got 'x'"),
        ("1 2.5", "got '2.5'"),
        ("0 2", "must be >= 1; got 0"),
        ("-3 2", "must be >= 1; got -3"),
        ("1 0", "lengths must be >= 1; got 0"),
        ("10 5", "past the image end 12"),
        ("1 3 3 2", "must not overlap; run 2 starts at 3"),
        ("5 2 1 2", "sorted"),
    ],
)
def test_malformed_rle_names_reason_and_source(rle, reason):
    with pytest.raises(InputDataError) as err:
        decode_rle(rle, (3, 4), source="train.csv id=abc")
    assert reason in str(err.value)
    assert "train.csv id=abc" in str(err.value)


def test_touching_runs_are_allowed():
    mask = decode_rle("1 2 3 2", (2, 2))
    np.testing.assert_array_equal(mask, np.ones((2, 2), np.uint8))


def test_parse_gives_zero_based_half_open_runs():
    assert parse_rle(HAND_RLE, (3, 4)).tolist() == [[1, 5], [9, 10], [11, 12]]


def test_rle_mask_windows_equal_decode_slices():
    rng = np.random.default_rng(5)
    shape = (97, 131)
    mask = random_mask(rng, shape, 0.4)
    mask[10:60, 20:90] = 1  # long runs spanning many columns
    rle = encode_rle(mask)
    windowed = RleMask(rle, shape, source="test")
    pad = 80
    padded = np.pad(decode_rle(rle, shape), pad)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        y, x = int(rng.integers(-60, shape[0])), int(rng.integers(-60, shape[1]))
        got = windowed.read_window(y, x, h, w)
        assert got.shape == (h, w) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, padded[y + pad : y + pad + h, x + pad : x + pad + w])


def test_rle_mask_edges_and_outside():
    windowed = RleMask(HAND_RLE, (3, 4))
    np.testing.assert_array_equal(windowed.read_window(0, 0, 3, 4), HAND_MASK)
    corner = windowed.read_window(2, 3, 2, 2)
    np.testing.assert_array_equal(corner, [[1, 0], [0, 0]])
    assert windowed.read_window(5, 5, 2, 2).sum() == 0
    assert windowed.read_window(-3, -3, 3, 3).sum() == 0
    assert windowed.positive_pixels == int(HAND_MASK.sum())


def test_rle_mask_empty_and_malformed():
    assert RleMask(float("nan"), (10, 10)).read_window(0, 0, 10, 10).sum() == 0
    with pytest.raises(InputDataError, match=r"slide\.csv id=z"):
        RleMask("1 200", (10, 10), source="slide.csv id=z")


def test_large_mask_round_trip_sparse():
    # A 4000 x 3000 mask with few runs: both directions are vectorised.
    shape = (4000, 3000)
    mask = np.zeros(shape, np.uint8)
    mask[100:400, 200:260] = 1
    mask[3990:, 2999] = 1
    mask[0:5, 0] = 1
    rle = encode_rle(mask)
    assert len(rle.split()) == 2 * (60 + 2)
    np.testing.assert_array_equal(decode_rle(rle, shape), mask)


def test_rle_mask_window_does_not_build_the_full_mask():
    # 20,000 x 20,000 = 400 MB as a full mask; a window must cost about its own size.
    shape = (20_000, 20_000)
    rle = " ".join(f"{c * shape[0] + 5000 + 1} 3000" for c in range(4000, 9000, 7))
    windowed = RleMask(rle, shape)
    tracemalloc.start()
    window = windowed.read_window(6000, 6000, 512, 512)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    columns = [c for c in range(4000, 9000, 7) if 6000 <= c < 6512]
    assert window.sum() == 512 * len(columns)
    assert window[:, [c - 6000 for c in columns]].all()
    assert peak < 8_000_000, f"peak {peak} bytes"
