"""DenseNet121 multi-label classifier (the chest X-ray case, CheXNet style).

``keras.applications.DenseNet121`` without its top, global average pooling,
then a ``Dense(classes)`` head (``head_dense``) and a float32 sigmoid
(``head``): one independent probability per label, trained with binary
cross-entropy on multi-hot labels. Fine-tuning from a checkpoint with another
label set (``model.init_checkpoint``, e.g. 14 → 4 labels) loads every layer
but ``head_dense``.

Example:
    >>> from tfpipe.config import ModelConfig
    >>> cfg = ModelConfig(task="classification", arch="densenet121", classes=4)
    >>> model = build_classifier(cfg, (224, 224, 3))
    >>> model.get_layer("head_dense").units
    4
"""

from __future__ import annotations

from pathlib import Path

import keras

from tfpipe.config import ModelConfig
from tfpipe.errors import ConfigError
from tfpipe.models import weights

HEAD_LAYER = "head_dense"


def build_classifier(
    cfg: ModelConfig,
    input_shape: tuple[int | None, int | None, int],
    augment: keras.layers.Layer | None = None,
) -> keras.Model:
    """DenseNet121 → average pool → Dense(classes) → float32 sigmoid/softmax.

    Args:
        cfg: ``model`` section with ``task: classification``, ``arch: densenet121``.
        input_shape: ``(height, width, channels)`` of the ``uint8`` input.
        augment: A training-only layer on the ``uint8`` images, before the preprocessing.

    Raises:
        ConfigError: another arch was asked for, or ImageNet weights are missing.
    """
    from tfpipe.models.builders import preprocessing_layers

    if cfg.arch != "densenet121":
        raise ConfigError(
            "model.task classification supports model.arch 'densenet121'; "
            f"got model.arch={cfg.arch!r}"
        )
    inputs = keras.Input(input_shape, dtype="uint8", name="image")
    x = inputs if augment is None else augment(inputs)
    for layer in preprocessing_layers(keras.applications.densenet.preprocess_input, input_shape[2]):
        x = layer(x)
    encoder = keras.applications.DenseNet121(
        include_top=False, weights=None, input_tensor=x, pooling="avg"
    )
    _load_encoder(encoder, cfg)
    logits = keras.layers.Dense(cfg.classes, name=HEAD_LAYER)(encoder.output)
    outputs = keras.layers.Activation(cfg.activation, dtype="float32", name="head")(logits)
    return keras.Model(inputs, outputs, name="densenet121_classifier")


def _load_encoder(encoder: keras.Model, cfg: ModelConfig) -> None:
    if cfg.encoder_weights is None:
        return
    if cfg.encoder_weights == "imagenet":
        path = weights.find_imagenet_weights("densenet121", cfg.weights_dir)
    else:
        path = Path(cfg.encoder_weights)
    report = weights.load_encoder_weights(encoder, path)
    weights.log.info("encoder weights: %s", report.summary())
