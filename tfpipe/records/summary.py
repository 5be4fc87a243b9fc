"""Statistics of a build: per-source counts, pixel mean/std, and the printed summary.

Example:
    >>> stats = pixel_stats(np.array([4.0]), np.array([20.0]), 2)
    >>> stats["pixel_mean"], stats["pixel_std"]
    ([2.0], [2.449489742783178])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from rich.console import Console
from rich.table import Table

from tfpipe.records.manifest import Manifest, SourceStats
from tfpipe.records.units import UnitResult

MAX_ROWS = 40  # per-source rows printed; classification sets have thousands of sources


@dataclass
class MapTotals:
    """The map stage's results merged over all units."""

    sources: dict[str, SourceStats] = field(default_factory=dict)
    pixel_sum: np.ndarray = field(default_factory=lambda: np.zeros(3))
    pixel_sq: np.ndarray = field(default_factory=lambda: np.zeros(3))
    pixels: int = 0


def merge_results(source_ids: list[str], results: list[UnitResult]) -> MapTotals:
    """Sum the counts, seconds and pixel sums of all units, per source id.

    Every id in ``source_ids`` gets an entry, also when it produced no tile.
    Folds are filled in later (they depend on these counts).
    """
    totals = MapTotals(sources={sid: SourceStats(fold=-1) for sid in source_ids})
    for result in results:
        for sid, counts in result.counts.items():
            stats = totals.sources[sid]
            for key, value in counts.items():
                setattr(stats, key, getattr(stats, key) + value)
        for sid, seconds in result.source_seconds.items():
            totals.sources[sid].seconds += seconds
        totals.pixel_sum = totals.pixel_sum + result.pixel_sum
        totals.pixel_sq = totals.pixel_sq + result.pixel_sq
        totals.pixels += result.pixels
    return totals


def pixel_stats(pixel_sum: np.ndarray, pixel_sq: np.ndarray, pixels: int) -> dict[str, list]:
    """Per-channel mean and (population) std of the kept tiles' pixels, in uint8 units."""
    if pixels == 0:
        return {"pixel_mean": [], "pixel_std": []}
    mean = pixel_sum / pixels
    var = np.maximum(pixel_sq / pixels - mean**2, 0.0)
    return {"pixel_mean": mean.tolist(), "pixel_std": np.sqrt(var).tolist()}


def dataset_stats(positive: np.ndarray, totals: MapTotals) -> dict[str, object]:
    """The manifest's ``stats``: records, positive tiles and fraction, pixel mean/std."""
    records = int(positive.size)
    return {
        "records": records,
        "positive_tiles": int((positive > 0).sum()),
        "positive_fraction_mean": float(positive.mean()) if records else 0.0,
        **pixel_stats(totals.pixel_sum, totals.pixel_sq, totals.pixels),
    }


def print_summary(manifest: Manifest, console: Console | None = None) -> None:
    """Print per-source counts, totals, bytes written and timings of a finished build.

    Example:
        >>> print_summary(read_manifest("records/kidney"))  # doctest: +SKIP
    """
    console = console or Console()
    table = Table(title=f"sources of {manifest.root}")
    for name in ("source", "fold", "tiles", "kept", "background", "empty", "positive", "sec"):
        table.add_column(name, justify="left" if name == "source" else "right")
    items = sorted(manifest.sources.items())
    for sid, s in items[:MAX_ROWS]:
        table.add_row(sid, str(s.fold), *_count_cells(s))
    if len(items) > MAX_ROWS:
        table.add_row(f"... {len(items) - MAX_ROWS} more sources", *[""] * 7)
    total = SourceStats(fold=-1)
    for _, s in items:
        for key in ("tiles_total", "kept", "dropped_background", "dropped_empty", "positive"):
            setattr(total, key, getattr(total, key) + getattr(s, key))
        total.seconds += s.seconds
    table.add_row("[bold]total", "", *_count_cells(total), end_section=True)
    console.print(table)
    size = sum(s.bytes for s in manifest.shards)
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in manifest.timings.items())
    console.print(
        f"{manifest.num_records} records in {len(manifest.shards)} shards, "
        f"{_human(size)} ({manifest.encoding}, compression {manifest.compression}), "
        f"{manifest.num_folds} folds; {timings}"
    )


def _count_cells(s: SourceStats) -> list[str]:
    share = f"{s.positive / s.kept:.1%}" if s.kept else "-"
    return [
        str(s.tiles_total),
        str(s.kept),
        str(s.dropped_background),
        str(s.dropped_empty),
        f"{s.positive} ({share})",
        f"{s.seconds:.1f}",
    ]


def _human(size: int) -> str:
    if size <= 0:
        return "0 B"
    exp = min(int(math.log(size, 1024)), 4)
    return f"{size / 1024**exp:.1f} {('B', 'KiB', 'MiB', 'GiB', 'TiB')[exp]}"
