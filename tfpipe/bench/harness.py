"""``tfpipe bench-input``: measure the input pipeline stage by stage against the model.

:func:`bench_input` runs, on the experiment's records:

1. the cumulative stages (read → parse → decode → augment → batch → prefetch),
   built from the same code as ``tfpipe.data.load`` (:mod:`tfpipe.bench.stages`);
2. the ablation, one optimisation off at a time (:mod:`tfpipe.bench.ablation`);
3. the sweeps (``--sweep KEY=V1,V2``, :mod:`tfpipe.bench.sweep`);
4. the model step, compute only and fed by the pipeline (:mod:`tfpipe.bench.model_step`);
5. with augmentation on, the same step with the augmentation moved into the model
   (the ``tfpipe.data.Augment`` layer on the batch) and fed by the pipeline with
   augmentation off, which then only decodes;

then decides the verdict and advice (:mod:`tfpipe.bench.advice`), prints the
Markdown tables, and writes ``bench.json``, ``bench.md`` and ``stages.png``
into the output folder. :func:`compare_reports` puts two ``bench.json`` side
by side.

Example:
    >>> from tfpipe.config import load_experiment
    >>> exp = load_experiment("experiments/kidney.yaml")
    >>> report = bench_input(exp, sweeps=["input.batch_size=8,32"])   # doctest: +SKIP
    >>> report.verdict.bound                                         # doctest: +SKIP
    'compute-bound'
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tfpipe.bench.advice import decide
from tfpipe.bench.chart import write_chart
from tfpipe.bench.report import BenchReport, write_text_atomic
from tfpipe.bench.sweep import SweepSpec, measure_sweep, parse_sweep
from tfpipe.bench.tables import compare_markdown
from tfpipe.config import BenchConfig, Experiment, format_validation_error
from tfpipe.errors import ConfigError

if TYPE_CHECKING:
    from tfpipe.bench.stages import StagePlan

T = TypeVar("T")


def bench_input(
    exp: Experiment,
    sweeps: Sequence[str] = (),
    out_dir: str | Path | None = None,
    batches: int | None = None,
    repeats: int | None = None,
    *,
    progress: bool = True,
) -> BenchReport:
    """Benchmark the experiment's input pipeline and model step; write and print the report.

    Args:
        exp: The experiment; its records (``data.output``) must exist.
        sweeps: ``KEY=V1,V2,...`` strings (``input.*``, ``data.encoding``, ``data.compression``).
        out_dir: Output folder (default ``<train.runs_dir>/bench-<timestamp>``).
        batches: Batches per timed window (default ``bench.batches``).
        repeats: Timed windows per figure (default ``bench.repeats``).
        progress: Show a live progress display.

    Returns:
        The :class:`BenchReport` (also written as ``bench.json``).

    Raises:
        ConfigError: a bad sweep (checked before any measurement).
        RecordsError: the records folder is missing or incomplete.
    """
    from tfpipe.bench.machine import machine_info
    from tfpipe.bench.stages import StagePlan
    from tfpipe.records.manifest import read_manifest

    started = time.perf_counter()
    cfg = bench_settings(exp.bench, batches, repeats)
    specs = [parse_sweep(s, exp) for s in sweeps]  # bad sweeps fail before any slow work
    plan = StagePlan.from_experiment(exp, read_manifest(exp.data.output))
    out = Path(out_dir) if out_dir else default_out_dir(exp)
    report = BenchReport(
        experiment=exp.name,
        records=str(exp.data.output),
        machine=machine_info(),
        settings={
            **plan.settings(),
            "batches": cfg.batches,
            "repeats": cfg.repeats,
            "warmup": cfg.warmup,
        },
        stages=[],
    )
    measure_everything(report, plan, specs, cfg, progress)
    decide(report)
    report.wall_seconds = time.perf_counter() - started
    write_outputs(report, out)
    print(report.markdown())
    print(f"Wrote {out / 'bench.json'}, {out / 'bench.md'} and {out / 'stages.png'}")
    return report


def measure_everything(
    report: BenchReport,
    plan: StagePlan,
    specs: list[SweepSpec],
    cfg: BenchConfig,
    progress: bool,
) -> None:
    """Fill ``report`` with the stage, ablation, sweep, model and in-model augmentation figures."""
    from tfpipe.bench import ablation, model_step
    from tfpipe.bench.stages import augmenter

    variants = ablation.variants(plan)[1:] if cfg.ablation else []
    in_model = cfg.model_steps > 0 and bool(augmenter(plan).ops)
    pipelines = len(plan.stages) + len(variants) + sum(len(s.values) for s in specs) + in_model
    windows = cfg.repeats * pipelines
    steps = (cfg.model_steps * (2 if model_step.has_gpu() else 1) + cfg.fit_steps) * (1 + in_model)
    timing = {"batches": cfg.batches, "repeats": cfg.repeats, "warmup": cfg.warmup}
    with BenchProgress(windows + (steps if cfg.model_steps else 0), enabled=progress) as bar:
        report.stages = [bar.run(s.name, s.measure, **timing) for s in plan.stages]
        if cfg.ablation:
            # The full pipeline was just timed as the last stage: it is the ablation's base.
            full = dataclasses.replace(report.stages[-1], name="full", note="load() as configured")
            report.ablation = [full] + [bar.run(v.name, v.measure, **timing) for v in variants]
        report.sweeps = [
            bar.run(f"sweep {s.key}", measure_sweep, plan, s, limit=cfg.sweep_records, **timing)
            for s in specs
        ]
        if cfg.model_steps:
            feed = iter(plan.pipeline().repeat()) if cfg.fit_steps else None
            report.model = bar.run(
                "model step",
                model_step.measure_model,
                plan.exp,
                feed,
                plan.input_shape,
                steps=cfg.model_steps,
                warmup=cfg.model_warmup,
                fit_steps=cfg.fit_steps,
                steps_per_epoch=plan.plan.num_records // plan.cfg.batch_size,
            )
        if in_model:
            decode_only = bar.run("augment off", plan.unaugmented().measure, **timing)
            feed = iter(plan.unaugmented().build().repeat()) if cfg.fit_steps else None
            report.augment_in_model = bar.run(
                "model step + Augment",
                model_step.measure_augment_in_model,
                plan,
                feed,
                decode_only,
                steps=cfg.model_steps,
                warmup=cfg.model_warmup,
                fit_steps=cfg.fit_steps,
            )


class BenchProgress:
    """The live progress display (Rich): one bar counts every timed window and model step.

    Its label names the measurement in progress, so a slow stage is visible
    while it runs. Disabled, it still runs the work (tests, ``progress=False``).

    Example:
        >>> with BenchProgress(total=3, enabled=False) as bar:
        ...     bar.run("sum", lambda tick: [tick() for _ in range(3)])
        [None, None, None]
    """

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.progress = Progress(
            TextColumn("[bold]bench-input[/] {task.description:<32}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            disable=not enabled,
        )
        self.task = self.progress.add_task("starting", total=total)

    def __enter__(self) -> BenchProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def tick(self) -> None:
        """One timed window (or model step) finished."""
        self.progress.advance(self.task)

    def run(self, description: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, tick=self.tick, **kwargs)`` with ``description`` on the bar."""
        self.progress.update(self.task, description=description)
        return fn(*args, tick=self.tick, **kwargs)


def bench_settings(bench: BenchConfig, batches: int | None, repeats: int | None) -> BenchConfig:
    """The experiment's ``bench`` section with the command-line values applied (validated)."""
    updates = {k: v for k, v in (("batches", batches), ("repeats", repeats)) if v is not None}
    try:
        return BenchConfig.model_validate({**bench.model_dump(), **updates})
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(err, "the command line (--batches/--repeats)").replace(
                "invalid experiment", "invalid bench settings"
            )
        ) from None


def default_out_dir(exp: Experiment) -> Path:
    return Path(exp.train.runs_dir) / f"bench-{datetime.now():%Y%m%d-%H%M%S}"


def write_outputs(report: BenchReport, out: Path) -> None:
    """``bench.json``, ``bench.md`` and ``stages.png`` into ``out``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    report.save(out / "bench.json")
    write_text_atomic(out / "bench.md", report.markdown())
    write_chart(report, out / "stages.png")


def compare_reports(a: str | Path, b: str | Path, out: str | Path | None = None) -> str:
    """Print two ``bench.json`` side by side (B ÷ A for every shared figure).

    Args:
        a: The first report (``bench.json`` or its folder).
        b: The second report.
        out: Also write the Markdown here.

    Returns:
        The Markdown text.

    Raises:
        ConfigError: a file is missing or is not a bench report.

    Example:
        >>> compare_reports("runs/bench-cpu", "runs/bench-gpu/bench.json")  # doctest: +SKIP
    """
    paths = [Path(p) / "bench.json" if Path(p).is_dir() else Path(p) for p in (a, b)]
    ra, rb = (BenchReport.load(p) for p in paths)
    text = compare_markdown(ra, rb, *(label(p) for p in paths))
    print(text)
    if out is not None:
        write_text_atomic(Path(out), text)
    return text


def label(path: Path) -> str:
    """A short name for a report: its folder for ``bench.json``, else the file stem."""
    return path.parent.name if path.name == "bench.json" and path.parent.name else path.stem
