"""MixUp and CutMix: tiles of a training batch mixed with other tiles of the same batch.

Runs on whole batches after the pipeline's final ``batch`` (training only),
with the tiles' own seeds (:mod:`tfpipe.data.seeds`) carried there from the
batch's draw, so the same seed and epoch give the same mixed batch and a
resumed stream is exact.

Per batch of ``B`` tiles (:meth:`Mixer.draw`):

* **partner**: tile ``i`` is mixed with tile ``partner[i]``, a random cyclic
  order of the batch (no tile is its own partner when ``B > 1``);
* **which op**: each tile draws MixUp with probability ``mixup_p``, CutMix with
  ``cutmix_p``, or neither (so ``mixup_p + cutmix_p <= 1``);
* **lam** ``~ Beta(alpha, alpha)`` (the op's ``alpha``), as ``X / (X + Y)`` of
  two stateless Gamma draws.

Then (:func:`mix_batch`, exposed so that given draws can be checked):

* MixUp: ``image = lam * a + (1 - lam) * b``, rounded half up back to
  ``uint8``; ``target = lam * ta + (1 - lam) * tb`` in float32 (segmentation
  masks become soft masks in ``[0, 1]``; the losses take float masks). Masks
  are mixed after they became per-class channels (one-hot, see
  :mod:`tfpipe.data.finish`), so a blended pixel holds a share of each class.
  A pixel ignored (255) in a tile that contributes to it (``lam > 0`` for
  ``a``, ``lam < 1`` for ``b``) stays ignored: 255.0 in every channel;
* CutMix: a box of area ``1 - lam`` (centre uniform on the tile, clipped at
  its edges, as Yun et al. 2019) is pasted from ``b`` into ``a``, image and
  mask alike (masks stay hard ``uint8``, ignored pixels move with the box);
  classification labels mix by the pasted area fraction.

Output dtypes: images stay ``uint8``; segmentation masks are float32 when
``mixup_p > 0`` (every batch, mixed or not: one static dtype), else ``uint8``;
classification labels stay float32.

Example:
    >>> mixer = Mixer(AugmentConfig(mixup_p=0.5), segmentation=True)
    >>> mixer.on, mixer.target_dtype
    (True, tf.float32)
    >>> images, masks = mixer(images, masks, seeds)                      # doctest: +SKIP
"""

from __future__ import annotations

import tensorflow as tf

from tfpipe.config import AugmentConfig
from tfpipe.data.seeds import derive, uniform
from tfpipe.io.masks import IGNORE_VALUE

# Streams of the seeds (tfpipe.data.seeds) used here, apart from augmentation's.
_DRAWS, _GAMMA = 21, 22


class Mixer:
    """Draws and applies MixUp / CutMix to a batch whose tiles carry their ``[B, 2]`` seeds.

    Args:
        cfg: ``mixup_p``, ``mixup_alpha``, ``cutmix_p``, ``cutmix_alpha``.
        segmentation: Targets are masks ``[B, H, W, C]`` (else labels ``[B, K]``).

    Attributes:
        on: Some tiles get mixed (``mixup_p`` or ``cutmix_p`` above 0).
        target_dtype: The targets' dtype after mixing.
    """

    def __init__(self, cfg: AugmentConfig, segmentation: bool) -> None:
        self.mixup_p, self.mixup_alpha = cfg.mixup_p, cfg.mixup_alpha
        self.cutmix_p, self.cutmix_alpha = cfg.cutmix_p, cfg.cutmix_alpha
        self.segmentation = segmentation
        self.on = self.mixup_p > 0 or self.cutmix_p > 0
        soft = not segmentation or self.mixup_p > 0
        self.target_dtype = tf.float32 if soft else tf.uint8

    def __call__(self, images: tf.Tensor, targets: tf.Tensor, *rest: tf.Tensor) -> tuple:
        """``(images, targets[, ids], seeds)`` -> ``(images, targets[, ids])``, mixed."""
        *extra, seeds = rest
        draws = self.draw(seeds, (images.shape[1], images.shape[2]))
        return (*mix_batch(images, targets, draws, self.segmentation), *extra)

    def draw(self, seeds: tf.Tensor, hw: tuple[int, int]) -> dict[str, tf.Tensor]:
        """The draws of a batch of ``H x W`` tiles from their ``[B, 2]`` seeds.

        Returns:
            ``partner`` (int32 ``[B]``); with MixUp ``lam`` (float32 ``[B]``, 1
            for tiles not mixed up); with CutMix ``box`` (int32 ``[B, 4]``: top,
            left, height, width; empty for tiles not cut). See :func:`mix_batch`.
        """
        u = uniform(seeds, 4, _DRAWS)  # [which op, order key, box centre row, column]
        is_mixup = u[:, 0] < self.mixup_p
        is_cutmix = ~is_mixup & (u[:, 0] < self.mixup_p + self.cutmix_p)
        alpha = tf.where(is_mixup, self.mixup_alpha, self.cutmix_alpha)
        # One Beta(alpha, alpha) per tile from two Gammas; stateless ops take one [2] seed
        # per call, so the batch's comes from its first tile's (unique in the epoch).
        gammas = tf.random.stateless_gamma(
            tf.stack([2, tf.shape(seeds)[0]]), derive(seeds[0], _GAMMA), alpha=alpha
        )
        # Both Gammas underflow to 0 only for tiny alpha: then lam = 0 (the partner).
        lam = tf.math.divide_no_nan(gammas[0], gammas[0] + gammas[1])
        draws = {"partner": cyclic_partner(u[:, 1])}
        if self.mixup_p > 0:
            draws["lam"] = tf.where(is_mixup, lam, 1.0)
        if self.cutmix_p > 0:
            box = cut_box(1.0 - lam, u[:, 2], u[:, 3], hw)
            draws["box"] = tf.where(is_cutmix[:, None], box, 0)
        return draws


def cyclic_partner(keys: tf.Tensor) -> tf.Tensor:
    """Each tile's partner: the next tile in the order of ``keys`` (``[B]``), the last the first's.

    Example:
        >>> cyclic_partner(tf.constant([0.5, 0.1, 0.9])).numpy().tolist()
        [2, 0, 1]
    """
    order = tf.argsort(keys, stable=True)
    return tf.gather(tf.roll(order, -1, 0), tf.argsort(order))


def cut_box(area: tf.Tensor, cy: tf.Tensor, cx: tf.Tensor, hw: tuple[int, int]) -> tf.Tensor:
    """int32 ``[B, 4]`` boxes (top, left, height, width) of ``area`` of the tile, clipped to it.

    ``cy``, ``cx`` in ``[0, 1)`` place the centre; sides are ``side * sqrt(area)``.

    Example:
        >>> cut_box(tf.constant([0.25]), tf.constant([0.5]), tf.constant([0.0]), (8, 8)).numpy()
        array([[2, 0, 4, 2]], dtype=int32)
    """
    h, w = float(hw[0]), float(hw[1])
    side = tf.sqrt(area)
    half_h, half_w = tf.floor(h * side) // 2.0, tf.floor(w * side) // 2.0
    centre_y, centre_x = tf.floor(cy * h), tf.floor(cx * w)
    top, bottom = tf.maximum(centre_y - half_h, 0.0), tf.minimum(centre_y + half_h, h)
    left, right = tf.maximum(centre_x - half_w, 0.0), tf.minimum(centre_x + half_w, w)
    return tf.cast(tf.stack([top, left, bottom - top, right - left], 1), tf.int32)


def mix_batch(
    images: tf.Tensor, targets: tf.Tensor, draws: dict[str, tf.Tensor], segmentation: bool
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mix a batch with given draws (:meth:`Mixer.draw`'s); see the module docstring.

    Args:
        images: ``uint8 [B, H, W, C]``.
        targets: ``uint8`` masks ``[B, H, W, C]`` (255 = ignore) or float32 labels ``[B, K]``.
        draws: ``partner`` ``[B]``; ``lam`` ``[B]`` for MixUp; ``box`` ``[B, 4]`` for CutMix.
        segmentation: Whether targets are masks.

    Example:
        >>> images = tf.constant([[[[0]]], [[[255]]]], tf.uint8)   # two 1x1 tiles
        >>> labels = tf.constant([[1.0], [0.0]])
        >>> draws = {"partner": tf.constant([1, 0]), "lam": tf.constant([0.75, 1.0])}
        >>> x, y = mix_batch(images, labels, draws, segmentation=False)
        >>> x.numpy().ravel().tolist(), y.numpy().ravel().tolist()
        ([64, 255], [0.75, 0.0])
    """
    other_images = tf.gather(images, draws["partner"])
    other_targets = tf.gather(targets, draws["partner"])
    kept = tf.ones(tf.shape(draws["partner"]), tf.float32)  # share of each tile's own target
    if "box" in draws:
        inside = _inside(draws["box"], images.shape[1], images.shape[2])
        images = tf.where(inside, other_images, images)
        if segmentation:
            targets = tf.where(inside, other_targets, targets)
        box = tf.cast(draws["box"], tf.float32)
        kept = 1.0 - box[:, 2] * box[:, 3] / float(images.shape[1] * images.shape[2])
    if "lam" in draws:
        lam = draws["lam"][:, None, None, None]
        blend = lam * tf.cast(images, tf.float32) + (1.0 - lam) * tf.cast(other_images, tf.float32)
        images = tf.cast(tf.floor(blend + 0.5), tf.uint8)  # round half up; within 0-255
        if segmentation:
            targets = _mix_masks(targets, other_targets, lam)
        kept = kept * draws["lam"]
    if not segmentation:
        weight = kept[:, None]
        targets = weight * targets + (1.0 - weight) * other_targets
    return images, targets


def _mix_masks(targets: tf.Tensor, others: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
    """``lam * targets + (1 - lam) * others`` in float32; ignored where a contributor is."""
    a, b = tf.cast(targets, tf.float32), tf.cast(others, tf.float32)
    blend = lam * a + (1.0 - lam) * b
    ignored = (_ignored(a) & (lam > 0.0)) | (_ignored(b) & (lam < 1.0))
    return tf.where(ignored, tf.constant(float(IGNORE_VALUE)), blend)


def _ignored(mask: tf.Tensor) -> tf.Tensor:
    """bool ``[B, H, W, 1]``: pixels marked ignore (any channel above 1)."""
    return tf.reduce_any(mask > 1.0, axis=-1, keepdims=True)


def _inside(box: tf.Tensor, h: int, w: int) -> tf.Tensor:
    """bool ``[B, H, W, 1]``: the pixels inside each tile's box."""
    rows, cols = tf.range(h)[None, :], tf.range(w)[None, :]
    in_rows = (rows >= box[:, :1]) & (rows < box[:, :1] + box[:, 2:3])
    in_cols = (cols >= box[:, 1:2]) & (cols < box[:, 1:2] + box[:, 3:4])
    return (in_rows[:, :, None] & in_cols[:, None, :])[..., None]
