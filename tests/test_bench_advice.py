"""The verdict and every advice rule, on reports with chosen numbers."""

import math

import pytest

from tests._bench_helpers import fake_report, measurement
from tfpipe.bench import advice
from tfpipe.bench.report import AugmentPlacement, SweepResult


def rules_fired(report, rule) -> list[str]:
    advice.decide(report)
    return [a.message for a in rule(report)]


def test_compute_bound_when_the_pipeline_outruns_the_model():
    v = advice.decide(fake_report(model_rate=50))
    assert v.bound == "compute-bound"
    assert v.headroom == pytest.approx(310 / 50)
    assert "compute-bound: the pipeline has 6.2× headroom" in v.advice[0].message


def test_input_bound_when_the_model_is_faster():
    v = advice.decide(fake_report(model_rate=1000))
    assert v.bound == "input-bound"
    assert v.headroom == pytest.approx(0.31)
    assert v.advice[0].rule == "bound" and "input-bound" in v.advice[0].message


def test_no_model_timing_gives_unknown_and_no_bound_advice():
    v = advice.decide(fake_report(model_rate=None))
    assert v.bound == "unknown" and math.isnan(v.headroom)
    assert all(a.rule != "bound" for a in v.advice)


def test_dominant_decode_advises_another_encoding():
    # read 0.2 ms, parse +0.05, decode +2.25, augment +0.83 ms per image: decode is 68%.
    msgs = rules_fired(fake_report(), advice.rule_stage_share)
    assert msgs == [
        "decode is 68% of the time: write raw or JPEG records (data.encoding: raw decodes "
        "fastest, jpeg is smaller; try --sweep data.encoding=png,jpeg,raw)"
    ]


def test_dominant_augment_advises_cheaper_augmentation():
    rates = {
        "read": 5000,
        "parse": 4000,
        "decode": 2000,
        "augment": 500,
        "batch": 500,
        "prefetch": 500,
    }
    msgs = rules_fired(fake_report(rates), advice.rule_stage_share)
    assert len(msgs) == 1 and msgs[0].startswith("augment is 75% of the time")


def test_few_shards_for_many_parallel_reads():
    report = fake_report(settings={"shards": 2, "parallel_reads": 8, "dataset_mb": 40.0})
    assert rules_fired(report, advice.rule_shards) == [
        "raise shards: 2 files for 8 parallel reads; write at least 8 shards per fold "
        "(data.shard_mb ≈ 5) so interleave can read them all at once"
    ]
    assert (
        rules_fired(fake_report(settings={"shards": 8, "parallel_reads": 8}), advice.rule_shards)
        == []
    )


def test_ablation_keeps_what_buys_and_flags_what_hurts():
    ablation = [
        measurement("full", 300),
        measurement("no prefetch", 200, optimisation="prefetch"),
        measurement(
            "serial interleave",
            400,
            optimisation="parallel interleave",
            hint="set input.cycle_length: 1",
        ),
        measurement("serial map", 290, optimisation="parallel map"),
        measurement("naive", 100, optimisation="all"),
    ]
    msgs = rules_fired(fake_report(ablation=ablation), advice.rule_ablation)
    assert msgs == [
        "prefetch buys 1.5×, keep it",
        "parallel interleave costs 1.3× here (switching it off is faster): set "
        "input.cycle_length: 1",
        "all optimisations together buy 3.0× over a naive pipeline (serial map, no "
        "interleave, no prefetch)",
    ]


def test_ablation_gaps_within_the_spread_of_repeats_are_not_advice():
    # 1.2x apart, but each median lies inside the other's min-max: noise, not a finding.
    ablation = [
        measurement("full", 300, spread=0.3),
        measurement("no prefetch", 250, spread=0.3, optimisation="prefetch"),
        measurement("serial map", 360, spread=0.3, optimisation="parallel map"),
        measurement("naive", 100, optimisation="all"),
    ]
    msgs = rules_fired(fake_report(ablation=ablation), advice.rule_ablation)
    assert msgs == [
        "all optimisations together buy 3.0× over a naive pipeline (serial map, no "
        "interleave, no prefetch)"
    ]


@pytest.mark.parametrize(
    ("cache_rate", "decoded_mb", "expected"),
    [
        (
            450,
            100.0,
            "cache fits in RAM (100 MB of 1,000 MB available) and buys 1.5×: turn "
            "input.cache: memory on",
        ),
        (
            450,
            900.0,
            "a cache buys 1.5× but needs 900 MB of 1,000 MB available: use a file "
            "cache on a local SSD (input.cache: /local/ssd/tfpipe-cache)",
        ),
        (310, 100.0, None),
    ],
)
def test_cache_advice_depends_on_gain_and_ram(cache_rate, decoded_mb, expected):
    ablation = [
        measurement("full", 300),
        measurement("cache: memory", cache_rate, optimisation="cache", turns_on=True),
    ]
    report = fake_report(
        ablation=ablation, settings={"decoded_mb": decoded_mb, "available_mb": 1000.0}
    )
    assert rules_fired(report, advice.rule_cache) == ([expected] if expected else [])


def test_few_cores_only_when_input_bound():
    assert rules_fired(fake_report(model_rate=1000, cpu_count=2), advice.rule_cores)
    assert not rules_fired(fake_report(model_rate=1000, cpu_count=16), advice.rule_cores)
    assert not rules_fired(fake_report(model_rate=50, cpu_count=2), advice.rule_cores)


def test_stall_is_reported_above_a_tenth_of_the_step():
    # batch 16: compute 500 images/s = 32 ms/step, end-to-end 400 images/s = 40 ms/step;
    # the pipeline (310 images/s) is slower than the model: the model really waits.
    report = fake_report(model_rate=500, e2e_rate=400)
    report.model.device = "GPU: NVIDIA H100"
    assert rules_fired(report, advice.rule_stall) == [
        "in a real training loop the model waits 8 ms per step for input "
        "(25% of the 32 ms compute step)"
    ]
    assert not rules_fired(fake_report(model_rate=500, e2e_rate=490), advice.rule_stall)


def test_stall_with_headroom_on_cpu_is_core_contention():
    # compute 50 images/s = 320 ms/step, end-to-end 40 = 400 ms/step, pipeline 310 images/s
    msgs = rules_fired(fake_report(model_rate=50, e2e_rate=40), advice.rule_stall)
    assert msgs == [
        "the end-to-end step is 80 ms (25%) slower than compute alone although the pipeline "
        "has 6× headroom: its threads compete with the model for the 2 CPU cores; cap them "
        "(input.parallel_calls, input.private_threadpool_size) or train on an accelerator"
    ]


def test_mixed_precision_gain_and_loss():
    report = fake_report(model_rate=50)
    report.model.compute_mixed = measurement("compute mixed_float16", 100)
    assert rules_fired(report, advice.rule_mixed_precision) == [
        "mixed precision buys 2.0×: keep train.mixed_precision: auto"
    ]
    report.model.compute_mixed = measurement("compute mixed_float16", 40)
    assert "1.2× slower" in rules_fired(report, advice.rule_mixed_precision)[0]


def test_sweep_names_the_best_setting():
    report = fake_report()
    report.sweeps = [
        SweepResult(
            "input.batch_size",
            16,
            [16, 32, 64],
            [measurement("a", 300), measurement("b", 330), measurement("c", 400)],
        )
    ]
    assert rules_fired(report, advice.rule_sweeps) == [
        "input.batch_size=64 is 1.3× faster than the current 16 (400 vs 300 images/s)"
    ]
    report.sweeps[0].measurements[1:] = [measurement("b", 310), measurement("c", 320)]
    assert rules_fired(report, advice.rule_sweeps) == []


def test_noisy_repeats_are_flagged():
    report = fake_report()
    report.stages[-1] = measurement("prefetch", 300, spread=0.3)
    assert "repeats differ by 1.9×" in rules_fired(report, advice.rule_noise)[0]
    report.stages[-1] = measurement("prefetch", 300, spread=0.05)
    assert rules_fired(report, advice.rule_noise) == []


def test_spread_from_an_epoch_start_inside_the_windows_is_explained():
    # 100 records in batches of 8 = 12 batches per epoch; 2 + 3 x 5 = 17 batches timed.
    settings = {"records": 100, "batch_size": 8, "warmup": 2, "batches": 5, "repeats": 3}
    report = fake_report(settings=settings)
    report.stages[-1] = measurement("prefetch", 300, spread=0.3)
    (msg,) = rules_fired(report, advice.rule_noise)
    assert "an epoch is only 12 batches" in msg and "busy" not in msg
    assert advice.epoch_batches({"records": 100}) is None


@pytest.mark.parametrize(
    ("in_model_rate", "expected"),
    [
        (
            60.0,
            "augmenting in the model trains 1.50× faster end to end: set "
            "input.augment.colour_in_model: true (tfpipe train; geometry stays in tf.data), "
            "or in your own code put tfpipe.data.Augment in the model and input.augment off",
        ),
        (42.0, None),
        (
            20.0,
            "keep augmentation in the pipeline: in the model (tfpipe.data.Augment) the "
            "training step runs 2.00× slower end to end",
        ),
    ],
)
def test_augmentation_goes_where_training_is_faster_end_to_end(in_model_rate, expected):
    report = fake_report(e2e_rate=40)
    report.augment_in_model = AugmentPlacement(
        ["flip"],
        measurement("augment off", 500),
        measurement("compute + Augment", 45),
        measurement("end-to-end + Augment", in_model_rate),
    )
    assert rules_fired(report, advice.rule_augment_placement) == ([expected] if expected else [])


def test_no_placement_advice_without_the_in_model_figures():
    assert rules_fired(fake_report(e2e_rate=40), advice.rule_augment_placement) == []
