"""The one-command demo: its settings, what it reuses, and (slow) the whole run."""

import json

import pytest
import yaml

from tfpipe.cli import main
from tfpipe.config import load_experiment
from tfpipe.demo import _same_data, demo_overrides, finished_run

KIDNEY = "experiments/kidney.yaml"


def test_demo_settings_keep_everything_inside_workdir(tmp_path):
    exp = load_experiment(KIDNEY, demo_overrides(tmp_path))
    for path in (
        exp.data.images,
        exp.data.labels,
        exp.data.output,
        exp.train.runs_dir,
        exp.predict.images,
        exp.predict.out,
        exp.predict.save_probabilities,
    ):
        assert tmp_path in path.parents
    # The architecture and loss are the experiment's own; the demo only shortens.
    kidney = load_experiment(KIDNEY)
    assert (exp.model.arch, exp.model.backbone) == (kidney.model.arch, kidney.model.backbone)
    assert exp.train.loss == kidney.train.loss
    assert exp.train.folds == [0]


def test_finished_run_is_reused_only_with_the_same_settings(tmp_path):
    exp = load_experiment(KIDNEY, demo_overrides(tmp_path))
    runs = tmp_path / "runs"
    assert finished_run(exp) is None
    run = runs / "20250101-000000-demo"
    (run / "fold0").mkdir(parents=True)
    (run / "fold0" / "best.keras").write_bytes(b"")
    (run / "config.yaml").write_text(yaml.safe_dump(exp.to_dict()))
    assert finished_run(exp) is None  # no summary.json: not finished
    (run / "summary.json").write_text(json.dumps({"run": run.name}))
    assert finished_run(exp) == run
    changed = load_experiment(KIDNEY, [*demo_overrides(tmp_path), "train.epochs=99"])
    assert finished_run(changed) is None
    # Predict settings do not invalidate a trained model.
    other_tta = load_experiment(KIDNEY, [*demo_overrides(tmp_path), "predict.tta=[]"])
    assert finished_run(other_tta) == run


def test_records_reused_when_the_data_settings_match(tmp_path):
    exp = load_experiment(KIDNEY, demo_overrides(tmp_path))
    built = exp.data.model_dump(mode="json")
    assert _same_data({**built, "workers": 7}, exp)
    assert not _same_data({**built, "tile_size": 2048}, exp)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the whole demo (~3 min on 2 idle cores), then its rerun
def test_demo_runs_end_to_end_and_reuses_its_steps(tmp_path, capsys):
    workdir = tmp_path / "demo"
    assert main(["demo", "--workdir", str(workdir), "--experiment", KIDNEY]) == 0
    summary = json.loads((workdir / "demo.json").read_text())
    assert summary["passed"] and summary["dice"] >= 0.80
    assert (workdir / "overlay.png").is_file() and (workdir / "submission.csv").is_file()
    assert "verdict" in capsys.readouterr().out
    # A second run reuses data, records and the trained model.
    assert main(["demo", "--workdir", str(workdir), "--experiment", KIDNEY]) == 0
    again = json.loads((workdir / "demo.json").read_text())
    assert again["reused"] == ["data", "records", "train"]
    assert again["dice"] == pytest.approx(summary["dice"])
