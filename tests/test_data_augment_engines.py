"""One augmentation, two engines: the tf.data Augmenter and the Keras layer Augment agree.

Given the same uniform draws, geometry (crops, flips, quarter turns) and
masks are equal exactly; bilinear resampling and colours may round a pixel
one ``uint8`` level apart (float32 sums in another order), on under 1% of
pixels. Noise is the same distribution, not the same numbers.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfpipe.config import AugmentConfig
from tfpipe.data import Augment
from tfpipe.data.augment import N_UNIFORMS, Augmenter, tile_params
from tfpipe.data.colour import TF_NUMPY

RNG = np.random.default_rng(0)
KIDNEY = dict(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02)
B = 12


def _tf_engine(aug: Augmenter, images, masks, draws):
    """The tf.data engine, one tile at a time, from given draws."""
    out_images, out_masks = [], []
    for i in range(len(images)):
        params = tile_params(aug.spec, tf.constant(draws[i]), TF_NUMPY)
        mask = None if masks is None else tf.constant(masks[i])
        image, mask = aug.apply(tf.constant(images[i]), mask, aug.prepare(params))
        out_images.append(image.numpy())
        out_masks.append(None if mask is None else mask.numpy())
    return np.stack(out_images), (None if masks is None else np.stack(out_masks))


def _both(settings: dict, tile: int, size: int, channels: int = 3, masks: bool = True):
    cfg = AugmentConfig(**settings)
    images = RNG.integers(0, 256, (B, tile, tile, channels), np.uint8)
    labels = RNG.integers(0, 3, (B, tile, tile, 1), np.uint8) if masks else None
    draws = RNG.random((B, N_UNIFORMS), np.float32)
    expected = _tf_engine(Augmenter(cfg, (tile, tile), size), images, labels, draws)
    got = Augment(cfg, size=size).apply(images, labels, draws)
    return expected, (np.asarray(got[0]), None if got[1] is None else np.asarray(got[1]))


@pytest.mark.parametrize(
    ("settings", "tile", "size"),
    [
        ({"flip": True, "rot90": True}, 32, 32),
        ({"flip": True, "rot90": False}, 32, 32),
        ({"flip": False, "rot90": True}, 32, 32),
        ({"flip": True, "rot90": True}, 40, 32),  # random crop, no resampling
    ],
)
def test_geometry_is_equal_exactly(settings, tile, size):
    (tf_images, tf_masks), (layer_images, layer_masks) = _both(settings, tile, size)
    assert layer_images.dtype == np.uint8 and layer_images.shape == (B, size, size, 3)
    np.testing.assert_array_equal(layer_images, tf_images)
    np.testing.assert_array_equal(layer_masks, tf_masks)


@pytest.mark.parametrize(
    ("settings", "tile", "size", "channels"),
    [
        ({"crop_scale": (0.3, 1.0)}, 40, 32, 3),  # bilinear
        (KIDNEY, 32, 32, 3),
        ({"crop_scale": (0.2, 1.0), "crop_ratio": (0.5, 2.0), **KIDNEY}, 48, 32, 3),
        ({"brightness": 0.2, "contrast": 0.3, "flip": False}, 32, 32, 1),  # grayscale
    ],
)
def test_resampling_and_colour_agree_within_one_level(settings, tile, size, channels):
    (tf_images, tf_masks), (layer_images, layer_masks) = _both(settings, tile, size, channels)
    assert layer_images.shape == tf_images.shape == (B, size, size, channels)
    np.testing.assert_array_equal(layer_masks, tf_masks)  # nearest: exact
    diff = np.abs(layer_images.astype(int) - tf_images.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert not np.array_equal(tf_images[0], tf_images[1])  # the draws did something


def test_without_masks():
    (tf_images, _), (layer_images, layer_masks) = _both(
        {"crop_scale": (0.5, 1.0)}, 40, 32, 3, False
    )
    assert layer_masks is None
    assert np.abs(layer_images.astype(int) - tf_images.astype(int)).max() <= 1


def test_layer_on_normalized_floats_matches_uint8():
    cfg = AugmentConfig(crop_scale=(0.5, 1.0), **KIDNEY)
    images = RNG.integers(0, 256, (4, 32, 32, 3), np.uint8)
    draws = RNG.random((4, N_UNIFORMS), np.float32)
    levels, _ = Augment(cfg).apply(images, None, draws)
    unit, _ = Augment(cfg, value_range=(0.0, 1.0)).apply(images / np.float32(255), None, draws)
    unit = np.asarray(unit)
    assert unit.dtype == np.float32 and unit.min() >= 0.0 and unit.max() <= 1.0
    # The uint8 result is the float one, rounded.
    assert np.abs(unit * 255 - np.asarray(levels)).max() <= 0.5 + 1e-3


def test_layer_masks_stay_class_ids_and_follow_the_image():
    # Image pixels hold their own (y, x): after any crop/flip/turn, the mask must
    # still be the rule of the image at the same place (nearest for both here).
    y, x = np.mgrid[0:32, 0:32]
    image = np.stack([y, x, np.zeros_like(y)], -1).astype(np.uint8)
    masks = ((y * 3 + x * 7) % 5 == 0).astype(np.uint8)[..., None] * 2
    layer = Augment(flip=True, rot90=True, size=24, seed=5)  # random 24 x 24 crops
    out, out_masks = layer((np.stack([image] * 8), np.stack([masks] * 8)), training=True)
    out, out_masks = np.asarray(out).astype(int), np.asarray(out_masks)
    assert out.shape == (8, 24, 24, 3) and out_masks.shape == (8, 24, 24, 1)
    assert set(np.unique(out_masks)) <= {0, 2}
    rule = ((out[..., 0] * 3 + out[..., 1] * 7) % 5 == 0) * 2
    np.testing.assert_array_equal(out_masks[..., 0], rule)
    assert len({o.tobytes() for o in out}) > 4  # tiles drew differently


def test_layer_is_seeded_and_draws_anew_each_call():
    images = RNG.integers(0, 256, (4, 32, 32, 3), np.uint8)
    cfg = AugmentConfig(crop_scale=(0.5, 1.0), noise_std=2.0, **KIDNEY)
    first = [np.asarray(Augment(cfg, seed=7)(images, training=True)) for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])
    layer = Augment(cfg, seed=7)
    np.testing.assert_array_equal(np.asarray(layer(images, training=True)), first[0])
    assert not np.array_equal(np.asarray(layer(images, training=True)), first[0])
    other = np.asarray(Augment(cfg, seed=8)(images, training=True))
    assert not np.array_equal(other, first[0])


def test_layer_noise_has_the_configured_spread():
    images = np.full((4, 32, 32, 3), 128, np.uint8)
    out = np.asarray(Augment(flip=False, rot90=False, noise_std=3.0, seed=1)(images, training=True))
    assert 2.5 < (out.astype(float) - 128).std() < 3.5


def test_layer_is_identity_or_center_crop_at_inference():
    images = RNG.integers(0, 256, (2, 32, 32, 3), np.uint8)
    masks = RNG.integers(0, 2, (2, 32, 32, 1), np.uint8)
    layer = Augment(crop_scale=(0.5, 1.0), brightness=0.2)
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)
    np.testing.assert_array_equal(np.asarray(layer(images)), images)  # default: inference
    cut, cut_masks = Augment(size=16)((images, masks), training=False)
    np.testing.assert_array_equal(np.asarray(cut), images[:, 8:24, 8:24])
    np.testing.assert_array_equal(np.asarray(cut_masks), masks[:, 8:24, 8:24])


def test_layer_config_round_trip_and_saved_model(tmp_path):
    layer = Augment(AugmentConfig(hue=0.05), flip=False, size=24, value_range=(0, 1), seed=3)
    config = layer.get_config()
    again = Augment.from_config(config)
    assert again.augment == layer.augment and again.augment.hue == 0.05 and not again.augment.flip
    assert (again.size, again.value_range, again.seed) == (24, (0.0, 1.0), 3)
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    outputs = keras.layers.Conv2D(2, 1)(Augment(layer.augment, size=24, seed=3)(inputs))
    model = keras.Model(inputs, outputs)
    assert model.output_shape == (None, 24, 24, 2)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    restored = next(x for x in loaded.layers if isinstance(x, Augment))
    assert restored.augment == layer.augment and restored.size == 24


def test_layer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="value_range"):
        Augment(value_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="output side"):
        Augment(size=64)(np.zeros([1, 32, 32, 3], np.uint8), training=True)
    with pytest.raises(ValueError, match="images or \\(images, masks\\)"):
        Augment()((np.zeros([1, 8, 8, 3]),) * 3, training=True)


def test_tf_data_engine_is_plain_tensorflow_ops():
    aug = Augmenter(AugmentConfig(crop_scale=(0.5, 1.0), noise_std=1.0, **KIDNEY), (40, 40), 32)
    run = tf.function(lambda i, m, s: aug(i, m, s))
    graph = run.get_concrete_function(
        tf.TensorSpec([40, 40, 3], tf.uint8),
        tf.TensorSpec([40, 40, 1], tf.uint8),
        tf.TensorSpec([2], tf.int64),
    ).graph
    kinds = {op.type for op in graph.get_operations()}
    assert "ResizeBilinear" in kinds and not kinds & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
