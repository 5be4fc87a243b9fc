"""What ``tfpipe bench-input`` found: the report dataclasses and ``bench.json``.

A :class:`BenchReport` holds every figure (stage, ablation and sweep
measurements, model step times, augmentation in the pipeline against in the
model, the verdict) plus the machine it ran on, and
round-trips through ``bench.json`` so that ``--compare`` can put two runs side
by side; :mod:`tfpipe.bench.tables` writes it as Markdown.

Example:
    >>> from tfpipe.bench.report import BenchReport
    >>> report = BenchReport.load("runs/bench-20250101-120000/bench.json")  # doctest: +SKIP
    >>> print(report.markdown())                                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from tfpipe.bench.measure import Measurement

T = TypeVar("T")


@dataclass
class ModelTiming:
    """Model step times: pure compute on in-memory batches, and a real loop on the pipeline."""

    model: str
    device: str
    batch_size: int
    input_shape: list[int]
    compute: Measurement
    """Float32 (or the experiment's default precision) training step, no input."""
    compute_mixed: Measurement | None = None
    """The same step under mixed_float16 (GPU only)."""
    end_to_end: Measurement | None = None
    """Training steps fed by the real pipeline."""
    end_to_end_precision: str = "float32"

    @property
    def best_compute(self) -> Measurement:
        """The compute step a run would use (mixed precision when measured and faster)."""
        if self.compute_mixed is not None and self.compute_mixed.median > self.compute.median:
            return self.compute_mixed
        return self.compute

    @property
    def step_ms(self) -> float:
        """Median compute step in milliseconds (precision the end-to-end run used)."""
        m = self.compute_mixed if self.end_to_end_precision == "mixed_float16" else self.compute
        return step_ms(m or self.compute, self.batch_size)

    @property
    def end_to_end_ms(self) -> float:
        return step_ms(self.end_to_end, self.batch_size) if self.end_to_end else float("nan")

    @property
    def stall_ms(self) -> float:
        """Time per step the model waits for input: end-to-end step − compute step (≥ 0)."""
        return max(0.0, self.end_to_end_ms - self.step_ms) if self.end_to_end else float("nan")

    def to_json(self) -> dict[str, Any]:
        d = fields_to_json(self)
        d.update(step_ms=self.step_ms, end_to_end_ms=self.end_to_end_ms, stall_ms=self.stall_ms)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelTiming:
        return fields_from_json(cls, d, ("compute", "compute_mixed", "end_to_end"))


@dataclass
class AugmentPlacement:
    """Augmentation in the model step (``tfpipe.data.Augment``) instead of the tf.data pipeline.

    The other side, augmentation on the CPU in the pipeline, is the report's
    pipeline figure and model timing.
    """

    ops: list[str]
    pipeline: Measurement
    """``load()``'s pipeline with augmentation off: it only decodes."""
    compute: Measurement
    """Training step with the ``Augment`` layer applied to the batch, no input."""
    end_to_end: Measurement | None = None
    """That step fed by the decode-only pipeline."""

    def to_json(self) -> dict[str, Any]:
        return fields_to_json(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AugmentPlacement:
        return fields_from_json(cls, d, ("pipeline", "compute", "end_to_end"))


@dataclass
class SweepResult:
    """One ``--sweep KEY=V1,V2`` run: the full pipeline measured for each value."""

    key: str
    current: Any
    values: list[Any]
    measurements: list[Measurement]

    @property
    def baseline(self) -> Measurement | None:
        """The measurement of the current value."""
        pairs = zip(self.values, self.measurements, strict=True)
        return next((m for v, m in pairs if v == self.current), None)

    @property
    def best(self) -> Any:
        i = max(range(len(self.values)), key=lambda j: self.measurements[j].median)
        return self.values[i]

    def to_json(self) -> dict[str, Any]:
        return {**fields_to_json(self), "best": self.best}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SweepResult:
        ms = [Measurement.from_json(m) for m in d["measurements"]]
        return cls(d["key"], d.get("current"), d["values"], ms)


@dataclass
class Advice:
    """One piece of advice and the rule that produced it."""

    rule: str
    message: str


@dataclass
class Verdict:
    bound: str
    """``input-bound``, ``compute-bound`` or ``unknown`` (no model timing)."""
    headroom: float
    """Pipeline images/s ÷ model images/s (> 1: the input keeps up)."""
    pipeline_images_per_s: float
    model_images_per_s: float
    advice: list[Advice] = field(default_factory=list)


@dataclass
class BenchReport:
    """Every figure of one ``tfpipe bench-input`` run."""

    experiment: str
    records: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    """Batch size, tile shape, encoding, shards, records, parallel reads, RAM figures."""
    stages: list[Measurement]
    ablation: list[Measurement] = field(default_factory=list)
    model: ModelTiming | None = None
    sweeps: list[SweepResult] = field(default_factory=list)
    augment_in_model: AugmentPlacement | None = None
    verdict: Verdict | None = None
    wall_seconds: float = 0.0

    @property
    def pipeline(self) -> Measurement:
        """The last cumulative stage: the pipeline ``tfpipe.data.load`` returns."""
        return self.stages[-1]

    def to_json(self) -> dict[str, Any]:
        return fields_to_json(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BenchReport:
        def optional(key: str, kind: Any) -> Any:
            return kind.from_json(d[key]) if d.get(key) else None

        verdict = None
        if d.get("verdict"):
            advice = [Advice(**a) for a in d["verdict"].get("advice", [])]
            verdict = Verdict(**{**d["verdict"], "advice": advice})
        plain = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        return cls(
            **{
                **plain,
                "stages": [Measurement.from_json(m) for m in d["stages"]],
                "ablation": [Measurement.from_json(m) for m in d.get("ablation", [])],
                "model": optional("model", ModelTiming),
                "sweeps": [SweepResult.from_json(s) for s in d.get("sweeps", [])],
                "augment_in_model": optional("augment_in_model", AugmentPlacement),
                "verdict": verdict,
            }
        )

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON, atomically (temp file + rename)."""
        return write_text_atomic(Path(path), json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> BenchReport:
        """Read a ``bench.json``; a missing or malformed file is a ConfigError naming it."""
        from tfpipe.errors import ConfigError

        path = Path(path)
        try:
            return cls.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"bench report not found: {path}") from None
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConfigError(f"{path} is not a tfpipe bench.json: {err}") from None

    def markdown(self) -> str:
        """All tables as Markdown (stages, ablation, sweeps, model, augmentation, verdict)."""
        from tfpipe.bench.tables import report_markdown

        return report_markdown(self)


def fields_to_json(obj: Any) -> dict[str, Any]:
    """A report dataclass's fields as JSON (:func:`to_json` on each)."""
    return {f.name: to_json(getattr(obj, f.name)) for f in fields(obj)}


def to_json(value: Any) -> Any:
    """A value's own ``to_json()`` where it has one; lists item by item; dataclasses as dicts."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return asdict(value) if is_dataclass(value) else value


def fields_from_json(cls: type[T], d: dict[str, Any], measurements: tuple[str, ...]) -> T:
    """The inverse of :func:`fields_to_json`; ``measurements`` names the Measurement fields."""
    kwargs = {f.name: d[f.name] for f in fields(cls) if f.name in d}  # type: ignore[arg-type]
    for key in measurements:
        kwargs[key] = Measurement.from_json(d[key]) if d.get(key) else None
    return cls(**kwargs)


def step_ms(m: Measurement | None, batch_size: int) -> float:
    """Median milliseconds per step of a measurement whose windows are training steps."""
    if m is None or m.median <= 0:
        return float("nan")
    return 1000.0 * batch_size / m.median


def stage_shares(stages: list[Measurement]) -> dict[str, float]:
    """Fraction of the per-image time each cumulative stage adds.

    Stage k costs ``1/rate_k - 1/rate_(k-1)`` seconds per image (clipped at 0:
    a stage such as prefetch can make the pipeline faster); shares sum to 1.
    """
    costs, previous = {}, 0.0
    for m in stages:
        per_image = 1.0 / m.median if m.median > 0 else 0.0
        costs[m.name] = max(0.0, per_image - previous)
        previous = per_image
    total = sum(costs.values())
    return {k: (v / total if total else 0.0) for k, v in costs.items()}


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)
    return path
