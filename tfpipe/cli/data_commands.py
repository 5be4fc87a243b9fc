"""Commands for data: make-demo-data, build-records, inspect-records, serve-data, bench-input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tfpipe.cli.common import experiment_args, load_args
from tfpipe.errors import ConfigError, require_extra

# ----------------------------------------------------------------- make-demo-data


def _add_make_demo_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-demo-data",
        help="write a synthetic dataset in the HuBMAP layout (or a classification one)",
        description="Write synthetic slides with tissue texture, background and "
        "glomerulus-like blobs: DIR/train/<id>.tiff and DIR/train.csv (id,encoding), and "
        "the same glomeruli as GeoJSON polygons (DIR/train/<id>.json; the ones named "
        "'sclerotic glomerulus' are drawn smooth and pink) with cortex/medulla regions "
        "(DIR/train/<id>-anatomical-structure.json). With --kind classification: "
        "DIR/images/*.png and DIR/labels.csv (path,labels).",
    )
    p.add_argument("dir", type=Path, help="output folder")
    p.add_argument(
        "--kind",
        choices=["segmentation", "classification"],
        default="segmentation",
        help="slides with RLE masks (default), or images with multi-hot labels",
    )
    p.add_argument("--slides", type=int, default=None, help="number of slides/images")
    p.add_argument("--size", type=int, default=None, help="slide side in pixels")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR")


def _run_make_demo_data(args: argparse.Namespace) -> int:
    from tfpipe.synthetic import datasets as demo

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
        "into folds by source image, with manifest.json. The build writes into "
        "OUTPUT.tmp-<pid> and renames it at the end; Ctrl-C, SIGTERM or an error removes "
        "it (exit 130, 143 or 2), and the next build removes those of builds killed with "
        "kill -9. One build per output at a time (OUTPUT.lock).",
    )
    experiment_args(p, example="data.tile_size=512")
    p.add_argument("--output", type=Path, default=None, help="override data.output")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: cores)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output folder (once the new build has succeeded)",
    )
    p.add_argument(
        "--wait-lock",
        action="store_true",
        help="if another build is writing the same output, wait for it instead of failing",
    )
    p.add_argument(
        "--runner",
        choices=["local", "beam"],
        default=None,
        help="override data.runner: local worker processes, or an Apache Beam pipeline "
        "(the DirectRunner unless --beam-option runner=...; needs the [beam] extra)",
    )
    p.add_argument(
        "--beam-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Beam pipeline option, passed on unchanged as --KEY=VALUE; one per option "
        "(repeatable), e.g. direct_num_workers=2 or runner=DataflowRunner; see "
        "docs/operations.md",
    )
    p.add_argument(
        "--verbose", action="store_true", help="with --runner beam: show Beam's own INFO logs"
    )


def _run_build_records(args: argparse.Namespace) -> int:
    if args.workers is not None:
        # Through --set so that a bad value is a ConfigError naming the key, not a traceback.
        args.overrides.append(f"data.workers={args.workers}")
    if args.runner is not None:
        args.overrides.append(f"data.runner={args.runner}")
    exp = load_args(args)
    from tfpipe.records.build import build_records
    from tfpipe.records.lifecycle import Terminated

    if args.output is not None:
        exp.data.output = args.output
    if args.verbose and exp.data.runner == "beam":
        from tfpipe.records.beam_logging import verbose_beam

        verbose_beam()
    try:
        build_records(
            exp.data,
            overwrite=args.overwrite,
            wait_lock=args.wait_lock,
            beam_options=args.beam_option,
        )
    except Terminated as stop:
        # KeyboardInterrupt (Ctrl-C) goes on to the usual 130; SIGTERM gets its own 128 + 15.
        print(f"tfpipe build-records: terminated ({stop}); nothing was written", file=sys.stderr)
        return 128 + stop.signum
    return 0


# ---------------------------------------------------------------- inspect-records


def _add_inspect_records(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect-records",
        help="summarise a records folder, verify checksums, write a contact sheet",
        description="Print counts per fold, source and shard from manifest.json; check every "
        "shard's size, sha256 and record count against it (exit 1 on a mismatch); write a "
        "PNG contact sheet of random tiles with their masks outlined.",
    )
    p.add_argument("records", type=Path, help="records folder (holds manifest.json)")
    p.add_argument("--sheet", type=Path, default=None, help="PNG path (default: RECORDS/sheet.png)")
    p.add_argument("--tiles", type=int, default=32, help="tiles on the contact sheet")
    p.add_argument("--no-verify", action="store_true", help="skip sha256 verification")
    p.add_argument("--seed", type=int, default=0, help="seed that picks the contact-sheet tiles")


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


# --------------------------------------------------------------------- serve-data


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


# -------------------------------------------------------------------- bench-input


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
    experiment_args(p, example="input.batch_size=64")
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
    # The model's training step and stages.png (comparing two reports needs neither).
    require_extra("train", "this command")
    from tfpipe.cli.input_errors import damaged_records_as_errors

    exp = load_args(args)
    with damaged_records_as_errors(exp.data.output):
        harness.bench_input(
            exp, sweeps=args.sweep, out_dir=args.out, batches=args.batches, repeats=args.repeats
        )
    return 0


COMMANDS = {
    "make-demo-data": (_add_make_demo_data, _run_make_demo_data),
    "build-records": (_add_build_records, _run_build_records),
    "inspect-records": (_add_inspect_records, _run_inspect_records),
    "serve-data": (_add_serve_data, _run_serve_data),
    "bench-input": (_add_bench_input, _run_bench_input),
}
