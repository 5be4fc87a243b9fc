"""What every command shares: the experiment argument, ``--set``, and loading the experiment."""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic and YAML load only when a command needs an experiment
    from tfpipe.config import Experiment

DEFAULT_EXPERIMENT = Path("experiments/kidney.yaml")

# What TensorFlow's CUDA build prints on a machine without an NVIDIA GPU when it
# probes for one: an ERROR-level cuInit line that TF_CPP_MIN_LOG_LEVEL=2 lets
# through (3 would hide every real error too), INFO lines logged before absl
# reads that variable, and the CPU-feature notice.
CPU_HOST_NOISE = (
    b"failed call to cuInit",
    b"Could not find cuda drivers on your machine",
    b"All log messages before absl::InitializeLog() is called",
    b"cpu_feature_guard",
    b"rebuild TensorFlow with the appropriate compiler flags",
)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ INFO lines (CUDA probing, CPU features) off the progress bars.

    Its warnings and errors still show.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("SM_FRAMEWORK", "tf.keras")


def has_gpu_device() -> bool:
    """Whether this machine shows an NVIDIA device node, a WSL GPU, or ``nvidia-smi``."""
    nodes = glob.glob("/dev/nvidia*") or os.path.exists("/dev/dxg")
    return bool(nodes) or shutil.which("nvidia-smi") is not None


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and let it probe for GPUs, without its CUDA noise on CPU-only hosts.

    On a machine with no NVIDIA GPU (:func:`has_gpu_device`) the import and
    the one-time device probe run with stderr captured at the file-descriptor
    level (TensorFlow logs from C++), and every captured line is written back
    except :data:`CPU_HOST_NOISE`: real errors and warnings still show. On a
    GPU host, or once TensorFlow is imported, this does nothing: a failing
    cuInit there is a real error.

    Example:
        >>> import_tensorflow_quietly()  # doctest: +SKIP
    """
    if "tensorflow" in sys.modules or has_gpu_device():
        return
    with filtered_stderr(CPU_HOST_NOISE):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")


@contextlib.contextmanager
def filtered_stderr(drop: tuple[bytes, ...]) -> Iterator[None]:
    """Capture file descriptor 2; on exit write back the lines holding none of ``drop``."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture:
                if not any(pattern in line for pattern in drop):
                    os.write(2, line)


def experiment_args(
    p: argparse.ArgumentParser, required: bool = False, example: str = "train.epochs=3"
) -> None:
    """The experiment YAML (positional; kidney.yaml unless ``required``) and ``--set``.

    ``example`` is the ``KEY=VALUE`` that ``--help`` shows for ``--set``: one
    the command uses (``data.tile_size=512`` for build-records).
    """
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
        help=f"override a setting, e.g. --set {example} (repeatable)",
    )


def load_args(args: argparse.Namespace) -> Experiment:
    """The experiment named on the command line, with its ``--set`` overrides."""
    from tfpipe.config import load_experiment

    return load_experiment(args.experiment, args.overrides)
