"""YAML-driven Keras training with cross-validation by source image, and the experiment log.

* :func:`train_experiment` (``trainer``): every fold of an experiment, one run folder.
* ``fold``: one fold (data, model, callbacks, fit, result); ``folds``: fold selection.
* ``optim``: optimizer + learning-rate schedule (+ Lookahead); ``distribute``: tf.distribute.
* ``callbacks``: NaN guard, atomic best checkpoint, step-exact BackupAndRestore, clock.
* ``rundir`` / ``summary`` / ``runlog``: run folders, results, ``tfpipe runs``.
* ``curves``: learning-curve PNGs of a run and ``tfpipe runs --plot`` (no TensorFlow).

``tfpipe.train.runlog`` and ``rundir`` import no TensorFlow; the trainer does.

Example:
    >>> from tfpipe.config import load_experiment
    >>> from tfpipe.train import train_experiment
    >>> summary = train_experiment(load_experiment("experiments/kidney.yaml"))  # doctest: +SKIP
"""

from typing import Any

__all__ = ["print_runs", "train_experiment"]


def __getattr__(name: str) -> Any:
    # Lazy: `tfpipe runs` must not pay for importing TensorFlow.
    if name == "train_experiment":
        from tfpipe.train.trainer import train_experiment

        return train_experiment
    if name == "print_runs":
        from tfpipe.train.runlog import print_runs

        return print_runs
    raise AttributeError(name)
