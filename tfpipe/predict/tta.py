"""Test-time augmentation: transform a batch, invert the prediction, average.

Each transform has an exact inverse for dense predictions (``NHWC`` masks or
probability maps): predict on ``apply(x)``, map the output back with
``invert(y)``, average. Outputs without spatial axes (classification,
rank < 3) are left as they are by ``invert``. Classification uses
:func:`five_crop` / :func:`ten_crop` instead.

Every function takes a NumPy array (and returns one) or a TensorFlow tensor
(and returns one, usable inside ``tf.function``); images are ``[..., H, W, C]``,
so single images and batches both work.

Example:
    >>> import numpy as np
    >>> x = np.random.rand(2, 8, 8, 1)
    >>> all(np.array_equal(invert_tta(apply_tta(x, n), n), x) for n in TTA_NAMES)
    True
    >>> probs = tta_predict(model.predict_on_batch, batch, ["hflip", "vflip"])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

Array = Any  # np.ndarray or tf.Tensor

# name -> (forward, inverse), each a sequence of primitive steps.
_STEPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "identity": ((), ()),
    "hflip": (("flip_w",), ("flip_w",)),
    "vflip": (("flip_h",), ("flip_h",)),
    "transpose": (("transpose",), ("transpose",)),
    # rot90 (counter-clockwise, like np.rot90 and tf.image.rot90) = transpose, then flip rows.
    "rot90": (("transpose", "flip_h"), ("flip_h", "transpose")),
    "rot180": (("flip_h", "flip_w"), ("flip_w", "flip_h")),
    "rot270": (("transpose", "flip_w"), ("flip_w", "transpose")),
}
TTA_NAMES = tuple(_STEPS)


def tta_transforms(names: Sequence[str], identity: bool = True) -> list[str]:
    """Validated transform names, with ``identity`` first unless already present.

    Raises:
        ValueError: an unknown name (the valid ones are listed).

    Example:
        >>> tta_transforms(["hflip", "vflip"])
        ['identity', 'hflip', 'vflip']
    """
    unknown = [n for n in names if n not in _STEPS]
    if unknown:
        raise ValueError(f"unknown TTA transform {unknown[0]!r}; choose from {list(TTA_NAMES)}")
    out = list(dict.fromkeys(names))
    if identity and "identity" not in out:
        out.insert(0, "identity")
    return out


def apply_tta(images: Array, name: str) -> Array:
    """Apply transform ``name`` to ``[..., H, W, C]`` images."""
    return _run(images, _STEPS[_check(name)][0])


def invert_tta(prediction: Array, name: str) -> Array:
    """Map a prediction on ``apply_tta(x, name)`` back to the frame of ``x``."""
    if len(prediction.shape) < 3:
        return prediction
    return _run(prediction, _STEPS[_check(name)][1])


def average_tta(predictions: Sequence[Array]) -> Array:
    """Mean of aligned predictions (after :func:`invert_tta`)."""
    if all(isinstance(p, np.ndarray) for p in predictions):
        return np.mean(np.stack(predictions), axis=0)
    return tf.reduce_mean(tf.stack([tf.convert_to_tensor(p) for p in predictions]), axis=0)


def tta_predict(predict: Callable[[Array], Array], images: Array, names: Sequence[str]) -> Array:
    """Predict on every transform of ``images``, invert each prediction, average.

    Example:
        >>> tta_predict(lambda x: x * 2, np.ones((1, 4, 4, 1)), ["hflip"]).shape
        (1, 4, 4, 1)
    """
    outs = [invert_tta(predict(apply_tta(images, n)), n) for n in tta_transforms(names)]
    return average_tta(outs)


def five_crop(images: Array, size: int) -> Array:
    """The four corner and the central ``size`` × ``size`` crops, stacked on a new axis 0.

    Example:
        >>> five_crop(np.zeros((2, 10, 10, 3)), 8).shape
        (5, 2, 8, 8, 3)
    """
    h, w = int(images.shape[-3]), int(images.shape[-2])
    if size > min(h, w):
        raise ValueError(f"crop size {size} is larger than the {h}x{w} images")
    cy, cx = (h - size) // 2, (w - size) // 2
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (cy, cx)]
    crops = [images[..., y : y + size, x : x + size, :] for y, x in corners]
    return np.stack(crops) if isinstance(images, np.ndarray) else tf.stack(crops)


def ten_crop(images: Array, size: int) -> Array:
    """:func:`five_crop` of the images and of their mirror images (10 crops on axis 0)."""
    crops = [five_crop(images, size), five_crop(apply_tta(images, "hflip"), size)]
    return np.concatenate(crops) if isinstance(images, np.ndarray) else tf.concat(crops, 0)


def _check(name: str) -> str:
    if name not in _STEPS:
        raise ValueError(f"unknown TTA transform {name!r}; choose from {list(TTA_NAMES)}")
    return name


def _run(x: Array, steps: tuple[str, ...]) -> Array:
    numpy = isinstance(x, np.ndarray)
    for step in steps:
        if step == "transpose":
            x = np.swapaxes(x, -3, -2) if numpy else _swap_hw(tf.convert_to_tensor(x))
        else:
            axis = -3 if step == "flip_h" else -2
            x = np.flip(x, axis) if numpy else tf.reverse(x, [axis])
    return x


def _swap_hw(x: tf.Tensor) -> tf.Tensor:
    rank = x.shape.rank
    perm = list(range(rank))
    perm[rank - 3], perm[rank - 2] = perm[rank - 2], perm[rank - 3]
    return tf.transpose(x, perm)
