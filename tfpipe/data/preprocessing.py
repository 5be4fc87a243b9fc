"""``Normalize``: the model's first layer, turning ``uint8`` batches into floats.

Batches leave the input pipeline as ``uint8`` (a quarter of the host memory
bandwidth of float32, docs/design.md); this layer casts and scales them inside the
model, so the work runs on the accelerator and the saved model carries its own
preprocessing. Under a mixed-precision policy it produces the layer's compute
dtype (float16 / bfloat16) directly.

Example:
    >>> import keras
    >>> inputs = keras.Input((256, 256, 3), dtype="uint8")
    >>> x = Normalize()(inputs)                                   # [0, 1]
    >>> x = Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))(inputs)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfpipe")
class Normalize(keras.layers.Layer):
    """Cast to the compute dtype, scale to [0, 1], then optionally standardise.

    ``y = (x * scale - mean) / std``; with the defaults (``scale = 1/255``, no
    mean/std) ``uint8`` pixels map to [0, 1].

    Args:
        mean: Per-channel (or scalar) mean in scaled units, e.g. ImageNet's
            ``(0.485, 0.456, 0.406)``; None skips standardisation.
        std: Per-channel (or scalar) standard deviation in scaled units; needs ``mean``.
        scale: Multiplier applied first (``1/255`` for ``uint8`` input).
        **kwargs: Standard layer arguments (``name``, ``dtype``…).

    Example:
        >>> import numpy as np
        >>> layer = Normalize(mean=0.5, std=0.25)
        >>> [round(float(v), 3) for v in layer(np.array([0, 255], np.uint8))]
        [-2.0, 2.0]
    """

    def __init__(
        self,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        scale: float = 1.0 / 255.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (mean is None) != (std is None):
            raise ValueError(
                f"Normalize needs both mean and std, or neither; got mean={mean!r}, std={std!r}"
            )
        if std is not None and any(s <= 0 for s in _as_list(std)):
            raise ValueError(f"Normalize std must be > 0; got std={std!r}")
        self.mean = _as_list(mean)
        self.std = _as_list(std)
        self.scale = float(scale)
        self.supports_masking = True

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype) * ops.cast(self.scale, self.compute_dtype)
        if self.mean is not None:
            mean = ops.cast(ops.convert_to_tensor(self.mean), self.compute_dtype)
            std = ops.cast(ops.convert_to_tensor(self.std), self.compute_dtype)
            x = (x - mean) / std
        return x

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std, "scale": self.scale})
        return config


def _as_list(value: float | Sequence[float] | None) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return [float(value)]
    return [float(v) for v in value]
