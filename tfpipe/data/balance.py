"""Sample positive (mask > 0) against empty tiles at a chosen ratio.

A tile is *positive* when its ``tile/positive_fraction`` is above zero: some
pixel of its mask holds a class (any of 1..K with ``data.mask_classes``; ignored
pixels, 255, do not count). Each
tile passing through is emitted ``k`` times, where ``k`` is its class weight
rounded stochastically (``floor(w)`` or ``floor(w) + 1``, seeded per element):

* **training** (``input.balance``): ``w_pos = t / p`` and ``w_neg = (1 - t) / (1 - p)``
  for a target positive fraction ``t`` and a natural fraction ``p`` (from the
  manifest). An *epoch* is still one pass over the shards and holds about as
  many tiles as the natural one (``N`` in expectation), so steps per epoch,
  learning-rate schedules and epoch counts stay comparable between balanced
  and natural runs. The rarer class is repeated (each copy gets its own
  augmentation seed and the shuffle buffer separates the copies), the more
  common class is subsampled, differently every epoch.
* **validation** (``input.val_balance``): the same weights scaled so the
  larger is 1, i.e. pure subsampling: no tile is repeated, and the seeds do
  not change between epochs, so every epoch validates on the same subset of
  about ``N * min(p / t, (1 - p) / (1 - t))`` tiles.

One read pass serves both classes (no second stream re-reading every shard),
and the sampling works the same before parsing (on serialized records) and
after a cache (on decoded tiles).

Example:
    >>> plan = plan_balance(0.5, positives=100, total=1000, oversample=True, where="x")
    >>> round(plan.w_pos, 2), round(plan.w_neg, 3)
    (5.0, 0.556)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from tfpipe.errors import ConfigError
from tfpipe.records.manifest import Manifest

# Functions handed to tf.data are plain graph code (explicit tf.cond, no Python
# control flow on tensors); skipping AutoGraph's source conversion saves seconds
# per load() call.
_plain = tf.autograph.experimental.do_not_convert


@dataclass(frozen=True)
class BalancePlan:
    """Expected copies per tile of each class.

    Attributes:
        target: Wanted fraction of positive tiles.
        natural: Fraction of positive tiles in the selected folds.
        w_pos: Expected copies of each positive tile.
        w_neg: Expected copies of each empty tile.
    """

    target: float
    natural: float
    w_pos: float
    w_neg: float

    def expected_records(self, total: int) -> float:
        """Expected tiles per epoch out of ``total`` read."""
        return total * (self.natural * self.w_pos + (1.0 - self.natural) * self.w_neg)


def count_positives(manifest: Manifest, folds: list[int]) -> int:
    """Positive tiles kept in ``folds``, from the manifest's per-source statistics."""
    return sum(s.positive for s in manifest.sources.values() if s.fold in folds)


def plan_balance(
    target: float, positives: int, total: int, *, oversample: bool, where: str
) -> BalancePlan:
    """Class weights that turn the natural positive fraction into ``target``.

    Args:
        target: Wanted positive fraction in [0, 1].
        positives: Positive tiles among ``total``.
        total: Tiles read per epoch.
        oversample: True for training (epoch size kept, rare class repeated);
            False for validation (subsampling only, no repeats).
        where: Names the data in error messages (records folder and folds).

    Raises:
        ConfigError: the target needs a class that the selected folds lack.
    """
    natural = positives / total if total else 0.0
    if (target > 0 and positives == 0) or (target < 1 and positives == total):
        have = "no positive" if positives == 0 else "only positive"
        raise ConfigError(
            f"cannot balance to a positive fraction of {target}: {where} has {have} tiles "
            f"({positives} positive of {total}, from manifest.json)"
        )
    w_pos = target / natural if natural > 0 else 0.0
    w_neg = (1.0 - target) / (1.0 - natural) if natural < 1 else 0.0
    if not oversample:
        top = max(w_pos, w_neg)
        w_pos, w_neg = w_pos / top, w_neg / top
    return BalancePlan(target=target, natural=natural, w_pos=w_pos, w_neg=w_neg)


def resample(
    ds: tf.data.Dataset,
    plan: BalancePlan,
    is_positive: Callable[[tf.Tensor], tf.Tensor],
    seeds: tf.data.Dataset,
) -> tf.data.Dataset:
    """Emit each element of ``ds`` 0, 1, 2… times so positives make up ``plan.target``.

    Args:
        ds: Elements (serialized records or decoded dicts).
        plan: Weights from :func:`plan_balance`.
        is_positive: Maps one element to a scalar bool.
        seeds: One ``[2]`` int64 stateless seed per element.

    Example:
        >>> positive = lambda r: positive_fraction(r) > 0
        >>> ds = resample(records, plan, positive, seeds)  # doctest: +SKIP
    """
    w_pos = tf.constant(plan.w_pos, tf.float32)
    w_neg = tf.constant(plan.w_neg, tf.float32)
    return repeat_by_weight(
        ds,
        lambda element: tf.where(is_positive(element), w_pos, w_neg),
        seeds,
        repeats=max(plan.w_pos, plan.w_neg) > 1.0,
    )


def repeat_by_weight(
    ds: tf.data.Dataset,
    weight_of: Callable[[tf.Tensor], tf.Tensor],
    seeds: tf.data.Dataset,
    repeats: bool = True,
) -> tf.data.Dataset:
    """Emit each element ``floor(w)`` times, plus once more with probability ``w - floor(w)``.

    The resampling both :func:`resample` and :func:`tfpipe.data.weighting.resample`
    use; ``w = weight_of(element)`` and the draw is stateless, seeded per element.

    Args:
        ds: Elements (serialized records or decoded dicts).
        weight_of: Maps one element to its expected number of copies (float32 scalar).
        seeds: One ``[2]`` int64 stateless seed per element.
        repeats: False when no weight exceeds 1: a filter, cheaper than ``flat_map``.
    """

    def copies(element: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        weight = weight_of(element)
        whole = tf.floor(weight)
        extra = tf.random.stateless_uniform([], seed) < weight - whole
        return element, tf.cast(whole, tf.int64) + tf.cast(extra, tf.int64)

    counted = tf.data.Dataset.zip(ds, seeds).map(_plain(copies))
    if not repeats:
        kept = counted.filter(_plain(lambda element, k: k > 0))
        return kept.map(_plain(lambda element, k: element))
    return counted.flat_map(
        _plain(lambda element, k: tf.data.Dataset.from_tensors(element).repeat(k))
    )
