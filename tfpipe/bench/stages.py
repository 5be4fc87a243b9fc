"""The cumulative stages of the training pipeline, built from ``tfpipe.data``'s own pieces.

``tfpipe.data.load`` runs, for training::

    read_shards ─▶ shuffle_blocks ─▶ batch (+ seeds) ─▶ parse_batch ─▶ unbatch
      ─▶ map(decode_element, Finisher: augmentation; parallel) ─▶ batch ─▶ prefetch

The bench times the prefix of that chain after each step:

======== ===================================================================
read     ``read_shards`` (shard shuffle, parallel interleave) + ``shuffle_blocks``
parse    + the vectorised parse (``parse_batch`` on batches, then unbatch)
decode   + ``decode_element`` in a parallel map (``tf.io.decode_png``/``jpeg``/``raw``)
augment  + the experiment's augmentation in that same map (``Finisher``), as load does it
batch    ``tfpipe.data.pipeline.build_dataset`` with prefetch off
prefetch ``build_dataset`` as ``load()`` returns it — the pipeline figure
======== ===================================================================

The first four are composed here from the functions ``load()`` is built of
(:func:`compose`); the last two *are* ``load()``'s pipeline. Elements before
the batch stage are grouped into plain batches of the same size for timing
only, so Python's per-element iteration (tens of µs) does not swamp the fast
stages; the batch stage then shows what the pipeline's own batching adds.
Class balancing (``input.balance``) and the tf.data service (``input.service``)
are part of the last two stages only, since they exist only inside ``load()``.

Example:
    >>> plan = StagePlan.from_experiment(exp, read_manifest(exp.data.output))  # doctest: +SKIP
    >>> [s.name for s in plan.stages]                                         # doctest: +SKIP
    ['read', 'parse', 'decode', 'augment', 'batch', 'prefetch']
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from tfpipe.bench.measure import MB, Measurement, time_dataset
from tfpipe.config import Experiment, InputConfig
from tfpipe.records.manifest import Manifest

STAGES = ("read", "parse", "decode", "augment", "batch", "prefetch")


@dataclass
class Stage:
    """One pipeline to time: how to build it and what one image weighs when it leaves."""

    name: str
    build: Callable[[], Any]
    batched: bool
    bytes_per_image: float
    note: str = ""
    warmup: int | None = None
    """Warm-up batches when the default is not enough (a cache needs a full epoch)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def measure(
        self,
        *,
        batches: int,
        repeats: int,
        warmup: int,
        tick: Callable[[], None] | None = None,
    ) -> Measurement:
        """Time the pipeline (:func:`~tfpipe.bench.measure.time_dataset`); it keeps the labels."""
        m = time_dataset(
            self.build(),
            self.name,
            batches=batches,
            repeats=repeats,
            warmup=warmup if self.warmup is None else max(warmup, self.warmup),
            batched=self.batched,
            bytes_per_image=self.bytes_per_image,
            on_window=tick,
        )
        m.note, m.extra = self.note, dict(self.extra)
        return m


@dataclass
class StagePlan:
    """The experiment's training input, resolved once against its records."""

    exp: Experiment
    manifest: Manifest
    cfg: InputConfig
    plan: Any  # tfpipe.data.plan.InputPlan
    stages: list[Stage] = field(default_factory=list)

    @classmethod
    def from_experiment(cls, exp: Experiment, manifest: Manifest) -> StagePlan:
        """Validate the experiment's input settings against the records and list the stages."""
        from tfpipe.data.pipeline import resolve_config
        from tfpipe.data.plan import plan_input

        cfg = resolve_config(exp.input, batch_size=exp.train.batch_size)
        sp = cls(exp, manifest, cfg, plan_input(manifest, None, cfg, True))
        sp.stages = cumulative_stages(sp)
        return sp

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.plan.size, self.plan.size, self.plan.layout.channels)

    @property
    def record_bytes(self) -> float:
        """Mean bytes of one serialized record on disk."""
        return sum(self.plan.shards.sizes) / max(1, self.plan.num_records)

    @property
    def tile_bytes(self) -> float:
        """Bytes of one decoded tile with its mask (or labels)."""
        return float(self.plan.layout.tile_bytes)

    @property
    def output_bytes(self) -> float:
        """Bytes of one image with its target as the pipeline outputs it (uint8)."""
        layout, side = self.plan.layout, self.plan.size
        target = side * side if layout.task == "segmentation" else 4 * layout.num_classes
        return float(side * side * layout.channels + target)

    def with_input(self, **changes: Any) -> StagePlan:
        """The same plan with some ``InputConfig`` fields changed (validated)."""
        from tfpipe.data.pipeline import resolve_config

        cfg = resolve_config(self.cfg, overrides=changes)
        return StagePlan(self.exp, self.manifest, cfg, self.plan)

    def pipeline(self, **changes: Any) -> Any:
        """``load()``'s training dataset for this plan (with optional setting changes)."""
        from tfpipe.data.pipeline import build_dataset

        sp = self.with_input(**changes) if changes else self
        return build_dataset(sp.plan, sp.cfg, training=True)

    def unaugmented(self) -> Stage:
        """``load()``'s pipeline with augmentation off: all it does when the model augments."""
        from tfpipe.config import AugmentConfig

        off = AugmentConfig(flip=False, rot90=False).model_dump()
        return Stage(
            "augment off",
            lambda: self.pipeline(augment=off),
            True,
            self.output_bytes,
            "load() with input.augment all off: decode only",
        )

    def settings(self) -> dict[str, Any]:
        """The figures the report and the advice rules need."""
        cfg, shards = self.cfg, self.plan.shards
        return {
            "batch_size": cfg.batch_size,
            "tile_shape": [
                self.plan.layout.height,
                self.plan.layout.width,
                self.plan.layout.channels,
            ],
            "image_size": self.plan.size,
            "encoding": self.plan.layout.encoding,
            "compression": shards.compression,
            "task": self.plan.layout.task,
            "folds": self.plan.folds,
            "records": self.plan.num_records,
            "shards": len(shards.paths),
            "parallel_reads": cfg.cycle_length or os.cpu_count(),
            "parallel_calls": cfg.parallel_calls or "AUTOTUNE",
            "prefetch": "AUTOTUNE" if cfg.prefetch is None else cfg.prefetch,
            "cache": str(cfg.cache),
            "augment": list(augmenter(self).ops),
            "dataset_mb": sum(shards.sizes) / MB,
            "decoded_mb": self.plan.num_records * self.tile_bytes / MB,
            "available_mb": psutil.virtual_memory().available / MB,
        }


def augmenter(sp: StagePlan) -> Any:
    """The experiment's ``Augmenter`` for these records."""
    from tfpipe.data.augment import Augmenter

    layout = sp.plan.layout
    return Augmenter(sp.cfg.augment.host_ops(), (layout.height, layout.width), sp.plan.size)


def compose(sp: StagePlan, until: str, *, parallel: bool = True, vectorised: bool = True) -> Any:
    """The training chain of ``load()`` up to stage ``until``, from ``tfpipe.data`` functions.

    Args:
        sp: The plan.
        until: ``read``, ``parse``, ``decode`` or ``augment``.
        parallel: Parallel maps (``input.parallel_calls``) or serial ones.
        vectorised: ``parse_batch`` on batches, or ``parse_single_example`` per record.

    Returns:
        An unbatched dataset: serialized records, then ``(features, seed)``,
        ``(decoded dict, seed)``, or ``(image, target)`` pairs.
    """
    import tensorflow as tf

    from tfpipe.data.decode import decode_element, parse_batch, parse_spec
    from tfpipe.data.finish import Finisher
    from tfpipe.data.pipeline import shuffle_blocks
    from tfpipe.data.seeds import with_seeds
    from tfpipe.data.shards import read_shards
    from tfpipe.records.format import SOURCE_ID

    cfg, layout = sp.cfg, sp.plan.layout
    calls = (cfg.parallel_calls or tf.data.AUTOTUNE) if parallel else None
    # tf.data warns when `deterministic` is given to a serial map.
    order = {"num_parallel_calls": calls, "deterministic": cfg.deterministic} if parallel else {}
    key = tf.constant(cfg.seed, tf.int64)  # one epoch's key: its value does not change the cost
    ds = read_shards(sp.plan.shards, cfg, True, key)
    if cfg.shuffle_buffer > 0:
        ds = shuffle_blocks(ds, cfg.shuffle_buffer, key)
    if until == "read":
        return ds
    b = cfg.batch_size
    # Seeds come a batch at a time, as load() pairs them with the serialized records.
    ds = with_seeds(ds.batch(b, drop_remainder=True), key, b, training=True)
    finish = Finisher(sp.plan, cfg, training=True)
    if vectorised:
        # As in load(): one parse_example per batch, in a serial map, and (with
        # augmentation) the batch's augmentation parameters drawn there too.
        def prepare(s: Any, seeds: Any) -> Any:
            f = parse_batch(s, layout)
            return f, (finish.draw(f[SOURCE_ID], seeds) if until == "augment" else seeds)

        ds = ds.map(prepare).unbatch()
    else:
        spec = parse_spec(layout)

        def prepare_one(s: Any, seed: Any) -> Any:
            f = tf.io.parse_single_example(s, spec)
            return f, (finish.draw(f[SOURCE_ID], seed) if until == "augment" else seed)

        ds = ds.unbatch().map(prepare_one, **order)
    if until == "parse":
        return ds
    if until == "decode":
        return ds.map(lambda f, seed: (decode_element(f, layout), seed), **order)
    # As in load(): decode and augmentation in one map, tile by tile.
    return ds.map(lambda f, params: finish(decode_element(f, layout), params), **order)


def cumulative_stages(sp: StagePlan) -> list[Stage]:
    """The six stages of the module docstring, with the bytes each one outputs per image."""
    b = sp.cfg.batch_size

    def prefix(until: str) -> Callable[[], Any]:
        return lambda: compose(sp, until).batch(b)

    return [
        Stage(
            "read",
            prefix("read"),
            True,
            sp.record_bytes,
            "shard shuffle, parallel interleave, record shuffle",
        ),
        Stage("parse", prefix("parse"), True, sp.record_bytes, "vectorised parse_example"),
        Stage(
            "decode",
            prefix("decode"),
            True,
            sp.tile_bytes,
            f"{sp.plan.layout.encoding} decode, parallel map",
        ),
        Stage(
            "augment",
            prefix("augment"),
            True,
            sp.output_bytes,
            ", ".join(augmenter(sp).ops) or "no augmentation",
        ),
        Stage(
            "batch",
            lambda: sp.pipeline(prefetch=0),
            True,
            sp.output_bytes,
            f"batch {b} (load(), prefetch off)",
        ),
        Stage(
            "prefetch",
            sp.pipeline,
            True,
            sp.output_bytes,
            f"prefetch {sp.settings()['prefetch']} = load()",
        ),
    ]
