"""Draw training tiles in proportion to their ``tile/weight`` (``input.weighted``).

Records built with ``data.sampling.anatomy`` carry a weight per tile (the
share of the tile in each anatomy region times that region's weight, see
:mod:`tfpipe.records.sampling`), and the manifest the sum of the weights per
source. With ``input.weighted`` each training tile passing through is emitted
``k`` times, ``k`` being ``w / mean(w)`` rounded stochastically (``floor`` or
``floor + 1``, one seeded draw per element, like :mod:`tfpipe.data.balance`):

* a tile is drawn in proportion to its weight, and a tile of weight 0 never;
* an epoch is still one pass over the shards and holds about as many tiles as
  the natural one, so steps per epoch and schedules stay comparable;
* the draws come from the epoch's key (``seed``, epoch): the same epoch is the
  same on every run, and a resumed stream (``start_step``) is exact.

The mean is the selected folds' ``weight_sum`` over their records, from the
manifest (weights are multiples of 2**-16, so that sum does not depend on the
build's worker count). Validation is never weighted. Records without
``tile/weight`` (other builds mixed in) count as weight 1.

Example:
    >>> plan = WeightPlan(mean=0.25)
    >>> ds = resample(records, plan, record_weight, seeds)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from tfpipe.data.balance import repeat_by_weight
from tfpipe.errors import ConfigError
from tfpipe.records import format as fmt
from tfpipe.records.manifest import Manifest


@dataclass(frozen=True)
class WeightPlan:
    """How weighted sampling scales the tiles' weights.

    Attributes:
        mean: Mean tile weight of the selected folds: a tile of weight ``w`` is
            emitted ``w / mean`` times per epoch in expectation.
    """

    mean: float


def plan_weights(manifest: Manifest, folds: list[int], records: int, where: str) -> WeightPlan:
    """The mean tile weight of ``folds``, from the manifest's per-source sums.

    Raises:
        ConfigError: the records carry no weights (or all are 0).

    Example:
        >>> plan_weights(read_manifest("records/kidney"), [1, 2, 3], 3000, "x")  # doctest: +SKIP
        WeightPlan(mean=0.31)
    """
    total = sum(s.weight_sum for s in manifest.sources.values() if s.fold in folds)
    if total <= 0 or records <= 0:
        raise ConfigError(
            "input.weighted draws tiles in proportion to their tile/weight, but the tiles of "
            f"{where} weigh 0 in all (manifest.json weight_sum): build the records with "
            "data.sampling.anatomy, giving some region a weight > 0, or set input.weighted: false"
        )
    return WeightPlan(mean=total / records)


def record_weight(serialized: tf.Tensor) -> tf.Tensor:
    """``tile/weight`` of one serialized record (1 when the record has none)."""
    spec = {fmt.TILE_WEIGHT: tf.io.FixedLenFeature([], tf.float32, default_value=1.0)}
    return tf.io.parse_single_example(serialized, spec)[fmt.TILE_WEIGHT]


def record_weights(serialized: tf.Tensor) -> tf.Tensor:
    """``tile/weight`` of a batch of serialized records, ``[B]`` (1 where absent)."""
    spec = {fmt.TILE_WEIGHT: tf.io.FixedLenFeature([], tf.float32, default_value=1.0)}
    return tf.io.parse_example(serialized, spec)[fmt.TILE_WEIGHT]


def resample(
    ds: tf.data.Dataset,
    plan: WeightPlan,
    weight_of: Callable[[tf.Tensor], tf.Tensor],
    seeds: tf.data.Dataset,
) -> tf.data.Dataset:
    """Emit each element of ``ds`` about ``weight / plan.mean`` times.

    Args:
        ds: Elements (serialized records or decoded dicts).
        plan: From :func:`plan_weights`.
        weight_of: Maps one element to its scalar float32 weight.
        seeds: One ``[2]`` int64 stateless seed per element.
    """
    scale = tf.constant(1.0 / plan.mean, tf.float32)
    return repeat_by_weight(ds, lambda element: tf.maximum(weight_of(element), 0.0) * scale, seeds)
