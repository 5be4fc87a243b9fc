"""``input.augment.colour_in_model``: tf.data moves the pixels, the model recolours them.

The split itself (host ops vs model ops), ``load()`` leaving colour out, the
model's colour layer (training only, any window at inference, saved and
loaded with its draw state). The exact resume of a fold trained this way is
in ``tests/test_train_resume.py`` (parametrized over it).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

import tfpipe.data
from tests._train_helpers import tiny_model, write_records
from tfpipe.config import AugmentConfig, ModelConfig
from tfpipe.models import load_model

JITTER = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05}


def test_host_and_model_ops_split_the_augmentation() -> None:
    both = AugmentConfig(flip=True, rot90=True, crop_scale=(0.5, 1.0), noise_std=2.0, **JITTER)
    split = both.model_copy(update={"colour_in_model": True})

    host, model = split.host_ops(), split.model_ops()
    assert (host.flip, host.rot90, host.crop_scale) == (True, True, (0.5, 1.0))
    assert [host.brightness, host.contrast, host.saturation, host.hue, host.noise_std] == [0] * 5
    assert (model.flip, model.rot90, model.crop_scale, model.colour_in_model) == (
        False,
        False,
        None,
        False,
    )
    assert (model.brightness, model.hue, model.noise_std) == (0.2, 0.05, 2.0)
    # Without the flag everything stays in tf.data; with it but no colour op, nothing moves.
    assert both.host_ops() == both and both.model_ops() is None
    assert AugmentConfig(colour_in_model=True).model_ops() is None


def first_batch(records: Path, **augment: object) -> np.ndarray:
    ds = tfpipe.data.load(
        records,
        folds=[0],
        batch_size=4,
        deterministic=True,
        repeat=True,
        augment={"flip": True, "rot90": True} | augment,
    )
    images, _ = next(iter(ds))
    return images.numpy()


def test_load_leaves_the_colour_to_the_model(tmp_path: Path) -> None:
    records = write_records(tmp_path / "rec", folds=1, per_fold=8)

    in_model = first_batch(records, colour_in_model=True, **JITTER)
    geometry_only = first_batch(records)
    in_data = first_batch(records, **JITTER)

    np.testing.assert_array_equal(in_model, geometry_only)  # same tiles, same moves
    assert np.abs(in_data.astype(int) - in_model).max() > 10  # tf.data would have recoloured


def colour_model(augment: AugmentConfig) -> keras.Model:
    layer = tfpipe.data.Augment(augment.model_ops(), seed=3, name="augment")
    return tiny_model(ModelConfig(classes=1), (None, None, 3), layer)


def test_the_colour_layer_recolours_in_training_only_at_any_size(tmp_path: Path) -> None:
    model = colour_model(AugmentConfig(colour_in_model=True, **JITTER))
    layer = model.get_layer("augment")
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3)).astype(np.uint8)

    trained = np.asarray(layer(images, training=True))
    assert trained.shape == images.shape and trained.dtype == np.uint8
    assert np.abs(trained.astype(int) - images).max() > 5
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)

    # Saved and loaded as tfpipe saves runs: prediction on a window of another shape
    # goes through the layer untouched, and the draw state comes back with the file.
    layer(images, training=True)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_model(path)
    window = np.random.default_rng(1).integers(0, 256, (1, 64, 96, 3)).astype(np.uint8)
    np.testing.assert_allclose(loaded.predict(window, verbose=0), model.predict(window, verbose=0))
    np.testing.assert_array_equal(
        loaded.get_layer("augment").seed_generator.state.numpy(),
        layer.seed_generator.state.numpy(),
    )


def test_weights_carry_the_draw_state_so_the_next_draws_repeat(tmp_path: Path) -> None:
    model = colour_model(AugmentConfig(colour_in_model=True, **JITTER))
    layer = model.get_layer("augment")
    images = np.full((2, 16, 16, 3), 120, np.uint8)
    layer(images, training=True)
    model.save_weights(tmp_path / "w.weights.h5")
    after_save = np.asarray(layer(images, training=True))
    layer(images, training=True)  # the state moves on

    model.load_weights(tmp_path / "w.weights.h5")

    np.testing.assert_array_equal(np.asarray(layer(images, training=True)), after_save)
