"""Pretrained weights from local files only: ImageNet encoders and fine-tuning checkpoints.

tfpipe never downloads. ``encoder_weights: imagenet`` looks in
``model.weights_dir`` for the exact file that segmentation-models, the
``efficientnet`` package or ``keras.applications`` would have downloaded
(the name comes from those libraries' own tables) and loads it by layer name,
skipping layers whose shapes differ. When the file is missing, the error says
which file to put where and where it is published.

``init_checkpoint`` starts a model from another ``.keras`` model, layer by
layer (matched by name, then by shape), so a 14-label classifier can seed a
4-label one: every layer loads except the head, and the skipped layers are
reported.

Example:
    >>> from tfpipe.models.weights import imagenet_weights_file
    >>> imagenet_weights_file("efficientnetb0")[0]
    'efficientnet-b0_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import keras

from tfpipe.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class TransferReport:
    """What :func:`transfer_weights` / :func:`load_encoder_weights` did."""

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """One ``"<layer>: <reason>"`` line per layer that kept its initial weights."""

    def summary(self) -> str:
        text = f"{len(self.loaded)} layers loaded from {self.source}"
        if self.skipped:
            text += f"; {len(self.skipped)} skipped: " + "; ".join(self.skipped)
        return text


def imagenet_weights_file(backbone: str) -> tuple[str, str]:
    """``(file name, published URL)`` of the ImageNet no-top weights of ``backbone``.

    Raises:
        ConfigError: the libraries publish no ImageNet weights for this backbone.
    """
    url = _imagenet_url(backbone)
    if url is None:
        raise ConfigError(
            f"no ImageNet weights are published for model.backbone={backbone!r}; "
            "use model.encoder_weights: null or a local weights file"
        )
    return url.rsplit("/", 1)[-1], url


def _imagenet_url(backbone: str) -> str | None:
    if backbone.startswith("efficientnetb"):
        import efficientnet.model as eff

        name = f"efficientnet-b{backbone.removeprefix('efficientnetb')}"
        return (
            f"{eff.BASE_WEIGHTS_PATH}{name}_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5"
        )
    from classification_models.weights import WEIGHTS_COLLECTION

    for entry in WEIGHTS_COLLECTION:
        if (
            entry["model"] == backbone
            and entry["dataset"] == "imagenet"
            and not entry["include_top"]
        ):
            return entry["url"]
    return _keras_applications_url(backbone)


def _keras_applications_url(backbone: str) -> str | None:
    import keras_applications as ka
    from segmentation_models.backbones import inception_resnet_v2, inception_v3

    # Segmentation models build these at (None, None, 3): the libraries then use
    # their 224-pixel, alpha 1.0 weights.
    urls = {
        "vgg16": ka.vgg16.WEIGHTS_PATH_NO_TOP,
        "vgg19": ka.vgg19.WEIGHTS_PATH_NO_TOP,
        "densenet121": ka.densenet.DENSENET121_WEIGHT_PATH_NO_TOP,
        "densenet169": ka.densenet.DENSENET169_WEIGHT_PATH_NO_TOP,
        "densenet201": ka.densenet.DENSENET201_WEIGHT_PATH_NO_TOP,
        "mobilenet": ka.mobilenet.BASE_WEIGHT_PATH + "mobilenet_1_0_224_tf_no_top.h5",
        "mobilenetv2": ka.mobilenet_v2.BASE_WEIGHT_PATH
        + "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        "inceptionv3": inception_v3.WEIGHTS_PATH_NO_TOP,
        "inceptionresnetv2": inception_resnet_v2.BASE_WEIGHT_URL
        + "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    }
    return urls.get(backbone)


def find_imagenet_weights(backbone: str, weights_dir: Path) -> Path:
    """The local ImageNet weights file of ``backbone`` inside ``weights_dir``.

    Raises:
        ConfigError: the file is not there; the message names the file, the
            folder (``model.weights_dir``) and the URL it is published at.
    """
    name, url = imagenet_weights_file(backbone)
    folder = Path(weights_dir).expanduser()
    path = folder / name
    if not path.is_file():
        raise ConfigError(
            f"model.encoder_weights='imagenet' needs {name} in model.weights_dir={folder} "
            f"(tfpipe never downloads); fetch it from {url} and put it at {path}, "
            "or set model.encoder_weights: null"
        )
    return path


def load_encoder_weights(model: keras.Model, path: Path) -> TransferReport:
    """Load a legacy ``.h5`` weights file or a ``.keras`` model into ``model`` by layer name.

    Layers whose weight shapes differ are skipped (``skip_mismatch``); the
    report lists the file's layers that found no counterpart.

    Raises:
        ConfigError: the file does not exist or has an unsupported suffix.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.encoder_weights file not found: {path}")
    name = path.name
    if name.endswith(".keras"):
        return transfer_weights(keras.saving.load_model(path, compile=False), model, str(path))
    if name.endswith(".weights.h5") or not name.endswith((".h5", ".hdf5")):
        # .weights.h5 files address weights by model structure, not by layer name.
        raise ConfigError(
            "model.encoder_weights must be 'imagenet', a legacy .h5 weights file (layers by "
            f"name) or a .keras model; got {path}"
        )
    model.load_weights(path, by_name=True, skip_mismatch=True)
    in_file = _h5_layer_names(path)
    present = {layer.name for layer in leaf_layers(model)}
    return TransferReport(
        source=str(path),
        loaded=sorted(in_file & present),
        skipped=[f"{n}: not in the model" for n in sorted(in_file - present)],
    )


def _h5_layer_names(path: Path) -> set[str]:
    import h5py

    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        names = group.attrs.get("layer_names", [])
        out = set()
        for n in names:
            text = n.decode() if isinstance(n, bytes) else str(n)
            if len(group[text].attrs.get("weight_names", [])):
                out.add(text)
        return out


def leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer that owns weights, nested models flattened, in build order."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if not isinstance(layer, keras.Model) and layer.weights
    ]


def transfer_weights(source: keras.Model, target: keras.Model, label: str = "") -> TransferReport:
    """Copy weights from ``source`` into ``target`` wherever layer name and shapes agree.

    The last weighted layer of each model (the head) is paired even when the
    names differ (auto-named heads), so an unchanged head is loaded and a head
    with a different number of classes is reported as skipped.

    Example:
        >>> report = transfer_weights(old_14_class_model, new_4_class_model)  # doctest: +SKIP
        >>> report.skipped                                                    # doctest: +SKIP
        ['final_dense: shapes [(1024, 14), (14,)] in checkpoint, [(1024, 4), (4,)] here']
    """
    report = TransferReport(source=label or source.name)
    src_layers, dst_layers = leaf_layers(source), leaf_layers(target)
    by_name = {layer.name: layer for layer in src_layers}
    pairs = {layer.name: by_name.get(layer.name) for layer in dst_layers}
    if src_layers and dst_layers:
        pairs[dst_layers[-1].name] = by_name.get(dst_layers[-1].name, src_layers[-1])
    for layer in dst_layers:
        match = pairs[layer.name]
        if match is None:
            report.skipped.append(f"{layer.name}: not in the checkpoint")
            continue
        src_shapes = [tuple(w.shape) for w in match.weights]
        dst_shapes = [tuple(w.shape) for w in layer.weights]
        if src_shapes != dst_shapes:
            report.skipped.append(
                f"{layer.name}: shapes {src_shapes} in the checkpoint, {dst_shapes} here"
            )
            continue
        layer.set_weights(match.get_weights())
        report.loaded.append(layer.name)
    return report


def init_from_checkpoint(model: keras.Model, checkpoint: Path) -> TransferReport:
    """Start ``model`` from a ``.keras`` checkpoint (``model.init_checkpoint``).

    Raises:
        ConfigError: the checkpoint is missing or not a ``.keras`` file.
    """
    path = Path(checkpoint).expanduser()
    if not path.is_file() or path.suffix != ".keras":
        raise ConfigError(
            f"model.init_checkpoint must be an existing .keras file; got {path}"
            + ("" if path.exists() else " (not found)")
        )
    from tfpipe.models.builders import load_model

    report = transfer_weights(load_model(path), model, str(path))
    # Skipped layers are worth a warning: a new head is expected, anything else is a surprise.
    (log.warning if report.skipped else log.info)("init_checkpoint: %s", report.summary())
    return report
