"""Augmentation: the mask follows the image under every geometric op; seeds decide everything."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfpipe.config import AugmentConfig
from tfpipe.data.augment import N_UNIFORMS, Augmenter, AugmentSpec, center_crop, tile_params
from tfpipe.data.colour import TF_NUMPY

SIZE = 32
SEEDS = [tf.constant([s, 7 * s + 1], tf.int64) for s in range(12)]
NO_OPS = {"flip": False, "rot90": False}


def _rule(image: np.ndarray) -> np.ndarray:
    """The mask as a function of the image's position code."""
    return ((image[..., 0].astype(int) * 3 + image[..., 1].astype(int) * 7) % 5 == 0).astype(
        np.uint8
    )


def _position_pair(size: int = SIZE) -> tuple[tf.Tensor, tf.Tensor]:
    """Image whose pixels hold their own (y, x); mask = rule(image)."""
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([y, x, np.zeros_like(y)], -1).astype(np.uint8)
    return tf.constant(image), tf.constant(_rule(image)[..., None])


@pytest.mark.parametrize(
    ("settings", "out"),
    [
        ({"flip": True, "rot90": False}, SIZE),
        ({"flip": False, "rot90": True}, SIZE),
        ({"flip": True, "rot90": True}, SIZE),
        (NO_OPS, 20),  # random crop, tile larger than the output
    ],
)
def test_mask_follows_image_under_exact_geometric_ops(settings, out):
    image, mask = _position_pair()
    aug = Augmenter(AugmentConfig(**settings), (SIZE, SIZE), out)
    changed = 0
    for seed in SEEDS:
        img, msk = aug(image, mask, seed)
        img, msk = img.numpy(), msk.numpy()
        assert img.shape == (out, out, 3) and msk.shape == (out, out, 1)
        np.testing.assert_array_equal(msk[..., 0], _rule(img))
        changed += not np.array_equal(img, image.numpy()[:out, :out])
    assert changed >= len(SEEDS) // 2


def test_flips_and_rotations_cover_all_eight_symmetries():
    image, mask = _position_pair()
    aug = Augmenter(AugmentConfig(flip=True, rot90=True), (SIZE, SIZE), SIZE)
    seen = {aug(image, mask, tf.constant([s, 0], tf.int64))[0].numpy().tobytes() for s in range(64)}
    assert len(seen) == 8


def test_the_eight_symmetries_are_drawn_equally_often():
    aug = Augmenter(AugmentConfig(flip=True, rot90=True), (SIZE, SIZE), SIZE)
    n = 8000
    seeds = tf.stack([tf.fill([n], tf.constant(5, tf.int64)), tf.range(n, dtype=tf.int64)], 1)
    flags = aug.draw(seeds)["flags"].numpy()
    counts = np.bincount(flags @ np.array([4, 2, 1]), minlength=8)
    chi2 = ((counts - n / 8) ** 2 / (n / 8)).sum()
    assert chi2 < 24.3  # chi-square, 7 degrees of freedom: exceeded with probability 0.001


@pytest.mark.parametrize(
    ("settings", "tile", "size"),
    [
        ({"crop_scale": (0.3, 1.0), "brightness": 0.1, "hue": 0.02, "noise_std": 2.0}, 40, 32),
        ({"flip": True, "rot90": False}, 32, 32),
        ({"flip": False, "rot90": True}, 32, 32),
        ({"flip": False, "rot90": False, "contrast": 0.2}, 40, 32),  # random crop
    ],
)
def test_a_tile_draws_the_same_alone_or_in_a_batch(settings, tile, size):
    aug = Augmenter(AugmentConfig(**settings), (tile, tile), size)
    batched = tf.nest.flatten(aug.draw(tf.stack(SEEDS)))
    for i, seed in enumerate(SEEDS):
        alone = aug.draw(seed)
        assert tf.nest.flatten(alone) and len(tf.nest.flatten(alone)) == len(batched)
        for together, value in zip(batched, tf.nest.flatten(alone), strict=True):
            assert together.shape == (len(SEEDS), *value.shape)
            np.testing.assert_allclose(together[i].numpy(), value.numpy(), rtol=1e-6)


def test_quarter_turns_alone_are_drawn_equally_often():
    aug = Augmenter(AugmentConfig(flip=False, rot90=True), (SIZE, SIZE), SIZE)
    n = 4000
    seeds = tf.stack([tf.fill([n], tf.constant(9, tf.int64)), tf.range(n, dtype=tf.int64)], 1)
    codes = aug.draw(seeds)["flags"].numpy() @ np.array([4, 2, 1])
    # rot90 k = 0, 1, 2, 3 as [transpose, reverse rows, reverse columns].
    counts = np.bincount(codes, minlength=8)
    assert set(np.flatnonzero(counts)) == {0b000, 0b110, 0b011, 0b101}
    chi2 = ((counts[[0, 6, 3, 5]] - n / 4) ** 2 / (n / 4)).sum()
    assert chi2 < 16.3  # chi-square, 3 degrees of freedom: exceeded with probability 0.001


@pytest.mark.parametrize(
    "settings",
    [
        {"crop_scale": (0.2, 1.0), "crop_ratio": (0.5, 2.0), **dict(brightness=0.1, hue=0.05)},
        {"flip": True, "rot90": False, "saturation": 0.2},
        {"flip": False, "rot90": True, "contrast": 0.2},
    ],
)
def test_parameters_are_one_definition_in_every_namespace(settings):
    import keras

    spec = AugmentSpec.of(AugmentConfig(**settings), (48, 40), 32)
    u = np.random.default_rng(1).random((64, N_UNIFORMS), np.float32)
    expected = tile_params(spec, u, np)
    for xp, draws in ((TF_NUMPY, tf.constant(u)), (keras.ops, keras.ops.convert_to_tensor(u))):
        got = tile_params(spec, draws, xp)
        assert set(got) == set(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(np.asarray(got[key]), value, atol=1e-6)
    if "box" in expected:
        top, left, height, width = expected["box"].T
        assert (top >= 0).all() and (top + height <= 48).all() and (left + width <= 40).all()
        assert (height >= 1).all() and (width >= 1).all()
        assert len(set(height)) > 10 if spec.crop == "resized" else set(height) == {32}


def test_ops_are_named_and_an_output_larger_than_the_tile_is_refused():
    cfg = AugmentConfig(crop_scale=(0.5, 1.0), brightness=0.1, noise_std=1.0)
    assert Augmenter(cfg, (40, 40), 32).ops == ("crop", "flip+rot90", "brightness", "noise")
    assert Augmenter(AugmentConfig(flip=False, rot90=False), (32, 32), 32).ops == ()
    with pytest.raises(ValueError, match="output side must be <= the tile's; got 48 > 32x32"):
        Augmenter(AugmentConfig(), (32, 32), 48)


def test_random_resized_crop_keeps_mask_aligned_and_labels_intact():
    # 4-px checkerboard: image channel 0 is 250 on mask pixels; bilinear blends
    # only at block edges, where the image is neither 0 nor 250.
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    board = ((y // 4 + x // 4) % 2).astype(np.uint8)
    labels = board * 3  # class id 3, to check that nearest keeps ids
    image = np.stack([board * 250, np.zeros_like(board), np.zeros_like(board)], -1)
    aug = Augmenter(AugmentConfig(flip=False, rot90=False, crop_scale=(0.3, 1.0)), (SIZE, SIZE), 24)
    for seed in SEEDS:
        img, msk = aug(tf.constant(image), tf.constant(labels[..., None]), seed)
        img, msk = img.numpy()[..., 0], msk.numpy()[..., 0]
        assert img.shape == (24, 24) and set(np.unique(msk)) <= {0, 3}
        clean = (img == 0) | (img == 250)
        assert clean.mean() > 0.4
        np.testing.assert_array_equal(msk[clean], (img[clean] == 250) * 3)


def test_colour_ops_change_the_image_only():
    image, mask = _position_pair()
    cfg = AugmentConfig(
        flip=False,
        rot90=False,
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
        hue=0.05,
        noise_std=3.0,
    )
    aug = Augmenter(cfg, (SIZE, SIZE), SIZE)
    assert aug.ops == ("brightness", "contrast", "saturation", "hue", "noise")
    img, msk = aug(image + 100, mask, SEEDS[1])
    assert img.dtype == tf.uint8
    np.testing.assert_array_equal(msk.numpy(), mask.numpy())
    assert not np.array_equal(img.numpy(), (image + 100).numpy())


def test_same_seed_same_result_other_seed_other_result():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), np.uint8))
    cfg = AugmentConfig(crop_scale=(0.5, 1.0), brightness=0.1, hue=0.02, noise_std=2.0)
    aug = Augmenter(cfg, (SIZE, SIZE), 24)
    a, _ = aug(image, None, SEEDS[3])
    b, _ = aug(image, None, SEEDS[3])
    c, _ = aug(image, None, SEEDS[4])
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())


def test_augmenter_runs_inside_tf_function():
    image, mask = _position_pair()
    aug = Augmenter(AugmentConfig(crop_scale=(0.5, 1.0), brightness=0.1), (SIZE, SIZE), 16)
    run = tf.function(lambda i, m, s: aug(i, m, s))
    img, msk = run(image, mask, SEEDS[2])
    assert img.shape == (16, 16, 3) and msk.shape == (16, 16, 1)
    # Static shapes survive tracing (batching and Keras need them).
    traced = run.get_concrete_function(image, mask, SEEDS[2]).structured_outputs
    assert traced[0].shape == (16, 16, 3) and traced[1].shape == (16, 16, 1)


def test_center_crop_is_central_and_fixed():
    image, mask = _position_pair()
    img, msk = center_crop(image, mask, 16)
    np.testing.assert_array_equal(img.numpy()[0, 0, :2], [8, 8])
    np.testing.assert_array_equal(msk.numpy()[..., 0], _rule(img.numpy()))
    same, _ = center_crop(image, None, SIZE)
    assert same is image
