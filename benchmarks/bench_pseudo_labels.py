"""Pseudo-labels on the demo data: held-out dice with and without them, same data and seeds.

Data: ``make_demo_data(n=10, size=3072)`` (cached under ``--work``), split by slide:

* **labelled** — training slides 0-3 with their truth: ``records`` with 4 folds
  of one slide, fold 0 validated (best epoch), folds 1-3 trained on (the
  demo's amount of labelled data);
* **unlabelled** — training slides 4-6: predicted by the baseline, their truth
  used only to score the pseudo-labels, never to train;
* **held-out** — training slides 7-8 and the test slide: scored, never trained on.

Per seed, two arms trained alike (``experiments/kidney-cpu.yaml`` with the
demo's shortening, :data:`tfpipe.demo.DEMO_SETTINGS`: 512-px tiles reduced 8x,
4 epochs x 30 steps of 8 tiles; ``train.seed`` = the seed, ``input.seed`` the
recipe's 0):

1. **baseline** — the labelled records only;
2. **pseudo-labels** — the same labelled records, plus ``input.extra_records``:
   the unlabelled slides' records built with ``data.source: pseudo_labels``
   (band [0.3, 0.7]) from the baseline's probability maps (``tfpipe predict
   --probabilities``: fold-0 model, TTA hflip + vflip, overlap 0.25).

Both arms take the same number of optimizer steps (``train.steps_per_epoch``
is fixed), so the pseudo arm sees each labelled tile less often: the
comparison is at equal compute. Each arm's model predicts the held-out slides
(the same predict settings) and ``tfpipe evaluate`` scores them at threshold
0.5: **global dice** (all pixels of the three slides) and the mean of the
per-slide dice. The pseudo-labels themselves are scored against the
unlabelled slides' truth at map resolution (one pixel per 8 x 8).

Usage:
    python benchmarks/bench_pseudo_labels.py                 # seeds 42 and 43
    python benchmarks/bench_pseudo_labels.py --seeds 1 2 3
    python benchmarks/bench_pseudo_labels.py --quick         # 1 seed, 1 epoch of 5 steps

Results: ``benchmarks/results/pseudo_labels.json`` and ``.md`` (``pseudo_labels-quick.*``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from benchmarks._common import machine, write_results  # noqa: E402

SLIDES, SIZE, DATA_SEED = 10, 3072, 0
SPLIT = {"labelled": range(0, 4), "unlabelled": range(4, 7), "heldout": range(7, 9)}
FOLDS = 4  # one labelled slide per fold
BAND = (0.3, 0.7)
QUICK = ["train.epochs=1", "train.steps_per_epoch=5"]


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()
    work = args.work
    split = prepare_data(work / "data", work / "split")
    seeds = [args.seeds[0]] if args.quick else args.seeds
    extra = QUICK if args.quick else []
    build_labelled(work, split, extra)
    rows, quality = [], []
    for seed in seeds:
        r, q = run_seed(work, split, seed, extra)
        rows += r
        quality.append(q)
    import tensorflow as tf

    report = {
        "command": " ".join(["python benchmarks/bench_pseudo_labels.py", *sys.argv[1:]]),
        "machine": machine(load_before, tf.__version__),
        "data": {
            "make_demo_data": {"n": SLIDES, "size": SIZE, "seed": DATA_SEED},
            "split": {k: split[k]["ids"] for k in SPLIT},
        },
        "band": list(BAND),
        "schedule": schedule(experiment(work, split, 0, extra)),
        "settings": settings(work, split, 0, extra)[:-1],
        "rows": rows,
        "pseudo_label_quality": quality,
        "summary": summarize(rows),
    }
    stem = "pseudo_labels-quick" if args.quick else "pseudo_labels"
    write_results(stem, report, markdown(report))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one seed, one epoch of 5 steps")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tfpipe-bench-pl")
    return p.parse_args()


# --------------------------------------------------------------------------- data


def prepare_data(data: Path, out: Path) -> dict[str, dict]:
    """The demo slides (made once) linked into labelled / unlabelled / heldout folders."""
    from tfpipe.io.masks import read_rle_csv, write_rle_csv
    from tfpipe.synthetic.datasets import make_demo_data

    made = (data / "test.csv").is_file() and len(read_rle_csv(data / "train.csv")) == SLIDES
    if not made:
        make_demo_data(data, n=SLIDES, size=SIZE, seed=DATA_SEED, overwrite=data.exists())
    train, test = read_rle_csv(data / "train.csv"), read_rle_csv(data / "test.csv")
    ids = sorted(train)
    groups = {name: [ids[i] for i in idx] for name, idx in SPLIT.items()}
    groups["heldout"] += sorted(test)
    truth = {**train, **test}
    split: dict[str, dict] = {}
    for name, members in groups.items():
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)  # links of an earlier split
        folder.mkdir(parents=True)
        for image_id in members:
            source = data / ("test" if image_id in test else "train") / f"{image_id}.tiff"
            (folder / f"{image_id}.tiff").symlink_to(source.resolve())
        write_rle_csv(out / f"{name}.csv", {k: truth[k] for k in members}, rle_column="encoding")
        split[name] = {"ids": members, "images": folder, "truth": out / f"{name}.csv"}
    return split


def settings(work: Path, split: dict, seed: int, extra: list[str]) -> list[str]:
    """The experiment overrides of one arm (the last: the seed)."""
    from tfpipe.demo import DEMO_SETTINGS

    return [
        *DEMO_SETTINGS,
        f"data.images={split['labelled']['images']}",
        f"data.labels={split['labelled']['truth']}",
        f"data.output={work / 'records'}",
        f"data.folds={FOLDS}",
        f"train.runs_dir={work / 'runs'}",
        *extra,
        f"train.seed={seed}",
    ]


def experiment(work: Path, split: dict, seed: int, extra: list[str], *more: str):
    from tfpipe.config import load_experiment

    path = ROOT / "experiments" / "kidney-cpu.yaml"
    return load_experiment(path, [*settings(work, split, seed, extra), *more])


def schedule(exp) -> dict:
    """What one arm trains: tile, input side, epochs, steps, batch."""
    return {
        "tile_size": exp.data.tile_size,
        "input_size": exp.data.tile_size // exp.data.downscale,
        "epochs": exp.train.epochs,
        "steps_per_epoch": exp.train.steps_per_epoch,
        "batch_size": exp.train.batch_size or exp.input.batch_size,
    }


def build_labelled(work: Path, split: dict, extra: list[str]) -> None:
    from tfpipe.records.build import build_records

    exp = experiment(work, split, 0, extra)
    build_records(exp.data, overwrite=True, progress=False)


# --------------------------------------------------------------------------- arms


def run_seed(work: Path, split: dict, seed: int, extra: list[str]) -> tuple[list[dict], dict]:
    """Baseline, its pseudo-labels, the pseudo arm: two result rows and the label quality."""
    from tfpipe.predict.slides import predict_slides
    from tfpipe.records.build import build_records

    base = experiment(work, split, seed, extra)
    rows = [train_and_score(base, "baseline", seed, split, work)]
    maps = work / f"maps-seed{seed}"
    predict_slides(
        base,
        rows[0]["run"],
        images=split["unlabelled"]["images"],
        out=work / f"unlabelled-seed{seed}.csv",
        probabilities=maps,
        progress=False,
    )
    records = work / f"records-pl-seed{seed}"
    pseudo_data = experiment(
        work,
        split,
        seed,
        extra,
        "data.source=pseudo_labels",
        f"data.images={split['unlabelled']['images']}",
        f"data.probabilities={maps}",
        f"data.pseudo_band=[{BAND[0]}, {BAND[1]}]",
        f"data.output={records}",
        "data.folds=1",
    ).data
    manifest = build_records(pseudo_data, overwrite=True, progress=False)
    quality = label_quality(maps, split["unlabelled"], seed)
    quality["records"] = manifest.num_records
    pseudo = experiment(work, split, seed, extra, f"input.extra_records=[{records}]")
    rows.append(train_and_score(pseudo, "pseudo-labels", seed, split, work))
    rows[-1]["extra_tiles"] = manifest.num_records
    return rows, quality


def train_and_score(exp, arm: str, seed: int, split: dict, work: Path) -> dict:
    """Train fold 0, predict the held-out slides, score them."""
    from tfpipe.predict.evaluate import evaluate
    from tfpipe.predict.slides import predict_slides
    from tfpipe.records.manifest import read_manifest
    from tfpipe.train.trainer import train_experiment

    start = time.perf_counter()
    summary = train_experiment(exp, name=f"{arm}-seed{seed}")
    trained = time.perf_counter() - start
    run = Path(exp.train.runs_dir) / summary.run
    probs = work / "eval" / f"{arm}-seed{seed}"
    predict_slides(
        exp,
        run,
        images=split["heldout"]["images"],
        out=probs.with_suffix(".csv"),
        save_probabilities=probs,
        progress=False,
    )
    report = evaluate(
        probs, split["heldout"]["truth"], images=split["heldout"]["images"], verbose=False
    )
    manifest = read_manifest(exp.data.output)
    fold = summary.folds[0]
    return {
        "arm": arm,
        "seed": seed,
        "run": str(run),
        "heldout_global_dice": round(report.global_dice, 4),
        "heldout_mean_dice": round(report.mean_dice, 4),
        "heldout_per_slide": {s.id: round(s.dice, 4) for s in report.slides},
        "best_threshold": report.best_threshold,
        "val_dice": round(fold.score, 4),
        "best_epoch": fold.best_epoch,
        "steps": fold.steps,
        "labelled_train_tiles": manifest.records_in_folds(list(range(1, FOLDS))),
        "extra_tiles": 0,
        "train_seconds": round(trained, 1),
    }


def label_quality(maps: Path, unlabelled: dict, seed: int) -> dict:
    """The band's labels against the truth, at map resolution (nearest source pixel)."""
    from tfpipe.io.masks import read_rle_csv
    from tfpipe.io.probmap import open_probability_tiff
    from tfpipe.io.rle import decode_rle
    from tfpipe.records.pseudo import band_labels

    totals = dict.fromkeys(("pixels", "ignored", "fg", "fg_true", "truth", "bg_on_truth"), 0)
    rles = read_rle_csv(unlabelled["truth"])
    for image_id in unlabelled["ids"]:
        with open_probability_tiff(maps / f"{image_id}.tiff") as m:
            h, w, s = m.header.height, m.header.width, m.header.scale
            labels = band_labels(m.read_window(0, 0, *m.header.map_shape), BAND)
        truth = decode_rle(rles[image_id], (h, w))[::s, ::s].astype(bool)
        totals["pixels"] += labels.size
        totals["ignored"] += int((labels == 255).sum())
        totals["fg"] += int((labels == 1).sum())
        totals["fg_true"] += int(((labels == 1) & truth).sum())
        totals["truth"] += int(truth.sum())
        totals["bg_on_truth"] += int(((labels == 0) & truth).sum())
    return {
        "seed": seed,
        "ignored_fraction": round(totals["ignored"] / totals["pixels"], 4),
        "foreground_precision": round(totals["fg_true"] / max(totals["fg"], 1), 4),
        "truth_labelled_foreground": round(totals["fg_true"] / max(totals["truth"], 1), 4),
        "truth_labelled_background": round(totals["bg_on_truth"] / max(totals["truth"], 1), 4),
    }


# --------------------------------------------------------------------------- output


def summarize(rows: list[dict]) -> dict:
    """Mean held-out dice per arm and the per-seed differences (pseudo - baseline)."""
    arms: dict[str, list[float]] = {}
    for r in rows:
        arms.setdefault(r["arm"], []).append(r["heldout_global_dice"])
    by_seed = {(r["arm"], r["seed"]): r["heldout_global_dice"] for r in rows}
    deltas = [
        round(by_seed["pseudo-labels", seed] - by_seed["baseline", seed], 4)
        for arm, seed in by_seed
        if arm == "baseline" and ("pseudo-labels", seed) in by_seed
    ]
    return {
        "mean_heldout_global_dice": {a: round(statistics.mean(v), 4) for a, v in arms.items()},
        "delta_per_seed": deltas,
        "mean_delta": round(statistics.mean(deltas), 4) if deltas else None,
    }


def markdown(r: dict) -> str:
    m, split, t = r["machine"], r["data"]["split"], r["schedule"]
    lines = [
        "# Pseudo-labels: held-out dice with and without them",
        "",
        f"Command: `{r['command']}`. {m['cpus']} CPUs, load average "
        f"{m['load_average_before'][0]} before, {m['load_average_after'][0]} after; "
        f"TensorFlow {m['tensorflow']}.",
        "",
        f"Data: `make_demo_data(n={SLIDES}, size={SIZE}, seed={DATA_SEED})`, split by slide: "
        f"labelled {len(split['labelled'])} ({FOLDS} folds, fold 0 validated), unlabelled "
        f"{len(split['unlabelled'])} (pseudo-labelled by the baseline, band {r['band']}), "
        f"held-out {len(split['heldout'])} (scored only). kidney-cpu.yaml with the demo's "
        f"shortening ({t['tile_size']}-px tiles reduced to {t['input_size']} px, "
        f"{t['epochs']} epoch(s) x {t['steps_per_epoch']} steps of {t['batch_size']}); both "
        "arms take the same steps; seed = `train.seed` (`input.seed` 0). Dice at threshold "
        "0.5 over all held-out pixels (global) and per slide (mean).",
        "",
        "| seed | arm | training tiles (labelled + pseudo) | val dice (fold 0) | "
        "held-out global dice | held-out mean dice | train s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['seed']} | {row['arm']} | {row['labelled_train_tiles']} + "
            f"{row['extra_tiles']} | {row['val_dice']:.4f} | "
            f"**{row['heldout_global_dice']:.4f}** | {row['heldout_mean_dice']:.4f} | "
            f"{row['train_seconds']:.0f} |"
        )
    s = r["summary"]
    means = ", ".join(f"{a} {v:.4f}" for a, v in s["mean_heldout_global_dice"].items())
    lines += [
        "",
        f"Mean held-out global dice: {means}. Pseudo-labels minus baseline, per seed: "
        f"{s['delta_per_seed']} (mean {s['mean_delta']}).",
        "",
        "Pseudo-labels against the unlabelled slides' truth (map pixels, 8 x 8 source "
        "pixels each):",
        "",
        "| seed | pseudo tiles | ignored (255) | precision of label 1 | truth labelled 1 | "
        "truth labelled 0 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for q in r["pseudo_label_quality"]:
        lines.append(
            f"| {q['seed']} | {q['records']} | {q['ignored_fraction']:.2%} | "
            f"{q['foreground_precision']:.4f} | {q['truth_labelled_foreground']:.4f} | "
            f"{q['truth_labelled_background']:.4f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
