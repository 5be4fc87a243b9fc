"""The end of a tile's way through the pipeline: augment (training) or center crop.

Training tiles are augmented by :class:`tfpipe.data.augment.Augmenter`
(TensorFlow ops). :meth:`Finisher.draw` derives the parameters of a whole
batch from its ``[B, 2]`` seeds (:mod:`tfpipe.data.seeds`), each salted with
its record id, so tf.data service workers that share a position still draw
differently; then :meth:`Finisher.__call__` runs per tile. Validation
tiles are center-cropped to the output size. Segmentation masks go through
the geometry as class indices (nearest sampling: classes never blend), and
only then become per-class channels (:func:`tfpipe.data.decode.one_hot`:
K channels, or background + K with ``background``; binary masks stay the
``[H, W, 1]`` mask). The result is the tuple that ``model.fit`` takes,
``(image, target)``, or ``(image, target, id)``.

Example:
    >>> finish = Finisher(plan, cfg, training=True, with_ids=False)  # doctest: +SKIP
    >>> batches = batches.map(lambda b, seeds: (b, finish.draw(b["id"], seeds)))  # doctest: +SKIP
    >>> tiles = batches.unbatch().map(finish)                         # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfpipe.config import InputConfig
from tfpipe.data.augment import Augmenter, center_crop
from tfpipe.data.decode import one_hot
from tfpipe.data.plan import InputPlan
from tfpipe.data.seeds import salted


class Finisher:
    """Augmentation or center crop of one decoded tile, and the output tuple.

    Decoded elements are dicts (``image``, ``target``, ``id``, ``positive``).

    Args:
        background: Multi-class (or softmax) targets get a background channel first.

    Attributes:
        augmenting: Training tiles are augmented (some op is on).
    """

    def __init__(
        self,
        plan: InputPlan,
        cfg: InputConfig,
        training: bool,
        with_ids: bool = False,
        background: bool = False,
    ) -> None:
        self.training = training
        self.with_ids = with_ids
        self.size = plan.size
        self.segmentation = plan.layout.task == "segmentation"
        self.mask_classes = plan.layout.mask_classes
        self.background = background
        self.augmenter = Augmenter(
            cfg.augment.host_ops(), (plan.layout.height, plan.layout.width), plan.size
        )
        self.augmenting = training and bool(self.augmenter.ops)

    def draw(self, record_ids: tf.Tensor, seeds: tf.Tensor) -> dict[str, Any]:
        """The augmentation parameters of a batch (``[B]`` ids, ``[B, 2]`` seeds) or of one tile.

        Drawn a batch at a time in the pipeline, before the per-tile map.
        """
        return self.augmenter.draw(salted(seeds, record_ids))

    def __call__(
        self, element: dict[str, tf.Tensor], params: dict[str, Any] | None = None
    ) -> tuple[tf.Tensor, ...]:
        """``(image, target[, id])`` of one decoded tile: augmented, center-cropped, or as is.

        ``params`` are the tile's :meth:`draw` (needed when :attr:`augmenting`).
        """
        image, target = element["image"], element["target"]
        mask = target if self.segmentation else None
        if self.augmenting:
            image, mask = self.augmenter.apply(image, mask, params)
        elif not self.training:
            image, mask = center_crop(image, mask, self.size)
        if self.segmentation:
            target = one_hot(mask, self.mask_classes, self.background)
        return (image, target, element["id"]) if self.with_ids else (image, target)
