"""The end of the pipeline: augment (training) or center crop, a batch at a time.

Batches arrive decoded, with one ``[2]`` seed per tile
(:mod:`tfpipe.data.seeds`). Training seeds are salted with the record id, then:

* OpenCV engine (the default, :func:`tfpipe.data.plan.augment_engine`): the
  tiles' random draws are taken for the whole batch at once (element-wise
  hashes of the seeds, :func:`tfpipe.data.seeds.uniform`) and the whole batch
  is augmented in one call (:mod:`tfpipe.data.augment_cv`). Nothing runs per
  element.
* TensorFlow engine: each tile is augmented by TensorFlow ops in a per-element
  map (:meth:`Finisher.element`), which is what a tf.data service worker can run.

Both engines use the same draws from the same seeds. Validation batches are
center-cropped.

Why per batch: a per-element stage (unbatch, a map, batch again) cost ~0.25 ms
of CPU per image, 13 % of the full pipeline, on the 2-core reference machine.

Example:
    >>> finish = Finisher(plan, cfg, training=True)                   # doctest: +SKIP
    >>> if finish.per_element:                                        # doctest: +SKIP
    ...     tiles = tiles.unbatch().map(finish.element).batch(16)
    >>> batches = tiles.map(finish.batch)                             # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfpipe.config import InputConfig
from tfpipe.data.augment import Augmenter, center_crop
from tfpipe.data.plan import InputPlan, augment_engine
from tfpipe.data.seeds import salted


class Finisher:
    """The pipeline's tail: augmentation or center crop, from decoded batches and their seeds.

    Decoded elements are dicts (``image``, ``target``, ``id``, ``positive``);
    :meth:`batch` turns a batch of them into ``(image, target, ids)``.

    Attributes:
        batched: The augmentation runs on whole batches (OpenCV), in :meth:`batch`.
        per_element: The augmentation runs per tile (TensorFlow ops), in :meth:`element`.
    """

    def __init__(self, plan: InputPlan, cfg: InputConfig, training: bool) -> None:
        self.training = training
        self.size = plan.size
        self.segmentation = plan.layout.task == "segmentation"
        self.augmenter = Augmenter(cfg.augment, (plan.layout.height, plan.layout.width), plan.size)
        augmenting = training and bool(self.augmenter.ops)
        opencv = augment_engine(cfg, training) == "opencv"
        self.batched = augmenting and opencv
        self.per_element = augmenting and not opencv

    def element(self, element: dict[str, tf.Tensor], seed: tf.Tensor) -> tuple[dict, tf.Tensor]:
        """Augment one decoded tile with TensorFlow ops (the TensorFlow engine)."""
        mask = element["target"] if self.segmentation else None
        image, mask = self.augmenter(element["image"], mask, salted(seed, element["id"]))
        target = mask if self.segmentation else element["target"]
        return element | {"image": image, "target": target}, seed

    def batch(
        self, elements: dict[str, tf.Tensor], seeds: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """``(image, target, ids)`` of a decoded batch: augmented, center-cropped, or as is."""
        image, target, ids = elements["image"], elements["target"], elements["id"]
        if not self.training:
            mask = target if self.segmentation else None
            image, mask = center_crop(image, mask, self.size)
            return image, (mask if self.segmentation else target), ids
        if not self.batched:
            # Augmented per element already, or nothing to do (tiles have the output size).
            return image, target, ids
        draws = self.augmenter.draw(salted(seeds, ids))
        masks = target if self.segmentation else None
        image, masks = self.augmenter.apply_batch(image, masks, draws)
        return image, (masks if self.segmentation else target), ids


def drop_ids(image: tf.Tensor, target: tf.Tensor, ids: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """What ``model.fit`` takes: ``(image, target)``."""
    return image, target
