"""``tfpipe train``: cross-validated Keras training driven by one experiment file.

For every validation fold (``train.folds`` or ``--fold K``) the model is
trained on the other folds' records and validated on fold K's, whole source
images never crossing the split. A run writes ``runs/<timestamp>-<name>/``
(see :mod:`tfpipe.train.rundir`): the resolved config, per-fold best
checkpoints, history, learning curves (``curves.png``, redrawn after every
epoch: :mod:`tfpipe.train.curves`), TensorBoard logs, and ``summary.json``
with the per-fold and cross-validation scores, printed as a table at the end.

Global state is set here and nowhere else: the Keras dtype policy
(``train.mixed_precision``: ``auto`` is mixed_float16 when a GPU is visible,
float32 otherwise), restored on the way out, and, with
``train.deterministic``, TensorFlow op determinism, which stays on (TensorFlow
exports no switch-off). ``keras.utils.set_random_seed(train.seed)`` runs
at the start of every fold, so a fold trains the same whether it runs alone
(``--fold K``) or among all folds.

``--resume RUN_DIR|latest`` continues a run with the config it was started
with: finished folds (``result.json``) are skipped, an interrupted fold
continues from its last backup at the exact step. ``latest`` is the newest
run with something to resume (a backup or a finished fold, no summary).

Under ``train.strategy: multi_worker`` only the chief writes the run folder;
every other worker writes a scratch copy under ``runs_dir/.worker<i>/``,
deleted when its run finishes (:func:`is_scratch`). With ``input.service``
the dispatcher must answer first (bounded wait), and the chief draws the
run's service job name for all (:func:`tfpipe.train.distribute.shared_token`).

Example:
    >>> from tfpipe.config import load_experiment
    >>> from tfpipe.train.trainer import train_experiment
    >>> exp = load_experiment("experiments/kidney.yaml", ["train.epochs=2"])
    >>> summary = train_experiment(exp, folds=[0])        # doctest: +SKIP
    >>> summary.mean                                      # doctest: +SKIP
    0.71
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfpipe.config import Experiment, TrainConfig, load_experiment
from tfpipe.data.extra import read_extra_manifests
from tfpipe.data.service import wait_for_dispatcher
from tfpipe.errors import ConfigError
from tfpipe.train import callbacks as cb
from tfpipe.train.crossval import FoldPlan, plan_folds
from tfpipe.train.curves import CURVES_NAME
from tfpipe.train.distribute import (
    check_tf_config,
    is_chief,
    make_strategy,
    num_workers,
    shared_token,
    tf_config,
    worker_name,
)
from tfpipe.train.fold import FoldJob, train_fold
from tfpipe.train.rundir import (
    RESULT_NAME,
    RunDir,
    create_run,
    latest_resumable,
    resolve_run,
)
from tfpipe.train.runlog import diff_configs
from tfpipe.train.summary import FoldResult, RunSummary, print_summary, summarize


def train_experiment(
    exp: Experiment,
    folds: Sequence[int] | None = None,
    resume: str | Path | None = None,
    name: str | None = None,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
) -> RunSummary:
    """Train every selected fold of ``exp`` and write the run folder.

    The folds and the records (task, labels) are checked before a new run
    folder is created, and a new run that fails before its first training
    step (a model that does not build, Ctrl-C) is removed again: a failed
    start leaves no run behind.

    Args:
        exp: The validated experiment (``load_experiment``).
        folds: Validation folds to train (``--fold``); None uses ``train.folds``.
        resume: A run folder, its name, or ``"latest"`` (the newest resumable
            run): continue that run.
        name: Run name (default ``exp.name``); the folder is ``<timestamp>-<name>``.
        callbacks: Extra Keras callbacks added to every fold's ``fit``.

    Returns:
        The :class:`RunSummary` (also in ``summary.json``). Its ``seconds`` add
        up every session of a resumed run.

    Raises:
        ConfigError: bad fold, model/records mismatch, unknown run to resume.
        RecordsError: the records folder is missing or damaged.
        TrainingDiverged: the loss became NaN or infinite.
    """
    from rich.console import Console

    console = Console()
    run, exp, plan = open_run(exp, folds, resume, name, console)
    scratch = is_scratch(exp)
    if scratch:
        console.print(
            f"{worker_name()} of {num_workers()}: the chief writes the run folder; this worker's "
            f"copy goes to {run.path} (deleted when the run ends)",
            soft_wrap=True,
        )
    else:
        console.print(f"run folder: {run.path}")
    marker = cb.FirstStep()
    try:
        results, seconds = train_folds(exp, run, plan, [*(callbacks or []), marker], console)
    except BaseException:
        if resume is None and not marker.seen:
            # Nothing trained: a run folder would only be listed and picked by --resume.
            if scratch:
                remove_scratch(run)  # and its .worker<i> folder, once empty
            else:
                shutil.rmtree(run.path, ignore_errors=True)
        raise
    metric = "auc" if exp.model.task == "classification" else "dice"
    summary = summarize(run.name, metric, results, seconds)
    run.write_json("summary.json", summary.to_json())
    print_summary(summary, console)
    if scratch:
        remove_scratch(run)
    elif (run.path / CURVES_NAME).is_file():
        console.print(f"learning curves: {run.path / CURVES_NAME}")
    return summary


def is_scratch(exp: Experiment) -> bool:
    """This process is a ``multi_worker`` worker other than the chief: its run folder is a
    scratch copy under ``runs_dir/.worker<i>/`` (Keras needs every worker to save)."""
    return exp.train.strategy == "multi_worker" and not is_chief()


def remove_scratch(run: RunDir) -> None:
    """Delete a finished non-chief copy, and its ``.worker<i>`` folder once empty.

    An unfinished copy stays: ``--resume`` on this worker restores from it.
    """
    shutil.rmtree(run.path, ignore_errors=True)
    with contextlib.suppress(OSError):
        run.path.parent.rmdir()  # only when empty: another run of this worker may be there


def train_folds(
    exp: Experiment,
    run: RunDir,
    plan: FoldPlan,
    callbacks: list[keras.callbacks.Callback],
    console: Any,
) -> tuple[list[FoldResult], float]:
    """Train the plan's folds not done yet; ``(results, seconds over every session)``.

    The seconds are this session's wall time plus what earlier sessions
    recorded: finished folds' ``seconds`` and the training time stored with
    an interrupted fold's backup.
    """
    results: list[FoldResult] = []
    earlier = 0.0
    started = time.perf_counter()
    with training_environment(exp.train):
        if exp.input.service:
            # Before the strategy: a wrong address fails within a minute, naming itself,
            # instead of TensorFlow retrying it silently while the other workers wait.
            wait_for_dispatcher(exp.input.service)
        strategy = make_strategy(exp.train.strategy)
        served = exp.input.service and exp.train.strategy == "multi_worker" and num_workers() > 1
        # One service job name per run, drawn by the chief: new on every run, shared by all.
        prefix = exp.input.service_job_name or exp.name
        service_job = f"{prefix}-{shared_token(strategy)}" if served else None
        for fold in plan.folds:
            done = run.read_json(f"fold{fold}/{RESULT_NAME}")
            if done is not None:
                console.print(f"fold {fold}: already done (score {done['score']:.4f}), skipped")
                results.append(FoldResult.from_json(done))
                earlier += results[-1].seconds
                continue
            backup = run.backup_state(fold)
            earlier += float(backup.get("seconds", 0.0)) if backup else 0.0
            job = FoldJob(exp, run, plan, fold, strategy, callbacks, console, service_job)
            results.append(train_fold(job))
    return results, earlier + time.perf_counter() - started


def open_run(
    exp: Experiment,
    folds: Sequence[int] | None,
    resume: str | Path | None,
    name: str | None,
    console: Any,
) -> tuple[RunDir, Experiment, FoldPlan]:
    """Check the folds and records, then create a new run folder, or reopen the one to
    resume with its own config."""
    runs_dir = Path(exp.train.runs_dir)
    if exp.train.strategy == "multi_worker":
        check_tf_config()  # before anything is written: a bad TF_CONFIG leaves nothing behind
    if is_scratch(exp):
        # Other workers keep their own state so each can restore it on resume.
        runs_dir = runs_dir / f".worker{tf_config().get('task', {}).get('index', 0)}"
    requested = sorted({int(f) for f in folds}) if folds else None
    if resume is None:
        plan = plan_folds(exp, requested)
        check_records_match(exp, plan)
        if requested:
            exp.train.folds = requested
        return create_run(runs_dir, name or exp.name, exp.to_dict()), exp, plan
    run = latest_resumable(runs_dir) if str(resume) == "latest" else resolve_run(runs_dir, resume)
    saved = load_experiment(run.config_path)
    if requested and requested != saved.train.folds:
        raise ConfigError(
            f"--fold cannot change the folds of a resumed run; {run.name} trains "
            f"train.folds={saved.train.folds}; got --fold {requested}"
        )
    if requested:
        exp.train.folds = requested  # the same folds: not a change worth naming
    changed = diff_configs(saved.to_dict(), exp.to_dict())
    if changed:
        console.print(
            f"resuming {run.name} with the config it started with; ignoring: {'; '.join(changed)}"
        )
    plan = plan_folds(saved)
    check_records_match(saved, plan)
    return run, saved, plan


def check_records_match(exp: Experiment, plan: FoldPlan) -> None:
    """The records' task and label count must fit the model section, and the
    ``input.extra_records`` the records (:mod:`tfpipe.data.extra`)."""
    manifest, where = plan.manifest, exp.source_path or "<defaults>"
    if manifest.task != exp.model.task:
        raise ConfigError(
            f"model.task is {exp.model.task!r} but the records in {plan.records} are "
            f"{manifest.task!r}; set model.task: {manifest.task} in {where}"
        )
    names = manifest.class_names
    if manifest.task == "classification" and names and len(names) != exp.model.classes:
        raise ConfigError(
            f"model.classes must equal the {len(names)} labels of the records "
            f"({', '.join(names)}); got model.classes={exp.model.classes} in {where}"
        )
    masks = manifest.mask_classes or ["(binary)"]
    if manifest.task == "segmentation" and len(masks) != exp.model.classes:
        raise ConfigError(
            f"model.classes must equal the {len(masks)} mask class(es) of the records in "
            f"{plan.records} ({', '.join(masks)}: manifest mask_classes); got "
            f"model.classes={exp.model.classes} in {where}"
        )
    # Before a run folder exists: extra training records must fit the main ones.
    read_extra_manifests(manifest, exp.input.extra_records)


def precision_policy(setting: str) -> str:
    """``train.mixed_precision`` → Keras dtype policy name."""
    if setting == "on":
        return "mixed_float16"
    if setting == "off":
        return "float32"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"


@contextlib.contextmanager
def training_environment(cfg: TrainConfig) -> Iterator[str]:
    """Set the dtype policy (and op determinism) for the run; restore the policy afterwards.

    ``train.deterministic`` switches TensorFlow's op determinism on for the rest
    of the process: TensorFlow exports no way to switch it off again.
    """
    previous = keras.mixed_precision.global_policy()
    policy = precision_policy(cfg.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous)
