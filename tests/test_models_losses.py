"""Loss values on hand-made masks, checked against numbers worked out by hand / numpy."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfpipe.models.losses import LOSS_NAMES, SegmentationLoss, get_loss

# One 2x2 image: top row glomerulus, bottom row background.
Y = np.array([[1, 1], [0, 0]], np.uint8).reshape(1, 2, 2, 1)
P = np.array([[0.8, 0.6], [0.3, 0.1]], np.float32).reshape(1, 2, 2, 1)
SMOOTH = 1e-5  # segmentation-models' smoothing term

BCE = -(math.log(0.8) + math.log(0.6) + math.log(0.7) + math.log(0.9)) / 4
# tp = 0.8 + 0.6 = 1.4, fp = 0.4, fn = 0.6
DICE = 1 - (2 * 1.4 + SMOOTH) / (2 * 1.4 + 0.6 + 0.4 + SMOOTH)
# intersection 1.4, union = 2 + 1.8 - 1.4 = 2.4
JACCARD = 1 - (1.4 + SMOOTH) / (2.4 + SMOOTH)
FOCAL = (
    -0.25 * (0.2**2) * math.log(0.8)
    - 0.25 * (0.4**2) * math.log(0.6)
    - 0.75 * (0.3**2) * math.log(0.7)
    - 0.75 * (0.1**2) * math.log(0.9)
) / 4


def value(name: str, y: np.ndarray = Y, p: np.ndarray = P) -> float:
    return float(get_loss(name)(y, p))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bce", BCE),
        ("dice", DICE),
        ("jaccard", JACCARD),
        ("focal", FOCAL),
        ("bce_dice", BCE + DICE),
        ("bce_jaccard", BCE + JACCARD),
    ],
)
def test_loss_matches_hand_computed_value(name: str, expected: float) -> None:
    assert value(name) == pytest.approx(expected, abs=1e-5)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def test_lovasz_hinge_matches_worked_example() -> None:
    # Image 1: labels (1, 0), logits (0.5, 1.0). Errors 1 - z*s = (0.5, 2.0); sorted
    # (2.0 [y=0], 0.5 [y=1]); Jaccard loss of the prefixes: 1 - (1-0)/(1+1) = 0.5, then
    # 1 - 0/2 = 1 -> gradient (0.5, 0.5) -> loss 2.0*0.5 + 0.5*0.5 = 1.25.
    # Image 2: labels (0, 0), logits (-1.0, 0.2). Errors (0.0, 1.2); no positives, so
    # the prefix losses are (1, 1) -> gradient (1, 0) -> loss 1.2.
    y = np.array([[1, 0], [0, 0]], np.uint8).reshape(2, 1, 2, 1)
    p = sigmoid(np.array([[0.5, 1.0], [-1.0, 0.2]], np.float32)).reshape(2, 1, 2, 1)
    assert value("lovasz", y, p.astype(np.float32)) == pytest.approx((1.25 + 1.2) / 2, abs=1e-4)


def test_lovasz_is_zero_when_every_margin_is_met() -> None:
    y = np.array([[1, 0]], np.uint8).reshape(1, 1, 2, 1)
    p = sigmoid(np.array([[3.0, -3.0]], np.float32)).reshape(1, 1, 2, 1)
    assert value("lovasz", y, p.astype(np.float32)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_losses_take_uint8_masks_and_give_finite_gradients(name: str) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((2, 8, 8, 1)) > 0.7).astype(np.uint8)
    logits = tf.Variable(rng.normal(size=(2, 8, 8, 1)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = get_loss(name)(tf.constant(y), tf.sigmoid(logits))
    grad = tape.gradient(loss, logits)
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert np.all(np.isfinite(grad.numpy())) and np.abs(grad.numpy()).sum() > 0


def test_perfect_prediction_scores_near_zero() -> None:
    p = Y.astype(np.float32)
    for name in ("dice", "jaccard", "bce"):
        assert value(name, Y, p) == pytest.approx(0.0, abs=1e-5)


def test_loss_survives_serialization() -> None:
    loss = get_loss("lovasz")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, SegmentationLoss) and clone.kind == "lovasz"


def test_unknown_loss_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="loss must be one of"):
        get_loss("hinge")
