"""Validation metrics: Dice and IoU of thresholded masks, and per-label AUC.

:class:`Dice` and :class:`IoU` accumulate true/false positives and false
negatives over every pixel seen in an epoch (the whole validation fold), then
report ``2TP / (2TP + FP + FN)`` and ``TP / (TP + FP + FN)``: one number per
fold rather than a mean of per-batch ratios, which would depend on the batch
size and on how many empty tiles a batch holds. When neither the masks nor
the predictions have a positive pixel the score is 1 (nothing to find, nothing
found).

:func:`roc_auc` is a NumPy ROC AUC per label (Mann–Whitney U with tied ranks
averaged) for the multi-label classifier's validation fold.

Example:
    >>> from tfpipe.models.metrics import Dice, IoU
    >>> metrics = [Dice(0.5), IoU(0.5)]
    >>> model.compile("adam", "binary_crossentropy", metrics=metrics)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops


class _Overlap(keras.metrics.Metric):
    """Streaming TP / FP / FN counts of ``y_pred > threshold`` against ``y_true >= 0.5``.

    A hard mask (0/1) counts its 1s; a soft mask from MixUp counts the pixels
    that are mostly foreground, not every partly blended one.
    """

    def __init__(self, threshold: float = 0.5, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)
        self.tp = self.add_variable((), initializer="zeros", name="tp", dtype="float32")
        self.fp = self.add_variable((), initializer="zeros", name="fp", dtype="float32")
        self.fn = self.add_variable((), initializer="zeros", name="fn", dtype="float32")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        truth = ops.cast(ops.greater_equal(ops.cast(y_true, "float32"), 0.5), "float32")
        pred = ops.cast(ops.greater(ops.cast(y_pred, "float32"), self.threshold), "float32")
        if sample_weight is not None:
            weight = ops.cast(sample_weight, "float32")
            truth, pred = truth * weight, pred * weight
        tp = ops.sum(truth * pred)
        self.tp.assign_add(tp)
        self.fp.assign_add(ops.sum(pred) - tp)
        self.fn.assign_add(ops.sum(truth) - tp)

    def reset_state(self) -> None:
        for v in (self.tp, self.fp, self.fn):
            v.assign(0.0)

    def _ratio(self, numerator: Any, denominator: Any) -> Any:
        return ops.where(denominator > 0, numerator / ops.maximum(denominator, 1.0), 1.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="tfpipe")
class Dice(_Overlap):
    """Dice coefficient (F1) of the thresholded prediction over all pixels seen.

    Example:
        >>> m = Dice(0.5)
        >>> m.update_state(np.array([[1, 1, 0, 0]]), np.array([[0.9, 0.2, 0.7, 0.1]]))
        >>> float(m.result())          # TP=1, FP=1, FN=1 -> 2/4
        0.5
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
