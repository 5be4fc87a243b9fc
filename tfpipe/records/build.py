"""``tfpipe build-records``: source images -> sharded, shuffled TFRecords + manifest.json.

Shaped like a Beam pipeline; ``data.runner: beam`` (``--runner beam``) runs the
same stages on Apache Beam (:mod:`tfpipe.records.beam`), writing the same shards.
The local runner:

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
and seed give identical shard bytes, whatever the worker count or runner
(only the manifest's times, and ``config.runner``, differ). Both runners share
:func:`building` (the temp folder and the publish) and the stages after the
map (:mod:`tfpipe.records.stages`).

Example:
    >>> from tfpipe.config import load_experiment
    >>> exp = load_experiment("experiments/kidney.yaml")     # doctest: +SKIP
    >>> manifest = build_records(exp.data, overwrite=True)   # doctest: +SKIP
    >>> manifest.num_records                                 # doctest: +SKIP
    1234
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tfpipe.config import DataConfig
from tfpipe.errors import ConfigError, RecordsError, require_extra
from tfpipe.records import format as fmt
from tfpipe.records.diskspace import SpaceBudget, is_disk_full
from tfpipe.records.lifecycle import (
    output_lock,
    remove_stale_temps,
    temp_path,
    terminate_as_interrupt,
)
from tfpipe.records.manifest import Manifest, ShardInfo, write_manifest
from tfpipe.records.shuffle import RecordTable, read_in_order
from tfpipe.records.sources import SourcePlan, discover_sources
from tfpipe.records.stages import (
    assign_record_folds,
    check_blank,
    check_folds,
    fold_order,
    make_manifest,
    record_table,
)
from tfpipe.records.summary import merge_results, print_summary
from tfpipe.records.workers import WorkerPool, default_workers, map_settings, plan_units
from tfpipe.records.writer import ShardWriter


def build_records(
    cfg: DataConfig,
    overwrite: bool = False,
    progress: bool = True,
    wait_lock: bool = False,
    beam_options: Sequence[str] = (),
) -> Manifest:
    """Build the records folder ``cfg.output`` from the sources in ``cfg``.

    Args:
        cfg: The ``data`` section of an experiment; ``cfg.runner`` picks the
            local worker pool or Apache Beam.
        overwrite: Replace an existing ``cfg.output`` (after the new build succeeded).
        progress: Show progress bars and print the summary table.
        wait_lock: When another build holds ``<output>.lock``, wait for it
            instead of raising :class:`~tfpipe.records.lifecycle.OutputLockedError`.
        beam_options: ``runner: beam`` only: Beam pipeline options as
            ``KEY=VALUE`` (``--beam-option``), passed to the runner unchanged.

    Returns:
        The written :class:`~tfpipe.records.manifest.Manifest` (``root`` = output).

    Raises:
        RecordsError: the output exists and ``overwrite`` is False, or another
            build holds its lock (``OutputLockedError``).
        InputDataError: a source is missing, unreadable or inconsistent, or
            every slide came out blank.
        ConfigError: fewer source images than folds, or a missing setting.
        DiskFullError: the disk under the output filled up (or would have).
        MissingExtraError: ``runner: beam`` without the ``[beam]`` extra.
        Terminated: SIGTERM arrived (a ``KeyboardInterrupt``, like Ctrl-C);
            the temporary folder was removed.

    Example:
        >>> m = build_records(DataConfig(source="unlabelled", images="slides",
        ...                              output="records/x", folds=1))  # doctest: +SKIP
    """
    start = time.perf_counter()
    output = Path(cfg.output)
    if cfg.runner == "beam":
        require_extra("beam", "data.runner: beam (--runner beam)")
    elif beam_options:
        raise ConfigError(
            f"--beam-option needs data.runner: beam (--runner beam); got runner={cfg.runner!r} "
            f"with beam options {list(beam_options)}"
        )
    with terminate_as_interrupt(), output_lock(output, wait=wait_lock, progress=progress):
        remove_stale_temps(output, progress)
        if output.exists() and not overwrite:
            raise RecordsError(
                f"output folder {output} already exists (data.output); pass --overwrite "
                f"(overwrite=True) to replace it once the new build succeeds"
            )
        space = SpaceBudget.measure(output)
        try:
            if cfg.runner == "beam":
                from tfpipe.records.beam import build_on_beam

                manifest = build_on_beam(output, cfg, space, progress, start, beam_options)
            else:
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
        check_folds(plan, cfg)
        space.estimate(plan, cfg)
        # Running units must stop writing before the folder goes.
        with building(output, before_cleanup=pool.close) as tmp:
            (tmp / "spill").mkdir()
            manifest = _build_into(tmp, plan, cfg, pool, space, progress, (start, discovered))
    return manifest


@contextlib.contextmanager
def building(output: Path, before_cleanup: Callable[[], None] | None = None) -> Iterator[Path]:
    """A fresh ``<output>.tmp-<pid>`` to build into, published when the block succeeds.

    On any exception (also Ctrl-C and SIGTERM) ``before_cleanup`` runs (e.g.
    stop the workers that write into the folder), the folder is removed and
    the exception goes on; the old output, if any, is untouched.

    Example:
        >>> with building(Path("records/kidney")) as tmp:  # doctest: +SKIP
        ...     write_manifest(manifest, tmp)
    """
    tmp = temp_path(output)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        _publish(tmp, output)
    except BaseException:
        if before_cleanup is not None:
            before_cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
    record_folds = assign_record_folds(totals, ids, table, cfg.folds)
    shards = write_folds(tmp, table, record_folds, [u.spill for u in units], cfg, progress)
    shutil.rmtree(tmp / "spill")
    written = time.perf_counter()

    manifest = make_manifest(tmp, plan, cfg, shards, totals, table)
    manifest.timings = {
        "sources": round(times[1] - times[0], 3),
        "map": round(mapped - times[1], 3),
        "shuffle_write": round(written - mapped, 3),
        "total": round(written - times[0], 3),
    }
    manifest.config["workers"] = pool.workers
    write_manifest(manifest, tmp)
    return manifest


def write_folds(
    root: Path,
    table: RecordTable,
    record_folds: np.ndarray,
    spills: list[Path],
    cfg: DataConfig,
    progress: bool = True,
) -> list[ShardInfo]:
    """Shuffle each fold's records and write them as shards into ``root``.

    Orders and shard ranges come from :func:`~tfpipe.records.stages.fold_order`.
    """
    budget = int(cfg.shuffle_memory_mb * (1 << 20))
    shards: list[ShardInfo] = []
    bar = tqdm(total=len(table), unit="rec", desc="shuffle/write", disable=not progress)
    with bar:
        for fold in range(cfg.folds):
            order, ranges = fold_order(table, record_folds, fold, cfg)
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
