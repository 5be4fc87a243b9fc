"""PNG row filters: what the records' tile encoding costs the input pipeline.

``tfpipe.records.format.encode_image`` writes PNG tiles with the "up" row
filter instead of libpng's default adaptive choice. This benchmark is the
measurement behind that choice. The same pixels are encoded with each filter,
then compared in one run:

* codec: size, encode and decode CPU time per 256 x 256 tile (OpenCV's
  libpng, one thread) on the demo's tiles and, when scikit-image is
  installed, on tiles of its real photographs (an immunohistochemistry slide
  among them);
* pipeline: ``tfpipe.data.load`` images/s over records that differ only in
  the filter of their tile PNGs (``load()`` decodes them with
  ``tf.io.decode_png``), with augmentation off (the decode-only ceiling) and
  with kidney.yaml's augmentation, in interleaved rounds (median of
  per-round ratios, warm-up batches excluded).

Results: ``benchmarks/results/png_filter.json`` and ``png_filter.md``.

Usage:
    python benchmarks/bench_png_filter.py            # demo records of bench_input.py, 5 rounds
    python benchmarks/bench_png_filter.py --quick    # tiny data, 1 round: a smoke run
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import bench_input as bi  # also puts the repository on sys.path
import cv2
import numpy as np

from benchmarks._input_report import RESULTS

FILTERS = {"adaptive (libpng default)": None, "up": "IMWRITE_PNG_FILTER_UP"}
REAL_IMAGES = ("immunohistochemistry", "astronaut", "coffee", "chelsea", "rocket")


def png_params(name: str) -> list[int]:
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if FILTERS[name]:
        params += [cv2.IMWRITE_PNG_FILTER, getattr(cv2, FILTERS[name])]
    return params


def codec_costs(tiles: list[np.ndarray], passes: int = 5) -> dict[str, dict[str, float]]:
    """kB, encode and decode CPU µs per tile for each filter.

    Decode passes alternate between the filters (A B A B ...) so that a busy
    spell on the machine hits both; the figure is each filter's fastest pass.
    """
    cv2.setNumThreads(1)
    out, blobs = {}, {}
    for name in FILTERS:
        t0 = time.process_time()
        blobs[name] = [cv2.imencode(".png", tile, png_params(name))[1] for tile in tiles]
        encode = time.process_time() - t0
        out[name] = {
            "kB": float(np.mean([len(b) for b in blobs[name]])) / 1024,
            "encode_us": 1e6 * encode / len(tiles),
            "decode_us": float("inf"),
        }
    for _ in range(passes):
        for name in FILTERS:
            t0 = time.process_time()
            for blob in blobs[name]:
                cv2.imdecode(blob, cv2.IMREAD_UNCHANGED)
            us = 1e6 * (time.process_time() - t0) / len(tiles)
            out[name]["decode_us"] = min(out[name]["decode_us"], us)
    return out


def real_tiles() -> dict[str, list[np.ndarray]]:
    """256-px tiles (stride 128) of scikit-image's bundled photographs, BGR; {} without it."""
    try:
        import skimage.data
    except ImportError:
        return {}
    out = {}
    for name in REAL_IMAGES:
        image = getattr(skimage.data, name)()[..., ::-1]
        h, w = image.shape[:2]
        out[name] = [
            np.ascontiguousarray(image[y : y + 256, x : x + 256])
            for y in range(0, h - 255, 128)
            for x in range(0, w - 255, 128)
        ]
    return out


def rewrite_records(src: Any, name: str, out: Path) -> Path:
    """A copy of the records whose tile PNGs are re-encoded with filter ``name``."""
    import tensorflow as tf

    from tfpipe.bench.reencode import read_records
    from tfpipe.records import format as fmt
    from tfpipe.records.manifest import ShardInfo, write_manifest
    from tfpipe.records.writer import ShardWriter, frame_record

    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for info in src.shards:
        with ShardWriter(out / info.path, src.compression) as writer:
            for record in read_records(src.root / info.path, src.compression):
                example = tf.train.Example.FromString(record)
                field = example.features.feature[fmt.IMAGE_ENCODED].bytes_list
                tile = cv2.imdecode(np.frombuffer(field.value[0], np.uint8), cv2.IMREAD_UNCHANGED)
                field.value[0] = cv2.imencode(".png", tile, png_params(name))[1].tobytes()
                writer.write(frame_record(example.SerializeToString()))
        r = writer.result
        shards.append(ShardInfo(info.path, info.fold, r.records, r.bytes, r.sha256))
    write_manifest(dataclasses.replace(src, root=out, shards=shards))
    return out


def first_tiles(src: Any, n: int) -> list[bytes]:
    """The encoded tile PNGs of the first ``n`` records, shard after shard."""
    import tensorflow as tf

    from tfpipe.bench.reencode import read_records
    from tfpipe.records import format as fmt

    shards = (read_records(src.root / s.path, src.compression) for s in src.shards)
    records = itertools.islice(itertools.chain.from_iterable(shards), n)
    features = (tf.train.Example.FromString(r).features.feature for r in records)
    return [f[fmt.IMAGE_ENCODED].bytes_list.value[0] for f in features]


def pipeline_rounds(data: Any, folders: dict[str, Path], p: bi.Scale) -> dict:
    """Images/s of decode-only and full load() per filter, interleaved rounds."""
    import tfpipe.data as td

    cfg = data.input_config
    off = bi.augment_off(cfg.augment)
    variants = {
        f"{mode} / {name}": (
            lambda f=folder, a=aug: iter(td.load(f, config=cfg, augment=a).repeat())
        )
        for name, folder in folders.items()
        for mode, aug in (("decode_only", off), ("full", cfg.augment))
    }
    return bi.interleaved_rounds(variants, p)


def speedups(throughput: dict, base: str, new: str) -> dict[str, dict]:
    """``new`` ÷ ``base`` images/s per mode: median of per-round ratios, and by CPU time."""
    out = {}
    for mode in ("decode_only", "full"):
        a, b = throughput[f"{mode} / {base}"], throughput[f"{mode} / {new}"]
        rounds = [y / x for x, y in zip(a["rounds"], b["rounds"], strict=True)]
        out[mode] = {
            "median": statistics.median(rounds),
            "rounds": rounds,
            "cpu": a["cpu_ms_per_image"] / b["cpu_ms_per_image"],
        }
    return out


def save_report(
    name: str, args: Any, p: bi.Scale, load_before: Any, body: dict, markdown: Any
) -> None:
    """Write ``results/<name>.json`` and ``.md`` (``-quick`` with --quick); print the table."""
    import tensorflow as tf

    m = bi.machine(load_before, tf.__version__)
    report = {
        "benchmark": name,
        "quick": args.quick,
        "machine": f"{m['cpus']} CPUs, load average {m['load_average_before'][0]:.2f} before; "
        f"TensorFlow {m['tensorflow']}",
        "rounds": p.rounds,
        **body,
    }
    stem = f"{name}-quick" if args.quick else name
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown(report, RESULTS / f"{stem}.md")
    print((RESULTS / f"{stem}.md").read_text())


def write_markdown(report: dict, path: Path) -> None:
    base, new = FILTERS
    lines = [
        "# PNG row filter of the record tiles",
        "",
        f"Command: `python benchmarks/bench_png_filter.py`. {report['machine']}.",
        "",
        "Codec, per 256 x 256 RGB tile (OpenCV, one thread; decode: fastest of 5 alternating"
        " passes):",
        "",
        "| tiles | n | filter | kB | encode µs | decode µs | decode speed-up |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for source, row in report["codec"].items():
        ref = row["costs"][base]["decode_us"]
        for name, c in row["costs"].items():
            lines.append(
                f"| {source} | {row['tiles']} | {name} | {c['kB']:.1f} | {c['encode_us']:.0f} "
                f"| {c['decode_us']:.0f} | {ref / c['decode_us']:.2f}× |"
            )
    lines += [
        "",
        f"Pipeline, `tfpipe.data.load` on the demo records ({report['records']} tiles), "
        f"images/s (median of {report['rounds']} rounds):",
        "",
        "| mode | " + " | ".join(FILTERS) + f" | {new} ÷ adaptive | per round | by CPU time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += pipeline_rows(report, base, new)
    path.write_text("\n".join(lines) + "\n")


def pipeline_rows(report: dict, base: str, new: str) -> list[str]:
    """Markdown rows: mode, images/s of ``base`` and ``new``, their ratio, its spread, by CPU."""
    t, rows = report["throughput"], []
    for mode, s in report["speedups"].items():
        lo, hi = min(s["rounds"]), max(s["rounds"])
        rows.append(
            f"| {mode} | {t[f'{mode} / {base}']['images_per_s']:.0f} "
            f"| {t[f'{mode} / {new}']['images_per_s']:.0f} | {s['median']:.2f} "
            f"| {lo:.2f} - {hi:.2f} | {s['cpu']:.2f} |"
        )
    return rows


def start(doc: str) -> tuple[Any, dict, Any, Any, Any]:
    """Parse the command line and prepare bench_input.py's demo records.

    Returns ``(args, parameters, load average before, BenchData, Manifest)``.
    """
    args = bi.parse_args(doc)
    p = bi.QUICK if args.quick else bi.FULL
    load_before = bi.os.getloadavg()
    from benchmarks._input_data import prepare
    from tfpipe.records.manifest import read_manifest

    data = prepare(args.work / ("quick" if args.quick else "full"), p.slides, p.size)
    return args, p, load_before, data, read_manifest(data.records)


def main() -> None:
    args, p, load_before, data, src = start(__doc__)
    folders = {
        name: rewrite_records(src, name, args.work / "png-filter" / f"{i}")
        for i, name in enumerate(FILTERS)
    }
    demo = [cv2.imdecode(np.frombuffer(b, np.uint8), -1) for b in first_tiles(src, 256)]
    sources = {"demo slides": demo, **real_tiles()}
    codec = {k: {"tiles": len(v), "costs": codec_costs(v)} for k, v in sources.items()}
    throughput = pipeline_rounds(data, folders, p)
    body = {
        "records": src.num_records,
        "codec": codec,
        "throughput": throughput,
        "speedups": speedups(throughput, *FILTERS),
    }
    save_report("png_filter", args, p, load_before, body, write_markdown)


if __name__ == "__main__":
    main()
