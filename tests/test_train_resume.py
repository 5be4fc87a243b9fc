"""A training killed with SIGKILL mid-epoch resumes and ends after exactly the planned steps."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _train_helpers import CHILD_PRELUDE, experiment, use_tiny_model, write_records

from tfpipe.train.trainer import train_experiment

OVERRIDES = ("train.epochs=3", "train.steps_per_epoch=4", "train.backup_freq=1")

CHILD = CHILD_PRELUDE + textwrap.dedent(
    """
    import os, signal
    from pathlib import Path
    import keras
    from tfpipe.train.trainer import train_experiment

    class KillDuringEpoch2(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 1:  # second epoch, after its second step
                os.kill(os.getpid(), signal.SIGKILL)

    records, runs, *overrides = sys.argv[1:]
    exp = _train_helpers.experiment(Path(records), Path(runs), *overrides)
    train_experiment(exp, folds=[0], callbacks=[KillDuringEpoch2()])
    """
)


def test_sigkill_then_resume_matches_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = write_records(tmp_path / "rec", folds=2, per_fold=12)
    killed = subprocess.run(
        [sys.executable, "-c", CHILD, str(records), str(tmp_path / "killed"), *OVERRIDES],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = next((tmp_path / "killed").iterdir())
    meta = json.loads((run / "fold0/backup/training_metadata.json").read_text())
    assert (meta["epoch"], meta["steps_in_epoch"]) == (1, 2)  # stopped inside epoch 2
    assert not (run / "fold0/result.json").exists() and not (run / "summary.json").exists()

    use_tiny_model(monkeypatch)
    resumed = train_experiment(experiment(records, tmp_path / "killed", *OVERRIDES), resume=run)
    whole = train_experiment(experiment(records, tmp_path / "whole", *OVERRIDES), folds=[0])
    assert resumed.folds[0].steps == whole.folds[0].steps == 3 * 4
    epochs = [int(r["epoch"]) for r in csv.DictReader((run / "fold0/history.csv").open())]
    assert epochs == [0, 1, 2]
    assert (run / "summary.json").is_file() and not (run / "fold0/backup").exists()
