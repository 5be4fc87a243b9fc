"""The OpenCV engine applies the TensorFlow engine's draws: same geometry, same colours (±1)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfpipe.data as td
from tests._data_helpers import write_records
from tfpipe.config import AugmentConfig, InputConfig
from tfpipe.data.augment import Augmenter
from tfpipe.data.plan import augment_engine
from tfpipe.errors import ConfigError

RNG = np.random.default_rng(0)
KIDNEY = dict(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02)


def _both_engines(aug: Augmenter, images: np.ndarray, masks: np.ndarray | None):
    """(TensorFlow per tile, OpenCV per batch) outputs for the same per-tile seeds."""
    seeds = [tf.constant([s, 11 * s + 3], tf.int64) for s in range(len(images))]
    per_tile = [
        aug(tf.constant(images[i]), None if masks is None else tf.constant(masks[i]), seed)
        for i, seed in enumerate(seeds)
    ]
    draws = [aug.draw(seed) for seed in seeds]
    batched = {key: tf.stack([d[key] for d in draws]) for key in draws[0]}
    cv_images, cv_masks = aug.apply_batch(
        tf.constant(images), None if masks is None else tf.constant(masks), batched
    )
    tf_images = np.stack([t[0].numpy() for t in per_tile])
    tf_masks = None if masks is None else np.stack([t[1].numpy() for t in per_tile])
    return (tf_images, tf_masks), (cv_images.numpy(), None if masks is None else cv_masks.numpy())


@pytest.mark.parametrize(
    ("settings", "tile", "size", "channels", "tolerance"),
    [
        ({"flip": True, "rot90": True}, 32, 32, 3, 0),
        ({"flip": True, "rot90": False}, 32, 32, 3, 0),
        ({"flip": False, "rot90": True}, 32, 32, 3, 0),
        ({"flip": False, "rot90": False}, 40, 32, 3, 0),  # random crop, no resampling
        (KIDNEY, 48, 48, 3, 1),  # colour: the same affine map, rounded in fixed point
        ({"brightness": 0.2, "contrast": 0.2}, 48, 48, 1, 1),  # grayscale
        ({"crop_scale": (0.3, 1.0), **KIDNEY}, 64, 48, 3, 2),  # bilinear in fixed point
    ],
)
def test_opencv_engine_matches_tensorflow_engine(settings, tile, size, channels, tolerance):
    aug = Augmenter(AugmentConfig(**settings), (tile, tile), size)
    images = RNG.integers(0, 256, (8, tile, tile, channels), np.uint8)
    masks = RNG.integers(0, 3, (8, tile, tile, 1), np.uint8)
    (tf_images, tf_masks), (cv_images, cv_masks) = _both_engines(aug, images, masks)
    assert cv_images.shape == tf_images.shape == (8, size, size, channels)
    np.testing.assert_array_equal(cv_masks, tf_masks)  # geometry and nearest: exact
    diff = cv_images.astype(int) - tf_images.astype(int)
    assert np.abs(diff).max() <= tolerance
    # OpenCV rounds in fixed point: some pixels land a level off. Its bilinear resize
    # rounds down a little more often (a -0.12 level bias on random pixels).
    assert np.abs(diff).mean() < 0.25 and abs(diff.mean()) < 0.15


def test_opencv_engine_matches_in_every_orientation_with_colour():
    aug = Augmenter(AugmentConfig(flip=True, rot90=True, **KIDNEY), (16, 16), 16)
    images = RNG.integers(0, 256, (48, 16, 16, 3), np.uint8)
    masks = RNG.integers(0, 2, (48, 16, 16, 1), np.uint8)
    masks[:4] = 0  # empty masks take a shortcut
    seeds = [tf.constant([s, 11 * s + 3], tf.int64) for s in range(len(images))]
    orientations = {tuple(aug.draw(seed)["flags"].numpy()) for seed in seeds}
    assert len(orientations) == 8  # including the one that moves nothing
    (tf_images, tf_masks), (cv_images, cv_masks) = _both_engines(aug, images, masks)
    np.testing.assert_array_equal(cv_masks, tf_masks)
    assert np.abs(cv_images.astype(int) - tf_images.astype(int)).max() <= 1


def test_opencv_engine_without_masks_and_with_seeded_noise():
    aug = Augmenter(AugmentConfig(brightness=0.1, noise_std=3.0), (32, 32), 32)
    images = np.full((4, 32, 32, 3), 128, np.uint8)
    _, (first, none) = _both_engines(aug, images, None)
    _, (again, _) = _both_engines(aug, images, None)
    assert none is None
    np.testing.assert_array_equal(first, again)  # the same seeds give the same noise
    assert not np.array_equal(first[0], first[1])  # other seeds, other noise
    noise = first.astype(float) - first.astype(float).mean(axis=(1, 2, 3), keepdims=True)
    assert 2.0 < noise.std() < 4.0


def test_auto_engine_is_opencv_except_behind_the_tf_data_service():
    assert augment_engine(InputConfig(), training=True) == "opencv"
    served = InputConfig(service="grpc://localhost:5050")
    assert augment_engine(served, training=True) == "tensorflow"
    assert augment_engine(served, training=False) == "opencv"  # validation is always local
    forced = InputConfig(augment=AugmentConfig(engine="tensorflow"))
    assert augment_engine(forced, training=True) == "tensorflow"


def test_opencv_engine_with_the_service_is_a_config_error(tmp_path):
    root = write_records(tmp_path / "rec")
    with pytest.raises(ConfigError, match=r"engine=opencv .* tf\.data service"):
        td.load(root, batch_size=4, service="grpc://localhost:5050", augment={"engine": "opencv"})


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_load_gives_the_same_batches_with_either_engine(tmp_path, task):
    root = write_records(tmp_path / "rec", task=task)

    def first_epoch(engine: str) -> list[tuple[np.ndarray, np.ndarray]]:
        augment = {"flip": True, "rot90": True, **KIDNEY, "engine": engine}
        ds = td.load(root, batch_size=4, augment=augment, deterministic=True, seed=3)
        return [(i.numpy(), t.numpy()) for i, t in ds]

    opencv, tensorflow = first_epoch("opencv"), first_epoch("tensorflow")
    assert len(opencv) == len(tensorflow) == 8
    for (cv_images, cv_targets), (tf_images, tf_targets) in zip(opencv, tensorflow, strict=True):
        assert cv_images.dtype == np.uint8 and cv_images.shape == tf_images.shape
        np.testing.assert_array_equal(cv_targets, tf_targets)
        assert np.abs(cv_images.astype(int) - tf_images.astype(int)).max() <= 1


def test_output_buffers_are_reused_only_after_tensorflow_lets_go():
    from tfpipe.data.buffers import BufferPool

    pool = BufferPool(per_shape=3)

    def fill(value: np.ndarray) -> np.ndarray:
        out = pool.take((2, 8, 8, 3))
        out[...] = value
        return out

    ds = tf.data.Dataset.range(12).map(
        lambda i: tf.numpy_function(fill, [tf.cast(i, tf.uint8)], tf.uint8),
        num_parallel_calls=4,
    )
    held = list(ds)  # every output alive at once: none may be overwritten
    assert [int(t.numpy().min()) for t in held] == list(range(12))
    assert [int(t.numpy().max()) for t in held] == list(range(12))
    del held
    for k, t in enumerate(ds):  # one at a time: the pool's arrays come round again
        assert int(t.numpy().min()) == int(t.numpy().max()) == k
    assert len(pool._free[(2, 8, 8, 3)]) == 3
