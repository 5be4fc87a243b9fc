"""Tiny synthetic slides, masks and label CSVs for the build-records / inspect-records tests."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import tifffile

from tfpipe.config import DataConfig
from tfpipe.io.rle import encode_rle

PINK = (200, 110, 170)  # saturated, not bright: tissue under the default filter


def make_slide(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB slide (white background, a noisy pink tissue block) and its 0/1 mask.

    The tissue covers the left ~70% of the columns; a few discs inside it are
    the mask, so tiles come in three kinds: background, empty tissue, positive.
    """
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 245, np.uint8)
    noise = rng.integers(-20, 21, (height, int(width * 0.7), 3))
    image[:, : noise.shape[1]] = np.clip(np.array(PINK) + noise, 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    for _ in range(3):
        cy = int(rng.integers(20, height - 20))
        cx = int(rng.integers(20, max(21, noise.shape[1] - 20)))
        cv2.circle(mask, (cx, cy), int(rng.integers(8, 20)), 1, -1)
        cv2.circle(image, (cx, cy), 6, (120, 40, 140), -1)
    return image, mask


def write_tiff(path: Path, image: np.ndarray) -> None:
    """A strip-organised RGB TIFF, like the HuBMAP slides."""
    tifffile.imwrite(path, image, photometric="rgb", rowsperstrip=16)


def make_dataset(
    root: Path, sizes: list[tuple[int, int]], seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``root/train/<id>.tiff`` slides and ``root/train.csv``; returns ``{id: (image, mask)}``."""
    (root / "train").mkdir(parents=True, exist_ok=True)
    slides = {}
    for i, (h, w) in enumerate(sizes):
        image, mask = make_slide(h, w, seed + i)
        sid = f"slide{i}"
        write_tiff(root / "train" / f"{sid}.tiff", image)
        slides[sid] = (image, mask)
    write_rle_csv(root / "train.csv", {k: encode_rle(m) for k, (_, m) in slides.items()})
    return slides


def write_rle_csv(path: Path, rles: dict[str, str]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "encoding"])
        w.writerows(rles.items())


def data_config(root: Path, **changes: object) -> DataConfig:
    """A small, fast DataConfig for the dataset under ``root`` (tile 64 -> 32)."""
    values: dict[str, object] = dict(
        source="rle_csv",
        images=root / "train",
        labels=root / "train.csv",
        output=root / "records",
        tile_size=64,
        downscale=2,
        folds=2,
        workers=1,
        seed=7,
        shard_records=8,
    )
    values.update(changes)
    return DataConfig(**values)


def read_records(paths: list[Path], task: str = "segmentation", compression: str = "") -> list:
    """Every record of ``paths`` parsed with plain TensorFlow (numpy values)."""
    import tensorflow as tf

    from tfpipe.records import format as fmt

    spec = fmt.feature_spec(task)
    ds = tf.data.TFRecordDataset([str(p) for p in paths], compression_type=compression)
    out = []
    for raw in ds:
        parsed = tf.io.parse_single_example(raw, spec)
        out.append(
            {
                k: (tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v).numpy()
                for k, v in parsed.items()
            }
        )
    return out


def decode(data: bytes, fmt_name: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Decode an image or mask field like a reader would (PNG/JPEG via OpenCV, raw by shape)."""
    if fmt_name == b"raw":
        return np.frombuffer(data, np.uint8).reshape(shape)
    out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return out[..., ::-1] if out.ndim == 3 else out
