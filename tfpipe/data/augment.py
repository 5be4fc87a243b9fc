"""Training augmentation: one definition, seeded, image and mask transformed together.

What happens to a tile is defined once, here, from ``N_UNIFORMS`` uniform
draws in ``[0, 1)`` per tile (:func:`tile_params`, written against a
NumPy-like namespace so every engine computes the same parameters):

1. **crop** a box of the tile: ``[top, left, height, width]``; a random
   ``size`` x ``size`` window when the tile is larger than ``size``, or the
   random resized crop (``crop_scale``, ``crop_ratio``), resampled to
   ``size`` x ``size`` like ``tf.image.resize`` (half-pixel centres, edge
   pixels repeated; bilinear for the image, nearest for the mask);
2. **colour** (:mod:`tfpipe.data.colour`): one affine colour map, the
   contrast pivot being the mean of every 4th row of the cropped tile, plus
   Gaussian noise; the image only, never the mask;
3. **flags** ``[transpose, reverse rows, reverse columns]``: flips and
   quarter turns of the square output (image and mask alike).

Two engines apply it and are tested equal (``tests/test_data_augment_engines.py``):
:class:`Augmenter`, per tile in TensorFlow ops inside the parallel tf.data
map (draws from :func:`tfpipe.data.seeds.uniform`, a stateless hash of the
tile's seed: the same seed gives the same augmentation on every run), and
the Keras layer :class:`tfpipe.data.Augment` (``keras.ops``, a batch at a
time inside the model, any backend). The tf.data engine uses the cheapest
CPU kernels for each step (slice, ``tf.image.resize``, transpose, reverse):
a projective transform doing all geometry at once cost 6-8x more per tile.

Example:
    >>> from tfpipe.config import AugmentConfig
    >>> aug = Augmenter(AugmentConfig(flip=True, rot90=True, brightness=0.1), (256, 256), 256)
    >>> aug.ops
    ('flip+rot90', 'brightness')
    >>> image, mask = aug(image, mask, seed=tf.constant([0, 1], tf.int64))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from tfpipe.config import AugmentConfig
from tfpipe.data.colour import TF_NUMPY, ColourJitter, noise_seed
from tfpipe.data.seeds import uniform

COLOUR_OPS = ("brightness", "contrast", "saturation", "hue", "noise")
# AugmentConfig field behind each colour op name.
_COLOUR_FIELDS = {name: name for name in COLOUR_OPS} | {"noise": "noise_std"}
# Uniform draws per tile: crop [top, left, area, aspect], flags [3], colour [4].
N_UNIFORMS = 11
_CROP, _FLAGS, _COLOUR = slice(0, 4), slice(4, 7), slice(7, 11)
# The seeds' stream of the draws (tfpipe.data.seeds.uniform).
_DRAWS = 0


@dataclass(frozen=True)
class AugmentSpec:
    """What an :class:`AugmentConfig` does to tiles of ``tile_hw``, output ``size`` x ``size``.

    Attributes:
        crop: ``"none"``, ``"random"`` (a ``size`` window) or ``"resized"``.
        flips: ``"none"``, ``"flip"``, ``"rot90"`` or ``"flip+rot90"``.
        colour: The colour jitter (strengths; :mod:`tfpipe.data.colour`).
    """

    tile_hw: tuple[int, int]
    size: int
    crop: str
    flips: str
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    colour: ColourJitter

    @classmethod
    def of(cls, cfg: AugmentConfig, tile_hw: tuple[int, int], size: int) -> AugmentSpec:
        h, w = int(tile_hw[0]), int(tile_hw[1])
        if size > min(h, w):
            raise ValueError(
                f"augmentation output side must be <= the tile's; got {size} > {h}x{w}"
            )
        crop = "resized" if cfg.crop_scale else ("random" if (h, w) != (size, size) else "none")
        flips = "+".join(name for name, on in (("flip", cfg.flip), ("rot90", cfg.rot90)) if on)
        colour = ColourJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, cfg.noise_std)
        scale = tuple(cfg.crop_scale or (1.0, 1.0))
        return cls((h, w), size, crop, flips or "none", scale, tuple(cfg.crop_ratio), colour)

    @property
    def ops(self) -> tuple[str, ...]:
        """Names of the active ops, in the order they are listed in the config."""
        geometric = tuple(
            op for op, on in (("crop", self.crop), (self.flips, self.flips)) if on != "none"
        )
        colour = tuple(n for n in COLOUR_OPS if getattr(self.colour, _COLOUR_FIELDS[n]) > 0)
        return geometric + colour


def tile_params(spec: AugmentSpec, u: Any, xp: Any) -> dict[str, Any]:
    """The augmentation parameters of tiles from their uniform draws ``u`` (``[..., N_UNIFORMS]``).

    ``xp`` is the namespace of ``u``: ``numpy``, ``keras.ops`` or
    :data:`tfpipe.data.colour.TF_NUMPY`; only functions all three share are used.

    Returns:
        ``box`` (float ``[..., 4]``: top, left, height, width, whole pixels;
        with a crop), ``flags`` (bool ``[..., 3]``: transpose, reverse rows,
        reverse columns; with flips or quarter turns) and ``colour`` (float
        ``[..., 4]`` in ``[-1, 1)``; with colour jitter).

    Example:
        >>> import numpy as np
        >>> spec = AugmentSpec.of(AugmentConfig(), (32, 32), 32)
        >>> tile_params(spec, np.full([N_UNIFORMS], 0.75, np.float32), np)["flags"]
        array([ True,  True,  True])
    """
    params: dict[str, Any] = {}
    if spec.crop != "none":
        params["box"] = _box(spec, u[..., _CROP], xp)
    if spec.flips != "none":
        params["flags"] = _flags(spec.flips, u[..., _FLAGS], xp)
    if spec.colour.mixes_channels or spec.colour.brightness or spec.colour.contrast:
        params["colour"] = 2.0 * u[..., _COLOUR] - 1.0
    return params


def _box(spec: AugmentSpec, u: Any, xp: Any) -> Any:
    (h, w), size = spec.tile_hw, spec.size
    if spec.crop == "random":
        bh = bw = u[..., 0] * 0.0 + size
    else:
        lo, hi = spec.crop_scale
        r0, r1 = math.log(spec.crop_ratio[0]), math.log(spec.crop_ratio[1])
        area = lo + (hi - lo) * u[..., 2]
        aspect = xp.exp(r0 + (r1 - r0) * u[..., 3]) * (h / w)
        # Box sides as fractions of the tile: bw * bh = area, (bw * W) / (bh * H) = ratio.
        bh = xp.clip(xp.round(xp.sqrt(area / aspect) * h), 1.0, float(h))
        bw = xp.clip(xp.round(xp.sqrt(area * aspect) * w), 1.0, float(w))
    top = xp.floor(u[..., 0] * (h - bh + 1.0))
    left = xp.floor(u[..., 1] * (w - bw + 1.0))
    return xp.stack([top, left, bh, bw], axis=-1)


def _flags(flips: str, u: Any, xp: Any) -> Any:
    if flips == "flip+rot90":
        # Square output: flips and quarter turns together are a uniform draw from
        # the 8 symmetries of the square, one optional transpose and two reverses.
        return u < 0.5
    never = u[..., 0] < 0.0  # draws are >= 0: all False, shaped like one flag
    if flips == "flip":
        return xp.stack([never, u[..., 1] < 0.5, u[..., 2] < 0.5], axis=-1)
    # rot90^k counter-clockwise = optional transpose, then reverses:
    # k=1 transpose + rows, k=2 rows + columns, k=3 transpose + columns.
    k = xp.floor(u[..., 0] * 4.0)
    return xp.stack([(k == 1.0) | (k == 3.0), (k == 1.0) | (k == 2.0), k >= 2.0], axis=-1)


class Augmenter:
    """The tf.data engine: one ``uint8`` tile (and its mask) at a time, in TensorFlow ops.

    Graph-only and stateless: it runs in tf.data's parallel map and on tf.data
    service workers, and a tile's seed alone decides what happens to it.

    Args:
        cfg: Which ops run, and how strongly.
        tile_hw: ``(height, width)`` of the decoded tiles.
        size: Output side. A tile larger than ``size`` is cropped: by the random
            resized crop when ``cfg.crop_scale`` is set, else by a random crop.

    Example:
        >>> aug = Augmenter(AugmentConfig(), (64, 64), 64)
        >>> image, mask = aug(tf.zeros([64, 64, 3], tf.uint8), tf.zeros([64, 64, 1], tf.uint8),
        ...                   tf.constant([1, 2], tf.int64))
        >>> image.shape, mask.shape
        (TensorShape([64, 64, 3]), TensorShape([64, 64, 1]))
    """

    def __init__(self, cfg: AugmentConfig, tile_hw: tuple[int, int], size: int) -> None:
        self.spec = AugmentSpec.of(cfg, tile_hw, size)
        self.size = size
        self.tile_hw = self.spec.tile_hw
        self.colour = self.spec.colour

    @property
    def ops(self) -> tuple[str, ...]:
        """Names of the active ops (``crop``, ``flip``/``rot90``/``flip+rot90``, colour ops)."""
        return self.spec.ops

    def draw(self, seed: tf.Tensor) -> dict[str, Any]:
        """The parameters of one tile from its ``[2]`` seed, or of a batch from ``[B, 2]``.

        The tf.data pipeline draws a whole batch at once (tens of small ops,
        run once per batch instead of once per tile), then :meth:`apply` runs
        per tile.

        Returns:
            :meth:`prepare` of :func:`tile_params`, plus ``seed`` (the noise
            seed, with noise); each with the seeds' leading ``[B]`` for a batch.
        """
        params = self.prepare(tile_params(self.spec, uniform(seed, N_UNIFORMS, _DRAWS), TF_NUMPY))
        if self.colour.noise_std > 0:
            params["seed"] = noise_seed(seed)
        return params

    def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        """:func:`tile_params` (one tile or a batch) as :meth:`apply` takes them.

        The box as int32 and the colour draws as the colour map
        (:meth:`~tfpipe.data.colour.ColourJitter.colour_map`).
        """
        out = dict(params)
        if "box" in out:
            out["box"] = tf.cast(out["box"], tf.int32)
        if "colour" in out:
            out["colour"] = self.colour.colour_map(out["colour"], self.size * self.size)
        return out

    def __call__(
        self, image: tf.Tensor, mask: tf.Tensor | None, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Augment one ``uint8`` tile ``[H, W, C]`` (and its mask ``[H, W, 1]``, or None)."""
        return self.apply(image, mask, self.draw(seed))

    def apply(
        self, image: tf.Tensor, mask: tf.Tensor | None, params: dict[str, Any]
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Augment one tile with given parameters (:meth:`draw`'s, for one tile)."""
        resample = self.spec.crop == "resized"
        if "box" in params:
            image, mask = crop_box(image, mask, params["box"], self.size, resample)
        if "colour" in params or "seed" in params:
            image = self.colour.apply_map(image, params.get("colour"), params.get("seed"))
        elif resample:
            image = tf.saturate_cast(image + 0.5, tf.uint8)
        if "flags" in params:
            image, mask = apply_flags(image, mask, params["flags"])
        return image, mask


def apply_flags(
    image: tf.Tensor, mask: tf.Tensor | None, flags: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Optionally swap H and W, then reverse rows and/or columns: two ops per tensor, no tf.cond.

    ``flags`` is bool ``[transpose, reverse rows, reverse columns]``. On
    ``uint8`` this is ~5x cheaper than the same move as a projective transform.
    """
    perm = tf.where(flags[0], tf.constant([1, 0, 2]), tf.constant([0, 1, 2]))
    axes = tf.reshape(tf.where(flags[1:]), [-1])  # [], [0], [1] or [0, 1]

    def apply(x: tf.Tensor) -> tf.Tensor:
        # An identity perm or no axes costs nothing: both kernels forward their input.
        if x.shape[-1] == 1:
            # A single channel moves ~2x faster as a 2-D tensor.
            plane = tf.reverse(tf.transpose(tf.squeeze(x, -1), perm[:2]), axes)
            return tf.ensure_shape(tf.expand_dims(plane, -1), x.shape)
        return tf.ensure_shape(tf.reverse(tf.transpose(x, perm), axes), x.shape)

    return apply(image), (None if mask is None else apply(mask))


def crop_box(
    image: tf.Tensor, mask: tf.Tensor | None, box: tf.Tensor, size: int, resample: bool
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Cut ``box`` (int ``[top, left, height, width]``); resized to ``size`` when ``resample``.

    A resampled image comes back as float32, not rounded: the colour op reads it next.
    """
    c = image.shape[-1]
    begin, extent = tf.concat([box[:2], [0]], 0), tf.concat([box[2:], [-1]], 0)
    crop = tf.slice(image, begin, extent)
    part = None if mask is None else tf.slice(mask, begin, extent)
    if resample:
        # slice + resize is ~2x faster than crop_and_resize and ~3x faster than a
        # projective transform on CPU; both resizes use pixel centres, so bilinear
        # (image) and nearest (mask) sample the same points.
        crop = tf.image.resize(crop, [size, size], "bilinear")
        if part is not None:
            part = tf.image.resize(part, [size, size], "nearest")
    image = tf.ensure_shape(crop, [size, size, c])
    mask = None if part is None else tf.ensure_shape(part, [size, size, mask.shape[-1]])
    return image, mask


def center_crop(
    image: tf.Tensor, mask: tf.Tensor | None, size: int
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """The central ``size`` × ``size`` window (validation; no randomness).

    Takes one tile (``[H, W, C]``) or a batch (``[B, H, W, C]``).
    """
    h, w = image.shape[-3], image.shape[-2]
    if (h, w) == (size, size):
        return image, mask
    top, left = (h - size) // 2, (w - size) // 2

    def cut(x: tf.Tensor) -> tf.Tensor:
        return x[..., top : top + size, left : left + size, :]

    return cut(image), (None if mask is None else cut(mask))
