"""Training augmentation: stateless, seeded, image and mask transformed together.

Every random draw is a hash of a per-tile seed (:func:`tfpipe.data.seeds.uniform`),
which the pipeline derives from (config seed, epoch, position in the epoch,
record id). The same seed gives the same augmentation on every machine and
every run, alone or in a batch; a new epoch gives new draws. Nothing here
touches TensorFlow's global random state.

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
from tfpipe.data import augment_cv
from tfpipe.data.colour import ColourJitter, noise_seed
from tfpipe.data.seeds import uniform

GEOMETRIC_OPS = ("crop", "flip+rot90", "flip", "rot90")
COLOUR_OPS = ("brightness", "contrast", "saturation", "hue", "noise")
# AugmentConfig field behind each colour op name.
_COLOUR_FIELDS = {name: name for name in COLOUR_OPS} | {"noise": "noise_std"}


# A draw: (tile height and width, [..., 2] seeds) -> the op's random parameters [..., k].
Draw = Callable[[tuple[int, int], tf.Tensor], tf.Tensor]
# The seeds' stream of each kind of op (tfpipe.data.seeds.uniform).
_CROP, _FLIPS = 0, 1


class Augmenter:
    """The training augmentation chosen by an :class:`AugmentConfig`.

    Every op first *draws* its random parameters from the tile's seed
    (:meth:`draw`, for one tile or a batch), then *applies* them: per tile with
    TensorFlow ops (:meth:`__call__`, graph-only, what tf.data service workers
    run) or on a whole batch with OpenCV
    (:meth:`apply_batch`, ~3x cheaper per tile on CPU; :mod:`tfpipe.data.augment_cv`).
    Both engines apply the same draws, so a seed gives the same geometry in
    either and colours within one ``uint8`` level (rounding).

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
        self.tile_hw = (int(tile_hw[0]), int(tile_hw[1]))
        self.crop: tuple[str, Draw] | None = None
        if cfg.crop_scale is not None:
            self.crop = ("crop", _resized_crop_box(cfg.crop_scale, cfg.crop_ratio, size))
        elif self.tile_hw != (size, size):
            self.crop = ("crop", lambda hw, s: _random_crop_box(hw, size, s))
        self.resample = cfg.crop_scale is not None
        # Output tiles are square (size x size), so flips and quarter turns together
        # are a uniform draw from the 8 symmetries of the square: one transpose and
        # one reverse instead of two of each.
        self.flips: tuple[str, Draw] | None = None
        if cfg.flip and cfg.rot90:
            self.flips = ("flip+rot90", lambda hw, s: _dihedral_flags(s))
        elif cfg.flip:
            self.flips = ("flip", lambda hw, s: _flip_flags(s))
        elif cfg.rot90:
            self.flips = ("rot90", lambda hw, s: _rot90_flags(s, square=hw[0] == hw[1]))
        self.colour = ColourJitter(
            cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, cfg.noise_std
        )
        self._colour_names = tuple(
            name for name in COLOUR_OPS if getattr(cfg, _COLOUR_FIELDS[name]) > 0
        )

    @property
    def ops(self) -> tuple[str, ...]:
        """Names of the active ops, in the order they run."""
        geometric = tuple(op[0] for op in (self.crop, self.flips) if op is not None)
        return geometric + self._colour_names

    def draw(self, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """The random parameters of one tile from its ``[2]`` seed, or of a batch from ``[B, 2]``.

        Returns:
            ``box`` (int32 ``[top, left, height, width]``, with a crop),
            ``flags`` (bool ``[transpose, reverse rows, reverse columns]``, with
            flips or rotations), ``colour`` (float ``[4]``, with colour jitter)
            and ``seed`` (the noise seed, with noise); each with the seeds'
            leading ``[B]`` for a batch.
        """
        draws: dict[str, tf.Tensor] = {}
        hw = self.tile_hw
        if self.crop is not None:
            draws["box"] = self.crop[1](hw, seed)
            hw = (self.size, self.size)
        if self.flips is not None:
            draws["flags"] = self.flips[1](hw, seed)
        if self.colour.active:
            draws["colour"] = self.colour.draw(seed)
        if self.colour.noise_std > 0:
            draws["seed"] = noise_seed(seed)
        return draws

    def __call__(
        self, image: tf.Tensor, mask: tf.Tensor | None, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Augment one ``uint8`` tile (and its mask, or None) with TensorFlow ops."""
        draws = self.draw(seed)
        if "box" in draws:
            image, mask = crop_box(image, mask, draws["box"], self.size, self.resample)
        if "flags" in draws:
            image, mask = apply_flags(image, mask, draws["flags"])
        if self.colour.active:
            image = self.colour.apply(image, draws["colour"], draws.get("seed"))
        return image, mask

    def apply_batch(
        self, images: tf.Tensor, masks: tf.Tensor | None, draws: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Augment a batch of tiles with OpenCV, from the per-tile ``draws`` batched.

        ``images`` is ``[B, H, W, C]`` at the decoded tile size; the result is
        ``[B, size, size, C]``. Runs as a ``tf.numpy_function``: in-process only.
        """
        return augment_cv.apply_batch(self, images, masks, draws)


# ------------------------------------------------------------------ geometric


def _flip_flags(seed: tf.Tensor) -> tf.Tensor:
    """Flip left-right and up-down, each with probability 1/2."""
    return (uniform(seed, 3, _FLIPS) < 0.5) & tf.constant([False, True, True])


def _rot90_flags(seed: tf.Tensor, square: bool) -> tf.Tensor:
    """A random multiple of 90° counter-clockwise (180° steps when the tile is not square)."""
    turns = 4 if square else 2
    k = tf.cast(uniform(seed, 1, _FLIPS)[..., 0] * turns, tf.int32)
    k = k if square else 2 * k
    # rot90^k = optional transpose, then flips: k=1 T+rows, k=2 rows+cols, k=3 T+cols.
    return tf.stack([tf.equal(k % 2, 1), tf.equal(k, 1) | tf.equal(k, 2), k >= 2], -1)


def _dihedral_flags(seed: tf.Tensor) -> tf.Tensor:
    """One of the 8 flips/quarter turns of a square tile, uniformly (= flip then rot90)."""
    return uniform(seed, 3, _FLIPS) < 0.5


def apply_flags(
    image: tf.Tensor, mask: tf.Tensor | None, flags: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Optionally swap H and W, then reverse rows and/or columns: two ops per tensor, no tf.cond.

    ``flags`` is bool ``[transpose, reverse rows, reverse columns]``.
    """
    perm = tf.where(flags[0], tf.constant([1, 0, 2]), tf.constant([0, 1, 2]))
    axes = tf.reshape(tf.where(flags[1:]), [-1])  # [], [0], [1] or [0, 1]

    def apply(x: tf.Tensor) -> tf.Tensor:
        # An identity perm or no axes costs nothing: both kernels forward their input.
        return tf.ensure_shape(tf.reverse(tf.transpose(x, perm), axes), x.shape)

    return apply(image), (None if mask is None else apply(mask))


def crop_box(
    image: tf.Tensor, mask: tf.Tensor | None, box: tf.Tensor, size: int, resample: bool
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Cut ``box`` (``[top, left, height, width]``), resized to ``size`` when ``resample``."""
    c = image.shape[-1]
    begin, extent = tf.concat([box[:2], [0]], 0), tf.concat([box[2:], [-1]], 0)
    crop = tf.slice(image, begin, extent)
    part = None if mask is None else tf.slice(mask, begin, extent)
    if resample:
        # slice + resize is ~2x faster than crop_and_resize on CPU; both use pixel
        # centres, so bilinear (image) and nearest (mask) sample the same points.
        crop = tf.image.resize(crop, [size, size], "bilinear")
        crop = tf.saturate_cast(crop + 0.5, tf.uint8)
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


def _random_crop_box(hw: tuple[int, int], size: int, seed: tf.Tensor) -> tf.Tensor:
    """A ``size`` x ``size`` box at a random position (no resampling)."""
    u = uniform(seed, 2, _CROP)
    top = tf.cast(u[..., 0] * (hw[0] - size + 1), tf.int32)
    left = tf.cast(u[..., 1] * (hw[1] - size + 1), tf.int32)
    side = tf.fill(tf.shape(top), size)
    return tf.stack([top, left, side, side], -1)


def _resized_crop_box(scale: tuple[float, float], ratio: tuple[float, float], size: int) -> Draw:
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def draw(hw: tuple[int, int], seed: tf.Tensor) -> tf.Tensor:
        h, w = hw
        u = tf.unstack(uniform(seed, 4, _CROP), axis=-1)
        area = scale[0] + (scale[1] - scale[0]) * u[0]
        aspect = tf.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1]) * (h / w)
        # Box sides as fractions of the tile: bw * bh = area, (bw * W) / (bh * H) = ratio.
        box_h = _pixels(tf.sqrt(area / aspect), h)
        box_w = _pixels(tf.sqrt(area * aspect), w)
        top = tf.cast(u[2] * tf.cast(h - box_h + 1, tf.float32), tf.int32)
        left = tf.cast(u[3] * tf.cast(w - box_w + 1, tf.float32), tf.int32)
        return tf.stack([top, left, box_h, box_w], -1)

    return draw


def _pixels(fraction: tf.Tensor, side: int) -> tf.Tensor:
    """A box side in whole pixels, between 1 and ``side``."""
    return tf.clip_by_value(tf.cast(tf.round(fraction * side), tf.int32), 1, side)
