"""``--sweep KEY=V1,V2,...``: measure the full pipeline for each value of one setting.

Two kinds of keys are supported:

* ``input.*`` (any field of the ``input`` section, nested ones included, e.g.
  ``input.batch_size=32,64,128`` or ``input.augment.hue=0,0.02``): the pipeline
  is rebuilt by ``tfpipe.data.load`` with the changed setting on the same records.
* ``data.encoding`` / ``data.compression``: these change the records themselves.
  The bench re-encodes a subset of the *existing* records (decode, encode with
  each value, write a few shards into a temporary folder) rather than running
  ``build-records`` again from the slides: the source slides need not be present,
  it takes seconds, and every value is measured on exactly the same tiles, so the
  comparison isolates the codec (see :mod:`tfpipe.bench.reencode`).

The current value is always measured too, so every figure has a baseline.

Example:
    >>> from tfpipe.config import load_experiment
    >>> exp = load_experiment(None)
    >>> spec = parse_sweep("input.batch_size=32,64", exp)
    >>> spec.values, spec.current
    ([16, 32, 64], 16)
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tfpipe.bench.measure import MB
from tfpipe.bench.report import SweepResult
from tfpipe.bench.stages import Stage, StagePlan
from tfpipe.config import Experiment, apply_override, format_validation_error
from tfpipe.errors import ConfigError

RECORD_KEYS = ("data.encoding", "data.compression")


@dataclass
class SweepSpec:
    """A parsed ``--sweep``: the dotted key, the values to measure and the current value."""

    key: str
    values: list[Any]
    current: Any

    @property
    def changes_records(self) -> bool:
        return self.key in RECORD_KEYS


def parse_sweep(text: str, exp: Experiment) -> SweepSpec:
    """Parse and validate ``KEY=V1,V2,...`` against the experiment's schema.

    Raises:
        ConfigError: no ``=``, an unknown key, a key the bench cannot sweep, no
            values, or a value the schema rejects (the message names it).
    """
    if "=" not in text:
        raise ConfigError(
            f"--sweep expects KEY=V1,V2,... (e.g. input.batch_size=32,64); got {text!r}"
        )
    key, _, raw_values = (s.strip() for s in text.partition("="))
    check_key(key)
    items = [v.strip() for v in raw_values.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"--sweep {key} has no values; got {text!r}")
    current = current_value(exp, key)
    values = [] if current in (parsed := [parse_value(v) for v in items]) else [current]
    for value in parsed:
        with_setting(exp, key, value)  # validates; raises ConfigError naming the value
        if value not in values:
            values.append(value)
    return SweepSpec(key, values, current)


def check_key(key: str) -> None:
    """Reject keys that are not settings, or settings the bench cannot sweep."""
    parts = key.split(".")
    node: type[BaseModel] = Experiment
    for i, part in enumerate(parts):
        fields = node.model_fields
        if part not in fields or part == "source_path":
            where = ".".join(parts[:i]) or "the experiment"
            raise ConfigError(
                f"unknown --sweep key {key!r}: {part!r} is not a setting of "
                f"{where} (known: {', '.join(sorted(fields))})"
            )
        annotation = fields[part].annotation
        if i < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                raise ConfigError(
                    f"unknown --sweep key {key!r}: {part!r} is a value, not a section"
                )
            node = annotation
    if not (key.startswith("input.") or key in RECORD_KEYS):
        raise ConfigError(
            f"--sweep supports input.* keys and {', '.join(RECORD_KEYS)} (the "
            f"settings that change input throughput); got {key!r}"
        )


def parse_value(text: str) -> Any:
    """A sweep value as YAML reads it (``64`` → int, ``true`` → bool, ``png`` → str)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def current_value(exp: Experiment, key: str) -> Any:
    """The value the pipeline uses now (``train.batch_size`` wins over ``input.batch_size``)."""
    if key == "input.batch_size" and exp.train.batch_size is not None:
        return exp.train.batch_size
    node: Any = exp.to_dict()
    for part in key.split("."):
        node = node[part]
    return node


def with_setting(exp: Experiment, key: str, value: Any) -> Experiment:
    """A copy of ``exp`` with ``key`` set to ``value``, validated by the schema."""
    raw = exp.to_dict()
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    apply_override(raw, f"{key}={text}")
    if key == "input.batch_size" and exp.train.batch_size is not None:
        # train.batch_size overrides input.batch_size: set both, or the sweep changes nothing
        apply_override(raw, f"train.batch_size={text}")
    try:
        new = Experiment.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(
            f"bad value {value!r} for --sweep {key}: "
            + format_validation_error(err, "--sweep").split("\n  ", 1)[-1]
        ) from None
    new.source_path = exp.source_path
    return new


def measure_sweep(
    sp: StagePlan,
    spec: SweepSpec,
    *,
    limit: int,
    batches: int,
    repeats: int,
    warmup: int,
    tick: Callable[[], None] | None = None,
) -> SweepResult:
    """Measure ``load()``'s pipeline once per value of ``spec``.

    Args:
        sp: The experiment's plan (records, input settings).
        spec: The parsed sweep.
        limit: Records re-encoded per value for ``data.*`` keys.
        batches: Batches per timed window.
        repeats: Timed windows per value.
        warmup: Warm-up batches per value.
        tick: Called after each timed window.

    Returns:
        The :class:`SweepResult`, one measurement per value.
    """
    from tfpipe.bench.reencode import reencode_subset
    from tfpipe.records.manifest import read_manifest

    measurements = []
    with tempfile.TemporaryDirectory(prefix="tfpipe-sweep-") as tmp:
        for i, value in enumerate(spec.values):
            variant = with_setting(sp.exp, spec.key, value)
            manifest = sp.manifest
            if spec.changes_records:
                out = reencode_subset(
                    sp.manifest,
                    variant.data.encoding,
                    variant.data.compression,
                    Path(tmp) / str(i),
                    limit=limit,
                )
                manifest = read_manifest(out)
            vp = StagePlan.from_experiment(variant, manifest)
            note = (
                f"{vp.plan.num_records} re-encoded records, "
                f"{sum(vp.plan.shards.sizes) / MB:,.1f} MB on disk"
                if spec.changes_records
                else ""
            )
            stage = Stage(
                f"{spec.key}={value}",
                vp.pipeline,
                True,
                vp.output_bytes,
                note,
                extra={"dataset_mb": sum(vp.plan.shards.sizes) / MB},
            )
            measurements.append(
                stage.measure(batches=batches, repeats=repeats, warmup=warmup, tick=tick)
            )
    return SweepResult(spec.key, spec.current, spec.values, measurements)
