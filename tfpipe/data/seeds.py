"""Every tile's random seed: ``[epoch key, position in the epoch]``, then its record id.

The key is drawn anew each time the dataset is iterated (each Keras epoch,
each ``repeat``) from the config seed, so epochs differ and runs repeat; the
position counts tiles from the start of the epoch. Augmentation then mixes in
the record id (:func:`salted`), so tf.data service workers that share (key,
position) still draw differently.

Seeds come a batch at a time, ``[B, 2]`` per batch: a per-element seed stream
(zip, counter, map) cost ~0.1 ms of CPU per image on the 2-core reference
machine.

Numbers are drawn from a seed by :func:`uniform`, a counter-based hash
(SplitMix64) written in element-wise ops, so one call serves one tile
(``[2]``) or a whole batch (``[B, 2]``) and a tile's draws depend on its own
seed only. TensorFlow's ``stateless_*`` ops take one ``[2]`` seed per call: on
a batch they need a ``tf.map_fn``, which cost ~55 µs of CPU per tile, a fifth
of the augmentation.

Example:
    >>> ds = with_seeds(records.batch(16, drop_remainder=True), 7, 16, training=True)
    ... # doctest: +SKIP
    >>> next(iter(batch_seeds(7, 4, redrawn=False))).numpy()[:, 1]
    array([0, 1, 2, 3])
    >>> uniform(tf.constant([[1, 2], [3, 4]], tf.int64), 3, stream=0).shape
    TensorShape([2, 3])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

# SplitMix64's increment and finaliser multipliers (Steele, Lea & Flood, 2014).
_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

_plain = tf.autograph.experimental.do_not_convert


def with_seeds(batches: tf.data.Dataset, seed: int, size: int, training: bool) -> tf.data.Dataset:
    """Pair each batch of ``size`` tiles with their seeds: ``(batch, [size, 2] int64)``.

    Training batches are full and their key is redrawn every epoch; a short
    last validation batch gets as many seeds as it has tiles.
    """
    pairs = tf.data.Dataset.zip(batches, batch_seeds(seed, size, redrawn=training))
    if training:
        return pairs

    def pair(batch: Any, seed: tf.Tensor) -> tuple[Any, tf.Tensor]:
        return batch, seed[: tf.shape(tf.nest.flatten(batch)[0])[0]]

    return pairs.map(_plain(pair))


def batch_seeds(seed: int, size: int, redrawn: bool) -> tf.data.Dataset:
    """``[size, 2]`` seeds per batch: ``[key, position]`` for positions 0, 1, 2, …

    With ``redrawn`` the key is drawn from ``seed`` anew every iteration (every
    epoch); else it is ``seed`` itself.
    """
    if redrawn:
        key = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    else:
        key = tf.data.Dataset.from_tensors(tf.constant(seed, tf.int64))
    offsets = tf.range(size, dtype=tf.int64)

    def positions(k: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.counter().map(
            _plain(lambda i: tf.stack([tf.fill([size], k), i * size + offsets], 1))
        )

    return key.flat_map(_plain(positions))


def salted(seed: tf.Tensor, record_id: tf.Tensor) -> tf.Tensor:
    """``[..., 2]`` seeds with the record id mixed into the first word.

    Works on one seed (``[2]``, scalar id) or a batch (``[B, 2]``, ``[B]`` ids).
    """
    salt = tf.strings.to_hash_bucket_fast(record_id, 1 << 62)
    return tf.stack([tf.bitwise.bitwise_xor(seed[..., 0], salt), seed[..., 1]], -1)


def uniform(seed: tf.Tensor, n: int, stream: int) -> tf.Tensor:
    """``[..., n]`` float32 draws in ``[0, 1)`` from ``[..., 2]`` integer seeds.

    ``stream`` tells independent uses of one seed apart (one per augmentation
    op). The draws of a row depend on that row's seed only, so a tile draws the
    same numbers alone or in any batch.
    """
    top24 = tf.bitwise.right_shift(_bits(seed, n, stream), np.uint64(40))
    return tf.cast(top24, tf.float32) * (2.0**-24)


def derive(seed: tf.Tensor, stream: int) -> tf.Tensor:
    """A new ``[..., 2]`` int64 seed from ``[..., 2]`` seeds, e.g. for ``stateless_normal``."""
    return tf.bitcast(_bits(seed, 2, stream), tf.int64)


def _bits(seed: tf.Tensor, n: int, stream: int) -> tf.Tensor:
    """``[..., n]`` uint64: SplitMix64 outputs 1..n from a state hashed from seed and stream."""
    words = tf.bitcast(tf.cast(seed, tf.int64), tf.uint64)
    salt = _times_gamma([stream + 1])[0]
    state = _mix(_xor(words[..., 0], _mix(_xor(words[..., 1], salt))))
    return _mix(state[..., None] + tf.constant(_times_gamma(range(1, n + 1))))


def _times_gamma(ks: Any) -> np.ndarray:
    """``k * gamma`` mod 2^64 for each ``k``, as uint64 (computed in Python: no overflow)."""
    return np.array([k * _GAMMA % (1 << 64) for k in ks], np.uint64)


def _mix(x: tf.Tensor) -> tf.Tensor:
    """SplitMix64's finaliser: a bijection of uint64; each output bit hangs on every input bit."""
    x = _xor_shift(x, 30) * _MIX1
    x = _xor_shift(x, 27) * _MIX2
    return _xor_shift(x, 31)


def _xor_shift(x: tf.Tensor, bits: int) -> tf.Tensor:
    return _xor(x, tf.bitwise.right_shift(x, np.uint64(bits)))


_xor = tf.bitwise.bitwise_xor
