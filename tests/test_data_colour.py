"""The fused colour transform: each component does what its name says."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfpipe.data.colour import LUMA, ColourJitter, colour_matrix

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(40, 216, (16, 16, 3)).astype(np.uint8)  # mid-range: no clipping


def test_identity_and_gray_axis():
    np.testing.assert_allclose(colour_matrix(1.0, 0.0).numpy(), np.eye(3), atol=1e-6)
    for s, h in ((0.7, 0.1), (1.3, -0.25), (0.0, 0.5)):
        m = colour_matrix(s, h).numpy()
        np.testing.assert_allclose(m @ np.ones(3), np.ones(3), atol=1e-5)


def test_zero_saturation_gives_luma_gray():
    rgb = np.array([200.0, 100.0, 30.0], np.float32)
    gray = colour_matrix(0.0, 0.0).numpy() @ rgb
    np.testing.assert_allclose(gray, np.full(3, LUMA @ rgb), rtol=1e-5)


def test_hue_turns_like_tensorflows_hsv_hue_shift_on_tissue_colours():
    # Pinkish, moderately saturated pixels (H&E-like); HSV shift by 0.05 of a turn.
    tissue = np.clip(np.array([200, 120, 170]) + RNG.normal(0, 25, (32, 32, 3)), 0, 255)
    tissue = tissue.astype(np.uint8)
    hsv = tf.image.adjust_hue(tissue / 255.0, 0.05).numpy() * 255.0
    ours = np.clip(tissue.reshape(-1, 3) @ colour_matrix(1.0, 0.04).numpy().T, 0, 255)
    unchanged = np.abs(tissue - hsv).mean()
    # Same direction, similar size: much closer to the HSV result than doing nothing.
    assert np.abs(ours.reshape(tissue.shape) - hsv).mean() < 0.6 * unchanged


def test_brightness_shifts_every_pixel_by_one_amount():
    out = ColourJitter(brightness=0.1)(tf.constant(IMAGE), tf.constant([3, 4], tf.int64))
    diff = out.numpy().astype(int) - IMAGE.astype(int)
    assert diff.max() - diff.min() <= 1  # rounding
    assert 0 < abs(diff.mean()) <= 0.1 * 255 + 1


def test_contrast_keeps_the_mean_and_scales_deviations():
    # Constant 4x4 blocks: the mean taken from every 4th row is then the exact mean.
    blocks = np.kron(IMAGE, np.ones((4, 4, 1), np.uint8))
    out = ColourJitter(contrast=0.3)(tf.constant(blocks), tf.constant([5, 6], tf.int64)).numpy()
    x, y = blocks.astype(float), out.astype(float)
    assert abs(y.mean() - x.mean()) < 0.6
    factor = np.polyfit(x.ravel() - x.mean(), y.ravel() - y.mean(), 1)[0]
    assert 0.7 <= factor <= 1.3 and abs(factor - 1.0) > 1e-3


def test_seeded_and_image_only():
    jitter = ColourJitter(brightness=0.1, contrast=0.1, saturation=0.2, hue=0.05, noise_std=2.0)
    seed = tf.constant([7, 8], tf.int64)
    a, b = jitter(tf.constant(IMAGE), seed), jitter(tf.constant(IMAGE), seed)
    c = jitter(tf.constant(IMAGE), tf.constant([7, 9], tf.int64))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    assert a.dtype == tf.uint8 and a.shape == IMAGE.shape
