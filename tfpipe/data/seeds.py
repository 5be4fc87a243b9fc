"""Every tile's random seed: ``[epoch key, position in the epoch]``, then its record id.

Each epoch has a key (:func:`epoch_keys`): a hash of ``(seed, epoch)`` for a
repeated stream, so epoch ``e`` is the same in every run and can be rebuilt
on its own after a restart; drawn anew each time a finite dataset is iterated
otherwise. Every random choice of the epoch (shard order, shard starts, the
shuffle buffer, balancing, augmentation) derives from that key; the
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
    >>> ds = with_seeds(records.batch(16, drop_remainder=True), key, 16, training=True)
    ... # doctest: +SKIP
    >>> next(iter(batch_seeds(7, 4))).numpy()[:, 1]
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

# derive()'s stream for epoch keys; other streams salt an epoch key (mix_key).
_EPOCH_STREAM = 9


def epoch_keys(seed: int, *, redrawn: bool, first_epoch: int | None) -> tf.data.Dataset:
    """The key of each epoch, from which every random draw of that epoch derives.

    Three kinds of stream:

    * ``first_epoch`` given: keys of epochs ``first_epoch, first_epoch + 1, …``
      without end, each a pure function of ``(seed, epoch)`` (:func:`epoch_key`).
    * ``redrawn`` (a finite training dataset): one key, drawn anew from ``seed``
      each time the dataset is iterated: iteration ``i`` gets the same key in
      every run with that seed.
    * neither (validation): one key, ``seed`` itself, every time.

    Example:
        >>> keys = epoch_keys(7, redrawn=False, first_epoch=2).take(2)
        >>> [int(k) for k in keys] == [int(epoch_key(7, 2)), int(epoch_key(7, 3))]
        True
    """
    if first_epoch is not None:
        return tf.data.Dataset.counter(first_epoch).map(_plain(lambda e: epoch_key(seed, e)))
    if redrawn:
        return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    return tf.data.Dataset.from_tensors(tf.constant(seed, tf.int64))


def epoch_key(seed: int, epoch: tf.Tensor | int) -> tf.Tensor:
    """A scalar int64 key for ``epoch``: a hash of ``(seed, epoch)``."""
    pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return derive(pair, stream=_EPOCH_STREAM)[0]


def mix_key(key: tf.Tensor, salt: int) -> tf.Tensor:
    """``[2]`` seed of one random stream of an epoch: the epoch key and the stream's salt."""
    return tf.stack([tf.cast(key, tf.int64), tf.constant(salt, tf.int64)])


def with_seeds(
    batches: tf.data.Dataset, key: tf.Tensor, size: int, training: bool, first: int = 0
) -> tf.data.Dataset:
    """Pair each batch of ``size`` tiles with their seeds: ``(batch, [size, 2] int64)``.

    Training batches are full; a short last validation batch gets as many seeds
    as it has tiles. ``first``: the position of the first batch in its epoch
    (an epoch resumed part way through).
    """
    pairs = tf.data.Dataset.zip(batches, batch_seeds(key, size, first))
    if training:
        return pairs

    def pair(batch: Any, seed: tf.Tensor) -> tuple[Any, tf.Tensor]:
        return batch, seed[: tf.shape(tf.nest.flatten(batch)[0])[0]]

    return pairs.map(_plain(pair))


def batch_seeds(key: tf.Tensor | int, size: int, first: int = 0) -> tf.data.Dataset:
    """``[size, 2]`` seeds per batch, without end: ``[key, position]`` for positions 0, 1, 2, …

    ``first``: start at the seeds of batch ``first``.
    """
    key = tf.cast(key, tf.int64)
    offsets = tf.range(size, dtype=tf.int64)
    return tf.data.Dataset.counter(first).map(
        _plain(lambda i: tf.stack([tf.fill([size], key), i * size + offsets], 1))
    )


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
