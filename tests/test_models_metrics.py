"""Dice / IoU at a threshold, accumulated over batches; per-label ROC AUC."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfpipe.models.metrics import Dice, IoU, roc_auc


def test_dice_and_iou_accumulate_pixel_counts_over_batches() -> None:
    dice, iou = Dice(0.5), IoU(0.5)
    # Batch 1: TP=1, FP=1, FN=1.  Batch 2: TP=2, FP=0, FN=0.
    batches = [
        (np.array([[1, 1, 0, 0]], np.uint8), np.array([[0.9, 0.2, 0.7, 0.1]], np.float32)),
        (np.array([[1, 1, 0, 0]], np.uint8), np.array([[0.6, 0.8, 0.4, 0.0]], np.float32)),
    ]
    for y, p in batches:
        dice.update_state(y, p)
        iou.update_state(y, p)
    assert float(dice.result()) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert float(iou.result()) == pytest.approx(3 / (3 + 1 + 1))


def test_threshold_is_applied() -> None:
    y = np.array([[1, 0]], np.uint8)
    p = np.array([[0.6, 0.6]], np.float32)
    strict, loose = Dice(0.7), Dice(0.5)
    strict.update_state(y, p)
    loose.update_state(y, p)
    assert float(strict.result()) == pytest.approx(0.0)  # TP=0, FN=1
    assert float(loose.result()) == pytest.approx(2 / 3)  # TP=1, FP=1


def test_empty_truth_and_prediction_score_one_and_reset_clears() -> None:
    m = IoU(0.5)
    m.update_state(np.zeros((1, 4), np.uint8), np.zeros((1, 4), np.float32))
    assert float(m.result()) == 1.0
    m.update_state(np.ones((1, 4), np.uint8), np.zeros((1, 4), np.float32))
    assert float(m.result()) == 0.0
    m.reset_state()
    assert float(m.result()) == 1.0


def test_roc_auc_per_label_with_ties_and_single_class() -> None:
    y = np.array([[0, 1, 0], [0, 1, 1], [1, 1, 0], [1, 1, 1]])
    s = np.array([[0.1, 0.5, 0.3], [0.4, 0.2, 0.3], [0.35, 0.9, 0.1], [0.8, 0.1, 0.9]])
    auc = roc_auc(y, s)
    # Label 0: positive/negative pairs (0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4) -> 3/4.
    assert auc[0] == pytest.approx(0.75)
    assert math.isnan(auc[1])  # every sample positive
    # Label 2: positives 0.3, 0.9 vs negatives 0.3, 0.1: (tie 0.5) + 1 + 1 + 1 -> 3.5/4.
    assert auc[2] == pytest.approx(3.5 / 4)
