"""One measurement of ``bench_predict.py``, in a fresh interpreter of its own.

A fresh process per variant, so that its peak RSS (``ru_maxrss``) is its own:
:func:`child` starts this file with a JSON spec, and :func:`run_child` loads
the model, predicts one warm-up batch (the *floor* of peak RSS), then the
slide, and prints one JSON line of figures.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(spec: dict) -> dict:
    """Run one measurement in a fresh interpreter; its last stdout line is JSON."""
    cmd = [sys.executable, __file__, json.dumps(spec)]
    # Run folders store paths relative to the project root: run from there.
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_child(spec: dict) -> None:
    import numpy as np

    from tfpipe.config import load_experiment
    from tfpipe.predict.ensemble import EnsemblePredictor, resolve_checkpoints, trained_input_size
    from tfpipe.predict.slides import predict_slides

    exp = load_experiment(spec["experiment"], spec.get("sets", []))
    paths = resolve_checkpoints(spec["checkpoint"])
    predictor = EnsemblePredictor.load(paths, exp.predict.tta)
    n = (
        predictor.input_size
        or trained_input_size(paths)
        or exp.data.tile_size // exp.data.downscale
    )
    # Warm-up: the first call traces the predict function; it is not timed, and the
    # peak RSS up to here (TensorFlow, the model, one batch) is the floor.
    predictor(np.zeros((exp.predict.batch_size, n, n, 3), np.uint8))
    floor = peak_rss_mb()
    start = time.perf_counter()
    summary = predict_slides(
        exp,
        spec["checkpoint"],
        images=spec["images"],
        out=spec["out"],
        predictor=predictor,
        progress=False,
    )
    s = summary.slides[0]
    print(
        json.dumps(
            {
                "floor_rss_mb": floor,
                "peak_rss_mb": peak_rss_mb(),
                "seconds": time.perf_counter() - start,
                "windows": sum(r.windows for r in summary.slides),
                "predicted_windows": sum(r.predicted for r in summary.slides),
                "windows_per_s": summary.windows_per_second,
                "megapixels_per_s": summary.megapixels_per_second,
                "slide": {"id": s.id, "height": s.height, "width": s.width},
            }
        )
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    run_child(json.loads(sys.argv[1]))
