"""What every command shares: the experiment argument, ``--set``, and loading the experiment."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic and YAML load only when a command needs an experiment
    from tfpipe.config import Experiment

DEFAULT_EXPERIMENT = Path("experiments/kidney.yaml")


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ INFO lines (CUDA probing, CPU features) off the progress bars.

    Its warnings and errors still show.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("SM_FRAMEWORK", "tf.keras")


def experiment_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """The experiment YAML (positional; kidney.yaml unless ``required``) and ``--set``."""
    if required:
        p.add_argument("experiment", type=Path, help="experiment YAML file")
    else:
        p.add_argument(
            "experiment",
            type=Path,
            nargs="?",
            default=DEFAULT_EXPERIMENT,
            help=f"experiment YAML file (default: {DEFAULT_EXPERIMENT})",
        )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set train.epochs=3 (repeatable)",
    )


def load_args(args: argparse.Namespace) -> Experiment:
    """The experiment named on the command line, with its ``--set`` overrides."""
    from tfpipe.config import load_experiment

    return load_experiment(args.experiment, args.overrides)
