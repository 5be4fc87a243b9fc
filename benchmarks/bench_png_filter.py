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

import itertools
import os
from pathlib import Path
from typing import Any

import bench_input as bi  # also puts the repository on sys.path
import cv2
import numpy as np

from benchmarks._common import machine, parse_args, write_results
from benchmarks._input_data import prepare
from tfpipe.bench.measure import interleave, round_ratios, time_call
from tfpipe.records.manifest import read_manifest

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
        params = png_params(name)
        blobs[name], _, encode = time_call(
            lambda p=params: [cv2.imencode(".png", tile, p)[1] for tile in tiles]
        )
        out[name] = {
            "kB": float(np.mean([len(b) for b in blobs[name]])) / 1024,
            "encode_us": 1e6 * encode / len(tiles),
        }
    decode = {
        name: lambda b=blobs[name]: time_call(
            lambda: [cv2.imdecode(blob, cv2.IMREAD_UNCHANGED) for blob in b]
        )[2]
        for name in FILTERS
    }
    for name, cpu in interleave(decode, passes).items():
        out[name]["decode_us"] = 1e6 * min(cpu) / len(tiles)
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

    from tfpipe.bench.reencode import rewrite_shards
    from tfpipe.records import format as fmt

    def refilter(record: bytes) -> bytes:
        example = tf.train.Example.FromString(record)
        field = example.features.feature[fmt.IMAGE_ENCODED].bytes_list
        tile = cv2.imdecode(np.frombuffer(field.value[0], np.uint8), cv2.IMREAD_UNCHANGED)
        field.value[0] = cv2.imencode(".png", tile, png_params(name))[1].tobytes()
        return example.SerializeToString()

    return rewrite_shards(src, out, refilter)


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
        median, rounds = round_ratios(b["rounds"], a["rounds"])
        out[mode] = {
            "median": median,
            "rounds": rounds,
            "cpu": a["cpu_ms_per_image"] / b["cpu_ms_per_image"],
        }
    return out


def markdown(report: dict) -> str:
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
    return "\n".join(lines) + "\n"


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


def main() -> None:
    args = parse_args(__doc__, "tfpipe-bench-input", "tiny data, one round")
    p = bi.QUICK if args.quick else bi.FULL
    load_before = os.getloadavg()
    import tensorflow as tf

    data = prepare(args.work / ("quick" if args.quick else "full"), p.slides, p.size)
    src = read_manifest(data.records)
    folders = {
        name: rewrite_records(src, name, args.work / "png-filter" / f"{i}")
        for i, name in enumerate(FILTERS)
    }
    demo = [cv2.imdecode(np.frombuffer(b, np.uint8), -1) for b in first_tiles(src, 256)]
    sources = {"demo slides": demo, **real_tiles()}
    codec = {k: {"tiles": len(v), "costs": codec_costs(v)} for k, v in sources.items()}
    throughput = pipeline_rounds(data, folders, p)
    m = machine(load_before, tf.__version__)
    report = {
        "benchmark": "png_filter",
        "quick": args.quick,
        "machine": f"{m['cpus']} CPUs, load average {m['load_average_before'][0]:.2f} before; "
        f"TensorFlow {m['tensorflow']}",
        "rounds": p.rounds,
        "records": src.num_records,
        "codec": codec,
        "throughput": throughput,
        "speedups": speedups(throughput, *FILTERS),
    }
    write_results("png_filter-quick" if args.quick else "png_filter", report, markdown(report))


if __name__ == "__main__":
    main()
