"""Synthetic demo datasets: H&E-like kidney slides with RLE truth, and multi-label images.

:func:`make_demo_data` writes the HuBMAP layout::

    out_dir/train/<id>.tiff   out_dir/train.csv  (id,encoding)
    out_dir/test/<id>.tiff    out_dir/test.csv   (one held-out slide and its truth)

and, beside each slide, the competition's GeoJSON files (:mod:`.annotations`):
``<id>.json`` (the glomeruli as polygons that rasterize to the RLE exactly)
and ``<id>-anatomical-structure.json`` (cortex and medulla regions).

Slides have pink/purple tissue over irregular regions (50-70 % of the slide),
near-white background elsewhere, and glomerulus-like blobs (radius 60-150 px,
denser purple with nuclei and a pale ring) placed only on tissue; the masks
are those blobs. Some glomeruli, named ``sclerotic glomerulus`` in the
GeoJSON, are drawn sclerotic: smooth eosin pink with few nuclei, inside the
same ring. A few reddish blob-like distractors are not in the masks,
and stain colours vary between slides (rendering: :mod:`.slides`).

Files: slides are tiled (512 x 512) RGB interleaved TIFFs compressed with
Zstandard (lossless; of deflate, LZW and zstd it gave the fastest windowed
reads with both backends, close to uncompressed, at about a third of the
size). Training slide 1 is strip-organised (64-row strips, uncompressed), as
many real HuBMAP files are, so the readers meet a second layout end to end;
the held-out slide is BigTIFF. Slides are rendered tile by tile and the RLE is assembled
from the blobs' own boxes, so memory stays bounded whatever ``size`` is.

:func:`make_demo_classification` writes ``out_dir/images/*.png`` and
``out_dir/labels.csv`` (``path,labels`` joined by ``|``; see :mod:`.xray`).

Both write into a temporary folder renamed into place at the end, so a
failure leaves nothing half-written.

Example:
    >>> from tfpipe.synthetic.datasets import make_demo_data
    >>> root = make_demo_data("data/hubmap", n=2, size=2048)  # doctest: +SKIP
    >>> sorted(p.name for p in root.iterdir())  # doctest: +SKIP
    ['test', 'test.csv', 'train', 'train.csv']
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tfpipe.errors import TfpipeError
from tfpipe.io.masks import write_rle_csv
from tfpipe.io.rle import find_runs, format_rle
from tfpipe.synthetic.annotations import write_annotations
from tfpipe.synthetic.slides import TILE, SlidePlan, blob_radius, plan_slide, render_window
from tfpipe.synthetic.xray import PATTERNS, draw_image

STRIP_SLIDE = 1  # index of the training slide written strip-organised
ROWS_PER_STRIP = 64
PROGRESS_MIN_PIXELS = 1 << 24  # show a progress bar for slides above ~4096 x 4096
PATTERN_PREVALENCE = 0.3


def make_demo_data(
    out_dir: str | Path, n: int = 5, size: int = 5120, seed: int = 0, overwrite: bool = False
) -> Path:
    """Write ``n`` training slides, one held-out test slide, their RLE truth and GeoJSON files.

    Args:
        out_dir: Output folder; must be new or empty unless ``overwrite``.
        n: Number of training slides.
        size: Nominal slide side; each side varies within +-20 % and is never a
            multiple of 512, so edge handling is exercised.
        seed: Everything is deterministic for a seed.
        overwrite: Replace a folder made earlier by this function.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        TfpipeError: ``n < 1`` or ``size < 256``, or ``out_dir`` is not empty
            (and ``overwrite`` is off, or it holds no ``train.csv``).

    Example:
        >>> make_demo_data("/tmp/big", n=1, size=20000)  # doctest: +SKIP
        PosixPath('/tmp/big')
    """
    if n < 1 or size < 256:
        raise TfpipeError(f"make_demo_data needs n >= 1 and size >= 256; got n={n}, size={size}")
    out = Path(out_dir)
    with staging(out, overwrite, marker="train.csv") as tmp:
        for split, indices in (("train", range(n)), ("test", [n])):
            (tmp / split).mkdir()
            rles = {}
            for index in indices:
                plan = plan_slide(seed, index, size)
                strips = split == "train" and index == STRIP_SLIDE
                path = tmp / split / f"{plan.image_id}.tiff"
                write_slide(plan, path, strips=strips, bigtiff=split == "test")
                write_annotations(plan, tmp / split)
                rles[plan.image_id] = slide_rle(plan)
            write_rle_csv(tmp / f"{split}.csv", rles, rle_column="encoding")
    return out


def slide_rle(plan: SlidePlan) -> str:
    """Competition RLE of a slide's glomeruli, built blob by blob (no slide-sized mask).

    Example:
        >>> slide_rle(plan_slide(0, 0, 1024))[:4]  # doctest: +SKIP
        '3051'
    """
    starts, ends = [], []
    for blob in plan.blobs:
        if not blob.glomerulus:
            continue
        y0, x0, y1, x1 = blob.box(plan.height, plan.width)
        local_starts, local_ends = find_runs(blob_radius(blob, y0, x0, y1 - y0, x1 - x0) < 1)
        # Boxes include the ring, so a run never wraps into the next column.
        cols, rows = np.divmod(local_starts, y1 - y0)
        starts.append((cols + x0) * plan.height + rows + y0)
        ends.append(starts[-1] + (local_ends - local_starts))
    if not starts:
        return ""
    s, e = np.concatenate(starts), np.concatenate(ends)
    order = np.argsort(s)
    return format_rle(s[order], e[order])


def write_slide(plan: SlidePlan, path: Path, strips: bool = False, bigtiff: bool = False) -> None:
    """Render a slide tile by tile into a TIFF (tiled zstd, or uncompressed 64-row strips)."""
    import tifffile
    from tqdm import tqdm

    tiles = -(-plan.height // TILE) * -(-plan.width // TILE)
    small = plan.height * plan.width < PROGRESS_MIN_PIXELS
    options: dict[str, Any] = {
        "shape": (plan.height, plan.width, 3),
        "dtype": np.uint8,
        "photometric": "rgb",
        # Classic TIFF offsets are 32-bit; leave room for the tags.
        "bigtiff": bigtiff or plan.height * plan.width * 3 > 2**31 - 2**26,
    }
    if strips:
        options.update(rowsperstrip=ROWS_PER_STRIP)
    else:
        options.update(tile=(TILE, TILE), compression="zstd")
    with tqdm(total=tiles, desc=plan.image_id, unit="tile", leave=False, disable=small) as bar:
        data = _strip_bytes(plan, bar) if strips else _tiles(plan, bar)
        tifffile.imwrite(path, data, **options)


def make_demo_classification(
    out_dir: str | Path,
    n: int = 240,
    size: int = 128,
    seed: int = 0,
    overwrite: bool = False,
    classes: tuple[str, ...] = PATTERNS,
) -> Path:
    """Write chest-X-ray-like PNGs whose labels are independent visual patterns.

    Each class in ``classes`` is present with probability 0.3, independently,
    so some images have no label (an empty ``labels`` cell).

    Args:
        out_dir: Output folder (``images/`` and ``labels.csv``).
        n: Number of images.
        size: Image side in pixels.
        seed: Everything is deterministic for a seed.
        overwrite: Replace a folder made earlier by this function.
        classes: Subset of ``("ring", "stripes", "dots", "blob")``.

    Raises:
        TfpipeError: unknown class, ``n < 1`` or ``size < 32``, or a non-empty ``out_dir``.

    Example:
        >>> root = make_demo_classification("data/cxr", n=64, size=96)  # doctest: +SKIP
        >>> (root / "labels.csv").read_text().splitlines()[0]  # doctest: +SKIP
        'path,labels'
    """
    import cv2

    if not classes or any(c not in PATTERNS for c in classes):
        raise TfpipeError(f"classes must be a non-empty subset of {PATTERNS}; got {classes}")
    if n < 1 or size < 32:
        raise TfpipeError(
            f"classification demo needs n >= 1 and size >= 32; got n={n}, size={size}"
        )
    out = Path(out_dir)
    with staging(out, overwrite, marker="labels.csv") as tmp:
        (tmp / "images").mkdir()
        rows = [("path", "labels")]
        for i in range(n):
            rng = np.random.default_rng([seed, i, 2])
            present = [c for c in classes if rng.random() < PATTERN_PREVALENCE]
            name = f"images/{i:05d}.png"
            cv2.imwrite(str(tmp / name), draw_image(rng, size, present)[..., ::-1])
            rows.append((name, "|".join(present)))
        with (tmp / "labels.csv").open("w", newline="") as f:
            csv.writer(f).writerows(rows)
    return out


@contextmanager
def staging(out: Path, overwrite: bool, marker: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; it replaces ``out`` only on success.

    With ``overwrite``, an existing non-empty ``out`` is replaced only when it
    holds ``marker`` (i.e. was made by a demo writer): a mistyped path never
    deletes someone's data.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise TfpipeError(
                f"the output folder must be new or empty (use --overwrite to replace it); "
                f"got non-empty {out}"
            )
        if not (out / marker).is_file():
            raise TfpipeError(
                f"--overwrite only replaces a folder made by make-demo-data (holding {marker}); "
                f"got {out}, which has no {marker}; it was left untouched"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private
        if out.is_dir():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tiles(plan: SlidePlan, bar: Any) -> Iterator[np.ndarray]:
    for y0 in range(0, plan.height, TILE):
        for x0 in range(0, plan.width, TILE):
            h, w = min(TILE, plan.height - y0), min(TILE, plan.width - x0)
            yield render_window(plan, y0, x0, h, w)
            bar.update()


def _strip_bytes(plan: SlidePlan, bar: Any) -> Iterator[bytes]:
    """Uncompressed strips: tifffile takes strips from an iterator only as bytes."""
    tiles = _tiles(plan, bar)
    per_row = -(-plan.width // TILE)
    for _ in range(0, plan.height, TILE):
        band = np.concatenate([next(tiles) for _ in range(per_row)], axis=1)
        for r in range(0, band.shape[0], ROWS_PER_STRIP):
            yield band[r : r + ROWS_PER_STRIP].tobytes()
