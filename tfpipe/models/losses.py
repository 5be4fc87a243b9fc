"""Segmentation and multi-label losses, by the names used in ``train.loss``.

| name          | what                                              | from                      |
|---------------|---------------------------------------------------|---------------------------|
| ``bce``         | binary cross-entropy, mean over pixels/labels   | segmentation-models       |
| ``dice``        | 1 − soft Dice over the batch                    | segmentation-models       |
| ``jaccard``     | 1 − soft Jaccard (IoU) over the batch           | segmentation-models       |
| ``focal``       | binary focal loss (α = 0.25, γ = 2)             | segmentation-models       |
| ``bce_dice``    | bce + dice                                      | segmentation-models       |
| ``bce_jaccard`` | bce + jaccard                                   | segmentation-models       |
| ``lovasz``      | Lovász hinge, per image (Berman et al. 2018)    | tfpipe (sm 1.0.1 has none)|

Every loss is a registered ``keras.losses.Loss`` (so compiled ``.keras``
checkpoints reload), takes ``uint8`` masks / float labels as ``y_true`` (cast
here) and float probabilities as ``y_pred``. The Lovász hinge works on
logits; it recovers them from the probabilities (clipped to ±16.1).

Example:
    >>> from tfpipe.models.losses import get_loss
    >>> loss = get_loss("bce_jaccard")
    >>> model.compile(optimizer="adam", loss=loss)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("SM_FRAMEWORK", "tf.keras")

import keras
from keras import ops

LOSS_NAMES = ("bce", "dice", "jaccard", "focal", "bce_dice", "bce_jaccard", "lovasz")
_EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="tfpipe")
class SegmentationLoss(keras.losses.Loss):
    """One of :data:`LOSS_NAMES`, as a Keras loss.

    Args:
        kind: The loss name.
        name: Keras name of the loss (default: ``kind``).

    Example:
        >>> import numpy as np
        >>> y = np.zeros((1, 2, 2, 1), np.uint8); y[0, 0, 0] = 1
        >>> p = np.full((1, 2, 2, 1), 0.5, np.float32)
        >>> round(float(SegmentationLoss("dice")(y, p)), 3)
        0.333
    """

    def __init__(self, kind: str = "bce_jaccard", name: str | None = None, **kwargs: Any) -> None:
        if kind not in LOSS_NAMES:
            raise ValueError(f"loss must be one of {LOSS_NAMES}; got {kind!r}")
        super().__init__(name=name or kind, **kwargs)
        self.kind = kind

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        return _LOSSES[self.kind](y_true, y_pred)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kind": self.kind}


def get_loss(name: str) -> keras.losses.Loss:
    """The loss called ``name`` (one of :data:`LOSS_NAMES`).

    Raises:
        ValueError: unknown name (the config schema rejects it earlier, naming the file).
    """
    return SegmentationLoss(name)


def _sm_kwargs() -> dict[str, Any]:
    import segmentation_models as sm

    return sm.losses.JaccardLoss().submodules


def bce(y_true: Any, y_pred: Any) -> Any:
    """Mean binary cross-entropy (probabilities clipped to [1e-7, 1 − 1e-7])."""
    from segmentation_models.base import functional as F

    return F.binary_crossentropy(y_true, y_pred, **_sm_kwargs())


def dice(y_true: Any, y_pred: Any) -> Any:
    """1 − (2·Σ y·p + s) / (Σ y + Σ p + s) over the whole batch, s = 1e-5."""
    from segmentation_models.base import functional as F

    return 1.0 - F.f_score(y_true, y_pred, beta=1, **_sm_kwargs())


def jaccard(y_true: Any, y_pred: Any) -> Any:
    """1 − (Σ y·p + s) / (Σ y + Σ p − Σ y·p + s) over the whole batch, s = 1e-5."""
    from segmentation_models.base import functional as F

    return 1.0 - F.iou_score(y_true, y_pred, **_sm_kwargs())


def focal(y_true: Any, y_pred: Any) -> Any:
    """Binary focal loss, α = 0.25, γ = 2 (Lin et al. 2017), mean over pixels."""
    from segmentation_models.base import functional as F

    return F.binary_focal_loss(y_true, y_pred, gamma=2.0, alpha=0.25, **_sm_kwargs())


def lovasz(y_true: Any, y_pred: Any) -> Any:
    """Lovász hinge of each image (flattened), averaged over the batch.

    For one image with labels y ∈ {0, 1} and logits z: errors
    e = 1 − z·(2y − 1), sorted in decreasing order; the loss is
    Σ relu(e_(i)) · g_i with g the discrete gradient of the Jaccard loss
    along that order (Berman, Rannen Triki, Blaschko, CVPR 2018).
    """
    batch = ops.shape(y_pred)[0]
    probs = ops.clip(ops.reshape(y_pred, (batch, -1)), _EPSILON, 1.0 - _EPSILON)
    logits = ops.log(probs) - ops.log1p(-probs)
    labels = ops.reshape(y_true, (batch, -1))
    errors = 1.0 - logits * ops.stop_gradient(2.0 * labels - 1.0)
    order = ops.flip(ops.argsort(errors, axis=-1), axis=-1)
    errors_sorted = ops.take_along_axis(errors, order, axis=-1)
    grad = _lovasz_grad(ops.take_along_axis(labels, order, axis=-1))
    per_image = ops.sum(ops.relu(errors_sorted) * ops.stop_gradient(grad), axis=-1)
    return ops.mean(per_image)


def _lovasz_grad(gt_sorted: Any) -> Any:
    # Jaccard loss of each prefix of the sorted pixels, then its increments.
    total = ops.sum(gt_sorted, axis=-1, keepdims=True)
    intersection = total - ops.cumsum(gt_sorted, axis=-1)
    union = total + ops.cumsum(1.0 - gt_sorted, axis=-1)
    jac = 1.0 - intersection / union
    return ops.concatenate([jac[:, :1], jac[:, 1:] - jac[:, :-1]], axis=-1)


def _bce_dice(y_true: Any, y_pred: Any) -> Any:
    return bce(y_true, y_pred) + dice(y_true, y_pred)


def _bce_jaccard(y_true: Any, y_pred: Any) -> Any:
    return bce(y_true, y_pred) + jaccard(y_true, y_pred)


_LOSSES = {
    "bce": bce,
    "dice": dice,
    "jaccard": jaccard,
    "focal": focal,
    "bce_dice": _bce_dice,
    "bce_jaccard": _bce_jaccard,
    "lovasz": lovasz,
}
