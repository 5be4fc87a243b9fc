"""Model builders: outer shape, preprocessing, float32 head, local-only pretrained weights."""

from __future__ import annotations

from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import segmentation_models as sm  # SM_FRAMEWORK=tf.keras: tests/conftest.py

from tfpipe.config import ModelConfig
from tfpipe.data import Normalize
from tfpipe.errors import ConfigError
from tfpipe.models import build_model, load_model
from tfpipe.models.builders import ReverseChannels, preprocessing_layers
from tfpipe.models.weights import (
    imagenet_weights_file,
    leaf_layers,
    load_encoder_weights,
    transfer_weights,
)


@pytest.fixture
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to download weights fails the test."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"keras.utils.get_file was called: {args}")

    import tensorflow as tf

    monkeypatch.setattr(keras.utils, "get_file", forbidden)
    monkeypatch.setattr(tf.keras.utils, "get_file", forbidden)


def test_unet_has_normalize_first_and_float32_head_under_mixed_precision(no_downloads) -> None:
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        cfg = ModelConfig(backbone="efficientnetb0", decoder_filters=[16, 8, 8, 4, 4])
        cfg.bn_momentum = 0.9
        model = build_model(cfg, (64, 64, 3))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert model.inputs[0].dtype == "uint8"
    assert isinstance(model.layers[1], Normalize)
    assert model.get_layer("head").dtype_policy.name == "float32"
    assert model.output.dtype == "float32"
    assert any(layer.compute_dtype == "float16" for layer in leaf_layers(model))
    norms = [x for x in leaf_layers(model) if isinstance(x, keras.layers.BatchNormalization)]
    assert norms and all(x.momentum == 0.9 for x in norms)
    # Fully convolutional: a window larger than the training tiles works too.
    out = np.asarray(model(np.zeros((1, 96, 96, 3), np.uint8), training=False))
    assert out.shape == (1, 96, 96, 1) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("backbone", ["efficientnetb0", "resnet18", "vgg16", "mobilenetv2"])
def test_preprocessing_layers_reproduce_the_backbone_function(backbone: str) -> None:
    layers = preprocessing_layers(sm.get_preprocessing(backbone), 3)
    assert isinstance(layers[-1], Normalize)
    assert any(isinstance(layer, ReverseChannels) for layer in layers) == backbone.startswith("vgg")
    x = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype(np.uint8)
    y = x
    for layer in layers:
        y = layer(y)
    expected = sm.get_preprocessing(backbone)(x.astype(np.float32))
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-4, atol=1e-3)


def test_bad_model_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"model.backbone must be one of \[.*efficientnetb0"):
        build_model(ModelConfig(backbone="efficientnetb9"), (64, 64, 3))
    with pytest.raises(ConfigError, match="multiple of 32"):
        build_model(ModelConfig(), (100, 100, 3))
    with pytest.raises(ConfigError, match="decoder_filters needs 5 widths"):
        build_model(ModelConfig(decoder_filters=[16, 8]), (64, 64, 3))
    with pytest.raises(ConfigError, match=r"model\.arch must be one of"):
        build_model(ModelConfig(arch="densenet121"), (64, 64, 3))


def test_missing_imagenet_file_says_what_to_put_where(tmp_path: Path, no_downloads) -> None:
    cfg = ModelConfig(backbone="efficientnetb0", encoder_weights="imagenet", weights_dir=tmp_path)
    name = "efficientnet-b0_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5"
    with pytest.raises(ConfigError) as err:
        build_model(cfg, (64, 64, 3))
    message = str(err.value)
    assert name in message and str(tmp_path / name) in message
    assert "never downloads" in message and "https://" in message


def test_imagenet_file_names_come_from_the_libraries() -> None:
    assert imagenet_weights_file("resnet18")[0] == "resnet18_imagenet_1000_no_top.h5"
    assert imagenet_weights_file("mobilenetv2")[0] == (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    )
    assert imagenet_weights_file("densenet121")[0] == (
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )


def write_legacy_h5(model: keras.Model, path: Path) -> None:
    """Weights in the legacy by-layer-name HDF5 layout the published files use."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def test_local_imagenet_file_is_loaded_by_layer_name(tmp_path: Path, no_downloads) -> None:
    keras.utils.set_random_seed(1)
    get_backbone = sm.inject_global_submodules(sm.Backbones.get_backbone)
    encoder = get_backbone("resnet18", input_shape=(None, None, 3), weights=None, include_top=False)
    name, _ = imagenet_weights_file("resnet18")
    write_legacy_h5(encoder, tmp_path / name)
    cfg = ModelConfig(
        arch="linknet", backbone="resnet18", encoder_weights="imagenet", weights_dir=tmp_path
    )
    keras.utils.set_random_seed(2)
    model = build_model(cfg, (64, 64, 3))
    layers = {layer.name: layer for layer in leaf_layers(model)}
    for layer in leaf_layers(encoder):
        for a, b in zip(layer.get_weights(), layers[layer.name].get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_encoder_file_kinds(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    with pytest.raises(ConfigError, match="not found"):
        load_encoder_weights(model, tmp_path / "missing.h5")
    (tmp_path / "enc.weights.h5").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"legacy \.h5 weights file \(layers by name\)"):
        load_encoder_weights(model, tmp_path / "enc.weights.h5")


def test_transfer_skips_a_head_of_another_size() -> None:
    def net(classes: int) -> keras.Model:
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, name="body")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(classes, name="head_dense")(x))

    old, new = net(14), net(4)
    report = transfer_weights(old, new)
    assert report.loaded == ["body"]
    assert len(report.skipped) == 1 and report.skipped[0].startswith("head_dense: shapes")
    np.testing.assert_array_equal(
        old.get_layer("body").get_weights()[0], new.get_layer("body").get_weights()[0]
    )


@pytest.mark.slow
def test_keras_file_round_trip_is_exact(tmp_path: Path) -> None:
    model = build_model(ModelConfig(backbone="efficientnetb0"), (64, 64, 3))
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    model.save(tmp_path / "m.keras")
    np.testing.assert_array_equal(
        load_model(tmp_path / "m.keras").predict(x, verbose=0), model.predict(x, verbose=0)
    )
