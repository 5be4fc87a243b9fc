"""Synthetic slides and tiny known models for the predict tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile

WHITE = (240, 240, 240)  # background: bright, unsaturated
TISSUE = (200, 120, 160)  # pink: R > B
BLOB = (120, 60, 200)  # purple: B > R


def make_slide(path: Path, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Write a TIFF slide (white, a tissue band, purple blobs); return the blob mask (truth)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    image = np.empty((h, w, 3), np.uint8)
    image[:] = WHITE
    image[h // 8 : h - h // 8, : w * 3 // 4] = TISSUE
    truth = np.zeros(shape, np.uint8)
    for _ in range(6):
        cy = int(rng.integers(h // 8 + 40, h - h // 8 - 40))
        cx = int(rng.integers(40, w * 3 // 4 - 40))
        cv2.circle(truth, (cx, cy), int(rng.integers(15, 40)), 1, thickness=-1)
    image[truth > 0] = BLOB
    tifffile.imwrite(path, image, tile=(128, 128), photometric="rgb")
    return truth


def pointwise_model(size: int | None = None):
    """A Keras model whose probability depends on each pixel alone: sigmoid(30 (B - R) / 255 - 2).

    Pointwise models commute with flips and rotations, so TTA must not change
    their stitched output (if each prediction is inverted correctly). The bias
    keeps white background (B == R) clearly below 0.5: at exactly sigmoid(0)
    float rounding decided whether it came out 0.5 or 0.5000001, i.e. negative
    or positive, depending on the CPU's kernels.
    """
    import keras

    inputs = keras.Input((size, size, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid")
    out = conv(x)
    kernel = np.array([-30.0, 0.0, 30.0], np.float32).reshape(1, 1, 3, 1)
    conv.set_weights([kernel, np.full(1, -2.0)])
    return keras.Model(inputs, out)


class FakeModel:
    """Duck-typed model: ``predict_on_batch`` returns ``fn(batch)`` (for exact TTA checks)."""

    def __init__(self, fn, size: int | None = None) -> None:
        self.fn, self.input_shape = fn, (None, size, size, 3)

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return self.fn(x)
