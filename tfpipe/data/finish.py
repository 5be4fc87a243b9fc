"""The end of a tile's way through the pipeline: augment (training) or center crop.

Each decoded tile arrives with its ``[2]`` seed (:mod:`tfpipe.data.seeds`).
Training tiles are augmented by :class:`tfpipe.data.augment.Augmenter`
(TensorFlow ops, the tile's seed salted with its record id, so tf.data
service workers that share a position still draw differently); validation
tiles are center-cropped to the output size. The result is the tuple that
``model.fit`` takes, ``(image, target)``, or ``(image, target, id)``.

Example:
    >>> finish = Finisher(plan, cfg, training=True, with_ids=False)  # doctest: +SKIP
    >>> tiles = tiles.map(finish)                                     # doctest: +SKIP
"""

from __future__ import annotations

import tensorflow as tf

from tfpipe.config import InputConfig
from tfpipe.data.augment import Augmenter, center_crop
from tfpipe.data.plan import InputPlan
from tfpipe.data.seeds import salted


class Finisher:
    """Augmentation or center crop of one decoded tile, and the output tuple.

    Decoded elements are dicts (``image``, ``target``, ``id``, ``positive``).

    Attributes:
        augmenting: Training tiles are augmented (some op is on).
    """

    def __init__(
        self, plan: InputPlan, cfg: InputConfig, training: bool, with_ids: bool = False
    ) -> None:
        self.training = training
        self.with_ids = with_ids
        self.size = plan.size
        self.segmentation = plan.layout.task == "segmentation"
        self.augmenter = Augmenter(cfg.augment, (plan.layout.height, plan.layout.width), plan.size)
        self.augmenting = training and bool(self.augmenter.ops)

    def __call__(self, element: dict[str, tf.Tensor], seed: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """``(image, target[, id])`` of one decoded tile: augmented, center-cropped, or as is."""
        image, target = element["image"], element["target"]
        mask = target if self.segmentation else None
        if self.augmenting:
            image, mask = self.augmenter(image, mask, salted(seed, element["id"]))
        elif not self.training:
            image, mask = center_crop(image, mask, self.size)
        target = mask if self.segmentation else target
        return (image, target, element["id"]) if self.with_ids else (image, target)
