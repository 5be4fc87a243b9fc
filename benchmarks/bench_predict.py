"""Whole-slide prediction: peak memory and throughput on a 20,000² slide, and what TTA buys.

Run:  python benchmarks/bench_predict.py            (20,000² demo slide, a few minutes)
      python benchmarks/bench_predict.py --quick    (2,048² slide, smoke run)

Part 1 (memory, speed). The slide is ``make_demo_data(dir, n=1, size=20000)``'s
held-out slide, cached under ``benchmarks/_work/``. Each variant runs
``predict_slides`` in a fresh Python process, so its peak RSS
(``ru_maxrss``) is its own; a *floor* process only imports TensorFlow, loads
the model and predicts one batch, which separates what prediction itself
costs from what TensorFlow and the model cost. Variants: no TTA, the
experiment's TTA (hflip + vflip), and no TTA without skipping background.
Throughput is compared as ratios to the no-TTA variant (same slide, same run).

Part 2 (quality). With a trained checkpoint (a finished ``tfpipe demo`` run,
or ``--checkpoint``), the demo's held-out slide is predicted with and without
TTA and scored against its truth.

The model is the trained checkpoint when one is found, otherwise a freshly
built model of the experiment's architecture (memory and speed do not depend
on the weights); the report says which.

Writes benchmarks/results/predict.json and predict.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "_work"
RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = {
    "no TTA": ["predict.tta=[]"],
    "TTA hflip+vflip": ["predict.tta=[hflip, vflip]"],
    "no TTA, no background skip": ["predict.tta=[]", "predict.skip_background=false"],
}


def main() -> None:
    args = parse_args()
    if args.child:
        run_child(json.loads(args.child))
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    size = 2048 if args.quick else 20000
    slide_dir = ensure_slide(size)
    checkpoint, kind = pick_checkpoint(args)
    common = {"experiment": str(args.experiment), "checkpoint": str(checkpoint)}
    floor = child({**common, "mode": "floor"})
    rows = []
    for name, sets in VARIANTS.items():
        out = WORK / f"predict-{size}-{len(rows)}.csv"
        res = child(
            {**common, "mode": "predict", "sets": sets, "images": str(slide_dir), "out": str(out)}
        )
        rows.append({"variant": name, **res})
    base = rows[0]["windows_per_s"]
    for r in rows:
        r["speed_vs_no_tta"] = r["windows_per_s"] / base if base else None
    quality = tta_quality(args, checkpoint) if kind == "trained" else None
    report = {
        "slide": {"size_nominal": size, **rows[0]["slide"]},
        "checkpoint": {"path": str(checkpoint), "kind": kind},
        "floor_rss_mb": floor["peak_rss_mb"],
        "variants": rows,
        "tta_quality": quality,
        "command": "python benchmarks/bench_predict.py" + (" --quick" if args.quick else ""),
    }
    write_results(report, "predict-quick" if args.quick else "predict")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2,048² slide: a smoke run in seconds")
    p.add_argument("--experiment", type=Path, default=ROOT / "experiments" / "kidney.yaml")
    p.add_argument("--checkpoint", default=None, help="a .keras file or run folder to use")
    p.add_argument("--demo", type=Path, default=ROOT / "demo", help="a tfpipe demo workdir")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def ensure_slide(size: int) -> Path:
    """The held-out slide of a cached ``make_demo_data(n=1, size=size)``."""
    from tfpipe.records.demo import make_demo_data

    root = WORK / f"predict{size // 1000}k"
    if not (root / "test.csv").is_file():
        make_demo_data(root, n=1, size=size, overwrite=root.exists())
    return root / "test"


def pick_checkpoint(args: argparse.Namespace) -> tuple[Path, str]:
    """A trained checkpoint if there is one, else a freshly built model saved under _work."""
    if args.checkpoint:
        return Path(args.checkpoint), "trained"
    demo_run = find_demo_run(args.demo)
    if demo_run is not None:
        return demo_run, "trained"
    return fresh_model(args.experiment), "fresh (untrained weights)"


def find_demo_run(demo: Path) -> Path | None:
    runs = sorted((demo / "runs").glob("*/summary.json"))
    return runs[-1].parent if runs else None


def fresh_model(experiment: Path) -> Path:
    from tfpipe.config import load_experiment
    from tfpipe.models import build_model

    exp = load_experiment(experiment)
    side = exp.data.tile_size // exp.data.downscale
    path = WORK / f"fresh-{exp.model.arch}-{exp.model.backbone}-{side}.keras"
    if not path.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        build_model(exp.model, (side, side, 3)).save(path)
    return path


def child(spec: dict) -> dict:
    """Run one measurement in a fresh interpreter; its last stdout line is JSON."""
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_child(spec: dict) -> None:
    import numpy as np

    from tfpipe.config import load_experiment
    from tfpipe.predict.ensemble import EnsemblePredictor, resolve_checkpoints

    exp = load_experiment(spec["experiment"], spec.get("sets", []))
    predictor = EnsemblePredictor.load(resolve_checkpoints(spec["checkpoint"]), exp.predict.tta)
    n = predictor.input_size or exp.data.tile_size // exp.data.downscale
    # Warm-up: the first call traces the predict function; it is not timed.
    predictor(np.zeros((exp.predict.batch_size, n, n, 3), np.uint8))
    if spec["mode"] == "floor":
        print(json.dumps({"peak_rss_mb": peak_rss_mb()}))
        return
    from tfpipe.predict.slides import predict_slides

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
                "peak_rss_mb": peak_rss_mb(),
                "seconds": time.perf_counter() - start,
                "windows": s.windows,
                "predicted_windows": s.predicted,
                "windows_per_s": summary.windows_per_second,
                "megapixels_per_s": summary.megapixels_per_second,
                "slide": {"id": s.id, "height": s.height, "width": s.width},
            }
        )
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def tta_quality(args: argparse.Namespace, checkpoint: Path) -> dict | None:
    """Held-out dice of the demo slide with and without TTA (same checkpoint, same run)."""
    test = args.demo / "data" / "test"
    if not (args.demo / "data" / "test.csv").is_file():
        return None
    out = {}
    for name, sets in (
        ("no TTA", ["predict.tta=[]"]),
        ("TTA hflip+vflip", ["predict.tta=[hflip, vflip]"]),
        ("TTA hflip+vflip+rot90", ["predict.tta=[hflip, vflip, rot90]"]),
    ):
        csv = WORK / f"tta-{len(out)}.csv"
        res = child(
            {
                "experiment": str(args.experiment),
                "checkpoint": str(checkpoint),
                "mode": "predict",
                "sets": sets,
                "images": str(test),
                "out": str(csv),
            }
        )
        out[name] = {
            "dice": score(csv, args.demo / "data" / "test.csv", test),
            "windows_per_s": res["windows_per_s"],
        }
    return out


def score(pred: Path, truth: Path, images: Path) -> float:
    from tfpipe.predict.evaluate import evaluate

    return evaluate(pred, truth, images=images, verbose=False).global_dice


def write_results(report: dict, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    s = r["slide"]
    lines = [
        "# Whole-slide prediction",
        "",
        f"Slide `{s['id']}`: {s['height']:,} x {s['width']:,} px "
        f"(`make_demo_data(n=1, size={s['size_nominal']})`). Model: {r['checkpoint']['kind']} "
        f"`{Path(r['checkpoint']['path']).name}`. Each row is a fresh process; "
        f"`{r['command']}`.",
        "",
        "Floor (TensorFlow + model loaded, one batch predicted): "
        f"**{r['floor_rss_mb']:.0f} MB** RSS.",
        "",
        "| variant | peak RSS MB | above floor MB | windows (predicted) | windows/s | "
        "speed vs no TTA | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v in r["variants"]:
        lines.append(
            f"| {v['variant']} | {v['peak_rss_mb']:.0f} | "
            f"{v['peak_rss_mb'] - r['floor_rss_mb']:.0f}"
            f" | {v['windows']} ({v['predicted_windows']}) | {v['windows_per_s']:.2f} | "
            f"{v['speed_vs_no_tta']:.2f}x | {v['seconds']:.0f} |"
        )
    q = r.get("tta_quality")
    lines += ["", "## TTA and held-out dice (demo slide)", ""]
    if q:
        lines += ["| TTA | dice | windows/s |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['dice']:.4f} | {v['windows_per_s']:.2f} |" for k, v in q.items()]
    else:
        lines.append("No trained checkpoint and demo data found: run `tfpipe demo` first.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
