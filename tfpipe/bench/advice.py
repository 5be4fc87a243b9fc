"""The verdict (input- or compute-bound, headroom) and advice drawn from the measurements.

Every piece of advice comes from one rule: a small function that reads the
report's numbers and returns zero or more :class:`Advice`. Thresholds are
module constants so the tests and the wording agree. No rule fires on a
figure that was not measured.

Example:
    >>> from tfpipe.bench.advice import decide
    >>> verdict = decide(report)                      # doctest: +SKIP
    >>> verdict.bound, round(verdict.headroom, 2)     # doctest: +SKIP
    ('input-bound', 0.41)
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tfpipe.bench.measure import ratio
from tfpipe.bench.report import Advice, BenchReport, Verdict, stage_shares

DOMINANT_SHARE = 0.4
"""A stage taking at least this share of the per-image time is worth acting on."""
KEEP_RATIO = 1.1
"""An optimisation that buys at least this factor is reported as worth keeping."""
HURTS_RATIO = 0.9
"""Below this full ÷ variant ratio, switching the optimisation off is faster."""
STALL_FRACTION = 0.1
"""A stall above this fraction of the compute step is reported."""
NOISY_SPREAD = 1.3
"""max ÷ min images/s across repeats above which the machine is called noisy."""
CACHE_RAM_FRACTION = 0.5
"""A cache fits when it needs at most this fraction of the available RAM."""
FEW_CORES = 4
PLACEMENT_GAIN = 1.1
"""Augmenting in the model or in the pipeline is advised when it trains this much faster."""

Rule = Callable[[BenchReport], list[Advice]]


def decide(report: BenchReport) -> Verdict:
    """Input- or compute-bound, the headroom ratio and every rule's advice."""
    pipeline = report.pipeline.median
    model = report.model.best_compute.median if report.model else float("nan")
    headroom = ratio(pipeline, model) if math.isfinite(model) else float("nan")
    if not math.isfinite(headroom):
        bound = "unknown"
    else:
        bound = "input-bound" if headroom < 1.0 else "compute-bound"
    verdict = Verdict(bound, headroom, pipeline, model)
    report.verdict = verdict
    verdict.advice = [a for rule in RULES for a in rule(report)]
    return verdict


def rule_bound(r: BenchReport) -> list[Advice]:
    v = r.verdict
    if v is None or v.bound == "unknown":
        return []
    pipeline, model = f"{v.pipeline_images_per_s:,.0f}", f"{v.model_images_per_s:,.0f}"
    if v.bound == "input-bound":
        msg = (
            f"input-bound: the pipeline delivers {pipeline} images/s but the model could take "
            f"{model} (headroom {v.headroom:.2f}×); speed up the stages below first"
        )
    else:
        msg = (
            f"compute-bound: the pipeline has {v.headroom:.1f}× headroom over the model "
            f"({pipeline} vs {model} images/s); input is not the bottleneck — spend effort on "
            f"the model (mixed precision, batch size, XLA)"
        )
    return [Advice("bound", msg)]


STAGE_FIXES = {
    "augment": "drop the costliest jitter (hue, saturation, noise) or move augmentation into "
    "the model (tfpipe.data.Augment) so it runs on the accelerator",
    "read": "storage is the limit: copy the records to a local SSD, compress less, or turn "
    "input.cache on",
    "parse": "parse is the limit: keep the vectorised (batched) parse and fewer, larger "
    "features per record",
}
DECODE_FIXES = {
    "png": "write raw or JPEG records (data.encoding: raw decodes fastest, jpeg is smaller; "
    "try --sweep data.encoding=png,jpeg,raw)",
    "jpeg": "write raw records (data.encoding: raw) if disk space allows",
    "raw": "raw records are already the cheapest to decode: use more cores or smaller tiles",
}


def rule_stage_share(r: BenchReport) -> list[Advice]:
    encoding = r.settings.get("encoding", "png")
    fixes = {**STAGE_FIXES, "decode": DECODE_FIXES.get(encoding, "try another data.encoding")}
    out = []
    for stage, share in stage_shares(r.stages).items():
        if share >= DOMINANT_SHARE and stage in fixes:
            msg = f"{stage} is {100 * share:.0f}% of the time: {fixes[stage]}"
            out.append(Advice(f"share:{stage}", msg))
    return out


def rule_shards(r: BenchReport) -> list[Advice]:
    shards, reads = r.settings.get("shards"), r.settings.get("parallel_reads")
    if not shards or not reads or shards >= reads:
        return []
    mb = r.settings.get("dataset_mb", 0.0)
    target = f" (data.shard_mb ≈ {max(1, math.floor(mb / reads))})" if mb else ""
    files = f"{shards} file{'s' if shards > 1 else ''}"
    msg = (
        f"raise shards: {files} for {reads} parallel reads; write at least {reads} shards "
        f"per fold{target} so interleave can read them all at once"
    )
    return [Advice("shards", msg)]


def rule_ablation(r: BenchReport) -> list[Advice]:
    if not r.ablation:
        return []
    full, out = r.ablation[0], []
    for m in r.ablation[1:]:
        what = m.extra.get("optimisation")
        if not what or what == "all" or m.extra.get("turns_on"):
            continue
        gain = ratio(full.median, m.median)
        # A verdict needs the medians apart by the threshold *and* outside each other's
        # range of repeats: on a busy machine a 1.2× gap within the spread is noise.
        if gain >= KEEP_RATIO and full.median > m.max:
            out.append(Advice(f"keep:{what}", f"{what} buys {gain:.1f}×, keep it"))
        elif gain <= HURTS_RATIO and m.median > full.max:
            hint = m.extra.get("hint", "")
            msg = f"{what} costs {1 / gain:.1f}× here (switching it off is faster)"
            out.append(Advice(f"hurts:{what}", msg + (f": {hint}" if hint else "")))
    naive = next((m for m in r.ablation if m.extra.get("optimisation") == "all"), None)
    if naive is not None and ratio(full.median, naive.median) >= KEEP_RATIO:
        msg = (
            f"all optimisations together buy {ratio(full.median, naive.median):.1f}× over a "
            f"naive pipeline (serial map, no interleave, no prefetch)"
        )
        out.append(Advice("naive", msg))
    return out


def rule_cache(r: BenchReport) -> list[Advice]:
    m = next((m for m in r.ablation if m.extra.get("optimisation") == "cache"), None)
    need, free = r.settings.get("decoded_mb"), r.settings.get("available_mb")
    if m is None or not need or not free:
        return []
    gain = ratio(m.median, r.ablation[0].median) if m.extra.get("turns_on") else 1.0
    if gain < KEEP_RATIO:
        return []
    if need <= CACHE_RAM_FRACTION * free:
        msg = (
            f"cache fits in RAM ({need:,.0f} MB of {free:,.0f} MB available) and buys "
            f"{gain:.1f}×: turn input.cache: memory on"
        )
    else:
        msg = (
            f"a cache buys {gain:.1f}× but needs {need:,.0f} MB of {free:,.0f} MB available: "
            f"use a file cache on a local SSD (input.cache: /local/ssd/tfpipe-cache)"
        )
    return [Advice("cache", msg)]


def rule_cores(r: BenchReport) -> list[Advice]:
    cores = r.machine.get("cpu_count") or 0
    v = r.verdict
    if v is None or v.bound != "input-bound" or cores > FEW_CORES:
        return []
    msg = (
        f"only {cores} CPU cores feed the model: more cores, or tf.data service workers on "
        f"other machines (tfpipe serve-data, input.service), raise input throughput"
    )
    return [Advice("cores", msg)]


def rule_stall(r: BenchReport) -> list[Advice]:
    t = r.model
    if t is None or t.end_to_end is None or not math.isfinite(t.stall_ms):
        return []
    if t.stall_ms <= STALL_FRACTION * t.step_ms:
        return []
    msg = (
        f"in a real training loop the model waits {t.stall_ms:,.0f} ms per step for input "
        f"({100 * t.stall_ms / t.step_ms:.0f}% of the {t.step_ms:,.0f} ms compute step)"
    )
    v = r.verdict
    if t.device.startswith("CPU") and v is not None and v.bound == "compute-bound":
        # With headroom to spare the stall is not waiting: on a CPU-only machine the
        # pipeline's threads take cores from the model's own kernels.
        msg = (
            f"the end-to-end step is {t.stall_ms:,.0f} ms ({100 * t.stall_ms / t.step_ms:.0f}%) "
            f"slower than compute alone although the pipeline has {v.headroom:.0f}× headroom: "
            f"its threads compete with the model for the {r.machine.get('cpu_count', '?')} CPU "
            f"cores; cap them (input.parallel_calls, input.private_threadpool_size) or train "
            f"on an accelerator"
        )
    return [Advice("stall", msg)]


def rule_mixed_precision(r: BenchReport) -> list[Advice]:
    t = r.model
    if t is None or t.compute_mixed is None:
        return []
    gain = ratio(t.compute_mixed.median, t.compute.median)
    if gain >= KEEP_RATIO:
        msg = f"mixed precision buys {gain:.1f}×: keep train.mixed_precision: auto"
    elif gain <= HURTS_RATIO:
        msg = (
            f"mixed precision is {1 / gain:.1f}× slower on this GPU: set train.mixed_precision: off"
        )
    else:
        return []
    return [Advice("mixed_precision", msg)]


def rule_sweeps(r: BenchReport) -> list[Advice]:
    out = []
    for s in r.sweeps:
        base = s.baseline
        best = max(s.measurements, key=lambda m: m.median)
        if base is None or s.best == s.current:
            continue
        gain = ratio(best.median, base.median)
        if gain >= KEEP_RATIO:
            msg = (
                f"{s.key}={s.best} is {gain:.1f}× faster than the current {s.current} "
                f"({best.median:,.0f} vs {base.median:,.0f} images/s)"
            )
            out.append(Advice(f"sweep:{s.key}", msg))
    return out


def rule_noise(r: BenchReport) -> list[Advice]:
    m = r.pipeline
    spread = ratio(m.max, m.min)
    if not math.isfinite(spread) or spread < NOISY_SPREAD:
        return []
    epoch = epoch_batches(r.settings)
    if epoch is not None and epoch < _timed_batches(r.settings):
        # An epoch end inside a window is a real cost (shuffle buffer refill), not noise.
        why = (
            f"an epoch is only {epoch} batches, so some windows include an epoch start "
            f"(shards reopened, shuffle buffer refilled); the median is the steady figure"
        )
    else:
        why = "the machine is busy; raise --repeats or rerun when it is quiet"
    msg = f"repeats differ by {spread:.1f}× (min {m.min:,.0f}, max {m.max:,.0f} images/s): {why}"
    return [Advice("noise", msg)]


def rule_augment_placement(r: BenchReport) -> list[Advice]:
    """Augmentation in the model step or in the pipeline: whichever trains faster end to end."""
    a, t = r.augment_in_model, r.model
    if a is None or t is None or a.end_to_end is None or t.end_to_end is None:
        return []
    gain = ratio(a.end_to_end.median, t.end_to_end.median)
    if gain >= PLACEMENT_GAIN:
        msg = (
            f"augmenting in the model trains {gain:.2f}× faster end to end: set "
            "input.augment.colour_in_model: true (tfpipe train; geometry stays in tf.data), "
            "or in your own code put tfpipe.data.Augment in the model and input.augment off"
        )
        return [Advice("augment:model", msg)]
    if gain <= 1 / PLACEMENT_GAIN:
        msg = (
            f"keep augmentation in the pipeline: in the model (tfpipe.data.Augment) the "
            f"training step runs {1 / gain:.2f}× slower end to end"
        )
        return [Advice("augment:pipeline", msg)]
    return []


def epoch_batches(settings: dict) -> int | None:
    """Training batches per epoch from the report's settings, when they say."""
    records, batch = settings.get("records"), settings.get("batch_size")
    if not isinstance(records, int) or not isinstance(batch, int) or batch <= 0:
        return None
    return max(1, records // batch)


def _timed_batches(settings: dict) -> int:
    return int(settings.get("warmup", 0)) + int(settings.get("batches", 0)) * int(
        settings.get("repeats", 0)
    )


RULES: list[Rule] = [
    rule_bound,
    rule_stall,
    rule_stage_share,
    rule_shards,
    rule_ablation,
    rule_cache,
    rule_augment_placement,
    rule_mixed_precision,
    rule_sweeps,
    rule_cores,
    rule_noise,
]
