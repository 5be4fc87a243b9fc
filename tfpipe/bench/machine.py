"""Where a benchmark ran: CPUs, memory, GPU, library versions and the git commit.

Stored in ``bench.json`` so that two reports compared with ``--compare`` say
which machine and which code produced each figure.

Example:
    >>> from tfpipe.bench.machine import machine_info
    >>> sorted(machine_info())[:3]
    ['available_mb', 'cpu_count', 'cpu_model']
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

from tfpipe.bench.measure import MB


def machine_info(repo: str | Path | None = None) -> dict[str, Any]:
    """CPU count and model, RAM, GPUs, Python/TensorFlow/Keras versions and git commit.

    Args:
        repo: Folder whose git commit is recorded (default: the tfpipe checkout).
    """
    import keras
    import tensorflow as tf

    from tfpipe import __version__

    gpus = gpu_names()
    vm = psutil.virtual_memory()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "total_mb": vm.total / MB,
        "available_mb": vm.available / MB,
        "gpu": ", ".join(gpus) if gpus else None,
        "gpu_count": len(gpus),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tfpipe": __version__,
        "git_commit": git_commit(repo or Path(__file__).resolve().parents[2]),
    }


def gpu_names() -> list[str]:
    """Names of the visible GPUs (empty on a CPU-only machine)."""
    import tensorflow as tf

    names = []
    for dev in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(dev)
        names.append(details.get("device_name", dev.name))
    return names


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo, or platform.processor() elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit(repo: str | Path) -> str | None:
    """``git rev-parse HEAD`` in ``repo`` (with ``-dirty`` when files changed); None without git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty.strip() else "") if head else None
