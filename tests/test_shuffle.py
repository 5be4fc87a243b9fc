"""Fold balancing, the seeded global shuffle, its mixing, and reading spills back in order."""

import numpy as np
import pytest

from tfpipe.records.shuffle import (
    RecordTable,
    assign_folds,
    read_in_order,
    shuffled_order,
    windows,
)
from tfpipe.records.writer import plan_shards


def _table(counts: list[int]) -> RecordTable:
    """A record table with ``counts[i]`` records of source i, in a scrambled input order."""
    source = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    y = np.concatenate([np.arange(n) // 4 * 64 for n in counts]).astype(np.int64)
    x = np.concatenate([np.arange(n) % 4 * 64 for n in counts]).astype(np.int64)
    scramble = np.random.default_rng(99).permutation(source.size)
    n = source.size
    return RecordTable(
        source=source[scramble],
        y=y[scramble],
        x=x[scramble],
        unit=np.zeros(n, np.int32),
        offset=np.arange(n, dtype=np.int64) * 10,
        length=np.full(n, 10, np.int64),
        positive=np.zeros(n, np.float32),
    )


def test_folds_are_balanced_greedily_largest_first():
    counts = {"a": 100, "b": 90, "c": 50, "d": 40, "e": 10, "f": 10}
    folds = assign_folds(counts, 3)
    assert folds == {"a": 0, "b": 1, "c": 2, "d": 2, "e": 1, "f": 2}
    loads = [sum(counts[s] for s, f in folds.items() if f == k) for k in range(3)]
    assert loads == [100, 100, 100]


def test_fold_ties_break_by_id_then_lowest_fold():
    assert assign_folds({"z": 5, "y": 5, "x": 5, "w": 5}, 2) == {"w": 0, "x": 1, "y": 0, "z": 1}
    # Input order does not matter.
    assert assign_folds({"x": 5, "w": 5, "z": 5, "y": 5}, 2) == assign_folds(
        {"w": 5, "x": 5, "y": 5, "z": 5}, 2
    )


def test_sources_without_tiles_still_get_a_fold():
    folds = assign_folds({"big": 10, "empty": 0}, 2)
    assert folds == {"big": 0, "empty": 1}


def _keys(table: RecordTable, order: np.ndarray) -> list[tuple[int, int, int]]:
    return list(zip(table.source[order], table.y[order], table.x[order], strict=True))


def test_order_is_reproducible_and_independent_of_input_order():
    table = _table([30, 20, 10])
    rows = np.arange(len(table))
    order = shuffled_order(table, rows, seed=3, fold=0)
    again = shuffled_order(table, rows[::-1].copy(), seed=3, fold=0)
    assert _keys(table, order) == _keys(table, again)
    assert sorted(order.tolist()) == rows.tolist()
    other_seed = shuffled_order(table, rows, seed=4, fold=0)
    other_fold = shuffled_order(table, rows, seed=3, fold=1)
    assert _keys(table, order) != _keys(table, other_seed)
    assert _keys(table, order) != _keys(table, other_fold)


def expected_distinct(counts: list[int], window: int) -> float:
    """Mean number of distinct sources in ``window`` records of a uniform random order.

    Exact for a uniformly random permutation: a source with n of N records is
    absent from a window with probability C(N-n, k) / C(N, k).
    """
    total = sum(counts)
    absent = [np.prod([(total - n - j) / (total - j) for j in range(window)]) for n in counts]
    return float(sum(1 - a for a in absent))


def test_shuffle_mixes_sources_like_a_uniform_random_order():
    counts = [int(c) for c in np.random.default_rng(5).integers(5, 80, 60)]
    table = _table(counts)
    order = shuffled_order(table, np.arange(len(table)), seed=42, fold=0)
    sources = table.source[order]
    per_window = [len(set(sources[i : i + 64].tolist())) for i in range(0, sources.size - 63, 64)]
    expected = expected_distinct(counts, 64)
    # Tolerance 5% of the expectation: the std of one window is ~2.3 sources,
    # so the mean over ~40 windows has a std of ~0.4 (~1% here).
    assert abs(np.mean(per_window) - expected) < 0.05 * expected
    canonical = np.sort(table.source)
    unshuffled = [
        len(set(canonical[i : i + 64].tolist())) for i in range(0, canonical.size - 63, 64)
    ]
    assert np.mean(unshuffled) < 0.2 * expected  # sanity: sorted input is far from mixed


def test_windows_respect_the_memory_budget():
    lengths = np.array([3, 3, 3, 3, 20, 1, 1])
    cuts = windows(lengths, 7)
    assert cuts == [(0, 2), (2, 4), (4, 5), (5, 7)]
    assert all(lengths[a:b].sum() <= 7 or b - a == 1 for a, b in cuts)
    assert windows(np.zeros(0, np.int64), 7) == []


@pytest.mark.parametrize("budget", [1, 35, 10_000])
def test_read_in_order_returns_records_in_permuted_order_for_any_budget(tmp_path, budget):
    # Two spill files with variable-length records.
    payloads = [[bytes([u, i]) * (i + 1) for i in range(12)] for u in range(2)]
    spills, rows = [], []
    for unit, records in enumerate(payloads):
        path = tmp_path / f"unit-{unit}.bin"
        path.write_bytes(b"".join(records))
        spills.append(path)
        offset = 0
        for i, data in enumerate(records):
            rows.append((unit, offset, len(data), i))
            offset += len(data)
    unit, offset, length, idx = (np.array(c) for c in zip(*rows, strict=True))
    table = RecordTable(
        source=unit.astype(np.int32),
        y=idx.astype(np.int64),
        x=np.zeros(len(rows), np.int64),
        unit=unit.astype(np.int32),
        offset=offset.astype(np.int64),
        length=length.astype(np.int64),
        positive=np.zeros(len(rows), np.float32),
    )
    order = shuffled_order(table, np.arange(len(rows)), seed=1, fold=0)
    got = list(read_in_order(spills, table, order, budget))
    assert got == [payloads[unit[r]][idx[r]] for r in order]


def test_shard_plan_is_known_up_front_and_even():
    assert plan_shards(0, 0, None, 64) == []
    assert plan_shards(100, 10, shard_records=3, shard_mb=64) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    mib = 1 << 20
    plan = plan_shards(5 * mib + 1, 100, shard_records=None, shard_mb=1)
    assert len(plan) == 6 and plan[0] == (0, 16) and plan[-1][1] == 100
    assert plan_shards(10 * mib, 3, shard_records=None, shard_mb=1) == [(0, 1), (1, 2), (2, 3)]
