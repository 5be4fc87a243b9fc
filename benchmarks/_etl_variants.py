"""The variants timed by ``benchmarks/bench_etl.py``, one per child process.

Usage (the benchmark runs these; each prints one JSON line):
    python benchmarks/_etl_variants.py baseline SLIDE
    python benchmarks/_etl_variants.py build DATA_DIR OUT_DIR WORKERS
    python benchmarks/_etl_variants.py writer RECORDS_DIR OUT_FILE tf|own

Timers start after the imports; the parent measures CPU and RSS of the whole
process tree, imports included.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def child_baseline(slide_path: str) -> dict:
    """Band-read the whole slide, resize and PNG-encode every tile."""
    import cv2

    from tfpipe.io.tiff import open_slide
    from tfpipe.records import format as fmt
    from tfpipe.records.tiling import grid_positions

    start = time.perf_counter()
    tiles = 0
    with open_slide(slide_path) as slide:
        xs = grid_positions(slide.width, 1024, 1024)
        for y in grid_positions(slide.height, 1024, 1024):
            band = slide.read_window(y, 0, 1024, xs[-1] + 1024)
            for x in xs:
                small = cv2.resize(band[:, x : x + 1024], (256, 256), interpolation=cv2.INTER_AREA)
                fmt.encode_image(small, "png")
                tiles += 1
    return {"seconds": time.perf_counter() - start, "tiles": tiles}


def child_build(data: str, out: str, workers: int) -> dict:
    """The full build_records with the kidney.yaml ETL settings (1024 px -> 256 px)."""
    from tfpipe.config import DataConfig
    from tfpipe.records.build import build_records

    cfg = DataConfig(
        images=Path(data) / "train",
        labels=Path(data) / "train.csv",
        output=Path(out),
        folds=1,
        workers=workers,
    )
    start = time.perf_counter()
    manifest = build_records(cfg, overwrite=True, progress=False)
    return {
        "seconds": time.perf_counter() - start,
        "records": manifest.num_records,
        "bytes": sum(s.bytes for s in manifest.shards),
        "tiles": sum(s.tiles_total for s in manifest.sources.values()),
    }


def child_writer(records_dir: str, out: str, kind: str) -> dict:
    """Write the records of a build once more with TensorFlow's writer or tfpipe's."""
    from tfpipe.records.manifest import read_manifest
    from tfpipe.records.reader import iter_records

    manifest = read_manifest(records_dir)
    payloads = [r for p in manifest.shards_for_folds() for r in iter_records(p)]
    if kind == "tf":
        import tensorflow as tf

        from tfpipe.records.manifest import sha256_file

        start = time.perf_counter()
        with tf.io.TFRecordWriter(out) as w:
            for p in payloads:
                w.write(p)
        sha256_file(out)  # the manifest needs it; ShardWriter hashes while writing
    else:
        from tfpipe.records.writer import ShardWriter, frame_record

        start = time.perf_counter()
        with ShardWriter(out) as w:
            for p in payloads:
                w.write(frame_record(p))
    return {"seconds": time.perf_counter() - start, "records": len(payloads)}


def main(argv: list[str]) -> None:
    kind, *rest = argv
    if kind == "baseline":
        result = child_baseline(*rest)
    elif kind == "build":
        result = child_build(rest[0], rest[1], int(rest[2]))
    else:
        result = child_writer(*rest)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
