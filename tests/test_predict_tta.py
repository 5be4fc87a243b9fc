"""TTA: every transform inverts exactly, NumPy and TensorFlow agree, crops are right."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfpipe.predict.tta import (
    TTA_NAMES,
    apply_tta,
    average_tta,
    five_crop,
    invert_tta,
    ten_crop,
    tta_predict,
    tta_transforms,
)

BATCH = np.random.default_rng(0).integers(0, 256, (2, 6, 6, 3)).astype(np.uint8)


@pytest.mark.parametrize("name", TTA_NAMES)
def test_invert_undoes_apply_on_numpy_and_tensors(name):
    for x in (BATCH, BATCH[0]):
        np.testing.assert_array_equal(invert_tta(apply_tta(x, name), name), x)
        t = tf.constant(x)
        back = invert_tta(apply_tta(t, name), name)
        assert isinstance(back, tf.Tensor)
        np.testing.assert_array_equal(back.numpy(), x)
        np.testing.assert_array_equal(apply_tta(t, name).numpy(), apply_tta(x, name))


def test_rotations_match_numpy_rot90():
    for k, name in ((1, "rot90"), (2, "rot180"), (3, "rot270")):
        np.testing.assert_array_equal(apply_tta(BATCH, name), np.rot90(BATCH, k, axes=(1, 2)))
        np.testing.assert_array_equal(
            apply_tta(tf.constant(BATCH), name).numpy(), tf.image.rot90(BATCH, k).numpy()
        )


def test_flips_are_what_they_say():
    np.testing.assert_array_equal(apply_tta(BATCH, "hflip"), BATCH[:, :, ::-1])
    np.testing.assert_array_equal(apply_tta(BATCH, "vflip"), BATCH[:, ::-1])


def test_transforms_invert_inside_tf_function():
    @tf.function
    def round_trip(x):
        return [invert_tta(apply_tta(x, n), n) for n in TTA_NAMES]

    for out in round_trip(tf.constant(BATCH, tf.float32)):
        np.testing.assert_array_equal(out.numpy(), BATCH.astype(np.float32))


def test_tta_predict_with_an_equivariant_model_returns_its_prediction():
    def model(x):
        return x.astype(np.float32) * 2

    out = tta_predict(model, BATCH, ["hflip", "vflip", "rot90", "transpose"])
    np.testing.assert_allclose(out, BATCH * 2.0)


def test_predictions_without_spatial_axes_are_left_alone():
    logits = np.arange(6.0).reshape(2, 3)
    assert invert_tta(logits, "rot90") is logits
    np.testing.assert_allclose(average_tta([logits, logits + 2]), logits + 1)


def test_transform_names_are_validated():
    assert tta_transforms(["hflip", "hflip"]) == ["identity", "hflip"]
    with pytest.raises(ValueError, match="unknown TTA transform 'spin'"):
        tta_transforms(["spin"])


def test_five_and_ten_crop():
    x = np.arange(2 * 10 * 10 * 1).reshape(2, 10, 10, 1)
    crops = five_crop(x, 6)
    assert crops.shape == (5, 2, 6, 6, 1)
    np.testing.assert_array_equal(crops[0], x[:, :6, :6])
    np.testing.assert_array_equal(crops[3], x[:, 4:, 4:])
    np.testing.assert_array_equal(crops[4], x[:, 2:8, 2:8])
    ten = ten_crop(tf.constant(x), 6)
    assert ten.shape == (10, 2, 6, 6, 1)
    np.testing.assert_array_equal(ten[5].numpy(), x[:, :6, ::-1][:, :, :6])
    with pytest.raises(ValueError, match="larger than"):
        five_crop(x, 11)
