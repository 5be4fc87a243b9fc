"""Normalize: values, mixed precision, and a saved model that reloads identically."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfpipe.data import Normalize

PIXELS = np.array([[0, 51, 255]], np.uint8)


def test_scales_uint8_to_unit_range():
    out = Normalize()(PIXELS)
    assert str(out.dtype) in ("float32", "<dtype: 'float32'>")
    np.testing.assert_allclose(np.asarray(out), [[0.0, 0.2, 1.0]], atol=1e-6)


def test_standardises_per_channel():
    image = np.full((1, 2, 2, 3), 255, np.uint8)
    out = np.asarray(Normalize(mean=(0.5, 0.0, 1.0), std=(0.5, 0.25, 2.0))(image))
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 4.0, 0.0], atol=1e-6)


def test_mixed_precision_policy_gives_float16_without_touching_the_global_policy():
    layer = Normalize(dtype="mixed_float16")
    out = layer(PIXELS)
    assert "float16" in str(out.dtype)
    assert keras.config.dtype_policy().name == "float32"


def test_rejects_half_a_standardisation():
    with pytest.raises(ValueError, match="both mean and std"):
        Normalize(mean=0.5)
    with pytest.raises(ValueError, match="std must be > 0"):
        Normalize(mean=0.5, std=0.0)


def test_config_round_trips_and_a_saved_model_reloads(tmp_path):
    layer = Normalize(mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.2), name="norm")
    clone = Normalize.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    inputs = keras.Input((4, 4, 3), dtype="uint8")
    outputs = keras.layers.Conv2D(2, 1)(layer(inputs))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    batch = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype(np.uint8)
    np.testing.assert_array_equal(model.predict(batch, verbose=0), loaded.predict(batch, verbose=0))
    assert isinstance(loaded.get_layer("norm"), Normalize)
