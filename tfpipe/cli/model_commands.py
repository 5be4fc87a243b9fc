"""Commands for models: train, runs, predict, evaluate, and demo (everything, end to end)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tfpipe.cli.common import (
    DEFAULT_EXPERIMENT,
    experiment_args,
    import_tensorflow_quietly,
    load_args,
)
from tfpipe.errors import ConfigError, require_extra


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the experiment's model on its records, fold by fold",
        description="Keras training driven by one YAML file: k-fold cross-validation by "
        "source image, per-fold best checkpoints, history, TensorBoard logs and a summary "
        "in runs/<timestamp>-<name>/. The folds, records and model are checked first: a run "
        "that fails before its first training step leaves no folder behind.",
    )
    experiment_args(p, required=True, example="train.epochs=3")
    p.add_argument(
        "--fold",
        type=int,
        action="append",
        default=None,
        metavar="K",
        help="validate on fold K only (repeatable; default: train.folds)",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run with its own config: a run folder, its name, or "
        "'latest' (the newest run with a backup or finished fold to continue from)",
    )
    p.add_argument(
        "--name", default=None, help="run name, the folder's suffix (default: experiment name)"
    )


def _run_train(args: argparse.Namespace) -> int:
    require_extra("train", "this command")
    exp = load_args(args)  # before TensorFlow loads: a config error answers at once
    import_tensorflow_quietly()
    from tfpipe.cli.input_errors import damaged_records_as_errors
    from tfpipe.train.trainer import train_experiment

    with damaged_records_as_errors(exp.data.output):
        train_experiment(exp, folds=args.fold, resume=args.resume, name=args.name)
    return 0


def _add_runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs",
        help="print the experiment log: what changed and the CV score",
        description="One row per run folder: the settings it changed against the run before "
        "it (or --baseline), its cross-validation mean ± std, folds done, time over all "
        "sessions, and status. A table on a terminal; Markdown when piped or redirected. "
        "--plot also overlays the runs' validation curves on one PNG (each run's own "
        "train/validation curves are in its folder: curves.png).",
    )
    p.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        help="folder holding the run folders (train.runs_dir; default: runs)",
    )
    p.add_argument(
        "--baseline",
        default=None,
        metavar="RUN",
        help="compare every run with this run (folder, name or 'latest') instead of the "
        "previous one",
    )
    p.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown")
    p.add_argument(
        "--plot",
        nargs="*",
        default=None,
        metavar="RUN",
        help="also draw the validation curves (mean over folds) of these runs on one PNG "
        "(folder, name or 'latest'; none named: the 8 newest finished runs)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="the --plot PNG (default: RUNS_DIR/curves.png)",
    )


def _run_runs(args: argparse.Namespace) -> int:
    from tfpipe.train.runlog import print_runs

    if args.out is not None and args.plot is None:
        raise ConfigError(f"--out names the PNG of --plot; got --out {args.out} without --plot")
    if args.plot is not None:
        require_extra("train", "tfpipe runs --plot")  # matplotlib
    print_runs(args.runs_dir, baseline=args.baseline, csv_path=args.csv, md_path=args.markdown)
    if args.plot is not None:
        from tfpipe.train.curves import plot_runs

        plot_runs(args.runs_dir, args.plot, out=args.out)
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="whole-slide prediction with overlap, TTA and fold ensembles, written as RLE",
        description="Predict every slide in predict.images with overlapping windows, test-time "
        "augmentation and the average of a run's fold models; write the masks as RLE to a "
        "submission CSV (and optionally mask images and probability maps).",
    )
    experiment_args(p, required=True, example="predict.threshold=0.4")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="run folder (ensemble of its folds), fold folder, .keras file, or 'latest'",
    )
    p.add_argument("--images", type=Path, default=None, help="folder of slides (predict.images)")
    p.add_argument("--out", type=Path, default=None, help="submission CSV (predict.out)")
    p.add_argument("--save-masks", type=Path, default=None, help="also write mask PNG/TIFFs here")
    p.add_argument(
        "--save-probs",
        type=Path,
        default=None,
        help="also write low-res probability maps (<id>.npy + .json) for evaluate's sweep",
    )
    p.add_argument(
        "--probabilities",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write each slide's probability map as <id>.tiff (uint8, tiled, read window "
        "by window) for data.source: pseudo_labels (predict.probabilities)",
    )


def _run_predict(args: argparse.Namespace) -> int:
    require_extra("train", "this command")  # the models are built with segmentation-models
    exp = load_args(args)
    import_tensorflow_quietly()
    from tfpipe.predict.slides import predict_slides

    predict_slides(
        exp,
        checkpoint=args.checkpoint,
        images=args.images,
        out=args.out,
        save_masks=args.save_masks,
        save_probabilities=args.save_probs,
        probabilities=args.probabilities,
    )
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="dice per slide against RLE truth, threshold sweep",
        description="Score predictions against the truth: dice per slide and overall, a "
        "threshold sweep when probability maps are given, and an optional overlay PNG.",
    )
    p.add_argument("--pred", type=Path, required=True, help="prediction CSV or probability folder")
    p.add_argument("--truth", type=Path, required=True, help="RLE CSV or mask folder")
    p.add_argument("--images", type=Path, default=None, help="slides (for shapes and overlay)")
    p.add_argument("--overlay", type=Path, default=None, help="write an overlay PNG here")
    p.add_argument("--overlay-id", default=None, help="slide drawn in the overlay (default: first)")
    p.add_argument(
        "--region",
        default=None,
        metavar="Y,X,H,W",
        help="overlay region in slide pixels (default: the whole slide)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    p.add_argument(
        "--classes",
        default=None,
        metavar="NAME,NAME",
        help="score each class (data.mask_classes, in mask-value order) of multi-class masks "
        "or probability maps; default: the classes of a --pred CSV id,class,predicted",
    )


def _run_evaluate(args: argparse.Namespace) -> int:
    from tfpipe.predict.evaluate import evaluate, parse_region

    report = evaluate(
        args.pred,
        args.truth,
        images=args.images,
        overlay=args.overlay,
        overlay_id=args.overlay_id,
        region=parse_region(args.region) if args.region else None,
        json_path=args.json,
        classes=[c.strip() for c in args.classes.split(",")] if args.classes else None,
    )
    return 0 if report.slides else 1


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole system on synthetic data: data, records, train, bench, predict, evaluate",
        description="Run every step on synthetic slides in a few CPU minutes, reusing what an "
        "earlier demo left when its settings still match.",
    )
    p.add_argument(
        "--workdir", type=Path, default=Path("demo"), help="where everything goes (default: demo)"
    )
    p.add_argument(
        "--experiment",
        type=Path,
        default=DEFAULT_EXPERIMENT,
        help=f"experiment the demo shortens for a CPU (default: {DEFAULT_EXPERIMENT})",
    )


def _run_demo(args: argparse.Namespace) -> int:
    require_extra("train", "this command")
    import_tensorflow_quietly()
    from tfpipe.demo import run_demo

    run_demo(args.workdir, experiment=args.experiment)
    return 0


COMMANDS = {
    "train": (_add_train, _run_train),
    "runs": (_add_runs, _run_runs),
    "predict": (_add_predict, _run_predict),
    "evaluate": (_add_evaluate, _run_evaluate),
    "demo": (_add_demo, _run_demo),
}
