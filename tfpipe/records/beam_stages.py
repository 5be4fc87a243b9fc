"""The steps of the Beam build that run on workers: map, plan, route, write, manifest.

Each is the local builder's code, run where Beam puts it:

* :class:`MapUnit` runs one work unit with :func:`tfpipe.records.units.run_unit`
  (the slide is read window by window on the worker; its framed records go
  to a spill file on the worker's own disk), then emits every record as
  ``((unit, ordinal), frame)`` and the unit's metadata (no pixels) on the
  ``results`` output.
* :func:`make_plan` (one call, over the metadata of every unit): the local
  builder's blank check, record table, folds, per-fold order and shard plan
  (:mod:`tfpipe.records.stages`). The plan says, for each record, its shard
  and its slot in that shard: arrays, a few bytes per record.
* :func:`route` keys each record by its shard; Beam groups them.
* :class:`WriteShard` writes one shard, records in slot order, with
  :class:`~tfpipe.records.writer.ShardWriter`: the bytes of a local build.
* :func:`write_final_manifest` puts the shards' sizes and checksums into the
  plan's manifest and writes ``manifest.json``.

Everything here imports no TensorFlow; a user error in any step is saved
for the launcher (:mod:`tfpipe.records.beam_reports`).

Example (how :mod:`tfpipe.records.beam` wires them):
    >>> mapped = units | beam.ParDo(MapUnit(settings, facts)).with_outputs(  # doctest: +SKIP
    ...     RESULTS, main="records")
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import apache_beam as beam
import numpy as np

from tfpipe.config import DataConfig
from tfpipe.errors import RecordsError
from tfpipe.records import format as fmt
from tfpipe.records.beam_logging import quiet_worker_stderr
from tfpipe.records.beam_reports import reported, save_warnings
from tfpipe.records.manifest import Manifest, ShardInfo, write_manifest
from tfpipe.records.sources import SourcePlan
from tfpipe.records.stages import (
    assign_record_folds,
    blank_warnings,
    fold_order,
    make_manifest,
    record_table,
)
from tfpipe.records.summary import merge_results
from tfpipe.records.units import MapSettings, UnitResult, WorkUnit, run_unit
from tfpipe.records.writer import ShardWriter

RESULTS = "results"  # MapUnit's second output: one UnitResult per unit


@dataclasses.dataclass
class BuildFacts:
    """What the plan step needs to know about the build besides the units' results."""

    tmp: Path
    cfg: DataConfig
    sources: SourcePlan  # task and class names; items hold only ids (no labels)
    units: int
    progress: bool
    quiet_pid: int = 0
    """The launcher's pid when Beam's worker output is to be quieted (0: verbose)."""

    def quiet(self) -> None:
        """In a worker process (not the launcher's), drop reported tracebacks from stderr."""
        if self.quiet_pid and os.getpid() != self.quiet_pid:
            quiet_worker_stderr()


@dataclasses.dataclass
class Plan:
    """Where every record goes: shard and slot per record row, and the shards' names."""

    unit_start: np.ndarray  # int64: first record row of each unit (by unit index)
    shard: np.ndarray  # int32 per record row: index into names
    slot: np.ndarray  # int32 per record row: position inside its shard
    names: list[str]
    folds: list[int]
    records: list[int]
    manifest: Manifest  # shards filled in by write_final_manifest


class MapUnit(beam.DoFn):
    """Map work units on a worker with the local builder's code; emit records and metadata."""

    def __init__(self, settings: MapSettings, facts: BuildFacts) -> None:
        self.settings, self.facts = settings, facts

    def setup(self) -> None:
        import cv2

        cv2.setNumThreads(1)  # the workers are the parallelism, as in the local pool
        self.facts.quiet()

    def process(self, keyed: tuple[int, Iterable[WorkUnit]]):
        for unit in keyed[1]:
            yield from self._run(unit)

    def _run(self, unit: WorkUnit):
        with (
            reported(self.facts.tmp, f"map-{unit.index:05d}"),
            tempfile.TemporaryDirectory(prefix="tfpipe-unit-") as folder,
        ):
            local = dataclasses.replace(unit, spill=Path(folder) / "unit.bin")
            result = run_unit(local, self.settings)
            with open(local.spill, "rb") as spill:  # records were appended in this order
                for ordinal, record in enumerate(result.records):
                    yield (unit.index, ordinal), spill.read(record[4])
        yield beam.pvalue.TaggedOutput(RESULTS, result)
        if self.facts.progress:
            line = _describe_unit(unit, result, self.facts.units, self.settings.spec.tile_size)
            print(line, file=sys.stderr, flush=True)


def _describe_unit(unit: WorkUnit, result: UnitResult, units: int, tile_size: int) -> str:
    if unit.images:
        what = f"{len(unit.images)} images"
    else:
        what = f"{unit.image_id} rows {unit.ys[0]}-{unit.ys[-1] + tile_size}"
    return (
        f"beam map: unit {unit.index + 1}/{units} ({what}): {result.tiles} tiles, "
        f"{len(result.records)} kept, {result.seconds:.1f} s"
    )


def make_plan(results: list[UnitResult], facts: BuildFacts) -> Plan:
    """The local builder's post-map steps over all units' metadata: folds, orders, shards.

    Raises:
        InputDataError: every slide came out blank (saved for the launcher).
    """
    facts.quiet()
    with reported(facts.tmp, "plan"):
        cfg = facts.cfg
        results = sorted(results, key=lambda r: r.index)
        ids = [item.image_id for item in facts.sources.items]
        totals = merge_results(ids, results)
        save_warnings(facts.tmp, "plan", blank_warnings(totals, results, facts.sources.task, cfg))
        table = record_table(ids, results)
        counts = np.zeros(facts.units, np.int64)
        for r in results:
            counts[r.index] = len(r.records)
        unit_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        record_folds = assign_record_folds(totals, ids, table, cfg.folds)
        shard = np.full(len(table), -1, np.int32)
        slot = np.zeros(len(table), np.int32)
        names: list[str] = []
        folds: list[int] = []
        sizes: list[int] = []
        for fold in range(cfg.folds):
            order, ranges = fold_order(table, record_folds, fold, cfg)
            for i, (lo, hi) in enumerate(ranges):
                shard[order[lo:hi]] = len(names)
                slot[order[lo:hi]] = np.arange(hi - lo)
                names.append(fmt.shard_name(fold, i, len(ranges), cfg.compression))
                folds.append(fold)
                sizes.append(hi - lo)
        manifest = make_manifest(facts.tmp, facts.sources, cfg, [], totals, table)
    if facts.progress:
        print(
            f"beam plan: {len(table)} records of {len(ids)} source(s) -> {cfg.folds} fold(s), "
            f"{len(names)} shard(s)",
            file=sys.stderr,
            flush=True,
        )
    return Plan(unit_start, shard, slot, names, folds, sizes, manifest)


def route(record: tuple[tuple[int, int], bytes], plan: Plan) -> tuple[int, tuple[int, bytes]]:
    """``((unit, ordinal), frame)`` -> ``(shard, (slot, frame))``."""
    (unit, ordinal), frame = record
    row = plan.unit_start[unit] + ordinal
    return int(plan.shard[row]), (int(plan.slot[row]), frame)


class WriteShard(beam.DoFn):
    """Write one shard's records in slot order into the build's temporary folder."""

    def __init__(self, facts: BuildFacts) -> None:
        self.facts = facts

    def setup(self) -> None:
        self.facts.quiet()

    def process(self, grouped: tuple[int, Iterable[tuple[int, bytes]]], plan: Plan):
        index, slotted = grouped
        name = plan.names[index]
        with reported(self.facts.tmp, f"write-{index:05d}"):
            records = sorted(slotted, key=lambda item: item[0])  # one shard: shard_mb at most
            if [s for s, _ in records] != list(range(plan.records[index])):
                raise RecordsError(
                    f"shard {name} got {len(records)} records, its plan says "
                    f"{plan.records[index]}: a Beam runner lost or repeated records"
                )
            with ShardWriter(self.facts.tmp / name, self.facts.cfg.compression) as writer:
                for _, frame in records:
                    writer.write(frame)
            done = writer.close()  # already closed: its result
        yield index, ShardInfo(name, plan.folds[index], done.records, done.bytes, done.sha256)


def write_final_manifest(
    shards: list[tuple[int, ShardInfo]], plan: Plan, facts: BuildFacts
) -> None:
    """Add the written shards (in plan order) to the plan's manifest and write it."""
    facts.quiet()
    with reported(facts.tmp, "manifest"):
        manifest = plan.manifest
        manifest.shards = [info for _, info in sorted(shards, key=lambda item: item[0])]
        if len(manifest.shards) != len(plan.names):
            raise RecordsError(
                f"{len(manifest.shards)} of the {len(plan.names)} planned shards were written: "
                "a Beam runner lost a shard"
            )
        write_manifest(manifest, facts.tmp)
