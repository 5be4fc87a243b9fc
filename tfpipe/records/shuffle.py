"""Group by fold and globally shuffle spilled records, holding only offsets in memory.

The map stage leaves every encoded record in a spill file (one per work unit)
and returns ``(source, y, x, file, offset, length)`` for each. This module

1. assigns whole source images to folds, balanced by kept tiles (greedy,
   largest first; ties go to the lower fold, sources are visited by id), and
2. orders each fold's records: first canonically by ``(source id, y, x)``,
   which erases worker count and completion order, then by a permutation
   seeded with ``(seed, fold)``. Same seed, same sources: same order, byte for byte.
3. reads the records back in that order (:func:`read_in_order`), the
   "spill to disk" shuffle: the permutation is exact and global over the fold,
   but memory holds at most ``shuffle_memory_mb`` of record bytes. The order is
   cut into windows of that many bytes; each window's records are fetched
   sorted by (file, offset), then emitted in permuted order. When a fold's
   records fit in the budget (the usual case for a few GB of tiles with a
   generous budget) the whole fold is one window and every spill file is read
   once, sequentially; bigger folds cost random reads but stay bounded.

Example:
    >>> assign_folds({"a": 10, "b": 7, "c": 3, "d": 1}, 2)
    {'a': 0, 'b': 1, 'c': 1, 'd': 0}
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class RecordTable:
    """Where every spilled record is, one row per record (parallel numpy arrays)."""

    source: np.ndarray  # int32 index into the sorted source ids
    y: np.ndarray  # int64 tile position at source resolution
    x: np.ndarray  # int64
    unit: np.ndarray  # int32 spill file index
    offset: np.ndarray  # int64 byte offset in the spill file
    length: np.ndarray  # int64 framed record length
    positive: np.ndarray  # float32 positive fraction of the written mask

    def __len__(self) -> int:
        return int(self.source.size)

    @classmethod
    def concat(cls, parts: list[RecordTable]) -> RecordTable:
        """One table from many (e.g. one per work unit)."""
        if not parts:
            return cls.empty()
        names = cls.__dataclass_fields__
        return cls(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})

    @classmethod
    def empty(cls) -> RecordTable:
        dtypes = dict(source=np.int32, y=np.int64, x=np.int64, unit=np.int32)
        dtypes |= dict(offset=np.int64, length=np.int64, positive=np.float32)
        return cls(**{n: np.zeros(0, d) for n, d in dtypes.items()})


def assign_folds(counts: dict[str, int], num_folds: int) -> dict[str, int]:
    """Assign whole sources to folds, balancing the number of records per fold.

    Greedy: sources by decreasing count (ties by id) each go to the fold with
    the fewest records so far (ties to the lowest fold number).

    Args:
        counts: Records per source id.
        num_folds: Number of folds.

    Returns:
        ``{source id: fold}`` in the order the sources were assigned.

    Example:
        >>> assign_folds({"x": 5, "y": 5, "z": 5}, 3)
        {'x': 0, 'y': 1, 'z': 2}
    """
    loads = [0] * num_folds
    folds: dict[str, int] = {}
    for sid in sorted(counts, key=lambda s: (-counts[s], s)):
        fold = min(range(num_folds), key=lambda k: (loads[k], k))
        folds[sid] = fold
        loads[fold] += counts[sid]
    return folds


def shuffled_order(table: RecordTable, rows: np.ndarray, seed: int, fold: int) -> np.ndarray:
    """The rows of one fold, sorted by (source, y, x) and then permuted by ``(seed, fold)``.

    Example:
        >>> t = RecordTable.empty()
        >>> shuffled_order(t, np.zeros(0, np.int64), 0, 0).size
        0
    """
    rows = np.asarray(rows, np.int64)
    canonical = rows[np.lexsort((table.x[rows], table.y[rows], table.source[rows]))]
    rng = np.random.default_rng([seed, fold])
    return canonical[rng.permutation(canonical.size)]


def windows(lengths: np.ndarray, budget_bytes: int) -> list[tuple[int, int]]:
    """Cut a sequence of record lengths into consecutive windows of at most ``budget_bytes``.

    A record larger than the budget gets a window of its own.

    Example:
        >>> windows(np.array([4, 4, 4, 9, 1]), 8)
        [(0, 2), (2, 3), (3, 4), (4, 5)]
    """
    out, start, size = [], 0, 0
    for i, n in enumerate(lengths.tolist()):
        if i > start and size + n > budget_bytes:
            out.append((start, i))
            start, size = i, 0
        size += n
    if start < lengths.size:
        out.append((start, int(lengths.size)))
    return out


def read_in_order(
    spills: list[Path], table: RecordTable, order: np.ndarray, budget_bytes: int
) -> Iterator[bytes]:
    """Yield the spilled records of ``order`` in that order, ``budget_bytes`` in memory at most.

    Args:
        spills: Spill file of each work unit (``table.unit`` indexes it).
        table: The record locations.
        order: Row indices in output order (e.g. from :func:`shuffled_order`).
        budget_bytes: Record bytes held at once (``shuffle_memory_mb``).
    """
    for start, stop in windows(table.length[order], budget_bytes):
        rows = order[start:stop]
        fetched = _fetch(spills, table, rows[np.lexsort((table.offset[rows], table.unit[rows]))])
        for row in rows.tolist():
            yield fetched.pop(row)


def _fetch(spills: list[Path], table: RecordTable, rows: np.ndarray) -> dict[int, bytes]:
    """Read ``rows`` (sorted by file and offset, so reads move forward) into memory."""
    fds: dict[int, int] = {}
    fetched = {}
    try:
        for row in rows.tolist():
            unit = int(table.unit[row])
            if unit not in fds:
                fds[unit] = os.open(spills[unit], os.O_RDONLY)
            fetched[row] = _pread(fds[unit], int(table.length[row]), int(table.offset[row]))
    finally:
        for fd in fds.values():
            os.close(fd)
    return fetched


def _pread(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise OSError(f"spill file truncated: wanted {length} bytes at {offset}, got {len(data)}")
    return data
