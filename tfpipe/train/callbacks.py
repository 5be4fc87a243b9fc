"""Keras callbacks of a training fold: divergence guard, best checkpoint, resumable backup, clock.

* :class:`NaNGuard` replaces ``TerminateOnNaN``: a non-finite loss stops the run
  with a :class:`TrainingDiverged` error naming the fold, epoch and step.
* :class:`BestCheckpoint` saves the model's weights (no optimizer state) to
  ``best.weights.h5`` when the validation metric improves, through a temporary
  file (a kill never leaves half a checkpoint); :func:`export_best` turns
  them into the fold's ``best.keras`` once, when the fold ends. The optimizer
  state (2-3x the weights with Adam and Lookahead) lives only in the backup.
* :class:`StepBackup` is ``keras.callbacks.BackupAndRestore`` with exact progress:
  it records the epoch *and* the steps done in it, writes each backup atomically,
  and restores once, so a run killed mid-epoch resumes at the very step it reached.
* :class:`EpochClock` measures training throughput (validation time excluded).
* :class:`ResumableEarlyStopping` starts from the best value and patience count of
  the epochs run before an interruption.
* :class:`FirstStep` tells whether training began (a new run that failed
  before its first step is removed).
* :class:`LearningCurves` redraws the run's ``curves.png`` after every epoch
  (:mod:`tfpipe.train.curves`).

Example:
    >>> guard = NaNGuard(fold=0)
    >>> model.fit(train, callbacks=[guard])  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfpipe.errors import TfpipeError
from tfpipe.train.rundir import read_history


class TrainingDiverged(TfpipeError):
    """The loss became NaN or infinite."""


def _scalar(value: Any) -> float:
    return float(np.asarray(value))


def current_learning_rate(model: keras.Model) -> float:
    """The optimizer's learning rate now (schedules evaluated at the current step)."""
    return _scalar(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class NaNGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss with a message saying where and what to do."""

    def __init__(self, fold: int, step_offset: int = 0) -> None:
        super().__init__()
        self.fold = fold
        self.step_offset = step_offset
        self._epoch = 0
        self._first_epoch: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        if self._first_epoch is None:
            self._first_epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(_scalar(loss)):
            return
        offset = self.step_offset if self._epoch == self._first_epoch else 0
        lr = current_learning_rate(self.model)
        raise TrainingDiverged(
            f"loss became {_scalar(loss)} in fold {self.fold}, epoch {self._epoch + 1}, "
            f"step {offset + batch + 1} (learning rate {lr:.3g}); training stopped. "
            f"Lower train.learning_rate (e.g. --set train.learning_rate={lr / 10:.3g}), "
            "or set train.mixed_precision: off if it happens under float16"
        )


def save_model_atomic(model: keras.Model, path: Path) -> None:
    """``model.save(path)`` through a temporary ``.keras`` file renamed into place."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def save_weights_atomic(model: keras.Model, path: Path) -> None:
    """The model's weights without its optimizer state, to ``path`` (``*.weights.h5``)."""
    tmp = path.with_name(f".tmp-{path.name}")
    skip = [model.optimizer] if model.optimizer is not None else []
    keras.saving.save_weights(model, tmp, objects_to_skip=skip)
    os.replace(tmp, path)


def export_best(model: keras.Model, weights: Path, path: Path) -> bool:
    """Write ``path`` (``best.keras``) from the best epoch's ``weights``; remove ``weights``.

    The ``.keras`` file holds the architecture and the weights but no
    optimizer state: it is for prediction (and ``model.init_checkpoint``),
    while resuming uses the backup. False when there are no best weights.
    """
    weights.with_name(f".tmp-{weights.name}").unlink(missing_ok=True)  # a killed save's
    if not weights.is_file():
        return False
    # From the config: same layers and names, never compiled (clone_model would
    # compile the copy, and the saved file would carry an optimizer again).
    inference = keras.Model.from_config(model.get_config())
    inference.load_weights(weights)
    save_model_atomic(inference, path)
    weights.unlink()
    return True


class BestCheckpoint(keras.callbacks.Callback):
    """Save the weights to ``path`` whenever ``monitor`` beats the best value so far (max mode)."""

    def __init__(self, path: Path, monitor: str, best: float | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.best = best

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(_scalar(value)):
            return
        if self.best is None or _scalar(value) > self.best:
            self.best = _scalar(value)
            save_weights_atomic(self.model, self.path)


class FirstStep(keras.callbacks.Callback):
    """``seen`` turns True when the first training step of any ``fit`` it is given to begins.

    On the step's begin, not its end: a step that diverges has still trained.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.seen = True


class LearningCurves(keras.callbacks.Callback):
    """Redraw ``<run>/curves.png`` from the run's ``history.csv`` files as epochs end.

    Must come after the ``CSVLogger`` in the callback list, so that the
    epoch's row is on disk when the figure is drawn. Reading the files (not
    the logs of this ``fit``) keeps the epochs of earlier sessions of a
    resumed run and the folds finished before this one. A figure costs about
    a second, so it is redrawn at most every ``every_s`` seconds and always
    when training ends (:meth:`draw`, also called when ``fit`` is interrupted).
    """

    def __init__(self, run_path: Path, metric: str, every_s: float = 30.0) -> None:
        super().__init__()
        self.run_path = Path(run_path)
        self.metric = metric
        self.every_s = every_s
        self._drawn_at: float | None = None
        self._warned = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._drawn_at is None or time.monotonic() - self._drawn_at >= self.every_s:
            self.draw()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.draw()

    def draw(self) -> None:
        """Draw the figure now; a failure is one warning, never an exception."""
        from tfpipe.train.curves import write_run_curves

        self._drawn_at = time.monotonic()
        try:
            write_run_curves(self.run_path, self.metric)
        except Exception as err:  # a figure must never stop a training run of hours
            if not self._warned:
                self._warned = True
                print(f"warning: learning curves not drawn in {self.run_path}: {err}")


def close_on_failure(callbacks: list[keras.callbacks.Callback]) -> None:
    """What Keras' ``on_train_end`` would have done when ``fit`` raised instead.

    Keras skips ``on_train_end`` when ``fit`` raises (Ctrl-C, NaN, damaged
    records): the ``CSVLogger`` keeps ``history.csv`` open and the curves miss
    the last epochs. Both are public callback methods.
    """
    for callback in callbacks:
        if isinstance(callback, LearningCurves):
            callback.on_train_end()
        elif isinstance(callback, keras.callbacks.CSVLogger):
            opened = getattr(callback, "csv_file", None)  # set in on_train_begin
            if opened is not None and not opened.closed:
                callback.on_train_end()


class EpochClock(keras.callbacks.Callback):
    """Training seconds and steps of each epoch (the validation pass excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[tuple[int, float]] = []  # (steps, seconds)
        self._start = 0.0
        self._stop: float | None = None
        self._steps = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start, self._stop, self._steps = time.perf_counter(), None, 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps += 1

    def on_test_begin(self, logs: dict | None = None) -> None:
        if self._stop is None:
            self._stop = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        stop = self._stop if self._stop is not None else time.perf_counter()
        self.epochs.append((self._steps, stop - self._start))

    def images_per_second(self, batch_size: int) -> float:
        """Throughput over the epochs after the first (which pays for tracing), if any."""
        timed = self.epochs[1:] or self.epochs
        seconds = sum(s for _, s in timed)
        return sum(n for n, _ in timed) * batch_size / seconds if seconds > 0 else 0.0


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` (max mode) that can start from an earlier run's best and wait count."""

    def __init__(self, monitor: str, patience: int, best: float | None, wait: int) -> None:
        super().__init__(monitor=monitor, patience=patience, mode="max", verbose=1)
        self._resume_best, self._resume_wait = best, wait

    def on_train_begin(self, logs: dict | None = None) -> None:
        # A resumed fold runs two fits (rest of the interrupted epoch, then the
        # others); the patience count must carry over from one to the next.
        if getattr(self, "_started", False):
            return
        self._started = True
        super().on_train_begin(logs)
        if self._resume_best is not None:
            self.best, self.wait = self._resume_best, self._resume_wait


class StepBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that knows the step within the epoch and never half-writes.

    Each backup is ``ckpt-<epoch>-<step>.weights.h5`` (model + optimizer state,
    slow Lookahead weights included), then ``training_metadata.json`` naming
    it; older backups (and temporary files a kill left) are removed only
    after, so one backup is kept, two for a moment while the next is written.
    :meth:`progress` tells the trainer where to resume: ``(epoch, steps done
    in that epoch)``.

    Args:
        backup_dir: The fold's ``backup/`` folder.
        save_freq: ``"epoch"`` or a number of training steps.
        steps_per_epoch: Steps of a full epoch (to roll a finished epoch over).
        step_offset: Steps already done in the first epoch of this ``fit`` (resume).
    """

    def __init__(
        self,
        backup_dir: Path,
        save_freq: str | int,
        steps_per_epoch: int,
        step_offset: int = 0,
        seconds_before: float = 0.0,
    ) -> None:
        super().__init__(str(backup_dir), save_freq=save_freq, delete_checkpoint=False)
        self.steps_per_epoch = steps_per_epoch
        self.step_offset = step_offset
        self.seconds_before = seconds_before
        self._clock_start = time.perf_counter()
        self._position = (0, 0)
        self._first_epoch: int | None = None
        self._restored = False

    @property
    def metadata_path(self) -> Path:
        return Path(self.backup_dir) / "training_metadata.json"

    def progress(self) -> tuple[int, int, float] | None:
        """``(epoch, steps done in it, seconds trained so far)`` of the last backup, or None."""
        try:
            meta = json.loads(self.metadata_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if not (Path(self.backup_dir) / meta["weights"]).is_file():
            return None
        return int(meta["epoch"]), int(meta["steps_in_epoch"]), float(meta.get("seconds", 0.0))

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.restore()

    def restore(self) -> bool:
        """Load the last backup into the model (once); False when there is none."""
        if self._restored:
            return False
        self._restored = True
        if self.progress() is None:
            return False
        meta = json.loads(self.metadata_path.read_text())
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(Path(self.backup_dir) / meta["weights"])
        return True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._first_epoch is None:
            self._first_epoch = epoch
        self._position = (epoch, self.step_offset if epoch == self._first_epoch else 0)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        epoch = self._position[0]
        offset = self.step_offset if epoch == self._first_epoch else 0
        self._position = (epoch, offset + batch + 1)
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._position = (epoch + 1, 0)
        super().on_epoch_end(epoch, logs)

    def _save_model(self) -> None:
        epoch, steps = self._position
        if steps >= self.steps_per_epoch:
            epoch, steps = epoch + 1, 0
        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"ckpt-{epoch:05d}-{steps:07d}.weights.h5"
        tmp = folder / f"tmp-{name}"
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, folder / name)
        seconds = self.seconds_before + time.perf_counter() - self._clock_start
        meta = {"epoch": epoch, "steps_in_epoch": steps, "weights": name, "seconds": seconds}
        tmp_meta = self.metadata_path.with_suffix(".json.tmp")
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, self.metadata_path)
        for old in folder.glob("*ckpt-*.weights.h5"):  # tmp-ckpt-* of a killed save too
            if old.name != name:
                old.unlink(missing_ok=True)


def trim_history(path: Path, before_epoch: int) -> None:
    """Drop rows of epochs ``>= before_epoch`` (written after the backup a resume starts from)."""
    rows = read_history(path)
    if not rows or all(int(r["epoch"]) < before_epoch for r in rows):
        return
    kept = [r for r in rows if int(r["epoch"]) < before_epoch]
    fields = list(rows[0].keys())
    tmp = Path(path).with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in kept:
            writer.writerow({k: (int(v) if k == "epoch" else v) for k, v in row.items()})
    os.replace(tmp, path)


def best_of(rows: list[dict[str, float]], monitor: str) -> tuple[dict[str, float] | None, int]:
    """The best row on ``monitor`` (max) and the epochs run since it."""
    scored = [r for r in rows if monitor in r and math.isfinite(r[monitor])]
    if not scored:
        return None, 0
    best = max(scored, key=lambda r: r[monitor])
    return best, sum(1 for r in rows if r["epoch"] > best["epoch"])
