"""The ablation: ``load()``'s pipeline with one optimisation switched off at a time.

Each variant is the experiment's own pipeline (``build_dataset`` with one
``input`` setting changed) wherever a setting exists, so the ratio
full ÷ variant is exactly what that optimisation buys on these records:

========================= ==================================================
serial interleave         ``input.cycle_length: 1`` (one shard read at a time)
serial map                ``input.parallel_calls: 1`` (parse, decode, augment)
no prefetch               ``input.prefetch: 0``
cache: memory / no cache  the opposite of the experiment's ``input.cache``
per-record parse          ``parse_single_example`` per record instead of
                          ``parse_example`` on batches (no setting: composed
                          from tfpipe.data's functions, same tail as load())
float32 on host           load()'s batches cast to float32 [0, 1] on the CPU
                          before prefetch (what normalising in the pipeline
                          instead of in the model costs)
naive                     all of the above off: serial reads, serial per-record
                          parse and decode, no prefetch
========================= ==================================================

A cache variant needs one full epoch to fill the cache, so its warm-up is an
epoch; it is skipped when the decoded tiles would not fit comfortably in RAM
or the epoch is longer than :data:`MAX_CACHE_WARMUP` batches.

Example:
    >>> [v.name for v in variants(plan)]           # doctest: +SKIP
    ['full', 'serial interleave', 'serial map', 'no prefetch', 'cache: memory',
     'per-record parse', 'float32 on host', 'naive']
"""

from __future__ import annotations

from typing import Any

from tfpipe.bench.advice import CACHE_RAM_FRACTION
from tfpipe.bench.stages import Stage, StagePlan, compose

MAX_CACHE_WARMUP = 200
"""Longest epoch (in batches) the cache variant is allowed to spend filling its cache."""


def variants(sp: StagePlan) -> list[Stage]:
    """The full pipeline first, then one variant per optimisation, then the naive pipeline."""
    out = [
        Stage("full", sp.pipeline, True, sp.output_bytes, "load() as configured"),
        switch_off(sp, "serial interleave", "parallel interleave", "cycle_length", 1),
        switch_off(sp, "serial map", "parallel map", "parallel_calls", 1),
        switch_off(sp, "no prefetch", "prefetch", "prefetch", 0),
    ]
    cache = cache_variant(sp)
    if cache is not None:
        out.append(cache)
    out += [
        Stage(
            "per-record parse",
            lambda: finish(sp, compose(sp, "augment", vectorised=False)),
            True,
            sp.output_bytes,
            "parse_single_example per record",
            extra={"optimisation": "vectorised parse"},
        ),
        Stage(
            "float32 on host",
            lambda: float_on_host(sp),
            True,
            float_bytes(sp),
            "batches cast to float32 before prefetch",
            extra={"optimisation": "uint8 output"},
        ),
        Stage(
            "naive",
            lambda: naive(sp),
            True,
            sp.output_bytes,
            "serial reads, serial per-record parse + decode, no prefetch",
            extra={"optimisation": "all"},
        ),
    ]
    return out


def switch_off(sp: StagePlan, name: str, what: str, key: str, value: Any) -> Stage:
    """A variant of ``load()`` with one input setting changed."""
    return Stage(
        name,
        lambda: sp.pipeline(**{key: value}),
        True,
        sp.output_bytes,
        f"input.{key}: {value}",
        extra={"optimisation": what, "hint": f"set input.{key}: {value}"},
    )


def cache_variant(sp: StagePlan) -> Stage | None:
    """Cache on when the experiment has it off (and it fits), or off when it is on."""
    if sp.cfg.cache != "none":
        return switch_off(sp, "no cache", "cache", "cache", "none")
    epoch = sp.plan.num_records // sp.cfg.batch_size
    settings = sp.settings()
    fits = settings["decoded_mb"] <= CACHE_RAM_FRACTION * settings["available_mb"]
    if not fits or epoch > MAX_CACHE_WARMUP:
        return None
    return Stage(
        "cache: memory",
        lambda: sp.pipeline(cache="memory"),
        True,
        sp.output_bytes,
        f"input.cache: memory ({settings['decoded_mb']:,.0f} MB; warm-up = 1 epoch)",
        warmup=epoch + 1,
        extra={"optimisation": "cache", "turns_on": True},
    )


def finish(sp: StagePlan, tiles: Any, *, parallel: bool = True, prefetch: bool = True) -> Any:
    """``load()``'s tail on composed tiles: full batches, its options, prefetch."""
    import tensorflow as tf

    cfg = sp.cfg
    calls = cfg.parallel_calls or tf.data.AUTOTUNE
    order = {"num_parallel_calls": calls, "deterministic": cfg.deterministic} if parallel else {}
    ds = tiles.batch(cfg.batch_size, drop_remainder=True, **order)
    if prefetch and cfg.prefetch != 0:
        ds = ds.prefetch(cfg.prefetch or tf.data.AUTOTUNE)
    return ds


def float_on_host(sp: StagePlan) -> Any:
    """``load()``'s batches normalised to float32 on the CPU, then prefetched."""
    import tensorflow as tf

    def to_float(image: Any, target: Any) -> tuple[Any, Any]:
        return tf.cast(image, tf.float32) / 255.0, tf.cast(target, tf.float32)

    calls = sp.cfg.parallel_calls or tf.data.AUTOTUNE
    ds = sp.pipeline(prefetch=0).map(
        to_float, num_parallel_calls=calls, deterministic=sp.cfg.deterministic
    )
    return ds.prefetch(sp.cfg.prefetch or tf.data.AUTOTUNE) if sp.cfg.prefetch != 0 else ds


def float_bytes(sp: StagePlan) -> float:
    """One image + target in float32: four bytes per value."""
    return 4.0 * sp.output_bytes


def naive(sp: StagePlan) -> Any:
    """Every optimisation off: how a first tf.data pipeline usually looks."""
    serial = sp.with_input(cycle_length=1)
    tiles = compose(serial, "augment", parallel=False, vectorised=False)
    return finish(serial, tiles, parallel=False, prefetch=False).with_options(unoptimised())


def unoptimised() -> Any:
    """``tf.data.Options`` that keep a serial, unprefetched pipeline as written.

    Else tf.data's default rewrites parallelise serial maps and inject a
    prefetch, and a "naive" variant measures the optimised pipeline again.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_optimization.map_parallelization = False
    options.experimental_optimization.inject_prefetch = False
    return options
