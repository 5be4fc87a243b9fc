"""Whole-slide prediction: peak memory and speed on a 20,000² slide, and what TTA buys.

Run:  python benchmarks/bench_predict.py            (20,000² slide; long on a 2-core CPU)
      python benchmarks/bench_predict.py --quick    (2,048² slide; a smoke run)

Part 1, memory and speed. The slide is the held-out slide of
``make_demo_data(dir, n=1, size=20000)``, cached under ``benchmarks/_work/``;
the settings are the experiment's (``experiments/kidney-cpu.yaml``: 1024-px
windows reduced 4x to 256 px, overlap 0.25). Each variant runs
``predict_slides`` in a fresh Python process, so its peak RSS (``ru_maxrss``)
is its own. Its peak RSS after importing TensorFlow, loading the model and predicting
one batch is the *floor*; the rest is what whole-slide prediction adds.
Windows/s exclude model loading and the first (tracing) batch; variants are
compared as ratios to the first one. The model is the newest trained run in
``train.runs_dir`` made at the experiment's scale, or else a freshly built
model of the experiment's architecture (memory and speed do not depend on
the weights); the report says which.

Part 2, TTA and dice. With a finished ``tfpipe demo`` run (``--demo``), its
held-out slide and its validation-fold slides are predicted with the run's
own settings, without and with TTA, and scored against their truth.

Writes benchmarks/results/predict.json and predict.md (``--quick``: predict-quick.*).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from benchmarks._common import write_results  # noqa: E402
from benchmarks._predict_child import child  # noqa: E402

WORK = ROOT / "benchmarks" / "_work"
SPEED_VARIANTS = {
    "no TTA": ["predict.tta=[]"],
    "hflip+vflip": ["predict.tta=[hflip, vflip]"],
}
TTA_VARIANTS = {
    "no TTA": ["predict.tta=[]"],
    "hflip+vflip": ["predict.tta=[hflip, vflip]"],
    "hflip+vflip+rot90": ["predict.tta=[hflip, vflip, rot90]"],
}


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    size = 2048 if args.quick else 20000
    report = {
        "command": " ".join(["python benchmarks/bench_predict.py", *sys.argv[1:]]),
        **speed_and_memory(args, size),
        "tta_quality": tta_quality(args.demo),
    }
    write_results("predict-quick" if args.quick else "predict", report, markdown(report))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2,048² slide: a smoke run")
    p.add_argument("--experiment", type=Path, default=ROOT / "experiments" / "kidney-cpu.yaml")
    p.add_argument("--checkpoint", default=None, help="a trained .keras file or run folder")
    p.add_argument("--demo", type=Path, default=ROOT / "demo", help="a tfpipe demo workdir")
    return p.parse_args()


# ----------------------------------------------------------------- part 1


def speed_and_memory(args: argparse.Namespace, size: int) -> dict:
    """Peak RSS and windows/s of each model setting x TTA variant on one big slide."""
    slide_dir = ensure_slide(size)
    rows = []
    for setting in model_settings(args):
        print(f"{setting['setting']}: {setting['checkpoint']}", flush=True)
        group = []
        for name, sets in SPEED_VARIANTS.items():
            out = WORK / f"predict-{size}-{len(rows) + len(group)}.csv"
            spec = {
                "experiment": setting["experiment"],
                "checkpoint": setting["checkpoint"],
                "sets": sets,
                "images": str(slide_dir),
                "out": str(out),
            }
            res = child(spec)
            group.append({**setting, "variant": name, **res})
            print(
                f"  {name}: {res['peak_rss_mb']:.0f} MB peak, {res['windows_per_s']:.2f} windows/s",
                flush=True,
            )
        for r in group:
            r["speed_ratio"] = r["windows_per_s"] / group[0]["windows_per_s"]
        rows += group
    return {"slide": {"size_nominal": size, **rows[0]["slide"]}, "variants": rows}


def model_settings(args: argparse.Namespace) -> list[dict]:
    """What to predict with: the demo's trained run (its own settings), and the experiment.

    The experiment uses the newest trained run at its scale, or else a freshly
    built model of its architecture (memory and speed do not depend on weights).
    """
    settings = []
    run = finished_run(args.demo / "runs")
    if run is not None:
        settings.append(
            {
                "setting": "demo run (its config.yaml)",
                "kind": "trained",
                "experiment": str(run / "config.yaml"),
                "checkpoint": str(run),
            }
        )
    checkpoint, kind = pick_checkpoint(args)
    settings.append(
        {
            "setting": _relative(args.experiment),
            "kind": kind,
            "experiment": str(args.experiment),
            "checkpoint": str(checkpoint),
        }
    )
    return settings


def finished_run(runs_dir: Path) -> Path | None:
    runs = sorted(runs_dir.glob("*/summary.json"))
    return runs[-1].parent if runs else None


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def ensure_slide(size: int) -> Path:
    """The held-out slide folder of a cached ``make_demo_data(n=1, size=size)``."""
    from tfpipe.synthetic.datasets import make_demo_data

    root = WORK / f"predict{size // 1000}k"
    if not (root / "test.csv").is_file():
        make_demo_data(root, n=1, size=size, overwrite=root.exists())
    return root / "test"


def pick_checkpoint(args: argparse.Namespace) -> tuple[Path, str]:
    """A trained checkpoint at the experiment's scale if there is one, else a fresh model."""
    from tfpipe.config import load_experiment
    from tfpipe.errors import TfpipeError
    from tfpipe.predict.ensemble import check_run_scale, latest_run, resolve_checkpoints

    if args.checkpoint:
        return Path(args.checkpoint), "trained"
    exp = load_experiment(args.experiment)
    try:
        run = latest_run(ROOT / exp.train.runs_dir)
        check_run_scale(resolve_checkpoints(run), exp.data.downscale)
        return run, "trained"
    except TfpipeError:
        return fresh_model(exp), "fresh (untrained weights)"


def fresh_model(exp) -> Path:
    from tfpipe.models import build_model

    side = exp.data.tile_size // exp.data.downscale
    path = WORK / f"fresh-{exp.model.arch}-{exp.model.backbone}-{side}.keras"
    if not path.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        build_model(exp.model, (side, side, 3)).save(path)
    return path


# ----------------------------------------------------------------- part 2


def tta_quality(demo: Path) -> dict | None:
    """Dice of the demo run's held-out and validation slides without and with TTA."""
    run = finished_run(demo / "runs")
    if run is None or not (demo / "data" / "test.csv").is_file():
        print(f"no finished demo run in {demo}: skipping the TTA comparison", flush=True)
        return None
    slides = {
        "held-out": (demo / "data" / "test", demo / "data" / "test.csv"),
        "validation fold": (validation_slides(run), demo / "data" / "train.csv"),
    }
    out: dict = {"run": str(run), "rows": []}
    for name, sets in TTA_VARIANTS.items():
        row = {"tta": name}
        for label, (images, truth) in slides.items():
            csv = WORK / f"tta-{label.replace(' ', '-')}-{len(out['rows'])}.csv"
            res = child(
                {
                    "experiment": str(run / "config.yaml"),
                    "checkpoint": str(run),
                    "sets": sets,
                    "images": str(images),
                    "out": str(csv),
                }
            )
            row[label] = score(csv, truth, images)
            row[f"{label} windows/s"] = res["windows_per_s"]
        out["rows"].append(row)
        print(f"TTA {name}: {row}", flush=True)
    return out


def validation_slides(run: Path) -> Path:
    """A folder of links to the slides of the run's validation folds."""
    import yaml

    from tfpipe.records.manifest import read_manifest

    config = yaml.safe_load((run / "config.yaml").read_text())
    manifest = read_manifest(ROOT / config["data"]["output"])
    folds = [int(p.name[4:]) for p in run.glob("fold*") if p.name[4:].isdigit()]
    folder = WORK / "tta-validation"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    images = ROOT / config["data"]["images"]
    for fold in folds:
        for image_id in manifest.fold_sources(fold):
            source = next(images.glob(f"{image_id}.tif*"))
            (folder / source.name).symlink_to(source.resolve())
    return folder


def score(pred: Path, truth: Path, images: Path) -> float:
    from tfpipe.predict.evaluate import evaluate

    return evaluate(pred, truth, images=images, verbose=False).global_dice


# ----------------------------------------------------------------- output


def markdown(r: dict) -> str:
    s = r["slide"]
    lines = [
        "# Whole-slide prediction",
        "",
        f"`{r['command']}` — slide `{s['id']}`: {s['height']:,} x {s['width']:,} px "
        f"(`make_demo_data(n=1, size={s['size_nominal']})`). Each row is a fresh process. "
        "Floor = peak RSS once TensorFlow is imported, the model loaded and one batch "
        "predicted; the slide adds the rest. Windows/s exclude loading and the first "
        "batch; the speed ratio compares with the first row of the same setting.",
        "",
        "| setting | model | TTA | peak RSS MB | floor MB | added by the slide MB | "
        "windows (predicted) | windows/s | speed ratio | seconds |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in r["variants"]:
        lines.append(
            f"| {v['setting']} | {v['kind']} | {v['variant']} | **{v['peak_rss_mb']:.0f}** | "
            f"{v['floor_rss_mb']:.0f} | {v['peak_rss_mb'] - v['floor_rss_mb']:.0f} | "
            f"{v['windows']} ({v['predicted_windows']}) | {v['windows_per_s']:.2f} | "
            f"{v['speed_ratio']:.2f}x | {v['seconds']:.0f} |"
        )
    lines += ["", "## TTA and dice (demo run, its own settings)", ""]
    q = r.get("tta_quality")
    if q:
        labels = [k for k in q["rows"][0] if k != "tta" and not k.endswith("windows/s")]
        lines.append(f"Run `{Path(q['run']).name}`; global dice against the truth.")
        lines.append("")
        lines.append("| TTA | " + " | ".join(f"{k} dice" for k in labels) + " | windows/s |")
        lines.append("|---|" + "---:|" * (len(labels) + 1))
        for row in q["rows"]:
            cells = " | ".join(f"{row[k]:.4f}" for k in labels)
            lines.append(f"| {row['tta']} | {cells} | {row[labels[0] + ' windows/s']:.2f} |")
    else:
        lines.append("No finished demo run found: run `tfpipe demo` first.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
