"""An interrupted fold resumes at the exact step: the same batches from there on, the same weights.

Records: fold 1 (the training fold of validation fold 0) holds 12 tiles, so
a data epoch is 3 batches of 4 while a Keras epoch is 4 steps: the stream's
epochs and Keras's epochs do not line up, and the resume must still land on
the right batch. The run stops inside its first epoch after 2 steps (backup
every step); the resumed run trains steps 2-7 as two ``fit`` calls (the
rest of epoch 1, then epoch 2). ``train.deterministic`` makes the input
order and the ops deterministic, so the resumed run must end with the
weights of an uninterrupted one: tolerance 1e-6 absolute (they are equal
bit for bit on CPU).

The fast test stops the run with an exception raised from a callback; the
slow one kills a child process with SIGKILL at the same step.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfpipe.train.fold
from tests._train_helpers import CHILD_PRELUDE, experiment, history, use_tiny_model, write_records
from tfpipe.train.crossval import plan_folds
from tfpipe.train.fold import FoldJob, training_stream, validation_data
from tfpipe.train.trainer import train_experiment

OVERRIDES = (
    "train.epochs=2",
    "train.steps_per_epoch=4",
    "train.backup_freq=1",
    "train.deterministic=true",
    "input.augment.flip=true",
)
STOP = (0, 1)  # (epoch, batch) after which the run stops: 2 steps done
# Colour jitter in the model (input.augment.colour_in_model): its draw state must
# come back with the backup, or the resumed steps recolour differently.
COLOUR_IN_MODEL = (
    "input.augment.colour_in_model=true",
    "input.augment.brightness=0.2",
    "input.augment.hue=0.05",
    "input.augment.saturation=0.2",
)


class Stop(Exception):
    """Stands for the process being killed."""


class StopAt(keras.callbacks.Callback):
    """Raise :class:`Stop` after batch ``STOP[1]`` of epoch ``STOP[0]`` (backup already saved)."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if (self.epoch, batch) == STOP:
            raise Stop


class FinalWeights(keras.callbacks.Callback):
    """The model's weights when the last ``fit`` ends."""

    weights: list[np.ndarray]

    def on_train_end(self, logs: dict | None = None) -> None:
        self.weights = [np.array(w) for w in self.model.get_weights()]


def spy_on_streams(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, list[str]]]:
    """Record every training stream the fold builds: ``(start_step, batch fingerprints)``.

    A batch's fingerprint is logged when the stream produces it; a plain
    ``map`` keeps the stream's order, so the first n fingerprints of a stream
    are the n batches its ``fit`` trained on (prefetching only adds more).
    """
    streams: list[tuple[int, list[str]]] = []
    build = tfpipe.train.fold.training_stream

    def spied(job, folds, start_step):
        seen: list[str] = []
        streams.append((start_step, seen))

        def log(images, masks):
            seen.append(
                hashlib.sha1(images.numpy().tobytes() + masks.numpy().tobytes()).hexdigest()
            )
            return images

        def tap(images, masks):
            logged = tf.py_function(log, [images, masks], Tout=tf.uint8)
            return tf.ensure_shape(logged, images.shape), masks

        return build(job, folds, start_step).map(tap)

    monkeypatch.setattr(tfpipe.train.fold, "training_stream", spied)
    return streams


def assert_same_weights(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("colour", [(), COLOUR_IN_MODEL], ids=["tf.data", "colour_in_model"])
def test_interrupted_fold_resumes_on_the_same_batches_with_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, colour: tuple[str, ...]
) -> None:
    records = write_records(tmp_path / "rec", folds=2, per_fold=12)
    use_tiny_model(monkeypatch)
    streams = spy_on_streams(monkeypatch)
    overrides = (*OVERRIDES, *colour)
    with pytest.raises(Stop):
        train_experiment(
            experiment(records, tmp_path / "a", *overrides), folds=[0], callbacks=[StopAt()]
        )
    run = next((tmp_path / "a").iterdir())
    meta = json.loads((run / "fold0/backup/training_metadata.json").read_text())
    assert (meta["epoch"], meta["steps_in_epoch"]) == (0, 2)
    resumed_weights, whole_weights = FinalWeights(), FinalWeights()
    resumed = train_experiment(
        experiment(records, tmp_path / "a", *overrides), resume=run, callbacks=[resumed_weights]
    )
    whole = train_experiment(
        experiment(records, tmp_path / "b", *overrides), folds=[0], callbacks=[whole_weights]
    )

    # Streams: stopped run from 0; resumed run from step 2 (rest of epoch 1), then
    # from step 4 (epoch 2); uninterrupted run from 0.
    assert [start for start, _ in streams] == [0, 2, 4, 0]
    (_, stopped), (_, rest), (_, last), (_, full) = streams
    assert len(full) >= 8 and len(set(full[:8])) == 8  # data epochs differ: no replays
    assert stopped[:2] == full[:2]
    assert rest[:2] == full[2:4] and last[:4] == full[4:8]
    assert resumed.folds[0].steps == whole.folds[0].steps == 2 * 4
    assert_same_weights(resumed_weights.weights, whole_weights.weights)


def test_streams_are_sharded_by_data_across_workers(tmp_path: Path) -> None:
    """Step s must be batch s of the stream on every worker, so no worker gets whole epochs."""
    records = write_records(tmp_path / "rec", folds=2, per_fold=12)
    exp = experiment(records, tmp_path / "runs", *OVERRIDES)
    job = FoldJob(exp, None, plan_folds(exp), 0, tf.distribute.get_strategy())
    data = tf.data.experimental.AutoShardPolicy.DATA
    for ds in (training_stream(job, [1], 5), validation_data(job, [0])):
        assert ds.options().experimental_distribute.auto_shard_policy == data


CHILD = CHILD_PRELUDE + textwrap.dedent(
    f"""
    import os, signal
    from pathlib import Path
    import keras
    from tfpipe.train.trainer import train_experiment

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if (self.epoch, batch) == {STOP}:
                os.kill(os.getpid(), signal.SIGKILL)

    records, runs, *overrides = sys.argv[1:]
    exp = _train_helpers.experiment(Path(records), Path(runs), *overrides)
    train_experiment(exp, folds=[0], callbacks=[Kill()])
    """
)


@pytest.mark.slow
@pytest.mark.timeout(900)  # the child's own limit (600 s), then two short runs here
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
    assert (meta["epoch"], meta["steps_in_epoch"]) == (0, 2)  # stopped inside epoch 1
    assert not (run / "fold0/result.json").exists() and not (run / "summary.json").exists()

    use_tiny_model(monkeypatch)
    resumed_weights, whole_weights = FinalWeights(), FinalWeights()
    resumed = train_experiment(
        experiment(records, tmp_path / "killed", *OVERRIDES),
        resume=run,
        callbacks=[resumed_weights],
    )
    whole = train_experiment(
        experiment(records, tmp_path / "whole", *OVERRIDES), folds=[0], callbacks=[whole_weights]
    )
    assert resumed.folds[0].steps == whole.folds[0].steps == 2 * 4
    assert_same_weights(resumed_weights.weights, whole_weights.weights)
    epochs = [int(r["epoch"]) for r in history(run / "fold0/history.csv")]
    assert epochs == [0, 1]
    assert (run / "summary.json").is_file() and not (run / "fold0/backup").exists()
