"""The end of the per-element map: augment (training) or center crop, and the batch step.

Training elements get their seed salted with the record id, then either
augmented there with TensorFlow ops, or, with the OpenCV engine
(:func:`tfpipe.data.plan.augment_engine`), only their random draws are taken
per element and the whole batch is augmented after ``batch``
(:mod:`tfpipe.data.augment_cv`). Validation elements are center-cropped.

Example:
    >>> finish = Finisher(plan, cfg, training=True)                  # doctest: +SKIP
    >>> tiles = decoded.map(finish).batch(16)                         # doctest: +SKIP
    >>> if finish.batched:                                            # doctest: +SKIP
    ...     tiles = tiles.map(finish.augment_batch)
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfpipe.config import InputConfig
from tfpipe.data.augment import Augmenter, center_crop
from tfpipe.data.plan import InputPlan, augment_engine


class Finisher:
    """The per-element tail (augment or center crop) and, with OpenCV, the batch step.

    Per element it gives ``(image, target, id)``; with the OpenCV engine
    (:func:`~tfpipe.data.plan.augment_engine`) training elements carry their
    augmentation draws instead of being augmented, ``(image, target, id, draws)``,
    and :meth:`augment_batch` applies them to the whole batch.
    """

    def __init__(self, plan: InputPlan, cfg: InputConfig, training: bool) -> None:
        self.training = training
        self.size = plan.size
        self.segmentation = plan.layout.task == "segmentation"
        self.augmenter = Augmenter(cfg.augment, (plan.layout.height, plan.layout.width), plan.size)
        self.batched = (
            training and bool(self.augmenter.ops) and augment_engine(cfg, training) == "opencv"
        )

    def __call__(self, element: dict[str, tf.Tensor], seed: tf.Tensor) -> tuple[Any, ...]:
        mask = element["target"] if self.segmentation else None
        if not self.training:
            image, mask = center_crop(element["image"], mask, self.size)
            return image, (mask if self.segmentation else element["target"]), element["id"]
        if not self.augmenter.ops:
            # Nothing to draw: no seed salting either (tiles already have the output size).
            return element["image"], element["target"], element["id"]
        # The record id makes the seed differ between tf.data service workers
        # that share (epoch key, position).
        salt = tf.strings.to_hash_bucket_fast(element["id"], 1 << 62)
        seed = tf.stack([tf.bitwise.bitwise_xor(seed[0], salt), seed[1]])
        if self.batched:
            return (
                element["image"],
                element["target"],
                element["id"],
                self.augmenter.draw(seed),
            )
        image, mask = self.augmenter(element["image"], mask, seed)
        return image, (mask if self.segmentation else element["target"]), element["id"]

    def augment_batch(
        self, images: tf.Tensor, targets: tf.Tensor, ids: tf.Tensor, draws: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Apply a batch's draws with OpenCV (the OpenCV engine's second half)."""
        masks = targets if self.segmentation else None
        images, masks = self.augmenter.apply_batch(images, masks, draws)
        return images, (masks if self.segmentation else targets), ids
