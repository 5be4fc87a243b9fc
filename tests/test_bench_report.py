"""bench.json round trip, the Markdown tables, the PNG chart and --compare."""

import json

import numpy as np
import pytest

from tests._bench_helpers import fake_report, measurement
from tfpipe.bench.advice import decide
from tfpipe.bench.chart import write_chart
from tfpipe.bench.harness import compare_reports
from tfpipe.bench.report import AugmentPlacement, BenchReport, SweepResult, stage_shares
from tfpipe.errors import ConfigError


def full_report(in_model: bool = False, **kwargs) -> BenchReport:
    ablation = [
        measurement("full", 310),
        measurement("no prefetch", 200, optimisation="prefetch"),
        measurement("naive", 100, optimisation="all"),
    ]
    report = fake_report(ablation=ablation, e2e_rate=40, **kwargs)
    report.sweeps = [
        SweepResult(
            "input.batch_size", 16, [16, 32], [measurement("16", 300), measurement("32", 360)]
        )
    ]
    if in_model:
        # Pipeline 500 images/s without augmentation; 16 images per step: 400 ms compute
        # with the Augment layer (model alone: 320 ms), 250 ms end to end (pipeline: 400 ms).
        report.augment_in_model = AugmentPlacement(
            ["flip+rot90", "hue"],
            measurement("augment off", 500),
            measurement("compute + Augment", 40),
            measurement("end-to-end + Augment", 64),
        )
    decide(report)
    return report


@pytest.mark.parametrize("in_model", [False, True])
def test_json_round_trip_keeps_every_figure(tmp_path, in_model):
    report = full_report(in_model)
    path = report.save(tmp_path / "bench.json")
    back = BenchReport.load(path)
    assert back.to_json() == report.to_json()
    raw = json.loads(path.read_text())
    assert raw["stages"][2]["name"] == "decode"
    assert raw["stages"][2]["images_per_s"]["median"] == pytest.approx(400)
    assert raw["model"]["stall_ms"] == pytest.approx(400 - 320)
    assert raw["verdict"]["bound"] == "compute-bound"
    assert not list(tmp_path.glob(".*tmp*"))  # the temp file was renamed away


def test_stage_shares_sum_to_one_and_follow_the_increments():
    shares = stage_shares(full_report().stages)
    assert sum(shares.values()) == pytest.approx(1.0)
    # per image: read 0.2 ms, parse +0.05, decode +2.25, augment +0.833, batch 0, prefetch 0
    assert shares["decode"] == pytest.approx(2.25 / (1 / 300 * 1000), rel=1e-6)
    assert shares["prefetch"] == 0.0


def test_markdown_has_every_section_and_the_numbers():
    text = full_report().markdown()
    for heading in ("## Stages", "## Ablation", "## Sweeps", "## Model step", "## Verdict"):
        assert heading in text
    assert "| decode | 400.0 | 400.0 – 400.0 | 40.0 | 2.50 | 68% |" in text
    assert "| no prefetch |  | 200.0 | 200.0 – 200.0 | 1.55× |" in text
    assert "| input.batch_size=32 **best** | 360.0 |" in text
    assert "| stall per step (end-to-end − compute) | 80.0 |" in text
    assert "**compute-bound**" in text


def test_chart_is_a_readable_png(tmp_path):
    import cv2

    path = write_chart(full_report(), tmp_path / "stages.png")
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 300 and image.shape[1] > 1200
    assert image.std() > 10  # not blank
    assert [p.name for p in tmp_path.iterdir()] == ["stages.png"]


def test_compare_puts_two_runs_side_by_side(tmp_path, capsys):
    a = full_report().save(tmp_path / "a" / "bench.json")
    slower = full_report(
        stage_rates={
            "read": 2500,
            "parse": 2000,
            "decode": 200,
            "augment": 150,
            "batch": 150,
            "prefetch": 155,
        }
    )
    slower.machine["cpu_count"] = 1
    b = slower.save(tmp_path / "b" / "bench.json")
    text = compare_reports(a, b)
    assert text in capsys.readouterr().out
    assert "| stage | decode | images/s | 400.0 | 200.0 | 0.50× |" in text
    assert "| stage | prefetch | images/s | 310.0 | 155.0 | 0.50× |" in text
    assert "| model | stall per step | ms | 80.0 | 80.0 | 1.00× |" in text
    assert "A: a — kidney, 2 CPUs" in text and "B: b — kidney, 1 CPUs" in text
    assert np.isclose(BenchReport.load(b).pipeline.median, 155)


def test_compare_names_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(ConfigError, match=r"bench report not found: .*nope\.json"):
        compare_reports(tmp_path / "nope.json", tmp_path / "nope.json")
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(ConfigError, match=r"other\.json is not a tfpipe bench\.json"):
        compare_reports(other, other)


def test_augmentation_in_the_model_is_set_against_the_pipeline():
    report = full_report(in_model=True)
    text = report.markdown()
    assert "## Augmentation: pipeline or model (flip+rot90, hue)" in text
    assert "| in the pipeline (CPU, tf.data) | 310.0 | 320.0 | 400.0 | 40.0 |" in text
    assert "| in the model (tfpipe.data.Augment) | 500.0 | 400.0 | 250.0 | 64.0 |" in text
    assert "## Augmentation" not in full_report().markdown()
    back = BenchReport.from_json(report.to_json())
    assert back.augment_in_model.end_to_end.median == pytest.approx(64)


def test_compare_shows_the_in_model_step_when_both_runs_have_it(tmp_path):
    a = full_report(in_model=True).save(tmp_path / "a.json")
    text = compare_reports(a, a)
    assert "| model | end-to-end step, Augment in the model | ms | 250.0 | 250.0 | 1.00× |" in text
