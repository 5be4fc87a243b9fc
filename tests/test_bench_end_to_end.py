"""A whole bench-input run on tiny records, and the command line around it."""

import json

import keras
import pytest

import tfpipe.models
from tests._bench_helpers import fake_report, write_tiny_records
from tfpipe.bench.harness import bench_input
from tfpipe.bench.stages import STAGES
from tfpipe.cli import main
from tfpipe.config import load_experiment
from tfpipe.data import Normalize


def tiny_model(cfg, input_shape, augment=None):
    # Stands in for the experiment's Unet: tracing a Unet training step takes minutes on
    # two cores, and the bench only needs a model with the same input and output contract.
    inputs = keras.Input(tuple(input_shape), dtype="uint8")
    x = Normalize()(inputs if augment is None else augment(inputs))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture
def tiny_experiment(tmp_path, monkeypatch):
    monkeypatch.setattr(tfpipe.models, "build_model", tiny_model)
    write_tiny_records(tmp_path / "rec", n=32, size=32)
    return load_experiment(
        None,
        [
            f"data.output={tmp_path / 'rec'}",
            "input.batch_size=4",
            "input.shuffle_buffer=8",
            "train.lookahead.enabled=false",
            "bench.model_steps=2",
            "bench.model_warmup=1",
            "bench.fit_steps=2",
            "bench.warmup=1",
        ],
    )


def test_bench_on_tiny_records_writes_every_figure(tiny_experiment, tmp_path, capsys):
    out = tmp_path / "out"
    report = bench_input(
        tiny_experiment,
        out_dir=out,
        batches=1,
        repeats=2,
        progress=False,
    )

    assert [m.name for m in report.stages] == list(STAGES)
    assert all(m.images == [4, 4] and m.median > 0 for m in report.stages)
    assert report.stages[0].bytes_per_image > 1000  # serialized record: PNG tile + mask
    assert report.stages[-1].bytes_per_image == 32 * 32 * 4  # uint8 image + mask
    names = [m.name for m in report.ablation]
    assert names[0] == "full" and names[-1] == "naive"
    assert {
        "serial interleave",
        "serial map",
        "no prefetch",
        "cache: memory",
        "per-record parse",
        "float32 on host",
    } <= set(names)
    assert report.ablation[0].median == report.stages[-1].median
    assert report.sweeps == []  # measured in test_bench_sweep.py

    model = report.model
    assert model.batch_size == 4 and model.input_shape == [32, 32, 3]
    assert model.compute.images == [4, 4] and model.end_to_end.images == [4, 4]
    assert model.device.startswith("CPU") and model.compute_mixed is None
    assert model.stall_ms == max(0.0, model.end_to_end_ms - model.step_ms)
    placement = report.augment_in_model  # the default augmentation: flips and turns
    assert placement.ops == ["flip+rot90"]
    assert placement.pipeline.images == [4, 4] and placement.pipeline.median > 0
    assert placement.compute.images == [4, 4] and placement.end_to_end.images == [4, 4]
    verdict = report.verdict
    assert verdict.bound in ("input-bound", "compute-bound")
    assert verdict.headroom == pytest.approx(report.stages[-1].median / model.compute.median)
    assert verdict.advice[0].rule == "bound"

    saved = json.loads((out / "bench.json").read_text())
    assert {"cpu_count", "tensorflow", "keras", "git_commit", "gpu"} <= set(saved["machine"])
    assert saved["verdict"]["bound"] == verdict.bound
    assert (out / "stages.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "## Stages" in printed and "## Verdict" in printed
    assert "| in the model (tfpipe.data.Augment) |" in printed
    assert (out / "bench.md").read_text() in printed


def test_cli_compare_and_errors(tmp_path, capsys):
    a = fake_report().save(tmp_path / "a.json")
    assert main(["bench-input", "--compare", str(a), str(a), "--out", str(tmp_path / "c.md")]) == 0
    assert "| stage | decode | images/s | 400.0 | 400.0 | 1.00× |" in capsys.readouterr().out
    assert (tmp_path / "c.md").is_file()

    exp = tmp_path / "x.yaml"
    exp.write_text(f"data:\n  output: {tmp_path / 'missing'}\n")
    assert main(["bench-input", str(exp), "--sweep", "model.arch=fpn"]) == 2
    assert "got 'model.arch'" in capsys.readouterr().err
    assert main(["bench-input", str(exp), "--repeats", "0"]) == 2
    assert "repeats" in capsys.readouterr().err
    assert main(["bench-input", str(exp)]) == 2
    assert "records folder not found" in capsys.readouterr().err


def test_naive_and_no_prefetch_variants_stay_unoptimised(tmp_path):
    # tf.data's default rewrites would parallelise the serial maps and inject a
    # prefetch, and the ablation would measure the full pipeline under other names.
    from tfpipe.bench.ablation import variants
    from tfpipe.bench.stages import StagePlan
    from tfpipe.records.manifest import read_manifest

    write_tiny_records(tmp_path / "rec", n=16, size=32)
    exp = load_experiment(None, [f"data.output={tmp_path / 'rec'}", "input.batch_size=4"])
    plan = StagePlan.from_experiment(exp, read_manifest(tmp_path / "rec"))
    by_name = {v.name: v for v in variants(plan)}
    for name in ("naive", "no prefetch"):
        ds = by_name[name].build()
        assert ds.options().experimental_optimization.inject_prefetch is False, name
        assert next(iter(ds))[0].shape == (4, 32, 32, 3)
    naive = by_name["naive"].build().options().experimental_optimization
    assert naive.map_parallelization is False
