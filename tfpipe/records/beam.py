"""``build-records --runner beam``: the build as an Apache Beam pipeline; same shards as local.

The launching process does what the local builder's main process does
before and after the map: it takes the output's lock, finds and validates
the sources (:func:`~tfpipe.records.sources.discover_sources`, same errors),
cuts the work units, builds into ``<output>.tmp-<pid>`` and publishes it with
the same atomic rename (:func:`~tfpipe.records.build.building`). In between,
one Beam pipeline does the work (steps in :mod:`tfpipe.records.beam_stages`)::

    Create(units) -> GroupByKey (spread) -> ParDo(map) --records--> Map(route) -> GroupByKey
                                                |                          ^              |
                                             results -> ToList -> Map(plan) (side input)  |
                                                                           |              v
                                                  Map(manifest) <- ToList <- ParDo(write shard)

Why the same bytes: the map step is the local workers' code, and the plan
is the local builder's fold assignment, seeded order and shard plan, run
over the same unit results in unit order. Units are cut for the same
worker count (``direct_num_workers`` = ``data.workers``), so even the
floating-point sums of the pixel statistics add up in the same order.
The manifest differs in ``created``, ``timings``, ``sources[*].seconds``
and ``config.runner`` only.

Where it runs (:mod:`tfpipe.records.beam_options`): the DirectRunner in
``multi_processing`` mode with ``data.workers`` (default: the cores) worker
processes, unless ``--beam-option`` says otherwise; options pass through
unchanged, so ``runner=DataflowRunner`` (or Flink, Spark) runs the same
pipeline on a cluster. There the workers need tfpipe installed, and the
slides, ``data.output`` and its parent must be one shared file system
(the same paths on every worker): workers read the slides and write the
shards and their reports there.

A worker's user error (a truncated slide) fails the job, and the launcher
raises it again with the local build's one-line message
(:mod:`tfpipe.records.beam_reports`); nothing is published.

Example:
    >>> cfg = load_experiment("experiments/kidney.yaml").data  # doctest: +SKIP
    >>> cfg.runner = "beam"                                     # doctest: +SKIP
    >>> build_records(cfg, beam_options=["direct_num_workers=2"])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tfpipe.config import DataConfig
from tfpipe.errors import RecordsError
from tfpipe.records.beam_logging import BEAM_LOGGER, quiet_beam
from tfpipe.records.build import building
from tfpipe.records.diskspace import SpaceBudget
from tfpipe.records.manifest import Manifest, read_manifest, write_manifest
from tfpipe.records.sources import SourceItem, SourcePlan, discover_sources
from tfpipe.records.stages import check_folds
from tfpipe.records.units import MapSettings, WorkUnit
from tfpipe.records.workers import map_settings, plan_units

if TYPE_CHECKING:  # apache_beam is imported inside quiet_beam() (see beam_logging)
    from apache_beam.options.pipeline_options import PipelineOptions

    from tfpipe.records.beam_stages import BuildFacts

# Placeholder folder in the units: a worker spills each unit into a temp folder of its own.
SPILL_ON_WORKER = Path("spill-on-worker")


def build_on_beam(
    output: Path,
    cfg: DataConfig,
    space: SpaceBudget,
    progress: bool,
    start: float,
    items: Sequence[str] = (),
) -> Manifest:
    """Build ``output`` with a Beam pipeline (:func:`~tfpipe.records.build.build_records` calls it).

    Args:
        output: The records folder (its lock is held by the caller).
        cfg: The ``data`` section.
        space: Free space next to the output (an up-front estimate warns).
        progress: Print what the pipeline does, and Beam's runner in use.
        start: When the build started (``time.perf_counter``), for the timings.
        items: ``--beam-option`` values, ``KEY=VALUE``.

    Returns:
        The manifest written into the temporary folder before it was published.

    Raises:
        InputDataError: a source is bad (found up front, or by a worker).
        ConfigError: a bad ``--beam-option``, or more folds than images.
        RecordsError: the Beam job failed for a reason other than the data.
    """
    with quiet_beam():
        from tfpipe.records.beam_options import describe, pipeline_options, planned_workers

        options = pipeline_options(cfg, items)
        plan = discover_sources(cfg)
        discovered = time.perf_counter()
        check_folds(plan, cfg)
        space.estimate(plan, cfg)
        workers = planned_workers(options, cfg)
        settings = map_settings(cfg)
        units = plan_units(plan, settings.spec, SPILL_ON_WORKER, workers)
        with building(output) as tmp:
            if progress:
                print(
                    f"beam: {len(units)} work unit(s) of {len(plan.items)} source(s) on "
                    f"{describe(options)}",
                    file=sys.stderr,
                    flush=True,
                )
            _run(units, settings, _facts(tmp, cfg, plan, len(units), progress), options)
            ran = time.perf_counter()
            timings = {"sources": discovered - start, "pipeline": ran - discovered}
            manifest = _finish(tmp, workers, timings | {"total": ran - start})
    return manifest


def _facts(tmp: Path, cfg: DataConfig, plan: SourcePlan, units: int, progress: bool) -> BuildFacts:
    from tfpipe.records.beam_stages import BuildFacts

    # Ids, task and class names are all the plan step needs: the labels stay behind.
    light = SourcePlan(
        plan.task, [SourceItem(it.image_id, it.path) for it in plan.items], plan.class_names
    )
    verbose = logging.getLogger(BEAM_LOGGER).getEffectiveLevel() <= logging.INFO
    return BuildFacts(tmp, cfg, light, units, progress, 0 if verbose else os.getpid())


def _run(
    units: list[WorkUnit], settings: MapSettings, facts: BuildFacts, options: PipelineOptions
) -> None:
    """Build and run the pipeline; a worker's saved error is raised again here."""
    import apache_beam as beam
    from apache_beam.runners.runner import PipelineState

    from tfpipe.records import beam_stages as st
    from tfpipe.records.beam_reports import raise_reported

    p = beam.Pipeline(options=options)
    mapped = (
        p
        | "units" >> beam.Create([(u.index, u) for u in units])
        | "spread" >> beam.GroupByKey()  # the runner splits grouped input among its workers
        | "map" >> beam.ParDo(st.MapUnit(settings, facts)).with_outputs(st.RESULTS, main="records")
    )
    plan = beam.pvalue.AsSingleton(
        mapped[st.RESULTS]
        | "collect" >> beam.combiners.ToList()
        | "plan" >> beam.Map(st.make_plan, facts)
    )
    _ = (
        mapped.records
        | "route" >> beam.Map(st.route, plan)
        | "group" >> beam.GroupByKey()
        | "write" >> beam.ParDo(st.WriteShard(facts), plan)
        | "shards" >> beam.combiners.ToList()
        | "manifest" >> beam.Map(st.write_final_manifest, plan, facts)
    )
    try:
        result = p.run()
        state = result.wait_until_finish()
    except Exception:
        raise_reported(facts.tmp)  # the worker's own error, if it saved one
        raise
    if state != PipelineState.DONE:
        raise_reported(facts.tmp)
        raise RecordsError(f"the Beam job building {facts.tmp} ended in state {state}")


def _finish(tmp: Path, workers: int, times: dict[str, float]) -> Manifest:
    """Issue the workers' warnings, add timings and worker count to the manifest, clean up."""
    from tfpipe.records.beam_reports import reported_warnings, reports_dir

    for message in reported_warnings(tmp):
        warnings.warn(message, stacklevel=4)
    shutil.rmtree(reports_dir(tmp), ignore_errors=True)
    manifest = read_manifest(tmp)
    manifest.timings = {name: round(value, 3) for name, value in times.items()}
    manifest.config["workers"] = workers
    write_manifest(manifest, tmp)
    return manifest
