"""PNG decoders: what tfpipe.io.png's batched decode buys the input pipeline.

``tfpipe.data.load`` decodes the PNG tiles of each batch with
``tfpipe.io.png.decode_png`` (libdeflate + a vectorised undo of the "up"
filter) in one ``tf.numpy_function`` call, instead of ``tf.io.decode_png`` per
tile. This benchmark is the measurement behind that choice, in one run on the
same tiles:

* codec: CPU µs per 256 x 256 RGB tile, one thread, for ``tf.io.decode_png``,
  OpenCV's ``imdecode`` (libpng, what the PyTorch baseline of bench_input.py
  uses), imagecodecs' libpng and ``tfpipe.io.png.decode_png``, on the demo
  records' tiles and, when scikit-image is installed, on tiles of its real
  photographs encoded as the records are. Every decoder's pixels are checked
  equal to TensorFlow's;
* pipeline: ``load()`` images/s with either decoder (``decode_engine``
  ``numpy`` or ``tensorflow``), augmentation off (the decode-only ceiling) and
  kidney.yaml's, in interleaved rounds (median of per-round ratios, warm-up
  batches excluded).

Results: ``benchmarks/results/png_decode.json`` and ``png_decode.md``.

Usage:
    python benchmarks/bench_png_decode.py            # demo records of bench_input.py, 5 rounds
    python benchmarks/bench_png_decode.py --quick    # tiny data, 1 round: a smoke run
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import bench_input as bi  # also puts the repository on sys.path
import bench_png_filter as pf
import cv2
import imagecodecs
import numpy as np

ENGINES = ("tensorflow", "numpy")


def decoders() -> dict[str, Callable[[bytes], np.ndarray]]:
    import tensorflow as tf

    from tfpipe.io.png import decode_png

    return {
        "tf.io.decode_png": lambda b: tf.io.decode_png(b, 3).numpy(),
        "cv2.imdecode (libpng)": lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), -1)[..., ::-1],
        "imagecodecs.png_decode (libpng)": imagecodecs.png_decode,
        "tfpipe.io.png.decode_png": lambda b: decode_png(b, 3),
    }


def codec_costs(blobs: list[bytes], passes: int = 5) -> dict[str, float]:
    """CPU µs per tile of each decoder: its fastest of ``passes`` alternating passes."""
    cv2.setNumThreads(1)
    funcs = decoders()
    reference = [funcs["tf.io.decode_png"](b) for b in blobs]
    best = dict.fromkeys(funcs, float("inf"))
    for _ in range(passes):
        for name, decode in funcs.items():
            t0 = time.process_time()
            pixels = [decode(b) for b in blobs]
            best[name] = min(best[name], 1e6 * (time.process_time() - t0) / len(blobs))
            if not all(np.array_equal(p, r) for p, r in zip(pixels, reference, strict=True)):
                raise AssertionError(f"{name} decodes other pixels than tf.io.decode_png")
    return best


def real_blobs() -> dict[str, list[bytes]]:
    """scikit-image's photographs cut into tiles, encoded as the records' tiles are."""
    params = pf.png_params("up")
    return {
        name: [cv2.imencode(".png", t, params)[1].tobytes() for t in tiles]
        for name, tiles in pf.real_tiles().items()
    }


def pipeline_rounds(data: Any, p: bi.Scale) -> dict:
    """Images/s of decode-only and full load() with each decoder, interleaved rounds."""
    import tfpipe.data as td
    from tfpipe.data import pipeline

    cfg = data.input_config
    off = bi.augment_off(cfg.augment)

    def start(engine: str, augment: Any) -> Any:
        pipeline.decode_engine = lambda *_: engine
        return iter(td.load(data.records, config=cfg, augment=augment).repeat())

    variants = {
        f"{mode} / {engine}": (lambda e=engine, a=aug: start(e, a))
        for engine in ENGINES
        for mode, aug in (("decode_only", off), ("full", cfg.augment))
    }
    return bi.interleaved_rounds(variants, p)


def write_markdown(report: dict, path: Any) -> None:
    names = list(next(iter(report["codec"].values()))["us"])
    lines = [
        "# PNG decoders for the record tiles",
        "",
        f"Command: `python benchmarks/bench_png_decode.py`. {report['machine']}.",
        "",
        "Codec, CPU µs per 256 x 256 RGB tile (one thread; fastest of 5 alternating passes;"
        " every decoder's pixels equal TensorFlow's):",
        "",
        "| tiles | n | " + " | ".join(names) + " | speed-up over tf.io.decode_png |",
        "|---|---:|" + "---:|" * (len(names) + 1),
    ]
    for source, row in report["codec"].items():
        us = row["us"]
        cells = " | ".join(f"{us[n]:.0f}" for n in names)
        speedup = us["tf.io.decode_png"] / us["tfpipe.io.png.decode_png"]
        lines.append(f"| {source} | {row['tiles']} | {cells} | {speedup:.2f}× |")
    lines += [
        "",
        f"Pipeline, `tfpipe.data.load` on the demo records ({report['records']} tiles), "
        f"images/s (median of {report['rounds']} rounds):",
        "",
        "| mode | tf.io.decode_png per tile | batched tfpipe.io.png | ratio | per round "
        "| by CPU time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += pf.pipeline_rows(report, *ENGINES)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    args, p, load_before, data, src = pf.start(__doc__)
    sources = {"demo slides": pf.first_tiles(src, 256), **real_blobs()}
    codec = {k: {"tiles": len(v), "us": codec_costs(v)} for k, v in sources.items()}
    throughput = pipeline_rounds(data, p)
    body = {
        "records": src.num_records,
        "codec": codec,
        "throughput": throughput,
        "speedups": pf.speedups(throughput, *ENGINES),
    }
    pf.save_report("png_decode", args, p, load_before, body, write_markdown)


if __name__ == "__main__":
    main()
