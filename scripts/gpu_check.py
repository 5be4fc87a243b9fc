"""GPU proof: the demo on the GPU recipe, and a Markdown report of what the GPU did.

Runs ``tfpipe demo`` with ``experiments/kidney.yaml``'s model sizing (the
default Unet decoder, mixed precision where the recipe asks for it) instead of
the demo's CPU sizing, on the demo's synthetic slides, then writes
``<workdir>/gpu-report.md``: the model's training step in float32 and
mixed_float16 against the input pipeline's images/s at this host's core
count, whether the model waited for input in a real training loop, the GPU
memory peak, predict windows/s and the held-out dice.

Usage (on a host with an NVIDIA GPU; ``scripts/gpu-check.sh`` installs first)::

    python scripts/gpu_check.py [--workdir gpu-check] [--experiment experiments/kidney.yaml]

Exit status: 0 with a report, 2 when TensorFlow sees no GPU (nothing is run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# A step is "waiting for input" when the loop fed by the pipeline is this much slower
# than the compute step alone (tfpipe.bench.advice uses the same fraction).
STALL_FRACTION = 0.1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("gpu-check"))
    parser.add_argument("--experiment", type=Path, default=ROOT / "experiments" / "kidney.yaml")
    args = parser.parse_args(argv)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        print(
            "gpu_check: TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is "
            'empty); run this on a GPU host after `pip install -e ".[train,gpu]"`',
            file=sys.stderr,
        )
        return 2
    from tfpipe.bench.report import BenchReport
    from tfpipe.demo import run_demo

    summary = run_demo(args.workdir, experiment=args.experiment, cpu_sizing=False)
    bench = BenchReport.load(args.workdir / "bench" / "bench.json").to_json()
    gpu = gpu_facts(tf, gpus[0])
    text = render_report(summary.to_dict(), bench, gpu, cores=os.cpu_count() or 0)
    out = args.workdir / "gpu-report.md"
    out.write_text(text)
    (args.workdir / "gpu-report.json").write_text(
        json.dumps({"summary": summary.to_dict(), "gpu": gpu}, indent=2)
    )
    print(text)
    print(f"wrote {out}")
    return 0


def gpu_facts(tf: Any, device: Any) -> dict[str, Any]:
    """The GPU's name and the peak memory TensorFlow allocated on it in this process."""
    details = tf.config.experimental.get_device_details(device)
    info = tf.config.experimental.get_memory_info("GPU:0")
    return {
        "name": details.get("device_name", device.name),
        "compute_capability": list(details.get("compute_capability", ())),
        "peak_memory_mb": info["peak"] / 2**20,
    }


def render_report(summary: dict, bench: dict, gpu: dict, cores: int) -> str:
    """The Markdown report from the demo's summary, its ``bench.json`` and the GPU facts.

    Example:
        >>> "GPU memory peak" in render_report(SAMPLE_SUMMARY, SAMPLE_BENCH, SAMPLE_GPU, 16)
        True
    """
    model = bench.get("model") or {}
    batch = model.get("batch_size", 0)
    capability = ".".join(map(str, gpu["compute_capability"])) or "unknown"
    rows = [
        ("GPU", f"{gpu['name']} (compute capability {capability})"),
        ("host cores", str(cores)),
        ("model step, float32", images_per_s(model.get("compute"), batch)),
        ("model step, mixed_float16", images_per_s(model.get("compute_mixed"), batch)),
        ("input pipeline (tfpipe.data)", f"{summary['input_images_per_s']:,.0f} images/s"),
        ("training loop fed by the pipeline", images_per_s(model.get("end_to_end"), batch)),
        ("model waited for input", waited(model)),
        ("verdict of bench-input", summary.get("bound") or "unknown"),
        ("GPU memory peak", f"{gpu['peak_memory_mb']:,.0f} MiB"),
        ("predict", f"{summary['predict_windows_per_s']:,.1f} windows/s"),
        ("held-out dice", f"{summary['dice']:.3f} ({'PASS' if summary['passed'] else 'FAIL'})"),
    ]
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in summary.get("seconds", {}).items())
    lines = [
        "# GPU check",
        "",
        "`python scripts/gpu_check.py`: the demo's synthetic slides with "
        "experiments/kidney.yaml's model sizing (default Unet decoder), shortened epochs.",
        "",
        "| what | measured |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        f"Steps: {seconds}.",
    ]
    return "\n".join(lines) + "\n"


def images_per_s(measurement: dict | None, batch: int) -> str:
    """Median images/s of a ``bench.json`` measurement, or "not measured"."""
    if not measurement or not measurement.get("images"):
        return "not measured"
    return f"{measurement['images_per_s']['median']:,.0f} images/s (batch {batch})"


def waited(model: dict) -> str:
    """Whether the loop fed by the pipeline was slower than the compute step alone."""
    stall, step = model.get("stall_ms"), model.get("step_ms")
    if stall is None or step is None or stall != stall or not step:
        return "not measured"
    share = stall / step
    verdict = "yes" if share > STALL_FRACTION else "no"
    return f"{verdict}: {stall:,.1f} ms per {step:,.1f} ms step ({100 * share:.0f} %)"


SAMPLE_SUMMARY = {
    "input_images_per_s": 3000.0,
    "predict_windows_per_s": 40.0,
    "dice": 0.93,
    "passed": True,
    "bound": "compute-bound",
    "seconds": {"train": 60.0},
}
SAMPLE_BENCH = {"model": {"batch_size": 8, "stall_ms": 0.5, "step_ms": 20.0}}
SAMPLE_GPU = {"name": "H200", "compute_capability": [9, 0], "peak_memory_mb": 5000.0}


if __name__ == "__main__":
    sys.exit(main())
