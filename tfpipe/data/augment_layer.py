"""``Augment``: the training augmentation as a Keras layer, on the accelerator, any backend.

The same augmentation as the tf.data pipeline's (:mod:`tfpipe.data.augment`:
one definition, the same :func:`~tfpipe.data.augment.tile_params` from the
same uniform draws), applied to a whole batch inside the model with
``keras.ops``, so it runs under ``KERAS_BACKEND=tensorflow``, ``jax`` and
``torch``, on the GPU when there is one. For hosts whose CPUs cannot keep up
with per-tile augmentation in tf.data: load with augmentation off and let the
model augment.

How each step runs on a batch: crop and resize as two small interpolation
matrices per tile (``[size, H]`` and ``[size, W]``, the weights of
``tf.image.resize``'s half-pixel bilinear / nearest sampling of the box)
applied with ``einsum``, which batches on every backend; the colour map
as a per-tile ``C x C`` matrix (``einsum``); flips and quarter turns as
selects between the tile and its transposed / reversed self. Draws come from
a ``keras.random.SeedGenerator``: seeded, but not the tf.data engine's
per-tile hash, so the two engines draw different numbers for a tile; given
the same draws (:meth:`Augment.apply`) they give the same tiles.

Calling convention: ``layer(images)`` augments images (classification, or
colour-only ops for segmentation); ``layer((images, masks))`` returns
``(images, masks)`` with the masks moved by the same geometry (nearest, so
class ids stay class ids), for a custom ``train_step`` or preprocessing. At
inference (``training`` false) the layer is the identity, or the central
``size`` x ``size`` window when ``size`` is smaller than the input. A layer
with colour ops only (no crop, flips, turns or ``size``) takes images of any
side, known or not, and passes them through whole at inference: that is
the model's first layer under ``input.augment.colour_in_model``. Its draw
state is saved with the weights, so a resumed training run draws on exactly.

Example:
    >>> import keras
    >>> inputs = keras.Input((256, 256, 3), dtype="uint8")
    >>> x = Augment(flip=True, rot90=True, brightness=0.1, seed=1)(inputs)  # uint8 out
    >>> x = Normalize()(x)                                                 # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfpipe.config import AugmentConfig
from tfpipe.data.augment import N_UNIFORMS, AugmentSpec, tile_params


@keras.saving.register_keras_serializable(package="tfpipe")
class Augment(keras.layers.Layer):
    """Seeded training augmentation of a batch (and its masks), inside the model.

    Args:
        augment: An :class:`AugmentConfig` (or its dict); keywords named like
            its fields (``flip=``, ``brightness=`` …) override it.
        size: Output side; default the input's. A larger input is cropped
            (random crop, or the random resized crop with ``crop_scale``).
        value_range: ``(low, high)`` of the pixel values: ``(0, 255)`` for
            ``uint8``, ``(0, 1)`` after :class:`tfpipe.data.Normalize`. Colour
            strengths are fractions of it; results are clipped to it.
        seed: Seed of the layer's ``keras.random.SeedGenerator``.
        **kwargs: :class:`AugmentConfig` fields, then standard layer arguments.

    Example:
        >>> import numpy as np
        >>> layer = Augment(AugmentConfig(flip=True, rot90=False), seed=3)
        >>> images = np.zeros([2, 8, 8, 3], np.uint8)
        >>> masks = np.zeros([2, 8, 8, 1], np.uint8)
        >>> out, out_masks = layer((images, masks), training=True)
        >>> tuple(out.shape), tuple(out_masks.shape)
        ((2, 8, 8, 3), (2, 8, 8, 1))
    """

    def __init__(
        self,
        augment: AugmentConfig | dict[str, Any] | None = None,
        *,
        size: int | None = None,
        value_range: tuple[float, float] = (0.0, 255.0),
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k in AugmentConfig.model_fields}
        # float32 under any policy: the colour map and the rounding need the precision,
        # and the output keeps the input's dtype anyway.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        base = augment.model_dump() if isinstance(augment, AugmentConfig) else dict(augment or {})
        self.augment = AugmentConfig(**(base | fields))
        if self.augment.mixup_p > 0 or self.augment.cutmix_p > 0:
            # In model.fit the layer sees only the images: mixing them would leave
            # the targets unmixed. Mixing happens in tfpipe.data.load (data.mix).
            raise ValueError(
                "Augment does not mix tiles (its targets are not in reach inside the model); "
                "set mixup_p/cutmix_p in the input pipeline (tfpipe.data.load) instead; got "
                f"mixup_p={self.augment.mixup_p}, cutmix_p={self.augment.cutmix_p}"
            )
        self.size = None if size is None else int(size)
        if not value_range[0] < value_range[1]:
            raise ValueError(
                f"Augment value_range must be (low, high), low < high; got {value_range}"
            )
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        images, masks = _split(inputs)
        if training:
            batch = ops.shape(images)[0]
            draws = keras.random.uniform((batch, N_UNIFORMS), seed=self.seed_generator)
            images, masks = self.apply(images, masks, draws)
        else:
            images, masks = self._center(images, masks)
        return (images, masks) if isinstance(inputs, tuple | list) else images

    def apply(self, images: Any, masks: Any, draws: Any) -> tuple[Any, Any]:
        """Augment ``[B, H, W, C]`` images (and masks, or None) with given uniform draws.

        ``draws`` is ``[B, N_UNIFORMS]`` in ``[0, 1)``: the same numbers give
        the same tiles as :class:`tfpipe.data.augment.Augmenter` (noise aside).
        """
        spec = self._spec(images)
        params = tile_params(spec, ops.cast(draws, "float32"), ops)
        dtype = keras.backend.standardize_dtype(images.dtype)
        x = ops.cast(images, "float32")
        if "box" in params:
            x, masks = _resample(x, masks, params["box"], spec)
        x = self._colour(x, params.get("colour"), spec)
        if "int" in dtype:
            x = ops.floor(x + 0.5)  # round half up, as the tf.data engine's cast
        x = ops.cast(x, dtype)
        if "flags" in params:
            x, masks = (
                _move(x, params["flags"]),
                None if masks is None else _move(masks, params["flags"]),
            )
        return x, masks

    @property
    def moves_pixels(self) -> bool:
        """Whether the layer crops, flips or turns (else it only recolours, at any size)."""
        a = self.augment
        return bool(a.flip or a.rot90 or a.crop_scale or self.size)

    def _spec(self, images: Any) -> AugmentSpec:
        if not self.moves_pixels:
            return AugmentSpec.of(self.augment, (1, 1), 1)  # colour only: any side
        h, w = images.shape[1], images.shape[2]
        if h is None or w is None:
            raise ValueError(
                "Augment needs a static image height and width to crop, flip or turn; "
                f"got shape {images.shape}"
            )
        return AugmentSpec.of(self.augment, (h, w), self.size or min(h, w))

    def save_own_variables(self, store: dict[str, Any]) -> None:
        """Saves the draw state with the weights, so that a resumed run draws on exactly.

        Keras leaves a layer's ``SeedGenerator`` out of its saved weights.
        """
        super().save_own_variables(store)
        store["seed_generator_state"] = self.seed_generator.state

    def load_own_variables(self, store: dict[str, Any]) -> None:
        """Restores the draw state when the file has it (a file saved without one keeps
        the layer's fresh state)."""
        keys = list(store.keys())
        if "seed_generator_state" in keys:
            self.seed_generator.state.assign(store["seed_generator_state"])
        super().load_own_variables({k: store[k] for k in keys if k != "seed_generator_state"})

    def _colour(self, x: Any, draws: Any, spec: AugmentSpec) -> Any:
        jitter = spec.colour
        low, high = self.value_range
        per_level = (high - low) / 255.0  # colour strengths and noise are in uint8 levels
        if draws is not None:
            matrix, offset, gain = jitter.transform(draws, x.shape[-1], ops)
            # Contrast pivots on the mean of every 4th row, as the tf.data engine.
            mean = ops.mean(x[:, ::4], axis=(1, 2, 3))
            shift = offset * per_level + gain * mean
            x = ops.einsum("bhwc,bdc->bhwd", x, matrix) + shift[:, None, None, None]
        if jitter.noise_std > 0:
            noise = keras.random.normal(ops.shape(x), seed=self.seed_generator)
            x = x + noise * (jitter.noise_std * per_level)
        return ops.clip(x, low, high)

    def _center(self, images: Any, masks: Any) -> tuple[Any, Any]:
        if not self.moves_pixels:
            return images, masks  # colour only: any window passes through at inference
        h, w = images.shape[1], images.shape[2]
        size = self.size or min(h, w)
        if (h, w) == (size, size):
            return images, masks
        top, left = (h - size) // 2, (w - size) // 2

        def cut(x: Any) -> Any:
            return x[:, top : top + size, left : left + size, :]

        return cut(images), (None if masks is None else cut(masks))

    def compute_output_shape(self, input_shape: Any) -> Any:
        if not self.moves_pixels:
            return input_shape
        pair = isinstance(input_shape, tuple | list) and isinstance(input_shape[0], tuple | list)
        shapes = input_shape if pair else (input_shape,)
        h, w = shapes[0][1], shapes[0][2]
        size = self.size or (min(h, w) if h is not None and w is not None else None)
        out = tuple((s[0], size, size, s[-1]) for s in shapes)
        return out if pair else out[0]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "augment": self.augment.model_dump(mode="json"),
                "size": self.size,
                "value_range": list(self.value_range),
                "seed": self.seed,
            }
        )
        return config


def _split(inputs: Any) -> tuple[Any, Any]:
    if isinstance(inputs, tuple | list):
        if len(inputs) != 2:
            raise ValueError(f"Augment takes images or (images, masks); got {len(inputs)} tensors")
        return inputs[0], inputs[1]
    return inputs, None


def _resample(x: Any, masks: Any, box: Any, spec: AugmentSpec) -> tuple[Any, Any]:
    """Crop every tile's box and resize it to ``size``: bilinear images, nearest masks."""
    (h, w), size = spec.tile_hw, spec.size
    rows = _weights(box[:, 0], box[:, 2], h, size, nearest=False)
    cols = _weights(box[:, 1], box[:, 3], w, size, nearest=False)
    x = ops.einsum("bjw,biwc->bijc", cols, ops.einsum("bih,bhwc->biwc", rows, x))
    if masks is None:
        return x, None
    rows = _weights(box[:, 0], box[:, 2], h, size, nearest=True)
    cols = _weights(box[:, 1], box[:, 3], w, size, nearest=True)
    m = ops.einsum("bih,bhwc->biwc", rows, ops.cast(masks, "float32"))
    dtype = keras.backend.standardize_dtype(masks.dtype)
    return x, ops.cast(ops.einsum("bjw,biwc->bijc", cols, m), dtype)


def _weights(start: Any, extent: Any, side: int, size: int, nearest: bool) -> Any:
    """``[B, size, side]``: how output row (column) ``i`` samples the tile's ``side`` rows.

    The box ``[start, start + extent)`` resized as ``tf.image.resize`` does:
    half-pixel centres, edge pixels of the box repeated beyond it.
    """
    scale = extent / float(size)
    centre = (ops.arange(size, dtype="float32")[None, :] + 0.5) * scale[:, None]
    last = extent[:, None] - 1.0
    if nearest:
        index = ops.minimum(ops.floor(centre), last) + start[:, None]
        return ops.one_hot(ops.cast(index, "int32"), side, dtype="float32")
    at = centre - 0.5
    below = ops.floor(at)
    lerp = at - below
    lower = ops.maximum(below, 0.0) + start[:, None]
    upper = ops.minimum(ops.ceil(at), last) + start[:, None]
    lower_w = (1.0 - lerp)[..., None] * ops.one_hot(ops.cast(lower, "int32"), side, dtype="float32")
    return lower_w + lerp[..., None] * ops.one_hot(ops.cast(upper, "int32"), side, dtype="float32")


def _move(x: Any, flags: Any) -> Any:
    """Per tile: optionally transpose, then reverse rows and/or columns (``apply_flags``)."""
    transpose, rows, cols = (flags[:, k][:, None, None, None] for k in range(3))
    x = ops.where(transpose, ops.transpose(x, (0, 2, 1, 3)), x)
    x = ops.where(rows, ops.flip(x, axis=1), x)
    return ops.where(cols, ops.flip(x, axis=2), x)
