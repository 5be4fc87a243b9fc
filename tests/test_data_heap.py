"""The freed heap goes back to the OS as each epoch starts; the batches do not change."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import tfpipe.data as td
from tests._data_helpers import write_records
from tfpipe.data import heap


def _count_releases(monkeypatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(heap, "release_free_heap", lambda: calls.append(1) or True)
    return calls


def test_the_release_runs_once_per_iteration_and_yields_nothing(monkeypatch):
    calls = _count_releases(monkeypatch)
    ds = tf.data.Dataset.from_tensor_slices((np.arange(6), np.arange(6) * 2)).batch(4)
    released = heap.release_heap_each_epoch(ds)
    assert released.element_spec == ds.element_spec
    for epoch in (1, 2):
        got = [(a.numpy().tolist(), b.numpy().tolist()) for a, b in released]
        assert got == [([0, 1, 2, 3], [0, 2, 4, 6]), ([4, 5], [8, 10])]
        assert len(calls) == epoch


def test_load_releases_the_heap_each_epoch_unless_told_not_to(tmp_path, monkeypatch):
    root = write_records(tmp_path / "rec")
    calls = _count_releases(monkeypatch)
    ds = td.load(root, batch_size=4, seed=1, deterministic=True)
    kept = td.load(root, batch_size=4, seed=1, deterministic=True, release_heap=False)
    # Static batch shape and known length survive the prefix (Keras relies on both).
    assert ds.element_spec == kept.element_spec
    assert ds.element_spec[0].shape == (4, 32, 32, 3)
    assert ds.cardinality().numpy() == kept.cardinality().numpy() == 8
    first = [t.numpy() for batch in ds for t in batch]
    assert len(calls) == 1
    assert len([1 for _ in ds]) == 8 and len(calls) == 2
    same = [t.numpy() for batch in kept for t in batch]
    assert len(calls) == 2
    for a, b in zip(first, same, strict=True):
        np.testing.assert_array_equal(a, b)


def test_release_free_heap_answers_whether_it_could():
    assert heap.release_free_heap() in (True, False)  # False without glibc (macOS, musl)
