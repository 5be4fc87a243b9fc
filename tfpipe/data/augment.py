"""Training augmentation: stateless, seeded, image and mask transformed together.

Every random draw is a ``tf.random.stateless_*`` op keyed by a per-element
seed, which the pipeline derives from (config seed, epoch, position in the
epoch, record id). The same seed gives the same
augmentation on every machine and every run; a new epoch gives new draws.
Nothing here touches TensorFlow's global random state.

Geometric ops (random resized crop, flips, 90° rotations) run on ``uint8`` and
move image and mask with the same geometry; the mask is resampled with
nearest neighbour so class ids stay class ids. Colour ops (brightness,
contrast, saturation, hue, Gaussian noise) touch the image only and run as
one fused affine colour transform in float32 (:mod:`tfpipe.data.colour`),
rounded back to ``uint8``.

Example:
    >>> from tfpipe.config import AugmentConfig
    >>> aug = Augmenter(AugmentConfig(flip=True, rot90=True, brightness=0.1), (256, 256), 256)
    >>> aug.ops
    ('flip+rot90', 'brightness')
    >>> image, mask = aug(image, mask, seed=tf.constant([0, 1], tf.int64))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

from tfpipe.config import AugmentConfig
from tfpipe.data.colour import ColourJitter

Op = Callable[[tf.Tensor, tf.Tensor | None, tf.Tensor], tuple[tf.Tensor, tf.Tensor | None]]

GEOMETRIC_OPS = ("crop", "flip+rot90", "flip", "rot90")
COLOUR_OPS = ("brightness", "contrast", "saturation", "hue", "noise")
# AugmentConfig field behind each colour op name.
_COLOUR_FIELDS = {name: name for name in COLOUR_OPS} | {"noise": "noise_std"}


class Augmenter:
    """The training augmentation chosen by an :class:`AugmentConfig`.

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
        self.size = size
        geometric: list[tuple[str, Op]] = []
        if cfg.crop_scale is not None:
            geometric.append(("crop", _resized_crop(cfg.crop_scale, cfg.crop_ratio, size)))
        elif tuple(tile_hw) != (size, size):
            geometric.append(("crop", lambda i, m, s: random_crop(i, m, size, s)))
        # Output tiles are square (size x size), so flips and quarter turns together
        # are a uniform draw from the 8 symmetries of the square: one transpose and
        # one reverse instead of two of each.
        if cfg.flip and cfg.rot90:
            geometric.append(("flip+rot90", dihedral))
        else:
            if cfg.flip:
                geometric.append(("flip", flip))
            if cfg.rot90:
                geometric.append(("rot90", rot90))
        self._geometric = geometric
        self._colour = ColourJitter(
            cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, cfg.noise_std
        )
        self._colour_names = tuple(
            name for name in COLOUR_OPS if getattr(cfg, _COLOUR_FIELDS[name]) > 0
        )

    @property
    def ops(self) -> tuple[str, ...]:
        """Names of the active ops, in the order they run."""
        return tuple(name for name, _ in self._geometric) + self._colour_names

    def __call__(
        self, image: tf.Tensor, mask: tf.Tensor | None, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Augment one ``uint8`` tile (and its mask, or None) with a ``[2]`` integer seed."""
        n = len(self._geometric) + 1
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=n)
        for i, (_, op) in enumerate(self._geometric):
            image, mask = op(image, mask, seeds[i])
        if self._colour.active:
            image = self._colour(image, seeds[n - 1])
        return image, mask


# ------------------------------------------------------------------ geometric


def flip(
    image: tf.Tensor, mask: tf.Tensor | None, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Flip left-right and up-down, each with probability 1/2."""
    rows, cols = tf.unstack(tf.random.stateless_uniform([2], seed) < 0.5)
    return _dihedral(image, mask, tf.constant(False), rows, cols)


def rot90(
    image: tf.Tensor, mask: tf.Tensor | None, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Rotate counter-clockwise by a random multiple of 90° (180° when the tile is not square)."""
    shape = image.shape
    square = shape[0] is not None and shape[0] == shape[1]
    k = tf.random.stateless_uniform([], seed, 0, 4 if square else 2, dtype=tf.int32)
    k = k if square else 2 * k
    # rot90^k = optional transpose, then flips: k=1 T+rows, k=2 rows+cols, k=3 T+cols.
    transpose = tf.equal(k % 2, 1)
    rows = tf.logical_or(tf.equal(k, 1), tf.equal(k, 2))
    cols = tf.greater_equal(k, 2)
    return _dihedral(image, mask, transpose, rows, cols)


def dihedral(
    image: tf.Tensor, mask: tf.Tensor | None, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """One of the 8 flips/quarter turns of a square tile, uniformly (= flip then rot90)."""
    transpose, rows, cols = tf.unstack(tf.random.stateless_uniform([3], seed) < 0.5)
    return _dihedral(image, mask, transpose, rows, cols)


def _dihedral(
    image: tf.Tensor, mask: tf.Tensor | None, transpose: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Optionally swap H and W, then reverse the chosen axes: two ops per tensor, no tf.cond."""
    perm = tf.where(transpose, tf.constant([1, 0, 2]), tf.constant([0, 1, 2]))
    axes = tf.reshape(tf.where(tf.stack([rows, cols])), [-1])  # [], [0], [1] or [0, 1]

    def apply(x: tf.Tensor) -> tf.Tensor:
        # An identity perm or no axes costs nothing: both kernels forward their input.
        return tf.ensure_shape(tf.reverse(tf.transpose(x, perm), axes), x.shape)

    return apply(image), (None if mask is None else apply(mask))


def random_crop(
    image: tf.Tensor, mask: tf.Tensor | None, size: int, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """A ``size`` × ``size`` window at a random position (no resampling)."""
    h, w = image.shape[0], image.shape[1]
    u = tf.random.stateless_uniform([2], seed)
    top = tf.cast(u[0] * (h - size + 1), tf.int32)
    left = tf.cast(u[1] * (w - size + 1), tf.int32)
    image = tf.image.crop_to_bounding_box(image, top, left, size, size)
    if mask is not None:
        mask = tf.image.crop_to_bounding_box(mask, top, left, size, size)
    return image, mask


def center_crop(
    image: tf.Tensor, mask: tf.Tensor | None, size: int
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """The central ``size`` × ``size`` window (validation; no randomness)."""
    h, w = image.shape[0], image.shape[1]
    if (h, w) == (size, size):
        return image, mask
    top, left = (h - size) // 2, (w - size) // 2
    image = tf.image.crop_to_bounding_box(image, top, left, size, size)
    if mask is not None:
        mask = tf.image.crop_to_bounding_box(mask, top, left, size, size)
    return image, mask


def _resized_crop(scale: tuple[float, float], ratio: tuple[float, float], size: int) -> Op:
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def op(
        image: tf.Tensor, mask: tf.Tensor | None, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        h, w, c = image.shape
        mask_c = None if mask is None else mask.shape[-1]
        u = tf.random.stateless_uniform([4], seed)
        area = scale[0] + (scale[1] - scale[0]) * u[0]
        aspect = tf.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1]) * (h / w)
        # Box sides as fractions of the tile: bw * bh = area, (bw * W) / (bh * H) = ratio.
        box_h = _pixels(tf.sqrt(area / aspect), h)
        box_w = _pixels(tf.sqrt(area * aspect), w)
        top = tf.cast(u[2] * tf.cast(h - box_h + 1, tf.float32), tf.int32)
        left = tf.cast(u[3] * tf.cast(w - box_w + 1, tf.float32), tf.int32)
        # slice + resize is ~2x faster than crop_and_resize on CPU; both use pixel
        # centres, so bilinear (image) and nearest (mask) sample the same points.
        begin, extent = tf.stack([top, left, 0]), tf.stack([box_h, box_w, -1])
        crop = tf.image.resize(tf.slice(image, begin, extent), [size, size], "bilinear")
        image = tf.ensure_shape(tf.saturate_cast(crop + 0.5, tf.uint8), [size, size, c])
        if mask is not None:
            mask = tf.image.resize(tf.slice(mask, begin, extent), [size, size], "nearest")
            mask = tf.ensure_shape(mask, [size, size, mask_c])
        return image, mask

    return op


def _pixels(fraction: tf.Tensor, side: int) -> tf.Tensor:
    """A box side in whole pixels, between 1 and ``side``."""
    return tf.clip_by_value(tf.cast(tf.round(fraction * side), tf.int32), 1, side)
