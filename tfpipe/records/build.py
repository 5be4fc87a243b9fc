"""``tfpipe build-records``: source images -> sharded, shuffled TFRecords + manifest.json.

Shaped like a Beam pipeline so it can move to one later (docs/design.md):

1. **sources** (:mod:`~tfpipe.records.sources`): find and validate everything first.
2. **map** (:mod:`~tfpipe.records.workers`, :mod:`~tfpipe.records.units`):
   worker processes read row bands, tile, filter, resize, encode and spill
   framed records to disk, returning offsets.
3. **group by fold** (:func:`~tfpipe.records.shuffle.assign_folds`): whole
   source images, balanced by kept tiles.
4. **global shuffle + write** (:mod:`~tfpipe.records.shuffle`,
   :mod:`~tfpipe.records.writer`): a seeded permutation per fold, read back
   from the spill files, cut into ``fold{k}-{i:05d}-of-{n:05d}.tfrecord[.gz]``.
5. **manifest**, then an atomic rename of ``<output>.tmp-<pid>`` into place.

The worker pool is started first, so that its start-up overlaps step 1.
Disk: the spill files and the shards coexist until the last shard is
written, so a build needs free space of about twice the dataset's size next
to ``data.output`` (checked up front and before the shards; a full disk is
one :class:`~tfpipe.errors.DiskFullError` line, see
:mod:`~tfpipe.records.diskspace`). Nothing half-written survives: any
failure, Ctrl-C or SIGTERM removes the temporary folder; an existing output
is replaced (``overwrite=True``) only after the new build has succeeded. One
build at a time per output (``<output>.lock``), and temp folders of builds
killed with ``kill -9`` are removed by the next build into the same output
(:mod:`~tfpipe.records.lifecycle`). A slide none of whose tiles shows tissue
is reported (a warning; an error if every slide is blank). Same config
and seed give identical shard bytes, whatever the worker count (only the
manifest's times differ).

Example:
    >>> from tfpipe.config import load_experiment
    >>> exp = load_experiment("experiments/kidney.yaml")     # doctest: +SKIP
    >>> manifest = build_records(exp.data, overwrite=True)   # doctest: +SKIP
    >>> manifest.num_records                                 # doctest: +SKIP
    1234
"""

from __future__ import annotations

import shutil
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tfpipe import __version__
from tfpipe.config import DataConfig
from tfpipe.errors import ConfigError, InputDataError, RecordsError
from tfpipe.records import format as fmt
from tfpipe.records.diskspace import SpaceBudget, is_disk_full
from tfpipe.records.lifecycle import (
    output_lock,
    remove_stale_temps,
    temp_path,
    terminate_as_interrupt,
)
from tfpipe.records.manifest import Manifest, ShardInfo, write_manifest
from tfpipe.records.shuffle import RecordTable, assign_folds, read_in_order, shuffled_order
from tfpipe.records.sources import SourcePlan, discover_sources
from tfpipe.records.summary import MapTotals, dataset_stats, merge_results, print_summary
from tfpipe.records.units import UnitResult
from tfpipe.records.workers import WorkerPool, default_workers, map_settings, plan_units
from tfpipe.records.writer import ShardWriter, plan_shards


def build_records(
    cfg: DataConfig, overwrite: bool = False, progress: bool = True, wait_lock: bool = False
) -> Manifest:
    """Build the records folder ``cfg.output`` from the sources in ``cfg``.

    Args:
        cfg: The ``data`` section of an experiment.
        overwrite: Replace an existing ``cfg.output`` (after the new build succeeded).
        progress: Show progress bars and print the summary table.
        wait_lock: When another build holds ``<output>.lock``, wait for it
            instead of raising :class:`~tfpipe.records.lifecycle.OutputLockedError`.

    Returns:
        The written :class:`~tfpipe.records.manifest.Manifest` (``root`` = output).

    Raises:
        RecordsError: the output exists and ``overwrite`` is False, or another
            build holds its lock (``OutputLockedError``).
        InputDataError: a source is missing, unreadable or inconsistent, or
            every slide came out blank.
        ConfigError: fewer source images than folds, or a missing setting.
        DiskFullError: the disk under the output filled up (or would have).
        Terminated: SIGTERM arrived (a ``KeyboardInterrupt``, like Ctrl-C);
            the temporary folder was removed.

    Example:
        >>> m = build_records(DataConfig(source="unlabelled", images="slides",
        ...                              output="records/x", folds=1))  # doctest: +SKIP
    """
    start = time.perf_counter()
    output = Path(cfg.output)
    with terminate_as_interrupt(), output_lock(output, wait=wait_lock, progress=progress):
        remove_stale_temps(output, progress)
        if output.exists() and not overwrite:
            raise RecordsError(
                f"output folder {output} already exists (data.output); pass --overwrite "
                f"(overwrite=True) to replace it once the new build succeeds"
            )
        space = SpaceBudget.measure(output)
        try:
            manifest = _build(output, cfg, space, progress, start)
        except OSError as err:
            if not is_disk_full(err):
                raise
            raise space.error(err) from None
    manifest.root = output
    if progress:
        print_summary(manifest)
    return manifest


def _build(
    output: Path, cfg: DataConfig, space: SpaceBudget, progress: bool, start: float
) -> Manifest:
    """Discover, build into ``<output>.tmp-<pid>`` and publish; the temp folder never survives."""
    with WorkerPool(cfg.workers or default_workers()) as pool:
        plan = discover_sources(cfg)
        discovered = time.perf_counter()
        if len(plan.items) < cfg.folds:
            raise ConfigError(
                f"data.folds must not exceed the number of source images (folds hold whole "
                f"images); got folds={cfg.folds} for {len(plan.items)} image(s) in {cfg.images}"
            )
        space.estimate(plan, cfg)
        tmp = temp_path(output)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            (tmp / "spill").mkdir(parents=True)
            manifest = _build_into(tmp, plan, cfg, pool, space, progress, (start, discovered))
            _publish(tmp, output)
        except BaseException:
            pool.close()  # running units must stop writing before the folder goes
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return manifest


def _build_into(
    tmp: Path,
    plan: SourcePlan,
    cfg: DataConfig,
    pool: WorkerPool,
    space: SpaceBudget,
    progress: bool,
    times: tuple[float, float],
) -> Manifest:
    """Map, group, shuffle and write everything into ``tmp``; return the manifest."""
    settings = map_settings(cfg)
    units = plan_units(plan, settings.spec, tmp / "spill", pool.workers)
    results = pool.map(units, settings, progress)
    pool.close()  # free the workers' memory before the write stage
    mapped = time.perf_counter()

    ids = [item.image_id for item in plan.items]
    totals = merge_results(ids, results)
    check_blank(totals, results, plan.task, cfg)
    table = record_table(ids, results)
    del results  # the table holds the same locations as compact arrays
    space.check_shards(int(table.length.sum()), cfg.compression)
    folds = assign_folds({sid: s.kept for sid, s in totals.sources.items()}, cfg.folds)
    for sid, fold in folds.items():
        totals.sources[sid].fold = fold
    record_folds = np.array([folds[sid] for sid in ids], np.int64)[table.source]
    shards = write_folds(tmp, table, record_folds, [u.spill for u in units], cfg, progress)
    shutil.rmtree(tmp / "spill")
    written = time.perf_counter()

    manifest = _manifest(tmp, plan, cfg, shards, totals, table)
    manifest.timings = {
        "sources": round(times[1] - times[0], 3),
        "map": round(mapped - times[1], 3),
        "shuffle_write": round(written - mapped, 3),
        "total": round(written - times[0], 3),
    }
    manifest.config["workers"] = pool.workers
    write_manifest(manifest, tmp)
    return manifest


def check_blank(totals: MapTotals, results: list[UnitResult], task: str, cfg: DataConfig) -> None:
    """Warn about each slide none of whose tiles shows tissue; fail if that is every slide.

    A tile shows tissue when it passes ``data.filter`` and is not one flat
    colour. A slide without any such tile is empty, or its pixels were
    scaled wrongly (e.g. float pixels outside ``data.float_range``); tiles
    with mask pixels are still written (they always are), which the summary
    table alone would not reveal.

    Raises:
        InputDataError: every slide came out blank.
    """
    if task == "classification":  # whole images, no tissue filter
        return
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
    for sid in blank:
        s = totals.sources[sid]
        warnings.warn(
            f"slide {sid} came out blank: {rule}; {s.kept} of its {s.tiles_total} tiles "
            "were written (tiles with mask pixels are always kept)",
            stacklevel=2,
        )


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


def write_folds(
    root: Path,
    table: RecordTable,
    record_folds: np.ndarray,
    spills: list[Path],
    cfg: DataConfig,
    progress: bool = True,
) -> list[ShardInfo]:
    """Shuffle each fold's records and write them as shards into ``root``.

    The shard count of a fold is planned from the record lengths before the
    first byte is written, so every name carries its final ``-of-N``.
    """
    budget = int(cfg.shuffle_memory_mb * (1 << 20))
    shards: list[ShardInfo] = []
    bar = tqdm(total=len(table), unit="rec", desc="shuffle/write", disable=not progress)
    with bar:
        for fold in range(cfg.folds):
            order = shuffled_order(table, np.flatnonzero(record_folds == fold), cfg.seed, fold)
            ranges = plan_shards(
                int(table.length[order].sum()), order.size, cfg.shard_records, cfg.shard_mb
            )
            records = read_in_order(spills, table, order, budget)
            for i, (lo, hi) in enumerate(ranges):
                name = fmt.shard_name(fold, i, len(ranges), cfg.compression)
                with ShardWriter(root / name, cfg.compression) as writer:
                    for _ in range(hi - lo):
                        writer.write(next(records))
                    bar.update(hi - lo)
                done = writer.result
                shards.append(ShardInfo(name, fold, done.records, done.bytes, done.sha256))
    return shards


def _manifest(
    root: Path,
    plan: SourcePlan,
    cfg: DataConfig,
    shards: list[ShardInfo],
    totals: MapTotals,
    table: RecordTable,
) -> Manifest:
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
        config=cfg.model_dump(mode="json"),
        stats=dataset_stats(table.positive, totals),
        tfpipe_version=__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _publish(tmp: Path, output: Path) -> None:
    """Move the finished build into place; an old output is removed only after the swap."""
    if not output.exists():
        tmp.rename(output)
        return
    old = temp_path(output, "old")
    output.rename(old)
    try:
        tmp.rename(output)
    except BaseException:
        old.rename(output)
        raise
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()
