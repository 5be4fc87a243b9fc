"""Experiment schema: one YAML file drives every stage.

An experiment file has the sections ``data`` (sources and ETL), ``input``
(tf.data settings and augmentation), ``model``, ``train`` and ``predict``.
Each section is a small pydantic model with defaults, so a file only states
what differs. Unknown keys, wrong types and bad values are errors that name
the key, the file and what was expected.

Example:
    >>> from tfpipe.config import load_experiment
    >>> exp = load_experiment("experiments/kidney.yaml", overrides=["train.epochs=2"])
    >>> exp.train.epochs
    2

Relative paths inside the file are resolved against the current working
directory (the project root), like every other path given on the command line.

Modules: :mod:`~tfpipe.config.pipeline` (``data`` and ``input``),
:mod:`~tfpipe.config.experiment` (``model``, ``train``, ``predict``, ``bench``
and the whole file), :mod:`~tfpipe.config.loading` (YAML, overrides, errors).
Everything is importable from ``tfpipe.config``.
"""

from tfpipe.config.experiment import (
    BenchConfig,
    Experiment,
    LookaheadConfig,
    ModelConfig,
    PredictConfig,
    TrainConfig,
)
from tfpipe.config.loading import apply_override, format_validation_error, load_experiment
from tfpipe.config.pipeline import AugmentConfig, DataConfig, InputConfig, Section, TissueFilter

__all__ = [
    "AugmentConfig",
    "BenchConfig",
    "DataConfig",
    "Experiment",
    "InputConfig",
    "LookaheadConfig",
    "ModelConfig",
    "PredictConfig",
    "Section",
    "TissueFilter",
    "TrainConfig",
    "apply_override",
    "format_validation_error",
    "load_experiment",
]
