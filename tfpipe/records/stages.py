"""The build after the map stage, shared by both runners: records, folds, order, manifest.

Whatever ran the map stage (the local worker pool of
:mod:`tfpipe.records.build`, or Beam workers in :mod:`tfpipe.records.beam`),
its :class:`~tfpipe.records.units.UnitResult` list, in unit order, goes through
the same functions here, so both runners cut the same records into the same
folds, orders and shards, and write the same manifest:

1. :func:`check_blank` / :func:`blank_warnings`: slides without tissue;
2. :func:`record_table`: every record's location as compact arrays;
3. :func:`assign_record_folds`: whole sources to folds, balanced by kept tiles;
4. :func:`fold_order`: a fold's canonical-then-seeded order and its shard ranges;
5. :func:`make_manifest`: the manifest (timings and worker count come from the runner).

Example:
    >>> from tfpipe.config import DataConfig
    >>> table = record_table([], [])
    >>> fold_order(table, np.zeros(0, np.int64), 0, DataConfig(folds=1))
    (array([], dtype=int64), [])
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tfpipe import __version__
from tfpipe.config import DataConfig
from tfpipe.errors import ConfigError, InputDataError
from tfpipe.records.manifest import Manifest, ShardInfo
from tfpipe.records.shuffle import RecordTable, assign_folds, shuffled_order
from tfpipe.records.sources import SourcePlan
from tfpipe.records.summary import MapTotals, dataset_stats
from tfpipe.records.units import UnitResult
from tfpipe.records.writer import plan_shards


def check_folds(plan: SourcePlan, cfg: DataConfig) -> None:
    """Folds hold whole source images: there must be at least as many images as folds.

    Raises:
        ConfigError: ``data.folds`` exceeds the number of source images.
    """
    if len(plan.items) < cfg.folds:
        raise ConfigError(
            f"data.folds must not exceed the number of source images (folds hold whole "
            f"images); got folds={cfg.folds} for {len(plan.items)} image(s) in {cfg.images}"
        )


def check_blank(totals: MapTotals, results: list[UnitResult], task: str, cfg: DataConfig) -> None:
    """Warn about each slide none of whose tiles shows tissue; fail if that is every slide.

    Raises:
        InputDataError: every slide came out blank.
    """
    for message in blank_warnings(totals, results, task, cfg):
        warnings.warn(message, stacklevel=2)


def blank_warnings(
    totals: MapTotals, results: list[UnitResult], task: str, cfg: DataConfig
) -> list[str]:
    """One warning per slide none of whose tiles shows tissue; an error if that is every slide.

    A tile shows tissue when it passes ``data.filter`` and is not one flat
    colour. A slide without any such tile is empty, or its pixels were
    scaled wrongly (e.g. float pixels outside ``data.float_range``); tiles
    with mask pixels are still written (they always are), which the summary
    table alone would not reveal.

    Raises:
        InputDataError: every slide came out blank.
    """
    if task == "classification":  # whole images, no tissue filter
        return []
    informative = dict.fromkeys(totals.sources, 0)
    for r in results:
        for sid, n in r.informative.items():
            informative[sid] += n
    blank = [sid for sid, s in totals.sources.items() if s.tiles_total and not informative[sid]]
    rule = (
        f"no tile has >= {cfg.filter.min_tissue_fraction:g} tissue under data.filter and "
        "more than one colour: an empty slide, or pixels scaled wrongly "
        "(float slides: see data.float_range)"
    )
    if blank and len(blank) == len(totals.sources):
        raise InputDataError(
            f"every slide in {cfg.images} came out blank ({len(blank)} slide(s)): {rule}"
        )
    return [
        f"slide {sid} came out blank: {rule}; {totals.sources[sid].kept} of its "
        f"{totals.sources[sid].tiles_total} tiles were written (tiles with mask pixels are "
        "always kept)"
        for sid in blank
    ]


def record_table(source_ids: list[str], results: list[UnitResult]) -> RecordTable:
    """All records' locations as one table; ``source`` indexes the sorted ``source_ids``."""
    index = {sid: i for i, sid in enumerate(source_ids)}
    parts = []
    for r in results:
        if not r.records:
            continue
        sid, y, x, offset, length, positive = zip(*r.records, strict=True)
        parts.append(
            RecordTable(
                source=np.array([index[s] for s in sid], np.int32),
                y=np.array(y, np.int64),
                x=np.array(x, np.int64),
                unit=np.full(len(sid), r.index, np.int32),
                offset=np.array(offset, np.int64),
                length=np.array(length, np.int64),
                positive=np.array(positive, np.float32),
            )
        )
    return RecordTable.concat(parts)


def assign_record_folds(
    totals: MapTotals, source_ids: list[str], table: RecordTable, num_folds: int
) -> np.ndarray:
    """Assign whole sources to folds (balanced by kept tiles); return each record's fold.

    Also fills in ``totals.sources[id].fold``.
    """
    folds = assign_folds({sid: s.kept for sid, s in totals.sources.items()}, num_folds)
    for sid, fold in folds.items():
        totals.sources[sid].fold = fold
    return np.array([folds[sid] for sid in source_ids], np.int64)[table.source]


def fold_order(
    table: RecordTable, record_folds: np.ndarray, fold: int, cfg: DataConfig
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """One fold's records in output order, and its shards as ranges over that order.

    The order is canonical (source, y, x), then permuted by ``(seed, fold)``;
    the shard count is planned from the record lengths before any byte is
    written, so every shard name carries its final ``-of-N``.
    """
    order = shuffled_order(table, np.flatnonzero(record_folds == fold), cfg.seed, fold)
    ranges = plan_shards(
        int(table.length[order].sum()), order.size, cfg.shard_records, cfg.shard_mb
    )
    return order, ranges


def make_manifest(
    root: Path,
    plan: SourcePlan,
    cfg: DataConfig,
    shards: list[ShardInfo],
    totals: MapTotals,
    table: RecordTable,
) -> Manifest:
    """The manifest of a build (timings and worker count are set by the runner)."""
    out = cfg.tile_size // cfg.downscale
    return Manifest(
        root=root,
        task=plan.task,
        tile_height=out,
        tile_width=out,
        channels=3,
        encoding=cfg.encoding,
        compression=cfg.compression,
        num_folds=cfg.folds,
        shards=shards,
        sources=totals.sources,
        class_names=plan.class_names,
        mask_classes=plan.mask_classes,
        config=cfg.model_dump(mode="json"),
        stats=dataset_stats(table.positive, totals),
        tfpipe_version=__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
