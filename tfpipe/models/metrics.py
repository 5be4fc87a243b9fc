"""Validation metrics: Dice and IoU of thresholded masks, and per-label AUC.

:class:`Dice` and :class:`IoU` accumulate true/false positives and false
negatives over every pixel seen in an epoch (the whole validation fold), then
report ``2TP / (2TP + FP + FN)`` and ``TP / (TP + FP + FN)``: one number per
fold rather than a mean of per-batch ratios, which would depend on the batch
size and on how many empty tiles a batch holds. When neither the masks nor
the predictions have a positive pixel the score is 1 (nothing to find, nothing
found). Pixels whose target is above 1 (the mask value 255: ignore) are not
counted.

Several classes (:func:`segmentation_metrics`): each pixel's predicted class is
the most probable of the classes above the threshold, counts are kept per
class, ``dice`` / ``iou`` are the means over classes of the per-class scores
(so the checkpoint, early stopping, curves and summary that watch ``val_dice``
watch the mean), and ``dice_<class>`` is each class's own.

:func:`roc_auc` is a NumPy ROC AUC per label (Mann–Whitney U with tied ranks
averaged) for the multi-label classifier's validation fold.

Example:
    >>> from tfpipe.models.metrics import Dice, IoU
    >>> metrics = [Dice(0.5), IoU(0.5)]
    >>> model.compile("adam", "binary_crossentropy", metrics=metrics)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops


class _Overlap(keras.metrics.Metric):
    """Streaming TP / FP / FN counts of ``y_pred > threshold`` against ``y_true >= 0.5``.

    A hard mask (0/1) counts its 1s; a soft mask from MixUp counts the pixels
    that are mostly foreground, not every partly blended one. Ignored pixels
    (a target above 1 in any channel: the mask value 255) count nowhere.

    Args:
        threshold: Probability above which a pixel is predicted as a class.
        classes: None: every channel is scored as one pooled binary mask (the
            binary case). A list of the class channels (sigmoid ``[0..K-1]``,
            softmax ``[1..K]``): a pixel is predicted as the most probable of
            the classes above ``threshold`` (the rule ``tfpipe predict`` uses),
            counts are kept per class, and the result is the mean over classes.
        score: With ``classes``, report only the class at this position of ``classes``.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        name: str | None = None,
        classes: Sequence[int] | None = None,
        score: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.score = None if score is None else int(score)
        shape = () if self.classes is None else (len(self.classes),)
        self.tp = self.add_variable(shape, initializer="zeros", name="tp", dtype="float32")
        self.fp = self.add_variable(shape, initializer="zeros", name="fp", dtype="float32")
        self.fn = self.add_variable(shape, initializer="zeros", name="fn", dtype="float32")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        valid = ops.cast(ops.all(ops.less_equal(y_true, 1.0), axis=-1, keepdims=True), "float32")
        if self.classes is None:
            pred = ops.cast(ops.greater(y_pred, self.threshold), "float32")
        else:
            y_true = ops.take(y_true, self.classes, axis=-1)
            pred = predicted_classes(ops.take(y_pred, self.classes, axis=-1), self.threshold)
        truth = ops.cast(ops.greater_equal(y_true, 0.5), "float32") * valid
        pred = pred * valid
        if sample_weight is not None:
            weight = ops.cast(sample_weight, "float32")
            truth, pred = truth * weight, pred * weight
        axes = None if self.classes is None else tuple(range(len(truth.shape) - 1))
        tp = ops.sum(truth * pred, axis=axes)
        self.tp.assign_add(tp)
        self.fp.assign_add(ops.sum(pred, axis=axes) - tp)
        self.fn.assign_add(ops.sum(truth, axis=axes) - tp)

    def reset_state(self) -> None:
        for v in (self.tp, self.fp, self.fn):
            v.assign(ops.zeros(v.shape))

    def _ratio(self, numerator: Any, denominator: Any) -> Any:
        ratio = ops.where(denominator > 0, numerator / ops.maximum(denominator, 1.0), 1.0)
        if self.classes is None:
            return ratio
        return ratio[self.score] if self.score is not None else ops.mean(ratio)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "threshold": self.threshold,
            "classes": self.classes,
            "score": self.score,
        }


def predicted_classes(probs: Any, threshold: float) -> Any:
    """float 0/1 ``[..., K]``: each pixel's class, the most probable of those above ``threshold``.

    Example:
        >>> p = np.array([[0.7, 0.6], [0.2, 0.9], [0.1, 0.3]], np.float32)
        >>> ops.convert_to_numpy(predicted_classes(p, 0.5)).tolist()
        [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    """
    above = ops.greater(probs, threshold)
    best = ops.argmax(ops.where(above, probs, -1.0), axis=-1)
    winner = ops.one_hot(best, probs.shape[-1], dtype="float32")
    return winner * ops.cast(above, "float32")


@keras.saving.register_keras_serializable(package="tfpipe")
class Dice(_Overlap):
    """Dice coefficient (F1) of the thresholded prediction over all pixels seen.

    Example:
        >>> m = Dice(0.5)
        >>> m.update_state(np.array([[1, 1, 0, 0]]), np.array([[0.9, 0.2, 0.7, 0.1]]))
        >>> float(m.result())          # TP=1, FP=1, FN=1 -> 2/4
        0.5
        >>> m = Dice(0.5, classes=[0, 1])  # mean of class 0 (2/3) and class 1 (0); 255: ignored
        >>> y = np.array([[[1, 0], [0, 1], [255, 255]]])
        >>> m.update_state(y, np.array([[[0.9, 0.1], [0.8, 0.3], [0.1, 0.9]]]))
        >>> round(float(m.result()), 4)
        0.3333
    """

    def __init__(self, threshold: float = 0.5, name: str = "dice", **kwargs: Any) -> None:
        super().__init__(threshold, name=name, **kwargs)

    def result(self) -> Any:
        return self._ratio(2.0 * self.tp, 2.0 * self.tp + self.fp + self.fn)


@keras.saving.register_keras_serializable(package="tfpipe")
class IoU(_Overlap):
    """Intersection over union (Jaccard) of the thresholded prediction over all pixels seen.

    Example:
        >>> m = IoU(0.5)
        >>> m.update_state(np.array([[1, 1, 0, 0]]), np.array([[0.9, 0.2, 0.7, 0.1]]))
        >>> round(float(m.result()), 4)  # TP=1, FP=1, FN=1 -> 1/3
        0.3333
    """

    def __init__(self, threshold: float = 0.5, name: str = "iou", **kwargs: Any) -> None:
        super().__init__(threshold, name=name, **kwargs)

    def result(self) -> Any:
        return self._ratio(self.tp, self.tp + self.fp + self.fn)


def metric_name(prefix: str, class_name: str) -> str:
    """``<prefix>_<class name>`` with every run of non-word characters as ``_``.

    Keras uses metric names as variable scopes and history/CSV column names.

    Example:
        >>> metric_name("dice", "sclerotic glomerulus")
        'dice_sclerotic_glomerulus'
    """
    slug = re.sub(r"\W+", "_", class_name).strip("_")
    return f"{prefix}_{slug}"


def segmentation_metrics(
    threshold: float, class_names: Sequence[str] | None, softmax: bool
) -> list[keras.metrics.Metric]:
    """``dice`` and ``iou`` (means over classes) and, for several classes, ``dice_<class>``.

    Args:
        threshold: ``train.threshold``.
        class_names: The records' ``mask_classes`` (None: binary).
        softmax: The head has a background channel first.

    Example:
        >>> [m.name for m in segmentation_metrics(0.5, ["a", "b c"], softmax=True)]
        ['dice', 'iou', 'dice_a', 'dice_b_c']
    """
    names = list(class_names or [])
    if len(names) <= 1 and not softmax:
        return [Dice(threshold, name="dice"), IoU(threshold, name="iou")]
    first = int(softmax)
    classes = list(range(first, first + max(len(names), 1)))
    metrics: list[keras.metrics.Metric] = [
        Dice(threshold, name="dice", classes=classes),
        IoU(threshold, name="iou", classes=classes),
    ]
    if len(names) > 1:
        metrics += [
            Dice(threshold, name=metric_name("dice", n), classes=classes, score=k)
            for k, n in enumerate(names)
        ]
    return metrics


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """ROC AUC of every column (label); NaN where a label has only one class.

    Args:
        y_true: ``(N, K)`` multi-hot labels (0/1).
        y_score: ``(N, K)`` predicted probabilities.

    Returns:
        ``(K,)`` float array.

    Example:
        >>> roc_auc(np.array([[0], [0], [1], [1]]), np.array([[0.1], [0.4], [0.35], [0.8]]))
        array([0.75])
    """
    y_true = np.asarray(y_true).reshape(len(y_true), -1) > 0
    y_score = np.asarray(y_score, np.float64).reshape(len(y_score), -1)
    return np.array([_auc_one(y_true[:, k], y_score[:, k]) for k in range(y_true.shape[1])])


def _auc_one(positive: np.ndarray, score: np.ndarray) -> float:
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    # 1-based ranks; ties share the mean of the ranks they span.
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks
