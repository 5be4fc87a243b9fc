"""The ``tfpipe`` command line: parses arguments and calls library functions, nothing more.

Each sub-command has an ``_add_<name>`` function that declares its arguments
and a ``_run_<name>`` function that calls the library. Library modules are
imported inside ``_run_*`` so that ``tfpipe --help`` answers instantly and a
command loads only what it needs (TensorFlow takes seconds to import).

Errors caused by the user (:class:`tfpipe.errors.TfpipeError`) are printed as
one message with exit status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tfpipe import __version__
from tfpipe.errors import TfpipeError

DEFAULT_EXPERIMENT = Path("experiments/kidney.yaml")


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ INFO lines (CUDA probing, CPU features) drown the
    # progress bars; warnings and errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("SM_FRAMEWORK", "tf.keras")


def _experiment_args(p: argparse.ArgumentParser, required: bool = False) -> None:
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


def _load(args: argparse.Namespace):
    from tfpipe.config import load_experiment

    return load_experiment(args.experiment, args.overrides)


# ----------------------------------------------------------------- make-demo-data


def _add_make_demo_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-demo-data",
        help="write a synthetic dataset in the HuBMAP layout (or a classification one)",
        description="Write synthetic slides with tissue texture, background and "
        "glomerulus-like blobs: DIR/train/<id>.tiff and DIR/train.csv (id,encoding). "
        "With --kind classification: DIR/images/*.png and DIR/labels.csv (path,labels).",
    )
    p.add_argument("dir", type=Path, help="output folder")
    p.add_argument("--kind", choices=["segmentation", "classification"], default="segmentation")
    p.add_argument("--slides", type=int, default=None, help="number of slides/images")
    p.add_argument("--size", type=int, default=None, help="slide side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR")


def _run_make_demo_data(args: argparse.Namespace) -> int:
    from tfpipe.records import demo

    kwargs = {k: v for k, v in (("n", args.slides), ("size", args.size)) if v is not None}
    if args.kind == "classification":
        out = demo.make_demo_classification(
            args.dir, seed=args.seed, overwrite=args.overwrite, **kwargs
        )
    else:
        out = demo.make_demo_data(args.dir, seed=args.seed, overwrite=args.overwrite, **kwargs)
    print(out)
    return 0


# ------------------------------------------------------------------ build-records


def _add_build_records(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-records",
        help="tile, filter, resize, shuffle and shard source images into TFRecords",
        description="Offline ETL: stream slides window by window, cut tiles, drop "
        "background, resize once, shuffle globally, and write sharded TFRecords grouped "
        "into folds by source image, with manifest.json.",
    )
    _experiment_args(p)
    p.add_argument("--output", type=Path, default=None, help="override data.output")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def _run_build_records(args: argparse.Namespace) -> int:
    if args.workers is not None:
        # Through --set so that a bad value is a ConfigError naming the key, not a traceback.
        args.overrides.append(f"data.workers={args.workers}")
    exp = _load(args)
    from tfpipe.records.build import build_records

    if args.output is not None:
        exp.data.output = args.output
    build_records(exp.data, overwrite=args.overwrite)
    return 0


# ---------------------------------------------------------------- inspect-records


def _add_inspect_records(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect-records",
        help="summarise a records folder, verify checksums, write a contact sheet",
    )
    p.add_argument("records", type=Path, help="records folder (holds manifest.json)")
    p.add_argument("--sheet", type=Path, default=None, help="PNG path (default: RECORDS/sheet.png)")
    p.add_argument("--tiles", type=int, default=32, help="tiles on the contact sheet")
    p.add_argument("--no-verify", action="store_true", help="skip sha256 verification")
    p.add_argument("--seed", type=int, default=0)


def _run_inspect_records(args: argparse.Namespace) -> int:
    from tfpipe.records.inspect import inspect_records

    report = inspect_records(
        args.records,
        sheet=args.sheet,
        n_tiles=args.tiles,
        verify=not args.no_verify,
        seed=args.seed,
    )
    return 0 if report.ok else 1


# ---------------------------------------------------------------------- the rest


def _add_serve_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve-data",
        help="run a tf.data service dispatcher or worker",
        description="Scale input beyond one host: start a dispatcher, then workers that "
        "register with it; set input.service: grpc://HOST:PORT in the experiment.",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--dispatcher", type=int, metavar="PORT", help="start a dispatcher on PORT")
    g.add_argument("--worker", metavar="HOST:PORT", help="start a worker for this dispatcher")
    p.add_argument("--port", type=int, default=0, help="worker port (default: any free port)")
    p.add_argument(
        "--host",
        default=None,
        help="name trainers use to reach this worker (default: this machine's host name)",
    )


def _run_serve_data(args: argparse.Namespace) -> int:
    from tfpipe.errors import ConfigError

    if args.dispatcher is not None and not 0 < args.dispatcher < 65536:
        raise ConfigError(f"--dispatcher needs a port in 1..65535; got {args.dispatcher}")
    if args.worker is not None and ":" not in args.worker.removeprefix("grpc://"):
        raise ConfigError(f"--worker needs the dispatcher as HOST:PORT; got {args.worker!r}")
    from tfpipe.data import service

    if args.dispatcher is not None:
        service.run_dispatcher(args.dispatcher)
    else:
        service.run_worker(args.worker, port=args.port, host=args.host)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the experiment's model on its records, fold by fold",
        description="Keras training driven by one YAML file: k-fold cross-validation by "
        "source image, per-fold best checkpoints, history, TensorBoard logs and a summary "
        "in runs/<timestamp>-<name>/.",
    )
    _experiment_args(p, required=True)
    p.add_argument(
        "--fold",
        type=int,
        action="append",
        default=None,
        metavar="K",
        help="validate on fold K only (repeatable; default: train.folds)",
    )
    p.add_argument(
        "--resume", default=None, metavar="RUN_DIR", help="resume an interrupted run ('latest')"
    )
    p.add_argument("--name", default=None, help="run name (default: experiment name)")


def _run_train(args: argparse.Namespace) -> int:
    from tfpipe.train.trainer import train_experiment

    exp = _load(args)
    train_experiment(exp, folds=args.fold, resume=args.resume, name=args.name)
    return 0


def _add_runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="print the experiment log: what changed and the CV score")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--baseline", default=None, help="compare every run with this run")
    p.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown")


def _run_runs(args: argparse.Namespace) -> int:
    from tfpipe.train.runlog import print_runs

    print_runs(args.runs_dir, baseline=args.baseline, csv_path=args.csv, md_path=args.markdown)
    return 0


def _add_bench_input(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench-input",
        help="measure input throughput stage by stage against the model's step time",
        description="Time the experiment's input pipeline after each cumulative stage (read, "
        "parse, decode, augment, batch, prefetch), an ablation with one optimisation off at a "
        "time, optional sweeps, and the model's training step with and without input; print "
        "the verdict (input- or compute-bound) and advice; write bench.json, bench.md and "
        "stages.png. Defaults come from the experiment's bench section (--set bench.KEY=V).",
    )
    _experiment_args(p)
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="measure the pipeline for each value: input.* keys, data.encoding or "
        "data.compression (e.g. input.batch_size=32,64,128; repeatable)",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A.json", "B.json"),
        help="print two bench.json side by side (B ÷ A) instead of measuring",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for bench.json, bench.md and stages.png (default: runs/bench-<timestamp>); "
        "with --compare, a Markdown file",
    )
    p.add_argument("--batches", type=int, default=None, help="batches per timed window")
    p.add_argument("--repeats", type=int, default=None, help="timed windows per figure")


def _run_bench_input(args: argparse.Namespace) -> int:
    from tfpipe.bench import harness

    if args.compare:
        harness.compare_reports(*args.compare, out=args.out)
        return 0
    exp = _load(args)
    harness.bench_input(
        exp, sweeps=args.sweep, out_dir=args.out, batches=args.batches, repeats=args.repeats
    )
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="whole-slide prediction with overlap, TTA and fold ensembles, written as RLE",
    )
    _experiment_args(p, required=True)
    p.add_argument("--checkpoint", required=True, help="run folder (all folds) or .keras file")
    p.add_argument("--images", type=Path, default=None, help="folder of slides (predict.images)")
    p.add_argument("--out", type=Path, default=None, help="submission CSV (predict.out)")
    p.add_argument("--save-masks", type=Path, default=None, help="also write mask PNG/TIFFs here")
    p.add_argument(
        "--save-probs",
        type=Path,
        default=None,
        help="also write low-res probability maps (<id>.npy + .json) for evaluate's sweep",
    )


def _run_predict(args: argparse.Namespace) -> int:
    from tfpipe.predict.slides import predict_slides

    exp = _load(args)
    predict_slides(
        exp,
        checkpoint=args.checkpoint,
        images=args.images,
        out=args.out,
        save_masks=args.save_masks,
        save_probabilities=args.save_probs,
    )
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="dice per slide against RLE truth, threshold sweep")
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
    )
    return 0 if report.slides else 1


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole system on synthetic data: data, records, train, bench, predict, evaluate",
    )
    p.add_argument("--workdir", type=Path, default=Path("demo"), help="where everything goes")
    p.add_argument("--experiment", type=Path, default=DEFAULT_EXPERIMENT)


def _run_demo(args: argparse.Namespace) -> int:
    from tfpipe.demo import run_demo

    run_demo(args.workdir, experiment=args.experiment)
    return 0


COMMANDS = {
    "make-demo-data": (_add_make_demo_data, _run_make_demo_data),
    "build-records": (_add_build_records, _run_build_records),
    "inspect-records": (_add_inspect_records, _run_inspect_records),
    "serve-data": (_add_serve_data, _run_serve_data),
    "train": (_add_train, _run_train),
    "runs": (_add_runs, _run_runs),
    "bench-input": (_add_bench_input, _run_bench_input),
    "predict": (_add_predict, _run_predict),
    "evaluate": (_add_evaluate, _run_evaluate),
    "demo": (_add_demo, _run_demo),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfpipe",
        description="Fast, well-shuffled Keras input for giant images, and the numbers to prove it.",  # noqa: E501
    )
    parser.add_argument("--version", action="version", version=f"tfpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tfpipe`` console script."""
    args = build_parser().parse_args(argv)
    _quiet_tensorflow()
    try:
        return COMMANDS[args.command][1](args)
    except TfpipeError as err:
        print(f"tfpipe {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfpipe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
