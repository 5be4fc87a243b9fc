"""Run folders: none for a failed start, ``--resume latest`` picks a resumable run, time over
sessions, the resume message, and which checkpoint files a fold keeps.

Tiny records and the three-convolution model of ``_train_helpers``; a run is
interrupted by raising ``KeyboardInterrupt`` from a callback (as Ctrl-C does).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras
import pytest

import tfpipe.train.fold
from tests._train_helpers import experiment, use_tiny_model, write_records
from tfpipe.cli import main
from tfpipe.errors import ConfigError
from tfpipe.train.callbacks import TrainingDiverged
from tfpipe.train.rundir import RunDir, create_run, list_runs
from tfpipe.train.runlog import RunRow, collect_rows
from tfpipe.train.summary import RunSummary
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
    def failing_build(cfg, input_shape, augment=None):
        raise error

    monkeypatch.setattr(tfpipe.train.fold, "build_model", failing_build)
    with pytest.raises(type(error)):
        train_experiment(experiment(records, tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_diverges_in_its_first_step_is_kept(
    records: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests._train_helpers import tiny_model

    def nan_model(cfg, input_shape, augment=None):
        base = tiny_model(cfg, input_shape, augment)
        out = keras.layers.Rescaling(float("nan"))(base.get_layer("final_conv").output)
        return keras.Model(base.input, keras.layers.Activation("sigmoid", dtype="float32")(out))

    monkeypatch.setattr(tfpipe.train.fold, "build_model", nan_model)
    with pytest.raises(TrainingDiverged):
        train_experiment(experiment(records, tmp_path))
    (run,) = list_runs(tmp_path)  # training began: the run is a run
    assert not run.resumable


# ----------------------------------------------------------------- one resume
#
# One resume of a copy of the ``stopped`` run (fixture ``resumed``) serves the
# checks below: ``--resume latest`` finds it among an empty and a finished run,
# the message names the one real change, the run time adds the earlier
# session, and the fold keeps only its final files.


def h5_groups(path: Path) -> set[str]:
    with h5py.File(path, "r") as f:
        return set(f.keys())


@dataclass
class Resumed:
    """What the runs folder held before the resume, and what the resume did."""

    runs: Path
    run: RunDir
    resumable_before: list[bool]
    row_before: RunRow
    backups_before: list[str]
    backup_groups: set[str]
    best_weights_groups: set[str]
    best_keras_before: bool
    summary: RunSummary
    out: str


@pytest.fixture(scope="module")
def resumed(records: Path, stopped: Path, tmp_path_factory: pytest.TempPathFactory) -> Resumed:
    runs = tmp_path_factory.mktemp("resumed")
    run = interrupted_run(stopped, runs)
    exp = experiment(records, runs)
    create_run(runs, "killed-while-starting", exp.to_dict())  # config.yaml only
    finished = create_run(runs, "finished", exp.to_dict())
    finished.write_json("summary.json", {"run": finished.name, "folds": []})
    fold = run.path / "fold0"
    meta = json.loads((fold / "backup/training_metadata.json").read_text())
    meta["seconds"] = 5000.0  # stands for a long first session
    (fold / "backup/training_metadata.json").write_text(json.dumps(meta))
    backups = sorted(p.name for p in (fold / "backup").iterdir())
    before = {
        "resumable_before": [r.resumable for r in list_runs(runs)],
        "row_before": next(r for r in collect_rows(runs) if r.run == run.name),
        "backups_before": backups,
        "backup_groups": h5_groups(fold / "backup" / backups[0]),
        "best_weights_groups": h5_groups(fold / "best.weights.h5"),
        "best_keras_before": (fold / "best.keras").exists(),
    }
    (fold / "backup/tmp-ckpt-00000-0000009.weights.h5").write_bytes(b"left by a kill")

    out = io.StringIO()
    changed = experiment(records, runs, *STOPPED, "train.learning_rate=0.02")
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        use_tiny_model(mp)
        mp.setenv("COLUMNS", "1000")
        summary = train_experiment(changed, folds=[0], resume="latest")
    return Resumed(runs, run, summary=summary, out=out.getvalue(), **before)


def test_resume_latest_skips_empty_and_finished_runs(resumed: Resumed) -> None:
    assert resumed.resumable_before == [True, False, False]
    assert resumed.summary.run == resumed.run.name and resumed.summary.folds[0].steps == 3 * 2
    assert f"run folder: {resumed.run.path}" in resumed.out


def test_resume_latest_without_a_resumable_run_says_why(records: Path, tmp_path: Path) -> None:
    exp = experiment(records, tmp_path)
    create_run(tmp_path, "empty", exp.to_dict())
    with pytest.raises(ConfigError, match=r"no resumable run folder in .*1 run\(s\): 0 finished"):
        train_experiment(exp, resume="latest")


def test_resume_message_names_real_changes_only(resumed: Resumed) -> None:
    lines = resumed.out.splitlines()
    (line,) = [x for x in lines if "with the config it started with; ignoring:" in x]
    # (train.runs_dir differs too: the run was copied here from another runs folder)
    assert "train.learning_rate: 0.01 → 0.02" in line
    assert "train.folds" not in resumed.out  # the same --fold as the run's: not "ignored"


def test_resume_cannot_change_the_folds(records: Path, stopped: Path, tmp_path: Path) -> None:
    run = interrupted_run(stopped, tmp_path)
    with pytest.raises(ConfigError, match=r"--fold cannot change .*got --fold \[1\]"):
        train_experiment(experiment(records, tmp_path), folds=[1], resume=run.path)


def test_resumed_run_time_adds_the_earlier_sessions(resumed: Resumed) -> None:
    assert resumed.row_before.status == "incomplete"
    assert resumed.row_before.seconds == pytest.approx(5000.0)
    summary = resumed.summary
    assert 5000.0 < summary.folds[0].seconds <= summary.seconds
    row = next(r for r in collect_rows(resumed.runs) if r.run == resumed.run.name)
    assert row.status == "done" and row.seconds == pytest.approx(summary.seconds)


def test_checkpoints_kept_per_fold_while_running_and_when_done(
    resumed: Resumed, tmp_path: Path
) -> None:
    # While running: one backup (4 steps done: epoch 1 and step 1 of epoch 2) with the
    # optimizer state; the best epoch so far as weights only; no best.keras yet.
    assert resumed.backups_before == ["ckpt-00001-0000001.weights.h5", "training_metadata.json"]
    assert "optimizer" in resumed.backup_groups
    assert "optimizer" not in resumed.best_weights_groups
    assert not resumed.best_keras_before
    # Done: the backup (and the stale temp file a kill left in it) and last.keras are gone.
    fold = resumed.run.path / "fold0"
    kept = sorted(p.name for p in fold.iterdir())
    assert kept == ["best.keras", "history.csv", "result.json", "tb"]
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
