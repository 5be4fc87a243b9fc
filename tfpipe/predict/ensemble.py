"""Checkpoints to one batch predictor: fold ensembles and test-time augmentation.

``--checkpoint`` names a ``.keras`` file, a fold folder (``fold2/`` holding
``best.keras``), a run folder (``runs/<ts>-<name>/``: every
``fold{k}/best.keras`` is loaded and their predictions averaged), or
``latest`` (the newest run in ``train.runs_dir`` with a checkpoint).

:class:`EnsemblePredictor` sends every TTA variant of a batch
(``tfpipe.predict.tta``: identity plus e.g. hflip, vflip, rot90) through each
model in a single call, maps each prediction back with the exact inverse
transform, and averages over transforms and models.

Example:
    >>> from tfpipe.predict.ensemble import EnsemblePredictor, resolve_checkpoints
    >>> paths = resolve_checkpoints("runs/20250101-120000-kidney")  # doctest: +SKIP
    >>> predict = EnsemblePredictor.load(paths, tta=["hflip", "vflip"])  # doctest: +SKIP
    >>> predict(batch_uint8).shape  # doctest: +SKIP
    (8, 256, 256)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfpipe.errors import ConfigError, InputDataError

CHECKPOINT_NAME = "best.keras"
_FOLD_DIR = re.compile(r"fold(\d+)$")


def resolve_checkpoints(checkpoint: str | Path, runs_dir: str | Path = "runs") -> list[Path]:
    """The model files that ``checkpoint`` names, folds in order.

    Args:
        checkpoint: ``.keras`` file, fold folder, run folder, or ``"latest"``.
        runs_dir: Where ``"latest"`` looks for runs.

    Raises:
        InputDataError: nothing loadable is there (the message says what was expected).

    Example:
        >>> resolve_checkpoints("runs/x/fold0/best.keras")  # doctest: +SKIP
        [PosixPath('runs/x/fold0/best.keras')]
    """
    if str(checkpoint) == "latest":
        return resolve_checkpoints(latest_run(runs_dir))
    path = Path(checkpoint)
    if path.is_file():
        return [path]
    if (path / CHECKPOINT_NAME).is_file():
        return [path / CHECKPOINT_NAME]
    if path.is_dir():
        folds = [
            (int(m.group(1)), d / CHECKPOINT_NAME)
            for d in path.iterdir()
            if (m := _FOLD_DIR.match(d.name)) and (d / CHECKPOINT_NAME).is_file()
        ]
        if folds:
            return [p for _, p in sorted(folds)]
    raise InputDataError(
        f"checkpoint must be a .keras file, a fold folder with {CHECKPOINT_NAME}, a run folder "
        f"with fold*/{CHECKPOINT_NAME}, or 'latest'; got {path}"
        + ("" if path.exists() else " (it does not exist)")
    )


def latest_run(runs_dir: str | Path) -> Path:
    """The newest run folder (names start with a timestamp) holding a fold checkpoint."""
    runs_dir = Path(runs_dir)
    runs = sorted(
        (d for d in runs_dir.glob("*") if d.is_dir() and any(d.glob(f"fold*/{CHECKPOINT_NAME}"))),
        key=lambda d: d.name,
    )
    if not runs:
        raise InputDataError(
            f"--checkpoint latest: no run with fold*/{CHECKPOINT_NAME} in {runs_dir}"
        )
    return runs[-1]


def run_configs(paths: Sequence[Path]) -> list[tuple[Path, dict]]:
    """The saved ``config.yaml`` of the runs of ``<run>/fold<k>/best.keras`` checkpoints."""
    import yaml

    found = []
    for config in sorted({p.parent.parent / "config.yaml" for p in paths}):
        if config.is_file():
            found.append((config, yaml.safe_load(config.read_text()) or {}))
    return found


def check_run_scale(paths: Sequence[Path], downscale: int) -> None:
    """Fail when the run's saved config trained at another scale than the experiment predicts at.

    A model sees the world at ``1 / downscale``; predicting at another scale
    silently ruins the masks, so it is an error, not a warning.
    """
    for config, saved in run_configs(paths):
        trained = saved.get("data", {}).get("downscale", downscale)
        if trained != downscale:
            raise ConfigError(
                f"data.downscale must match the checkpoint's training scale; the run {config} "
                f"used data.downscale={trained}, the experiment has data.downscale={downscale}"
            )


def trained_input_size(paths: Sequence[Path]) -> int | None:
    """The tile side a run trained on (``input.image_size`` or ``tile_size // downscale``)."""
    for _, saved in run_configs(paths):
        data, inputs = saved.get("data", {}), saved.get("input", {})
        if inputs.get("image_size"):
            return int(inputs["image_size"])
        if data.get("tile_size") and data.get("downscale"):
            return int(data["tile_size"]) // int(data["downscale"])
    return None


class EnsemblePredictor:
    """Mean of several models over test-time augmentations: uint8 batch in, probabilities out.

    Args:
        models: Keras segmentation models (``(B, n, n, C)`` probabilities): one
            channel per class, or background first for a softmax head (dropped here).
        tta: Transform names of ``tfpipe.predict.tta`` (identity is always included).

    Example:
        >>> predict = EnsemblePredictor([model], tta=["hflip"])  # doctest: +SKIP
        >>> predict(np.zeros((2, 256, 256, 3), np.uint8)).shape  # doctest: +SKIP
        (2, 256, 256)
    """

    def __init__(self, models: Sequence[Any], tta: Sequence[str] = ()) -> None:
        from tfpipe.predict.tta import tta_transforms

        if not models:
            raise ValueError("EnsemblePredictor needs at least one model")
        self.models = list(models)
        try:
            self.transforms = tta_transforms(list(tta))
        except ValueError as err:
            raise ConfigError(f"predict.tta: {err}") from None
        self.input_size = _input_size(self.models)

    @classmethod
    def load(cls, paths: Sequence[Path], tta: Sequence[str] = ()) -> EnsemblePredictor:
        """Load every checkpoint with ``tfpipe.models.load_model``."""
        from tfpipe.models import load_model

        return cls([load_model(p) for p in paths], tta)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """``(B, n, n, C)`` uint8 windows to float32 probabilities: ``(B, n, n)`` for one
        class, ``(B, n, n, K)`` for K classes (a softmax head's background dropped)."""
        from tfpipe.predict.tta import apply_tta, invert_tta

        count = len(images)
        variants = np.concatenate([apply_tta(images, name) for name in self.transforms])
        total = class_maps(self.models[0], variants)
        for model in self.models[1:]:
            out = class_maps(model, variants)
            if out.shape != total.shape:
                raise ConfigError(
                    "ensemble models must predict the same classes; got outputs of shape "
                    f"{total.shape} and {out.shape}"
                )
            total = total + out
        aligned = [
            invert_tta(total[i * count : (i + 1) * count], name)
            for i, name in enumerate(self.transforms)
        ]
        mean = np.mean(aligned, axis=0) / len(self.models)
        return mean[..., 0] if mean.shape[-1] == 1 else mean


def class_maps(model: Any, images: np.ndarray) -> np.ndarray:
    """A segmentation model's ``(B, n, n, C)`` prediction as one map per class (softmax: the
    background channel 0 dropped).

    Raises:
        ConfigError: the output is not ``(B, H, W, C)``.
    """
    from tfpipe.models.builders import is_softmax

    out = np.asarray(model.predict_on_batch(images), np.float32)
    if out.ndim != 4:
        raise ConfigError(
            f"predict needs a segmentation model (output (B, H, W, C)); got shape {out.shape}"
        )
    return out[..., 1:] if is_softmax(model) else out


def _input_size(models: Sequence[Any]) -> int | None:
    """Square input side shared by the models; None when they accept any size."""
    sizes = set()
    for model in models:
        shape = tuple(model.input_shape)
        if shape[1] != shape[2]:
            raise ConfigError(f"predict needs square model inputs; got input shape {shape}")
        sizes.add(shape[1])
    if len(sizes) > 1:
        raise ConfigError(
            f"ensemble models must share one input size; got {sorted(sizes, key=str)}"
        )
    return sizes.pop()
