"""Train one cross-validation fold: data, model, optimizer, callbacks, fit, result.

A fold that was interrupted resumes from its ``backup/``: weights, optimizer
state (moments, step counter, Lookahead slow weights) and the exact
position, ``(epoch, steps done in it)``. The rest of the interrupted epoch
runs as a short first ``fit`` and the remaining epochs as a second, so the
fold ends after exactly ``epochs × steps_per_epoch`` optimizer steps.

Training reads one endless stream, ``tfpipe.data.load(..., repeat=True)``:
optimizer step ``s`` trains on batch ``s`` of it, whatever
``train.steps_per_epoch`` is (a Keras epoch may end inside a data epoch or
span several). A resumed fold rebuilds the stream at ``start_step`` = steps
done (the batches before it are skipped unparsed); each ``fit`` starts a
fresh iterator, so each gets a stream built at its own first step.

Exact resume (the batches and final weights of an uninterrupted run) is
promised with a deterministic input: ``train.deterministic: true`` (which
also turns op determinism on) or ``input.deterministic: true``. Without it
the resumed run starts at the right batch of the same epochs, but parallel
reading may order records differently, so tiles near the interruption can be
seen twice or missed in that epoch. Not promised with ``input.service``.

``multi_worker`` shards both datasets by data (each worker builds the same
global stream and keeps its share of every global batch), so step ``s`` is
batch ``s`` everywhere. Sharding by files does not apply: ``load()`` opens
its files inside each epoch, and the auto-shard rewrite would hand whole
epochs to workers instead. With ``input.service`` the training stream is
not sharded: the trainers share one service job per fold (:func:`served_job`)
and each receives its own batches (:mod:`tfpipe.train.distribute`).

Example:
    >>> result = train_fold(FoldJob(exp, run, plan, fold=0, strategy=strategy))  # doctest: +SKIP
    >>> result.score                                                              # doctest: +SKIP
    0.83
"""

from __future__ import annotations

import functools
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import tfpipe.data
from tfpipe.config import Experiment
from tfpipe.data.extra import extra_record_count
from tfpipe.errors import ConfigError
from tfpipe.models import build_model, get_loss, load_model
from tfpipe.models.metrics import metric_name, roc_auc, segmentation_metrics
from tfpipe.train import callbacks as cb
from tfpipe.train.crossval import FoldPlan
from tfpipe.train.distribute import (
    multi_worker_fit,
    num_workers,
    shard_by_data,
    shard_input,
    weights_digest,
    worker_name,
)
from tfpipe.train.optim import build_optimizer, make_optimizer, plateau_callback
from tfpipe.train.rundir import RESULT_NAME, RunDir
from tfpipe.train.summary import FoldResult

BEST_WEIGHTS = "best.weights.h5"
"""The best epoch's weights while the fold runs (no optimizer state)."""
BEST_MODEL = "best.keras"
"""The fold's product, written once from :data:`BEST_WEIGHTS` when the fold ends."""


@dataclass
class FoldJob:
    """Everything one fold needs."""

    exp: Experiment
    run: RunDir
    plan: FoldPlan
    fold: int
    strategy: tf.distribute.Strategy
    extra_callbacks: Sequence[keras.callbacks.Callback] = field(default_factory=list)
    console: Any = None
    service_job: str | None = None
    """Under ``multi_worker`` with ``input.service``: the run's tf.data service job name,
    the same on every trainer (each training stream adds ``-fold{k}-step{s}``)."""

    @property
    def metric(self) -> str:
        return "auc" if self.exp.model.task == "classification" else "dice"

    @property
    def global_batch(self) -> int:
        per_replica = self.exp.train.batch_size or self.exp.input.batch_size
        return per_replica * self.strategy.num_replicas_in_sync

    @property
    def where(self) -> str:
        return f" in {self.exp.source_path}" if self.exp.source_path else ""


def train_fold(job: FoldJob) -> FoldResult:
    """Train (or finish training) fold ``job.fold`` and write its ``result.json``."""
    exp, folder = job.exp, job.run.fold_dir(job.fold)
    train_folds, val_folds = job.plan.split(job.fold)
    steps = training_steps(job)
    backup = cb.StepBackup(folder / "backup", exp.train.backup_freq, steps)
    start_epoch, done_steps, seconds_before = backup.progress() or (0, 0, 0.0)
    backup.step_offset, backup.seconds_before = done_steps, seconds_before
    job.console.print(describe(job, train_folds, val_folds, steps, start_epoch, done_steps))
    keras.utils.set_random_seed(exp.train.seed)
    train_at = functools.partial(training_stream, job, train_folds)
    train_ds = train_at(start_epoch * steps + done_steps)
    val_ds = validation_data(job, val_folds)
    with job.strategy.scope():
        model = compiled_model(job, tuple(train_ds.element_spec[0].shape[1:]), steps)
        # Restore before fit: a fold killed after its last step has nothing left to fit.
        backup.set_model(model)
        backup.restore()
    cb.trim_history(folder / "history.csv", start_epoch)
    clock = cb.EpochClock()
    callbacks = make_callbacks(job, folder, backup, clock, start_epoch)
    t0 = time.perf_counter()
    try:
        with multi_worker_fit(model, job.strategy):
            fit_remaining(
                model, train_ds, train_at, val_ds, callbacks, (start_epoch, done_steps, steps), exp
            )
    except KeyboardInterrupt:
        # Ctrl-C: leave a loadable model behind, then let the interrupt through.
        cb.close_on_failure(callbacks)
        cb.save_model_atomic(model, folder / "last.keras")
        job.console.print(f"interrupted: saved {folder / 'last.keras'}; resume with --resume")
        raise
    except BaseException:
        cb.close_on_failure(callbacks)
        raise
    seconds = seconds_before + time.perf_counter() - t0
    if exp.train.strategy == "multi_worker" and num_workers() > 1:
        # Every worker prints it: equal digests mean bit-identical weights (the check of
        # scripts/multiworker_localhost.py).
        job.console.print(
            f"fold {job.fold}: weights sha256 {weights_digest(model)} on {worker_name()}",
            soft_wrap=True,  # one line, whatever the terminal width: scripts parse it
        )
    cb.export_best(model, folder / BEST_WEIGHTS, folder / BEST_MODEL)
    result = fold_result(job, model, val_ds, folder, clock, seconds)
    job.run.write_json(f"fold{job.fold}/{RESULT_NAME}", result.to_json())
    # Resume state and the Ctrl-C model are superseded once the fold is done.
    shutil.rmtree(folder / "backup", ignore_errors=True)
    (folder / "last.keras").unlink(missing_ok=True)
    return result


def training_steps(job: FoldJob) -> int:
    """``train.steps_per_epoch``, or one pass over the training folds and the
    ``input.extra_records`` in full batches (at least 1)."""
    requested = job.exp.train.steps_per_epoch
    if requested is not None:
        return requested
    records = job.plan.train_records(job.fold) + extra_record_count(job.exp.input.extra_records)
    return max(1, records // job.global_batch)


def describe(
    job: FoldJob, train: list[int], val: list[int], steps: int, epoch: int, done: int
) -> str:
    """One line saying what the fold is about to do."""
    manifest, replicas = job.plan.manifest, job.strategy.num_replicas_in_sync
    extra = extra_record_count(job.exp.input.extra_records)
    mixed = f" + {extra} from input.extra_records" if extra else ""
    text = (
        f"[bold]fold {job.fold}[/]: train on folds {train} ({manifest.records_in_folds(train)} "
        f"tiles{mixed}), validate on {val} ({manifest.records_in_folds(val)} tiles); "
        f"{job.exp.train.epochs} epochs x {steps} steps of {job.global_batch} images "
        f"({replicas} replica(s), {keras.mixed_precision.global_policy().name})"
    )
    return text + (f"; resuming at epoch {epoch + 1}, step {done}" if epoch or done else "")


def compiled_model(job: FoldJob, input_shape: tuple[int, ...], steps: int) -> keras.Model:
    """The experiment's network, compiled with its optimizer, loss and metrics."""
    exp = job.exp
    try:
        model = build_model(exp.model, input_shape, augment=colour_layer(exp))
    except ConfigError as err:
        raise ConfigError(f"{err}{job.where}") from None
    model.compile(
        optimizer=make_optimizer(exp.train, steps, job.where),
        loss=get_loss(exp.train.loss, "softmax" if softmax_head(exp) else "sigmoid"),
        metrics=make_metrics(job, model),
    )
    build_optimizer(model)
    return model


def colour_layer(exp: Experiment) -> tfpipe.data.Augment | None:
    """The model's first layer with ``input.augment.colour_in_model``: the colour jitter.

    Seeded from ``input.seed``; its draw state is saved with the weights, so a
    resumed fold draws on exactly where it stopped.
    """
    ops = exp.input.augment.model_ops()
    return None if ops is None else tfpipe.data.Augment(ops, seed=exp.input.seed, name="augment")


def training_stream(job: FoldJob, train_folds: list[int], start_step: int) -> tf.data.Dataset:
    """The fold's endless training stream from batch ``start_step`` (= optimizer step)."""
    exp = job.exp
    train = tfpipe.data.load(
        job.plan.records,
        folds=train_folds,
        training=True,
        config=exp.input,
        batch_size=job.global_batch,
        deterministic=exp.train.deterministic or exp.input.deterministic,
        background_channel=softmax_head(exp),
        repeat=True,
        start_step=start_step,
        **served_job(job, start_step),
    )
    # repeat=True: a served stream repeats on the service workers, reshuffled every pass
    # (tfpipe.data.pipeline._served_epoch). Trainers of a multi_worker run must never run
    # out of batches: a worker whose input ends leaves the others waiting in a collective.
    return shard_input(train, served=bool(exp.input.service))


def served_job(job: FoldJob, start_step: int) -> dict[str, str]:
    """``service_job_name`` for a multi-worker stream: one job per run, fold and start step.

    A name stands for one dataset (the folds and the start step are part of it), and
    each ``fit`` of a resumed fold builds a stream with its own start step.
    """
    if not job.service_job:
        return {}
    return {"service_job_name": f"{job.service_job}-fold{job.fold}-step{start_step}"}


def validation_data(job: FoldJob, val_folds: list[int]) -> tf.data.Dataset:
    """The validation fold: manifest order, every tile once, the last batch partial."""
    exp, manifest = job.exp, job.plan.manifest
    val = tfpipe.data.load(
        job.plan.records,
        folds=val_folds,
        training=False,
        config=exp.input,
        batch_size=job.global_batch,
        background_channel=softmax_head(exp),
    )
    if exp.input.val_balance is None and not exp.input.skip_corrupt:
        # Known length: Keras then sizes its progress bar and does not warn at the end.
        batches = math.ceil(manifest.records_in_folds(val_folds) / job.global_batch)
        val = val.apply(tf.data.experimental.assert_cardinality(batches))
    return shard_by_data(val)


def make_metrics(job: FoldJob, model: keras.Model) -> list[keras.metrics.Metric]:
    if job.metric == "auc":
        classes = int(model.output.shape[-1])
        return [keras.metrics.AUC(multi_label=True, num_labels=classes, name="auc")]
    classes = job.plan.manifest.mask_classes
    return segmentation_metrics(job.exp.train.threshold, classes, softmax_head(job.exp))


def softmax_head(exp: Experiment) -> bool:
    """A segmentation model with a softmax head: its targets carry a background channel."""
    return exp.model.task == "segmentation" and exp.model.activation == "softmax"


def make_callbacks(
    job: FoldJob, folder: Any, backup: cb.StepBackup, clock: cb.EpochClock, start_epoch: int
) -> list[keras.callbacks.Callback]:
    """History and best checkpoint before the backup: a kill between them repeats a row
    (deduplicated on reading) rather than losing one."""
    monitor, train = f"val_{job.metric}", job.exp.train
    rows = cb.read_history(folder / "history.csv")
    best_row, since_best = cb.best_of(rows, monitor)
    saved = (folder / BEST_WEIGHTS).is_file() or (folder / BEST_MODEL).is_file()
    best = best_row[monitor] if best_row and saved else None
    callbacks: list[keras.callbacks.Callback] = [
        cb.NaNGuard(job.fold, step_offset=backup.step_offset),
        clock,
        keras.callbacks.CSVLogger(str(folder / "history.csv"), append=True),
        cb.LearningCurves(job.run.path, job.metric),  # after the CSVLogger: reads its row
        cb.BestCheckpoint(folder / BEST_WEIGHTS, monitor, best=best),
        keras.callbacks.TensorBoard(
            str(folder / "tb"), write_graph=False, update_freq="epoch", profile_batch=0
        ),
    ]
    if train.early_stopping is not None:
        callbacks.append(
            cb.ResumableEarlyStopping(monitor, train.early_stopping, best=best, wait=since_best)
        )
    plateau = plateau_callback(train, monitor)
    if plateau is not None:
        callbacks.append(plateau)
    callbacks.append(backup)
    callbacks.extend(job.extra_callbacks)
    return callbacks


def fit_remaining(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    train_at: Callable[[int], tf.data.Dataset],
    val_ds: tf.data.Dataset,
    callbacks: list[keras.callbacks.Callback],
    position: tuple[int, int, int],
    exp: Experiment,
) -> None:
    """Finish the interrupted epoch (if any), then run the remaining epochs.

    Args:
        train_ds: The stream from the fold's next step (``train_at(start)``).
        train_at: Builds the stream from a given step; the second ``fit`` of
            a resumed fold needs one that starts at its own first step.
        position: ``(epoch, steps done in it, steps per epoch)``.
    """
    epoch, done_steps, steps = position
    common = {
        "validation_data": val_ds,
        "validation_steps": exp.train.validation_steps,
        "callbacks": callbacks,
        "verbose": 1 if sys.stdout.isatty() else 2,
        "shuffle": False,  # the pipeline shuffles
    }
    if done_steps and epoch < exp.train.epochs:
        model.fit(
            train_ds,
            initial_epoch=epoch,
            epochs=epoch + 1,
            steps_per_epoch=steps - done_steps,
            **common,
        )
        if model.stop_training:
            return
        epoch += 1
        train_ds = train_at(epoch * steps)
    if epoch < exp.train.epochs:
        model.fit(
            train_ds, initial_epoch=epoch, epochs=exp.train.epochs, steps_per_epoch=steps, **common
        )


def fold_result(
    job: FoldJob,
    model: keras.Model,
    val_ds: tf.data.Dataset,
    folder: Any,
    clock: cb.EpochClock,
    seconds: float,
) -> FoldResult:
    """Best-epoch scores from ``history.csv``; per-label AUC for classification, per-class
    dice for several mask classes."""
    monitor = f"val_{job.metric}"
    rows = cb.read_history(folder / "history.csv")
    best, _ = cb.best_of(rows, monitor)
    result = FoldResult(
        fold=job.fold,
        metric=job.metric,
        score=float(best[monitor]) if best else math.nan,
        iou=float(best["val_iou"]) if best and "val_iou" in best else None,
        best_epoch=int(best["epoch"]) + 1 if best else 0,
        epochs=len(rows),
        steps=int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        seconds=round(seconds, 2),
        images_per_second=round(clock.images_per_second(job.global_batch), 2),
    )
    names = job.plan.manifest.mask_classes or []
    if best and len(names) > 1:
        result.class_dice = {
            n: float(best[key]) for n in names if (key := f"val_{metric_name('dice', n)}") in best
        }
    if job.metric == "auc" and (folder / BEST_MODEL).is_file():
        result.label_auc = label_aucs(
            load_model(folder / BEST_MODEL), val_ds, job.plan.manifest.class_names
        )
    return result


def label_aucs(
    model: keras.Model, val_ds: tf.data.Dataset, names: list[str]
) -> dict[str, float | None]:
    """ROC AUC of every label on the validation fold (None where a label has one class)."""
    truth, scores = [], []
    for images, labels in val_ds:
        truth.append(labels.numpy())
        scores.append(model.predict_on_batch(images))
    aucs = roc_auc(np.concatenate(truth), np.concatenate(scores))
    names = names or [f"label{k}" for k in range(len(aucs))]
    return {
        n: (None if math.isnan(a) else round(float(a), 4))
        for n, a in zip(names, aucs, strict=False)
    }
