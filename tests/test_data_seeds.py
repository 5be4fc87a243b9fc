"""Per-tile seeds and the numbers drawn from them: uniform, independent, batch-invariant."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfpipe.data.seeds import batch_seeds, derive, epoch_key, epoch_keys, salted, uniform

N = 20_000
# Chi-square with 9 degrees of freedom exceeds 27.9 with probability 0.001.
CHI2_9_DOF_P001 = 27.9


def _seeds(n: int = N, key: int = 7) -> tf.Tensor:
    return tf.stack([tf.fill([n], tf.constant(key, tf.int64)), tf.range(n, dtype=tf.int64)], 1)


def _splitmix64(key: int, position: int, stream: int, n: int) -> list[float]:
    """SplitMix64 in plain Python, as documented in tfpipe.data.seeds."""
    mask, gamma = (1 << 64) - 1, 0x9E3779B97F4A7C15

    def mix(x: int) -> int:
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    salt = ((stream + 1) * gamma) & mask
    state = mix(key & mask ^ mix(position & mask ^ salt))
    return [(mix((state + k * gamma) & mask) >> 40) / 2**24 for k in range(1, n + 1)]


def test_uniform_is_splitmix64_of_the_seed():
    for key, position, stream in ((7, 0, 0), (-3, 12345, 2), (2**62, -1, 5)):
        seed = tf.constant([key, position], tf.int64)
        expected = _splitmix64(key, position, stream, 4)
        np.testing.assert_array_equal(uniform(seed, 4, stream).numpy(), np.float32(expected))


def test_uniform_draws_are_uniform_in_every_column():
    u = uniform(_seeds(), 4, stream=0).numpy()
    assert u.shape == (N, 4) and u.dtype == np.float32
    assert u.min() >= 0.0 and u.max() < 1.0
    for column in u.T:
        counts = np.bincount((column * 10).astype(int), minlength=10)
        chi2 = ((counts - N / 10) ** 2 / (N / 10)).sum()
        assert chi2 < CHI2_9_DOF_P001


def test_columns_streams_and_neighbouring_positions_are_uncorrelated():
    u = uniform(_seeds(), 4, stream=0).numpy()
    other_stream = uniform(_seeds(), 1, stream=1).numpy()[:, 0]
    other_key = uniform(_seeds(key=8), 1, stream=0).numpy()[:, 0]
    pairs = [
        (u[:, 0], u[:, 1]),  # two draws of one tile
        (u[:, 0], other_stream),  # two ops of one tile
        (u[:-1, 0], u[1:, 0]),  # consecutive tiles
        (u[:, 0], other_key),  # two epochs
    ]
    bound = 4 / np.sqrt(N)  # 4 standard errors of a correlation of independent draws
    for a, b in pairs:
        assert abs(np.corrcoef(a, b)[0, 1]) < bound


def test_a_row_draws_the_same_alone_or_in_any_batch():
    seeds = _seeds(64)
    batched = uniform(seeds, 3, stream=4).numpy()
    for i in (0, 17, 63):
        np.testing.assert_array_equal(uniform(seeds[i], 3, stream=4).numpy(), batched[i])
    np.testing.assert_array_equal(uniform(seeds[10:20], 3, stream=4).numpy(), batched[10:20])


def test_derive_gives_new_int64_seeds_per_stream():
    seeds = _seeds(1000)
    a, b = derive(seeds, 1).numpy(), derive(seeds, 2).numpy()
    assert a.shape == (1000, 2) and a.dtype == np.int64
    assert len({tuple(row) for row in a}) == 1000  # no two tiles share a noise seed
    assert not np.any(np.all(a == b, axis=1))
    np.testing.assert_array_equal(derive(seeds[5], 1).numpy(), a[5])


def test_batch_seeds_count_positions_and_salting_keeps_them_apart():
    first = next(iter(batch_seeds(7, 4))).numpy()
    np.testing.assert_array_equal(first, [[7, 0], [7, 1], [7, 2], [7, 3]])
    ids = tf.constant([b"a", b"b", b"a", b"c"])
    salted_seeds = salted(tf.constant(first), ids).numpy()
    np.testing.assert_array_equal(salted_seeds[:, 1], first[:, 1])
    assert salted_seeds[0, 0] == salted_seeds[2, 0] != salted_seeds[1, 0]


def test_epoch_keys_are_a_function_of_seed_and_epoch():
    keys = [int(k) for k in epoch_keys(3, redrawn=True, first_epoch=0).take(4)]
    assert len(set(keys)) == 4  # every epoch draws differently
    later = [int(k) for k in epoch_keys(3, redrawn=True, first_epoch=2).take(2)]
    assert later == keys[2:]  # a stream started at epoch 2 is the same from there
    assert int(epoch_key(4, 0)) != keys[0]  # another seed, other epochs


def test_a_finite_dataset_redraws_its_key_per_iteration_the_same_way_every_run():
    once = epoch_keys(3, redrawn=True, first_epoch=None)
    first = [int(k) for _ in range(3) for k in once]
    other = epoch_keys(3, redrawn=True, first_epoch=None)  # another dataset, another run
    again = [int(k) for _ in range(3) for k in other]
    assert first == again and len(set(first)) == 3
    assert [int(k) for k in epoch_keys(3, redrawn=False, first_epoch=None)] == [3]
