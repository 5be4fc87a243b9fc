"""Run folders: none for a failed start, ``--resume latest`` picks a resumable run, time over
sessions, the resume message, and which checkpoint files a fold keeps.

Tiny records and the three-convolution model of ``_train_helpers``; a run is
interrupted by raising ``KeyboardInterrupt`` from a callback (as Ctrl-C does).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import h5py
import keras
import pytest
from _train_helpers import experiment, use_tiny_model, write_records

import tfpipe.train.fold
from tfpipe.cli import main
from tfpipe.errors import ConfigError
from tfpipe.train.callbacks import TrainingDiverged
from tfpipe.train.rundir import RunDir, create_run, list_runs
from tfpipe.train.trainer import train_experiment


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_records(tmp_path_factory.mktemp("rec") / "kidney", folds=2, per_fold=8)


@pytest.fixture(autouse=True)
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny_model(monkeypatch)
    monkeypatch.setenv("COLUMNS", "1000")  # rich wraps console lines at the terminal width


class InterruptAt(keras.callbacks.Callback):
    """Ctrl-C after training step ``batch`` of epoch ``epoch`` (the backup of that step saved)."""

    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__()
        self.target, self.epoch = (epoch, batch), -1

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if (self.epoch, batch) == self.target:
            raise KeyboardInterrupt


STOPPED = ("train.backup_freq=1", "train.epochs=3")


@pytest.fixture(scope="module")
def stopped(records: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs folder with one run of fold 0 stopped in its second epoch (a backup to resume)."""
    runs = tmp_path_factory.mktemp("stopped")
    with pytest.MonkeyPatch.context() as mp:
        use_tiny_model(mp)
        with pytest.raises(KeyboardInterrupt):
            train_experiment(
                experiment(records, runs, *STOPPED), folds=[0], callbacks=[InterruptAt(1, 0)]
            )
    return runs


def interrupted_run(stopped: Path, runs: Path) -> RunDir:
    """A copy of the ``stopped`` run in ``runs``."""
    (template,) = list_runs(stopped)
    shutil.copytree(template.path, runs / template.name)
    return RunDir(runs / template.name)


def write_cli_experiment(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\n")
    return path


def cli_overrides(records: Path, runs: Path) -> list[str]:
    exp = experiment(records, runs)
    pairs = {
        "data.output": exp.data.output,
        "train.runs_dir": exp.train.runs_dir,
        "input.batch_size": 4,
        "train.epochs": 1,
        "train.steps_per_epoch": 2,
        "train.mixed_precision": "off",
    }
    return [arg for key, value in pairs.items() for arg in ("--set", f"{key}={value}")]


# ---------------------------------------------------------------- failed starts


def test_fold_that_does_not_exist_is_exit_2_and_leaves_no_run_folder(
    records: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    args = ["train", str(write_cli_experiment(tmp_path)), "--fold", "9"]
    assert main(args + cli_overrides(records, runs)) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "tfpipe train: error: fold 9 does not exist: the records have folds [0, 1]; got --fold=[9]"
    ]
    assert not runs.exists() or list(runs.iterdir()) == []


def test_missing_records_and_task_mismatch_leave_no_run_folder(
    records: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    args = ["train", str(write_cli_experiment(tmp_path)), *cli_overrides(records, runs)]
    assert main([*args, "--set", f"data.output={tmp_path / 'nope'}"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main([*args, "--set", "model.task=classification"]) == 2
    assert "model.task is 'classification' but the records" in capsys.readouterr().err
    assert not runs.exists() or list(runs.iterdir()) == []


@pytest.mark.parametrize("error", [ConfigError("backbone 'nope' is unknown"), KeyboardInterrupt()])
def test_a_start_that_fails_before_the_first_step_removes_its_folder(
    records: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    def failing_build(cfg, input_shape):
        raise error

    monkeypatch.setattr(tfpipe.train.fold, "build_model", failing_build)
    with pytest.raises(type(error)):
        train_experiment(experiment(records, tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_diverges_in_its_first_step_is_kept(
    records: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from _train_helpers import tiny_model

    def nan_model(cfg, input_shape):
        base = tiny_model(cfg, input_shape)
        out = keras.layers.Rescaling(float("nan"))(base.get_layer("final_conv").output)
        return keras.Model(base.input, keras.layers.Activation("sigmoid", dtype="float32")(out))

    monkeypatch.setattr(tfpipe.train.fold, "build_model", nan_model)
    with pytest.raises(TrainingDiverged):
        train_experiment(experiment(records, tmp_path))
    (run,) = list_runs(tmp_path)  # training began: the run is a run
    assert not run.resumable


# ------------------------------------------------------------ --resume latest


def test_resume_latest_skips_empty_and_finished_runs(
    records: Path, stopped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = interrupted_run(stopped, tmp_path)
    exp = experiment(records, tmp_path)
    create_run(tmp_path, "killed-while-starting", exp.to_dict())  # config.yaml only
    finished = create_run(tmp_path, "finished", exp.to_dict())
    finished.write_json("summary.json", {"run": finished.name, "folds": []})
    assert [r.resumable for r in list_runs(tmp_path)] == [True, False, False]

    capsys.readouterr()
    summary = train_experiment(experiment(records, tmp_path), folds=[0], resume="latest")
    assert summary.run == real.name and summary.folds[0].steps == 3 * 2
    out = capsys.readouterr().out
    assert f"run folder: {real.path}" in out
    assert "train.folds" not in out  # the same --fold as the run's: not "ignored"


def test_resume_latest_without_a_resumable_run_says_why(records: Path, tmp_path: Path) -> None:
    exp = experiment(records, tmp_path)
    create_run(tmp_path, "empty", exp.to_dict())
    with pytest.raises(ConfigError, match=r"no resumable run folder in .*1 run\(s\): 0 finished"):
        train_experiment(exp, resume="latest")


def test_resume_message_names_real_changes_only(
    records: Path, stopped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = interrupted_run(stopped, tmp_path)
    capsys.readouterr()
    changed = experiment(records, tmp_path, *STOPPED, "train.learning_rate=0.02")
    train_experiment(changed, folds=[0], resume=run.path)
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if "with the config it started with; ignoring:" in x]
    # (train.runs_dir differs too: the run was copied here from another runs folder)
    assert "train.learning_rate: 0.01 → 0.02" in line and "train.folds" not in line
    with pytest.raises(ConfigError, match=r"--fold cannot change .*got --fold \[1\]"):
        train_experiment(experiment(records, tmp_path), folds=[1], resume=run.path)


# ------------------------------------------------------------------ run time


def test_resumed_run_time_adds_the_earlier_sessions(
    records: Path, stopped: Path, tmp_path: Path
) -> None:
    from tfpipe.train.runlog import collect_rows

    run = interrupted_run(stopped, tmp_path)
    meta_path = run.path / "fold0/backup/training_metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["seconds"] = 5000.0  # stands for a long first session
    meta_path.write_text(json.dumps(meta))
    (row,) = collect_rows(tmp_path)
    assert row.status == "incomplete" and row.seconds == pytest.approx(5000.0)

    summary = train_experiment(experiment(records, tmp_path), resume="latest")
    assert 5000.0 < summary.folds[0].seconds <= summary.seconds
    (row,) = collect_rows(tmp_path)
    assert row.status == "done" and row.seconds == pytest.approx(summary.seconds)


# ------------------------------------------------------------ checkpoint files


def h5_groups(path: Path) -> set[str]:
    with h5py.File(path, "r") as f:
        return set(f.keys())


def test_checkpoints_kept_per_fold_while_running_and_when_done(
    records: Path, stopped: Path, tmp_path: Path
) -> None:
    run = interrupted_run(stopped, tmp_path)
    fold = run.path / "fold0"
    backups = sorted(p.name for p in (fold / "backup").iterdir())
    # One backup (4 steps done: epoch 1 and step 1 of epoch 2), with the optimizer state.
    assert backups == ["ckpt-00001-0000001.weights.h5", "training_metadata.json"]
    assert "optimizer" in h5_groups(fold / "backup" / backups[0])
    # The best epoch so far: weights only, and no best.keras until the fold ends.
    assert "optimizer" not in h5_groups(fold / "best.weights.h5")
    assert not (fold / "best.keras").exists()
    (fold / "backup/tmp-ckpt-00000-0000009.weights.h5").write_bytes(b"left by a kill")

    train_experiment(experiment(records, tmp_path, *STOPPED), resume=run.path)
    kept = sorted(p.name for p in fold.iterdir())
    assert kept == ["best.keras", "history.csv", "result.json", "tb"]  # last.keras superseded
    with zipfile.ZipFile(fold / "best.keras") as z:
        z.extract("model.weights.h5", tmp_path)
    assert "optimizer" not in h5_groups(tmp_path / "model.weights.h5")
    from tfpipe.models import load_model

    assert load_model(fold / "best.keras").output.shape[-1] == 1


def test_backup_keeps_only_the_latest_state(records: Path, tmp_path: Path) -> None:
    seen: list[list[str]] = []

    class ListBackups(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            folder = next(tmp_path.iterdir()) / "fold0/backup"
            seen.append(sorted(p.name for p in folder.glob("*.weights.h5")))

    exp = experiment(records, tmp_path, "train.backup_freq=1", "train.epochs=2")
    train_experiment(exp, folds=[0], callbacks=[ListBackups()])
    assert len(seen) == 4 and all(len(names) == 1 for names in seen)
    assert seen[-1] == ["ckpt-00002-0000000.weights.h5"]
