"""scripts/gpu_check.py: the report's figures come from the demo's files; no GPU, no run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measurement(images_per_s: float) -> dict:
    return {
        "images": [8, 8],
        "seconds": [8 / images_per_s] * 2,
        "images_per_s": {"median": images_per_s},
    }


def test_the_report_states_every_figure(gpu_check):
    summary = {
        "input_images_per_s": 2500.0,
        "predict_windows_per_s": 42.5,
        "dice": 0.912,
        "passed": True,
        "bound": "compute-bound",
        "seconds": {"train": 61.2, "predict": 9.8},
    }
    bench = {
        "model": {
            "batch_size": 8,
            "compute": measurement(300.0),
            "compute_mixed": measurement(700.0),
            "end_to_end": measurement(650.0),
            "step_ms": 11.4,
            "stall_ms": 1.0,
        }
    }
    gpu = {"name": "NVIDIA H200", "compute_capability": [9, 0], "peak_memory_mb": 5120.0}
    text = gpu_check.render_report(summary, bench, gpu, cores=16)
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    rows = dict(line.strip("| ").split(" | ") for line in table)
    assert rows["GPU"] == "NVIDIA H200 (compute capability 9.0)"
    assert rows["host cores"] == "16"
    assert rows["model step, float32"] == "300 images/s (batch 8)"
    assert rows["model step, mixed_float16"] == "700 images/s (batch 8)"
    assert rows["input pipeline (tfpipe.data)"] == "2,500 images/s"
    assert rows["model waited for input"] == "no: 1.0 ms per 11.4 ms step (9 %)"
    assert rows["GPU memory peak"] == "5,120 MiB"
    assert rows["predict"] == "42.5 windows/s"
    assert rows["held-out dice"] == "0.912 (PASS)"
    assert "train 61 s, predict 10 s" in text


def test_a_stalled_loop_and_missing_figures_are_named(gpu_check):
    assert gpu_check.waited({"stall_ms": 5.0, "step_ms": 20.0}).startswith("yes: 5.0 ms")
    assert gpu_check.waited({"stall_ms": float("nan"), "step_ms": 20.0}) == "not measured"
    assert gpu_check.images_per_s(None, 8) == "not measured"


def test_without_a_gpu_nothing_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=300,
        env={"CUDA_VISIBLE_DEVICES": "-1", "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 2 and "TensorFlow sees no GPU" in done.stderr
    assert not (tmp_path / "w").exists()
