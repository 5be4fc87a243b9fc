"""Plan the work units and run them on a process pool, with a tiles/s progress bar.

Units are (slide, range of row bands) so a single giant slide is shared by all
workers; ``bands_per_unit`` aims at ~4 units per worker (1..8 bands each) so
the progress bar moves and the last units do not leave workers idle.

Workers are started with the ``forkserver`` method (``spawn`` where there is
none): never a fork of the main process, which may have imported TensorFlow
(its threads make a forked child deadlock). The fork server is a fresh
interpreter that imports the worker modules once (NumPy, OpenCV, tifffile,
zarr: ~1.3 CPU-seconds), and each worker is a cheap fork of it; the server
lives as long as the main process, so later builds start their workers at
once. Workers run OpenCV single-threaded (the pool is the parallelism) and
ignore SIGINT and SIGTERM; Ctrl-C and SIGTERM are handled once, in the main
process, which cancels the queue, waits for running units and lets the caller
remove the temporary folder. A worker also watches the main process (a
thread polls its pid every ``WATCH_SECONDS``) and exits as soon as it is gone:
after a ``kill -9`` of the main process nothing else would stop it, and while
workers live the fork server and the resource tracker live too (each worker
holds their pipes open). With ``workers=1`` the units run in the main process
(no pool).

Example:
    >>> bands_per_unit(total_bands=40, workers=2)
    5
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import psutil
from tqdm import tqdm

from tfpipe.config import DataConfig
from tfpipe.records.sampling import grid_rows, region_weights
from tfpipe.records.sources import SourceItem, SourcePlan
from tfpipe.records.tiling import TileSpec, TissueRule
from tfpipe.records.units import MapSettings, UnitResult, WorkUnit, run_unit, unit_rows

IMAGES_PER_UNIT = 64  # classification images per unit
WINDOWS_PER_UNIT = 32  # object-centred tiles per unit (each read as its own window)
# Imported once by the fork server, inherited by every worker it forks.
WORKER_MODULES = ("tfpipe.records.units", "tifffile", "zarr", "psutil")
WATCH_SECONDS = 0.5  # how often a worker checks that the main process is still alive


def default_workers() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def bands_per_unit(total_bands: int, workers: int) -> int:
    """Row bands per work unit: about four units per worker, 1 to 8 bands each."""
    return max(1, min(8, round(total_bands / (4 * workers))))


def map_settings(cfg: DataConfig) -> MapSettings:
    """The per-build settings every worker receives."""
    return MapSettings(
        spec=TileSpec.from_config(cfg),
        filter=TissueRule.from_config(cfg.filter),
        keep_empty_fraction=cfg.keep_empty_fraction,
        seed=cfg.seed,
        encoding=cfg.encoding,
        jpeg_quality=cfg.jpeg_quality,
        level=cfg.level,
        float_range=None if cfg.float_range == "auto" else tuple(cfg.float_range),
        region_weights=region_weights(cfg.sampling.anatomy),
    )


def plan_units(plan: SourcePlan, spec: TileSpec, spill_dir: Path, workers: int) -> list[WorkUnit]:
    """Cut the sources into work units, each with its own spill file in ``spill_dir``.

    Args:
        plan: Validated sources.
        spec: Tile geometry.
        spill_dir: Folder for the spill files (inside the build's temp folder).
        workers: Worker processes (sets the unit size).
    """
    if plan.task == "classification":
        chunks = [
            plan.items[i : i + IMAGES_PER_UNIT] for i in range(0, len(plan.items), IMAGES_PER_UNIT)
        ]
        return [
            WorkUnit(
                index=i,
                spill=spill_dir / f"unit-{i:05d}.bin",
                images=[(it.image_id, it.path, it.classes or ()) for it in chunk],
                tiles=len(chunk),
            )
            for i, chunk in enumerate(chunks)
        ]
    # One grid per offset: the grid (0) and the half-tile shifted grid (data.sampling).
    rows = {
        (it.image_id, offset): grid_rows(it.height, offset, spec)
        for it in plan.items
        for offset in plan.grid_offsets
    }
    per_unit = bands_per_unit(sum(len(r) for r in rows.values()), workers)
    units: list[WorkUnit] = []
    for item in plan.items:
        for offset in plan.grid_offsets:
            ys = rows[item.image_id, offset]
            columns = len(grid_rows(item.width, offset, spec))
            for lo, hi in unit_rows(len(ys) if columns else 0, per_unit):
                span = (ys[lo], ys[hi - 1] + spec.tile_size)
                tiles = (hi - lo) * columns
                units.append(
                    _slide_unit(
                        item, len(units), spill_dir, span, tiles=tiles, ys=ys[lo:hi], offset=offset
                    )
                )
        # Object-centred tiles, sorted by y: each unit reads its windows one by one.
        for lo in range(0, len(item.windows), WINDOWS_PER_UNIT):
            chunk = item.windows[lo : lo + WINDOWS_PER_UNIT]
            span = (chunk[0][0], chunk[-1][0] + spec.tile_size)
            units.append(
                _slide_unit(item, len(units), spill_dir, span, tiles=len(chunk), windows=chunk)
            )
    return units


def _slide_unit(
    item: SourceItem, index: int, spill_dir: Path, rows: tuple[int, int], **fields: Any
) -> WorkUnit:
    """A unit of ``item`` carrying the labels and regions of source ``rows`` only."""
    return WorkUnit(
        index=index,
        spill=spill_dir / f"unit-{index:05d}.bin",
        image_id=item.image_id,
        path=item.path,
        width=item.width,
        labels=item.labels.select_rows(*rows),
        regions=None if item.regions is None else item.regions.select_rows(*rows),
        value_range=item.value_range,
        **fields,
    )


class WorkerPool:
    """The map stage's workers: a process pool when ``workers > 1``, else this process.

    Create it early: a background thread starts the worker processes right
    away (starting one blocks until the fork server has imported the worker
    modules), so their start-up overlaps source discovery in the main process.

    Example:
        >>> with WorkerPool(1) as pool:
        ...     pool.map([], settings=None, progress=False)
        []
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._starter: threading.Thread | None = None
        if workers > 1:
            self._pool = ProcessPoolExecutor(
                workers, mp_context=_context(), initializer=_init_worker, initargs=(os.getpid(),)
            )
            self._starter = threading.Thread(target=self._start_workers, daemon=True)
            self._starter.start()

    def _start_workers(self) -> None:
        assert self._pool is not None
        for _ in range(self.workers):  # each submit starts one process
            self._pool.submit(_ready)

    def _wait_started(self) -> None:
        if self._starter is not None:
            self._starter.join()
            self._starter = None

    def map(
        self, units: list[WorkUnit], settings: MapSettings, progress: bool = True
    ) -> list[UnitResult]:
        """Run every unit; results in unit order.

        Raises:
            The first exception a unit raised (e.g. ``InputDataError`` for a
            corrupt strip), after the remaining units were cancelled.
        """
        bar = tqdm(
            total=sum(u.tiles for u in units),
            unit="tile",
            desc="map: read/tile/encode",
            disable=not progress,
            smoothing=0.1,
        )
        results: list[UnitResult] = []
        self._wait_started()
        with bar:
            if self._pool is None:
                for unit in units:
                    results.append(run_unit(unit, settings))
                    bar.update(unit.tiles)
            else:
                results = _run_on(self._pool, units, settings, bar)
        return sorted(results, key=lambda r: r.index)

    def close(self) -> None:
        """Cancel queued units and wait for running ones (they may still be writing spills)."""
        self._wait_started()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run_on(
    pool: ProcessPoolExecutor, units: list[WorkUnit], settings: MapSettings, bar: tqdm
) -> list[UnitResult]:
    results: list[UnitResult] = []
    pending: set[Future] = {pool.submit(run_unit, unit, settings) for unit in units}
    while pending:
        done, pending = wait(pending, return_when=FIRST_EXCEPTION)
        for future in done:
            result = future.result()  # re-raises a worker's exception here
            results.append(result)
            bar.update(result.tiles)
    return results


def _ready() -> None:
    """Warm-up task: returning proves the worker has started."""


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WORKER_MODULES))
    return context


def _init_worker(main_pid: int) -> None:
    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cv2.setNumThreads(1)
    threading.Thread(target=_exit_with, args=(main_pid,), daemon=True).start()


def _exit_with(main_pid: int) -> None:
    """Poll the main process; exit this worker at once when it is gone (e.g. ``kill -9``)."""
    try:
        main = psutil.Process(main_pid)
        while main.is_running() and main.status() != psutil.STATUS_ZOMBIE:
            time.sleep(WATCH_SECONDS)
    except psutil.NoSuchProcess:
        pass
    # Its build is lost: the unit's spill goes with the temp folder the next build removes.
    os._exit(1)
