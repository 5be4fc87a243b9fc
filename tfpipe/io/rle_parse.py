"""Reading competition RLE text: every rule checked, the first broken one named.

Example:
    >>> parse_rle("1 2 5 1", (2, 3)).tolist()
    [[0, 2], [4, 5]]
    >>> parse_rle("0 2", (2, 3))
    Traceback (most recent call last):
    ...
    tfpipe.errors.InputDataError: RLE starts are 1-indexed and must be >= 1; got 0 in run 1
"""

from __future__ import annotations

import math

import numpy as np

from tfpipe.errors import InputDataError


def parse_rle(rle: str | float | None, shape: tuple[int, int], source: str = "") -> np.ndarray:
    """Parse and validate an RLE string into an ``(N, 2)`` array of 0-based ``[start, end)``.

    Args:
        rle: The RLE text; ``""``, ``None`` or NaN mean an empty mask.
        shape: ``(H, W)`` of the image the mask belongs to.
        source: Where the string came from (e.g. ``"train.csv id=aaa"``) for messages.

    Raises:
        InputDataError: odd number of values, a non-integer, a start < 1, a
            length < 1, a run past the image end, or overlapping/unsorted runs.

    Example:
        >>> parse_rle("1 2 5 1", (2, 3)).tolist()
        [[0, 2], [4, 5]]
    """
    if _is_empty(rle):
        return np.zeros((0, 2), np.int64)
    where = f" in {source}" if source else ""
    tokens = str(rle).split()
    if len(tokens) % 2:
        raise InputDataError(
            f"RLE must hold pairs 'start length'; got an odd number of values "
            f"({len(tokens)}){where}"
        )
    try:
        values = np.array(tokens).astype(np.int64)
    except (ValueError, OverflowError):
        bad = next((t for t in tokens if not _is_int(t)), None)
        raise InputDataError(f"RLE values must be 64-bit integers; got {bad!r}{where}") from None
    starts, lengths = values[0::2], values[1::2]
    _check_runs(starts, lengths, shape, where)
    return np.stack([starts - 1, starts - 1 + lengths], axis=1)


def _check_runs(
    starts: np.ndarray, lengths: np.ndarray, shape: tuple[int, int], where: str
) -> None:
    """Raise InputDataError naming the first run that breaks a rule."""
    total = int(shape[0]) * int(shape[1])
    rules = (
        (starts < 1, "RLE starts are 1-indexed and must be >= 1", starts),
        (lengths < 1, "RLE run lengths must be >= 1", lengths),
    )
    for bad, rule, values in rules:
        if bad.any():
            i = int(np.argmax(bad))
            raise InputDataError(f"{rule}; got {values[i]} in run {i + 1}{where}")
    ends = starts + lengths - 1
    if (past := ends > total).any():
        i = int(np.argmax(past))
        raise InputDataError(
            f"RLE run {i + 1} ({starts[i]} {lengths[i]}) ends at pixel {ends[i]}, past the "
            f"image end {total} (H*W for shape {tuple(shape)}){where}"
        )
    if (overlap := starts[1:] <= ends[:-1]).any():
        i = int(np.argmax(overlap)) + 1
        raise InputDataError(
            f"RLE runs must be sorted and must not overlap; run {i + 1} starts at {starts[i]} "
            f"but run {i} covers up to {ends[i - 1]}{where}"
        )


def _is_empty(rle: str | float | None) -> bool:
    if rle is None:
        return True
    if isinstance(rle, float):
        return math.isnan(rle)
    return not str(rle).strip()


def _is_int(token: str) -> bool:
    try:
        value = int(token)
    except ValueError:
        return False
    return -(2**63) <= value < 2**63
