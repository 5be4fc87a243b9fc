"""Build and load the networks an experiment trains: Unet / Linknet / FPN and DenseNet121.

Segmentation networks come from segmentation-models 1.0.1 (``SM_FRAMEWORK=tf.keras``)
and are wrapped so that every tfpipe model has the same outer shape::

    image uint8 (H, W, C) ─▶ Normalize (the backbone's own preprocessing, on the accelerator)
        ─▶ segmentation-models network (linear output)
        ─▶ Activation(sigmoid | softmax, dtype=float32)          # "head"

The head has one channel per class with ``activation: sigmoid`` (multi-label:
each channel is its own yes/no), or background + one per class with
``activation: softmax`` (the channels sum to one; a binary softmax model has
two). :func:`output_channels` says which, and every later stage (the data's
``background_channel``, the losses, metrics and ``predict``) follows it.

The final activation runs in float32 so that, under a mixed-precision policy,
probabilities and the loss are not computed in float16. Segmentation models
are fully convolutional: built for ``(None, None, C)``, they accept any side
that is a multiple of 32 (training tiles and larger prediction windows alike).

The preprocessing is read from segmentation-models' ``get_preprocessing``
for the backbone (probed once on a few pixels and turned into a
:class:`tfpipe.data.Normalize`), so ImageNet weights see the input they were
trained on and a model saved as ``.keras`` carries its preprocessing with it.

Example:
    >>> from tfpipe.config import ModelConfig
    >>> from tfpipe.models import build_model
    >>> model = build_model(ModelConfig(arch="unet", backbone="efficientnetb0"), (256, 256, 3))
    >>> model.output.dtype
    'float32'
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("SM_FRAMEWORK", "tf.keras")

import keras
import numpy as np
from keras import ops

from tfpipe.config import ModelConfig
from tfpipe.data import Normalize
from tfpipe.errors import ConfigError
from tfpipe.models import weights

SEGMENTATION_ARCHS = {"unet": "Unet", "linknet": "Linknet", "fpn": "FPN"}
CLASSIFICATION_ARCHS = ("densenet121",)
# Encoder downsampling: input sides must be multiples of this.
STRIDE = 32


@keras.saving.register_keras_serializable(package="tfpipe")
class ReverseChannels(keras.layers.Layer):
    """RGB → BGR, for backbones trained on Caffe-style input (VGG)."""

    def call(self, inputs: Any) -> Any:
        return ops.flip(inputs, axis=-1)


def build_model(
    cfg: ModelConfig,
    input_shape: Sequence[int | None],
    augment: keras.layers.Layer | None = None,
) -> keras.Model:
    """Build the network of ``cfg`` for ``uint8`` input of ``input_shape``.

    Args:
        cfg: The ``model`` section of an experiment.
        input_shape: ``(height, width, channels)``; height and width may be
            None and must be multiples of 32 otherwise.
        augment: A layer applied to the ``uint8`` images before the
            preprocessing, active in training only: ``tfpipe.data.Augment``
            with the colour ops of ``input.augment.colour_in_model``.

    Returns:
        An uncompiled ``keras.Model`` taking ``uint8`` images and returning
        float32 probabilities: ``(B, H, W, output_channels(cfg))`` for
        segmentation, ``(B, classes)`` for classification.

    Raises:
        ConfigError: unknown backbone, arch/task mismatch, bad input size,
            missing weights file; the message names the ``model.*`` key.

    Example:
        >>> cfg = ModelConfig(task="classification", arch="densenet121", classes=14)
        >>> build_model(cfg, (224, 224, 3)).output.shape
        (None, 14)
    """
    height, width, channels = _check_shape(input_shape)
    if cfg.task == "classification":
        from tfpipe.models.classification import build_classifier

        model = build_classifier(cfg, (height, width, channels), augment)
    else:
        model = _build_segmentation(cfg, channels, augment)
    if cfg.bn_momentum is not None:
        set_bn_momentum(model, cfg.bn_momentum)
    if cfg.init_checkpoint is not None:
        weights.init_from_checkpoint(model, cfg.init_checkpoint)
    return model


def output_channels(cfg: ModelConfig) -> int:
    """Channels of a segmentation head: ``classes``, plus a background channel for softmax.

    Example:
        >>> output_channels(ModelConfig(classes=2)), output_channels(
        ...     ModelConfig(classes=2, activation="softmax"))
        (2, 3)
    """
    return cfg.classes + int(cfg.activation == "softmax")


def is_softmax(model: keras.Model) -> bool:
    """Whether a tfpipe segmentation model's head is a softmax (background channel first).

    Anything without a ``head`` layer (a plain callable, another model) counts as sigmoid.
    """
    try:
        head = model.get_layer("head")
    except (AttributeError, ValueError):
        return False
    activation = getattr(head, "activation", None)
    return getattr(activation, "__name__", str(activation)) == "softmax"


def set_bn_momentum(model: keras.Model, momentum: float) -> int:
    """Set the moving-average momentum of every BatchNormalization layer; returns how many."""
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        layer.momentum = float(momentum)
    return len(layers)


def load_model(path: str | Path, compile: bool = False) -> keras.Model:
    """Load a ``.keras`` model written by tfpipe (custom layers, losses, Lookahead registered).

    Example:
        >>> model = load_model("runs/20250101-120000-kidney/fold0/best.keras")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}")
    register_custom_objects()
    return keras.saving.load_model(path, compile=compile)


def register_custom_objects() -> None:
    """Import every module that registers objects a tfpipe ``.keras`` file may contain."""
    import segmentation_models  # noqa: F401  (registers efficientnet's swish / FixedDropout)

    from tfpipe.models import lookahead, losses, metrics  # noqa: F401


def _check_shape(input_shape: Sequence[int | None]) -> tuple[int | None, int | None, int]:
    if len(input_shape) != 3 or input_shape[2] is None:
        raise ConfigError(
            f"input_shape must be (height, width, channels); got {tuple(input_shape)}"
        )
    height, width, channels = input_shape
    for side in (height, width):
        if side is not None and side % STRIDE:
            raise ConfigError(
                f"the model input side must be a multiple of {STRIDE} (encoder stride); "
                f"got {height}x{width} (set input.image_size or the tile size accordingly)"
            )
    return height, width, int(channels)


def segmentation_backbones() -> list[str]:
    """Encoder names segmentation-models 1.0.1 can build."""
    import segmentation_models as sm

    return list(sm.Backbones.models)


def _build_segmentation(
    cfg: ModelConfig, channels: int, augment: keras.layers.Layer | None
) -> keras.Model:
    import segmentation_models as sm

    if cfg.arch not in SEGMENTATION_ARCHS:
        raise ConfigError(
            f"model.arch must be one of {sorted(SEGMENTATION_ARCHS)} for model.task "
            f"segmentation; got model.arch={cfg.arch!r}"
        )
    known = segmentation_backbones()
    if cfg.backbone not in known:
        raise ConfigError(
            f"model.backbone must be one of {known}; got model.backbone={cfg.backbone!r}"
        )
    net = getattr(sm, SEGMENTATION_ARCHS[cfg.arch])(
        cfg.backbone,
        input_shape=(None, None, channels),
        classes=output_channels(cfg),
        activation="linear",
        encoder_weights=None,
        **_decoder_kwargs(cfg),
    )
    load_pretrained_encoder(net, cfg, cfg.backbone)
    inputs = keras.Input((None, None, channels), dtype="uint8", name="image")
    x = inputs if augment is None else augment(inputs)
    for layer in preprocessing_layers(sm.get_preprocessing(cfg.backbone), channels):
        x = layer(x)
    outputs = keras.layers.Activation(cfg.activation, dtype="float32", name="head")(net(x))
    return keras.Model(inputs, outputs, name=f"{cfg.arch}_{cfg.backbone}")


def _decoder_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    if cfg.decoder_filters is None:
        return {}
    if cfg.arch == "fpn":
        raise ConfigError(
            "model.decoder_filters applies to unet and linknet only; "
            f"got model.decoder_filters={cfg.decoder_filters} with model.arch='fpn'"
        )
    if len(cfg.decoder_filters) != 5:
        raise ConfigError(
            "model.decoder_filters needs 5 widths (one per upsampling stage back to full "
            f"resolution); got model.decoder_filters={cfg.decoder_filters}"
        )
    return {"decoder_filters": tuple(cfg.decoder_filters)}


def load_pretrained_encoder(net: keras.Model, cfg: ModelConfig, backbone: str) -> None:
    """Apply ``model.encoder_weights`` (None, "imagenet" or a local file) to ``net``."""
    if cfg.encoder_weights is None:
        return
    if cfg.encoder_weights == "imagenet":
        path = weights.find_imagenet_weights(backbone, cfg.weights_dir)
    else:
        path = Path(cfg.encoder_weights)
    report = weights.load_encoder_weights(net, path)
    if not report.loaded:
        raise ConfigError(
            f"model.encoder_weights={cfg.encoder_weights!r}: no layer of {path.name} matches "
            f"the {backbone} encoder (is it the right file?)"
        )
    weights.log.info("encoder weights: %s", report.summary())


def preprocessing_layers(preprocess: Callable[[np.ndarray], Any], channels: int) -> list[Any]:
    """Layers reproducing a backbone's ``preprocess_input`` on ``uint8`` input.

    The function is probed on black, white and single-channel pixels; it must be
    per-channel affine, optionally after an RGB → BGR swap (Caffe style).
    Non-RGB input falls back to scaling to [0, 1].
    """
    if channels != 3:
        return [Normalize(name="normalize")]
    probe = np.zeros((4, 1, 1, 3), np.float32)
    probe[1:, 0, 0] = np.eye(3, dtype=np.float32) * 255.0
    out = np.asarray(preprocess(probe.copy()), np.float64)[:, 0, 0, :]
    offset = out[0]
    response = (out[1:] - offset) / 255.0  # response[i, j]: output j per unit of input i
    layers: list[Any] = []
    if np.allclose(response, np.diag(np.diag(response)), atol=1e-6):
        gain = np.diag(response)
    elif np.allclose(response, np.fliplr(np.diag(np.diag(np.fliplr(response)))), atol=1e-6):
        layers.append(ReverseChannels(name="rgb_to_bgr"))
        gain = np.diag(np.fliplr(response))[::-1]
    else:
        raise ConfigError("the backbone's preprocessing mixes channels; tfpipe cannot reproduce it")
    layers.append(_normalize_for(gain, offset))
    return layers


def _normalize_for(gain: np.ndarray, offset: np.ndarray) -> Normalize:
    # Normalize computes (x * scale - mean) / std; match gain * x + offset.
    if np.allclose(offset, 0.0) and np.allclose(gain, gain[0]):
        return Normalize(scale=float(gain[0]), name="normalize")
    std = 1.0 / (255.0 * gain)
    mean = -offset * std
    return Normalize(
        mean=[float(m) for m in mean],
        std=[float(s) for s in std],
        name="normalize",
    )
