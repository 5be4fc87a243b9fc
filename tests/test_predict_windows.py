"""Window grid and blending weights of whole-slide prediction."""

import numpy as np
import pytest

from tfpipe.predict.stitch import Stitcher
from tfpipe.predict.windows import (
    Window,
    axis_starts,
    blend_weights,
    lowres_shape,
    stride_for,
    window_grid,
)


@pytest.mark.parametrize(
    ("shape", "window", "overlap", "scale"),
    [
        ((1000, 1000), 64, 0.25, 4),  # not a multiple of the window
        ((1024, 768), 64, 0.0, 4),  # exact multiple, no overlap
        ((37, 1001), 16, 0.5, 3),  # thin slide, odd scale
        ((50, 50), 64, 0.25, 1),  # smaller than one window
        ((777, 333), 32, 0.9, 2),  # heavy overlap
    ],
)
def test_grid_covers_every_pixel(shape, window, overlap, scale):
    h, w = lowres_shape(shape, scale)
    assert h * scale >= shape[0] > (h - 1) * scale
    covered = np.zeros((h, w), np.int32)
    for win in window_grid(shape, window, overlap, scale):
        assert win.y >= 0 and win.x >= 0
        covered[win.y : win.y + window, win.x : win.x + window] += 1
        sy, sx, sh, sw = win.source_box(scale)
        assert (sy, sx, sh, sw) == (win.y * scale, win.x * scale, window * scale, window * scale)
    assert covered.min() >= 1


def test_grid_starts_step_by_stride_and_end_at_edge():
    assert stride_for(256, 0.25) == 192
    assert axis_starts(1000, 256, 192) == [0, 192, 384, 576, 744]
    assert axis_starts(256, 256, 192) == [0]
    assert axis_starts(100, 256, 192) == [0]
    with pytest.raises(ValueError, match="overlap"):
        stride_for(256, 1.0)


@pytest.mark.parametrize("kind", ["hann", "pyramid", "uniform"])
def test_blend_weights_positive_symmetric(kind):
    w = blend_weights(16, kind)
    assert w.shape == (16, 16) and w.dtype == np.float32
    assert w.min() > 0
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    if kind != "uniform":
        assert w[8, 8] > w[0, 8] > w[0, 0]


@pytest.mark.parametrize("kind", ["hann", "pyramid", "uniform"])
def test_normalised_weights_sum_to_one(kind):
    # A constant prediction c in every window must stitch back to c everywhere:
    # sum(w_i * c) / sum(w_i) = c only if the normalised weights sum to one.
    shape, window, scale = (700, 500), 32, 4
    grid = window_grid(shape, window, 0.5, scale)
    st = Stitcher(lowres_shape(shape, scale), blend_weights(window, kind))
    for win in grid:
        st.add(win, np.full((window, window), 0.37, np.float32))
    prob = st.probabilities()
    np.testing.assert_allclose(prob, 0.37, rtol=1e-5)


def test_stitcher_blends_with_weights_and_leaves_unvisited_zero():
    weights = np.array([[1.0, 3.0], [1.0, 3.0]], np.float32)
    st = Stitcher((2, 4), weights)
    st.add(Window(0, 0, 2), np.full((2, 2), 1.0, np.float32))
    st.add(Window(0, 1, 2), np.full((2, 2), 0.0, np.float32))
    prob = st.probabilities()
    # column 1: window A weight 3 (value 1), window B weight 1 (value 0) -> 0.75
    np.testing.assert_allclose(prob[0], [1.0, 0.75, 0.0, 0.0])
    assert st.windows_added == 2


def test_stitcher_drops_window_parts_past_the_edge():
    st = Stitcher((3, 3), np.ones((4, 4), np.float32))
    st.add(Window(0, 0, 4), np.arange(16, dtype=np.float32).reshape(4, 4))
    np.testing.assert_array_equal(st.probabilities(), [[0, 1, 2], [4, 5, 6], [8, 9, 10]])


def test_stitcher_equals_two_accumulators_with_skipped_windows():
    rng = np.random.default_rng(0)
    shape, window, scale = (430, 390), 32, 4
    grid = window_grid(shape, window, 0.25, scale)
    weights = blend_weights(window, "hann")
    h, w = lowres_shape(shape, scale)
    st = Stitcher((h, w), weights)
    total, weight = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    for win in grid[::3] + grid[1::3]:  # a third of the windows skipped, order shuffled
        pred = rng.random((window, window), dtype=np.float32)
        st.add(win, pred)
        rows = slice(win.y, min(win.y + window, h))
        cols = slice(win.x, min(win.x + window, w))
        part = weights[: rows.stop - rows.start, : cols.stop - cols.start]
        total[rows, cols] += part * pred[: part.shape[0], : part.shape[1]]
        weight[rows, cols] += part
    expected = np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)
    np.testing.assert_array_equal(st.probabilities(), expected)
    assert (expected == 0).any() and st.windows_added == len(grid[::3]) + len(grid[1::3])
