"""Epoch order: new every epoch, reproducible per seed, and close to a full shuffle.

The shuffle-quality check counts, for two consecutive epochs, the pairs of
records that share a batch in the first epoch and again in the second. For a
full random shuffle of N records into batches of B, a given pair shares a
batch with probability (B - 1) / (N - 1), independently of the previous epoch.
A pipeline that reads fixed shards with a small buffer keeps neighbours
together and repeats far more pairs (identical order repeats all of them).

Tolerance: with N = 512, B = 8 and three epoch pairs, about 5 400 pairs are
followed and a full shuffle repeats ~74 of them (sd ~ 8.5, i.e. ~12 %). We
require the observed fraction to lie within [0.5, 1.5] x the full-shuffle
expectation, about 4 sd either side; the run is seeded and deterministic, so
the test is not flaky.
"""

from __future__ import annotations

import itertools

import tfpipe.data as td
from tests._data_helpers import write_records

BATCH = 8


def _epochs(ds, n: int) -> list[list[str]]:
    """``n`` consecutive epochs; ``repeat`` re-iterates the dataset as Keras does per epoch."""
    order = [s.decode() for *_, ids in ds.repeat(n) for s in ids.numpy()]
    size = len(order) // n
    return [order[i * size : (i + 1) * size] for i in range(n)]


def _pairs(order: list[str]) -> set[tuple[str, str]]:
    pairs = set()
    for start in range(0, len(order) - BATCH + 1, BATCH):
        pairs.update(itertools.combinations(sorted(order[start : start + BATCH]), 2))
    return pairs


def _repeat_fraction(epochs: list[list[str]]) -> float:
    repeated = total = 0
    for a, b in itertools.pairwise(epochs):
        first, second = _pairs(a), _pairs(b)
        repeated += len(first & second)
        total += len(first)
    return repeated / total


def _load(root, seed: int = 0, **kw):
    return td.load(
        root,
        batch_size=BATCH,
        seed=seed,
        with_ids=True,
        deterministic=True,
        augment={"flip": False, "rot90": False},
        **kw,
    )


def test_epochs_differ_and_runs_with_one_seed_repeat(tmp_path):
    root = write_records(tmp_path / "rec", size=8, encoding="raw", per_shard=16)
    run_a = _epochs(_load(root, seed=3), 2)
    run_b = _epochs(_load(root, seed=3), 2)
    other = _epochs(_load(root, seed=4), 1)
    assert len(run_a[0]) == 64
    assert run_a[0] != run_a[1]
    assert sorted(run_a[0]) == sorted(run_a[1])
    assert run_a == run_b
    assert other[0] != run_a[0]


def test_each_new_iteration_reshuffles(tmp_path):
    root = write_records(tmp_path / "rec", size=8, encoding="raw", per_shard=16)
    ds = _load(root)
    first, second = ([s.decode() for *_, ids in ds for s in ids.numpy()] for _ in range(2))
    assert sorted(first) == sorted(second) and first != second


def test_co_batched_pairs_recur_about_as_often_as_in_a_full_shuffle(tmp_path):
    root = write_records(
        tmp_path / "rec", size=8, encoding="raw", folds=2, shards_per_fold=4, per_shard=64
    )
    n = 512
    epochs = _epochs(_load(root, shuffle_buffer=128), 4)
    assert all(len(e) == n for e in epochs)
    full_shuffle = (BATCH - 1) / (n - 1)
    observed = _repeat_fraction(epochs)
    assert 0.5 * full_shuffle <= observed <= 1.5 * full_shuffle, (observed, full_shuffle)


def test_no_shuffle_repeats_every_pair(tmp_path):
    """The measure above does detect a pipeline that does not reshuffle."""
    root = write_records(tmp_path / "rec", size=8, encoding="raw", per_shard=16)
    epochs = _epochs(_load(root, shuffle_buffer=0, shuffle_files=False), 2)
    assert _repeat_fraction(epochs) == 1.0
