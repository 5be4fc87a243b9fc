"""Column-major run intervals: the memory-bounded currency of RLE output and dice.

A full-resolution slide mask never exists in memory. Prediction produces it
as column strips (:func:`tfpipe.predict.stitch.iter_mask_strips`);
:class:`StripRleEncoder` turns each strip into runs of the flat column-major
order and joins a run that continues from the bottom of one strip's last
column into the top of the next strip's first column. The result is the
exact competition RLE of the whole mask (``encode_rle(full_mask)``).

Dice is computed on the same intervals without decoding any pixels:
:func:`intersection_size` measures the overlap of two sorted run lists.

Example:
    >>> import numpy as np
    >>> from tfpipe.predict.intervals import StripRleEncoder
    >>> mask = np.array([[0, 1, 1], [1, 1, 0]], np.uint8)
    >>> enc = StripRleEncoder(height=2)
    >>> enc.add(0, mask[:, :1]); enc.add(1, mask[:, 1:])
    >>> enc.rle()
    '2 4'
"""

from __future__ import annotations

import numpy as np

from tfpipe.io.rle import find_runs, format_rle

FORMAT_CHUNK = 1 << 18


class StripRleEncoder:
    """Accumulate the runs of a mask given as consecutive column strips.

    Args:
        height: ``H`` of the mask (rows of every strip).

    Example:
        >>> enc = StripRleEncoder(height=3)
        >>> enc.add(0, np.ones((3, 2), np.uint8))
        >>> enc.runs().tolist(), enc.positive_pixels
        ([[0, 6]], 6)
    """

    def __init__(self, height: int) -> None:
        self.height = int(height)
        self._starts: list[np.ndarray] = []
        self._ends: list[np.ndarray] = []
        self._next_x = 0
        self.positive_pixels = 0

    def add(self, x0: int, strip: np.ndarray) -> None:
        """Add columns ``x0 .. x0 + strip.shape[1]`` (strips must come left to right, no gaps)."""
        if x0 != self._next_x or strip.shape[0] != self.height:
            raise ValueError(
                f"strips must be consecutive (H={self.height}) columns; expected x0="
                f"{self._next_x}, got x0={x0} with shape {strip.shape}"
            )
        self._next_x = x0 + strip.shape[1]
        starts, ends = find_runs(strip)
        if not starts.size:
            return
        offset = x0 * self.height
        starts, ends = starts + offset, ends + offset
        self.positive_pixels += int((ends - starts).sum())
        if self._ends and self._ends[-1][-1] == starts[0]:
            # The previous strip's last run reaches its bottom-right pixel and this
            # strip starts with foreground at its top-left pixel: one run.
            self._ends[-1][-1] = ends[0]
            starts, ends = starts[1:], ends[1:]
        if starts.size:
            self._starts.append(starts)
            self._ends.append(ends)

    def runs(self) -> np.ndarray:
        """``(N, 2)`` int64 array of 0-based ``[start, end)`` runs, as ``parse_rle`` returns."""
        if not self._starts:
            return np.zeros((0, 2), np.int64)
        return np.stack([np.concatenate(self._starts), np.concatenate(self._ends)], axis=1)

    def rle(self) -> str:
        """The competition RLE string of everything added so far.

        Formatted in pieces of :data:`FORMAT_CHUNK` runs: turning runs into text
        makes Python objects (~90 bytes a run), and a noisy mask of a big slide
        has tens of millions of runs. Pieces never need joining at their
        edges: runs that touch were merged in :meth:`add`.
        """
        pieces = [
            format_rle(starts[i : i + FORMAT_CHUNK], ends[i : i + FORMAT_CHUNK])
            for starts, ends in zip(self._starts, self._ends, strict=True)
            for i in range(0, len(starts), FORMAT_CHUNK)
        ]
        return " ".join(pieces)


def run_pixels(runs: np.ndarray) -> int:
    """Foreground pixels covered by ``runs``."""
    return int((runs[:, 1] - runs[:, 0]).sum()) if len(runs) else 0


def intersection_size(a: np.ndarray, b: np.ndarray) -> int:
    """Pixels in both of two sorted, disjoint run lists, without decoding either.

    With ``C(p)`` the number of ``b`` pixels before flat position ``p``, the
    overlap of run ``[s, e)`` of ``a`` with ``b`` is ``C(e) - C(s)``; ``C`` is a
    prefix sum of ``b``'s run lengths minus the part of a run that straddles
    ``p``. Vectorised: ``O(len(a) * log(len(b)))``.

    Example:
        >>> intersection_size(np.array([[0, 5], [8, 10]]), np.array([[3, 9]]))
        3
    """
    if not len(a) or not len(b):
        return 0
    lengths = np.concatenate([[0], np.cumsum(b[:, 1] - b[:, 0])])

    def before(p: np.ndarray) -> np.ndarray:
        k = np.searchsorted(b[:, 0], p, side="left")  # runs of b starting before p
        straddle = np.where(k > 0, np.maximum(b[np.maximum(k - 1, 0), 1] - p, 0), 0)
        return lengths[k] - straddle

    return int((before(a[:, 1]) - before(a[:, 0])).sum())


def dice_score(intersection: int, pred_pixels: int, truth_pixels: int) -> float:
    """``2|A∩B| / (|A| + |B|)``; 1.0 when both masks are empty (nothing to find, nothing found).

    Example:
        >>> dice_score(3, 4, 4)
        0.75
    """
    total = pred_pixels + truth_pixels
    return 1.0 if total == 0 else 2.0 * intersection / total
