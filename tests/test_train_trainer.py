"""The trainer end to end on tiny records: run folder, folds, seeds, NaN, Ctrl-C, resume, AUC.

The segmentation-models network is swapped for a three-convolution model with
the same outer shape (see ``_train_helpers``); the builders have their own tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

import tfpipe.train.fold
from tests._train_helpers import experiment, history, tiny_model, use_tiny_model, write_records
from tfpipe.errors import ConfigError
from tfpipe.models import load_model
from tfpipe.train.callbacks import TrainingDiverged
from tfpipe.train.trainer import train_experiment


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_records(tmp_path_factory.mktemp("rec") / "kidney", folds=2, per_fold=12)


@pytest.fixture(autouse=True)
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny_model(monkeypatch)


def test_one_fold_run(records: Path, tmp_path: Path) -> None:
    summary = train_experiment(experiment(records, tmp_path, "train.epochs=1"), folds=[1])
    run = next(tmp_path.iterdir())
    assert [f.fold for f in summary.folds] == [1] and summary.folds[0].steps == 2
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["folds"] == [1]
    assert sorted(p.name for p in (run / "fold1").iterdir()) == [
        "best.keras",
        "history.csv",
        "result.json",
        "tb",
    ]
    assert json.loads((run / "summary.json").read_text())["folds"][0]["fold"] == 1


def test_run_folder_holds_config_checkpoints_history_and_summary(
    records: Path, tmp_path: Path
) -> None:
    exp = experiment(
        records,
        tmp_path,
        "train.deterministic=true",
        "train.lookahead.enabled=true",
        "train.lookahead.k=2",
    )
    summary = train_experiment(exp, name="smoke")
    run = next(tmp_path.iterdir())
    assert run.name.endswith("-smoke")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["output"] == str(records) and config["train"]["lookahead"]["k"] == 2
    assert config["input"]["augment"]["hue"] == 0.0  # resolved: defaults written out
    saved = json.loads((run / "summary.json").read_text())
    assert [f["fold"] for f in saved["folds"]] == [0, 1]
    for k in (0, 1):
        fold = run / f"fold{k}"
        assert (fold / "best.keras").is_file() and (fold / "tb").is_dir()
        assert not (fold / "backup").exists()  # removed once the fold is done
        rows = history(fold / "history.csv")
        assert [int(r["epoch"]) for r in rows] == [0, 1]
        best = max(rows, key=lambda r: float(r["val_dice"]))
        result = summary.folds[k]
        assert result.score == pytest.approx(float(best["val_dice"]))
        assert result.iou == pytest.approx(float(best["val_iou"]))
        assert result.best_epoch == int(best["epoch"]) + 1 and result.steps == 4
        assert load_model(fold / "best.keras").output.dtype == "float32"
    assert summary.mean == pytest.approx(np.mean([f.score for f in summary.folds]))
    assert summary.min == pytest.approx(min(f.score for f in summary.folds))
    assert saved["mean"] == pytest.approx(summary.mean)


# Slow: in the default run, test_train_resume.py's test_interrupted_fold_resumes_on_the_same_
# batches_with_the_same_weights checks more (with train.deterministic, two runs, one of them
# resumed, end with the same weights); test_one_fold_run checks that --fold is logged.
@pytest.mark.slow
def test_same_seed_gives_the_same_fold_metrics(records: Path, tmp_path: Path) -> None:
    overrides = ("train.deterministic=true", "train.epochs=1", "input.augment.flip=true")
    first = train_experiment(experiment(records, tmp_path / "a", *overrides), folds=[1])
    second = train_experiment(experiment(records, tmp_path / "b", *overrides), folds=[1])
    assert [f.fold for f in first.folds] == [1]
    assert first.folds[0].score == pytest.approx(second.folds[0].score, abs=1e-4)
    hist = [
        history(next(p.iterdir()).joinpath("fold1/history.csv"))
        for p in (tmp_path / "a", tmp_path / "b")
    ]
    assert float(hist[0][0]["loss"]) == pytest.approx(float(hist[1][0]["loss"]), abs=1e-4)
    config = yaml.safe_load(next((tmp_path / "a").iterdir()).joinpath("config.yaml").read_text())
    assert config["train"]["folds"] == [1]  # --fold is part of the logged config


def test_nan_loss_stops_with_fold_epoch_and_step(
    records: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def nan_model(cfg, input_shape, augment=None):
        base = tiny_model(cfg, input_shape, augment)
        out = keras.layers.Rescaling(float("nan"), name="poison")(
            base.get_layer("final_conv").output
        )
        return keras.Model(base.input, keras.layers.Activation("sigmoid", dtype="float32")(out))

    monkeypatch.setattr(tfpipe.train.fold, "build_model", nan_model)
    with pytest.raises(TrainingDiverged, match=r"fold 0, epoch 1, step 1 .*train.learning_rate"):
        train_experiment(experiment(records, tmp_path))


class InterruptAt(keras.callbacks.Callback):
    """Raise KeyboardInterrupt (as Ctrl-C does) at an epoch and batch of the n-th ``fit``."""

    def __init__(self, fit: int, epoch: int, batch: int) -> None:
        super().__init__()
        self.target, self.fits, self.current = (fit, epoch, batch), 0, -1

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.fits += 1

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.current = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if (self.fits, self.current, batch) == self.target:
            raise KeyboardInterrupt


def test_ctrl_c_leaves_last_checkpoint_and_resume_skips_done_folds(
    records: Path, tmp_path: Path
) -> None:
    exp = experiment(records, tmp_path, "train.backup_freq=1", "train.epochs=2")
    interrupt = InterruptAt(fit=2, epoch=1, batch=0)  # fold 1, second (last) epoch, first step
    with pytest.raises(KeyboardInterrupt):
        train_experiment(exp, callbacks=[interrupt])
    run = next(tmp_path.iterdir())
    assert (run / "fold0/result.json").is_file() and not (run / "fold1/result.json").exists()
    last = load_model(run / "fold1/last.keras")
    assert last.output.shape[-1] == 1
    done_fold0 = json.loads((run / "fold0/result.json").read_text())
    # Resuming uses the run's own config, whatever the experiment passed in says.
    resumed = train_experiment(experiment(records, tmp_path, "train.epochs=9"), resume="latest")
    assert resumed.folds[0].score == pytest.approx(done_fold0["score"])  # skipped, not retrained
    assert resumed.folds[0].steps == resumed.folds[1].steps == 2 * 2  # exactly the planned steps
    assert [int(r["epoch"]) for r in history(run / "fold1/history.csv")] == [0, 1]


def test_resume_without_runs_is_a_config_error(records: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no run folder"):
        train_experiment(experiment(records, tmp_path), resume="latest")


def test_classification_reports_auc_per_label(tmp_path: Path) -> None:
    records = write_records(
        tmp_path / "cls", task="classification", folds=2, per_fold=12, classes=3
    )
    exp = experiment(
        records,
        tmp_path / "runs",
        "model.task=classification",
        "model.arch=densenet121",
        "model.classes=3",
        "train.loss=bce",
    )
    summary = train_experiment(exp, folds=[0])
    fold = summary.folds[0]
    assert summary.metric == "auc" and fold.metric == "auc"
    run = next((tmp_path / "runs").iterdir())
    rows = history(run / "fold0/history.csv")
    assert fold.score == pytest.approx(max(float(r["val_auc"]) for r in rows))  # best epoch
    assert set(fold.label_auc) == {"label0", "label1", "label2"}
    assert all(v is None or 0.0 <= v <= 1.0 for v in fold.label_auc.values())
    with pytest.raises(ConfigError, match=r"model\.classes must equal the 3 labels"):
        train_experiment(
            experiment(
                records,
                tmp_path / "runs",
                "model.task=classification",
                "model.arch=densenet121",
                "model.classes=14",
            )
        )


def test_task_mismatch_is_a_config_error(records: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.task is 'classification' but the records"):
        train_experiment(experiment(records, tmp_path, "model.task=classification"))
