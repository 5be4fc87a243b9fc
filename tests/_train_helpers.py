"""Tiny records and tiny models for the models/train tests.

Records are written directly with the shared format helpers
(``make_example`` + ``write_manifest``), one source image per fold, so the
trainer is tested without ``build-records``. Segmentation tiles hold bright
discs on a dark noisy background and the masks are the discs: a few
convolutions learn them in a handful of steps. Classification tiles carry
label k as a bright square in quadrant k.

The trainer tests swap the segmentation-models network for
:func:`tiny_model` (three convolutions, same outer shape: ``uint8`` in,
``Normalize`` first, float32 ``head`` activation out) where they check the
training mechanics; graph tracing of a full Unet costs tens of seconds of CPU
per ``fit`` on the 2-core test machine.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from tfpipe.config import Experiment, ModelConfig, load_experiment
from tfpipe.records import format as fmt
from tfpipe.records.manifest import Manifest, ShardInfo, SourceStats, sha256_file, write_manifest

REPO = Path(__file__).resolve().parents[1]


def disc_tile(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A dark noisy tile with 0–2 bright discs, and the discs' mask."""
    image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(int(rng.integers(0, 3))):
        cy, cx = rng.integers(4, size - 4, 2)
        radius = rng.integers(3, max(4, size // 5))
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        mask[inside] = 1
    image[mask > 0] = rng.integers(180, 255, (int(mask.sum()), 3)).astype(np.uint8)
    return image, mask


def label_tile(rng: np.random.Generator, size: int, classes: int) -> tuple[np.ndarray, list[int]]:
    """A tile whose label k is a bright square in grid cell k."""
    image = rng.integers(0, 50, (size, size, 3)).astype(np.uint8)
    labels = [int(rng.random() < 0.5) for _ in range(classes)]
    cells = int(np.ceil(np.sqrt(classes)))
    step = size // cells
    for k, on in enumerate(labels):
        if on:
            y, x = (k // cells) * step, (k % cells) * step
            image[y + 2 : y + step - 2, x + 2 : x + step - 2] = 220
    return image, labels


def write_records(
    root: Path,
    *,
    task: str = "segmentation",
    folds: int = 2,
    per_fold: int = 16,
    size: int = 32,
    classes: int = 3,
    seed: int = 0,
) -> Path:
    """A records folder with ``folds`` folds of ``per_fold`` tiles (one shard per fold)."""
    import tensorflow as tf

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shards, sources = [], {}
    for fold in range(folds):
        name = fmt.shard_name(fold, fold, folds)
        positives = 0
        with tf.io.TFRecordWriter(str(root / name)) as writer:
            for k in range(per_fold):
                sid = fmt.source_id(f"img{fold}", k * size, 0)
                if task == "segmentation":
                    image, mask = disc_tile(rng, size)
                    positives += int(mask.any())
                    example = fmt.make_example(
                        fmt.encode_image(image, "png"),
                        "png",
                        image.shape,
                        source_id=sid,
                        mask=fmt.encode_image(mask, "png"),
                        mask_format="png",
                        positive_fraction=float(mask.mean()),
                    )
                else:
                    image, labels = label_tile(rng, size, classes)
                    example = fmt.make_example(
                        fmt.encode_image(image, "png"),
                        "png",
                        image.shape,
                        source_id=sid,
                        labels=labels,
                    )
                writer.write(example.SerializeToString())
        path = root / name
        shards.append(ShardInfo(name, fold, per_fold, path.stat().st_size, sha256_file(path)))
        sources[f"img{fold}"] = SourceStats(fold=fold, kept=per_fold, positive=positives)
    manifest = Manifest(
        root=root,
        task=task,
        tile_height=size,
        tile_width=size,
        channels=3,
        encoding="png",
        compression="none",
        num_folds=folds,
        shards=shards,
        sources=sources,
        class_names=[f"label{k}" for k in range(classes)] if task == "classification" else [],
    )
    write_manifest(manifest)
    return root


def history(path: Path) -> list[dict[str, str]]:
    """The rows of a fold's ``history.csv`` (read whole: no file handle left open)."""
    return list(csv.DictReader(path.read_text().splitlines()))


def experiment(records: Path, runs: Path, *overrides: str) -> Experiment:
    """A small CPU experiment over ``records`` writing runs into ``runs``."""
    base = [
        f"data.output={records}",
        f"train.runs_dir={runs}",
        "input.batch_size=4",
        "input.shuffle_buffer=16",
        "input.augment.flip=false",
        "input.augment.rot90=false",
        "train.epochs=2",
        "train.steps_per_epoch=2",
        "train.learning_rate=0.01",
        "train.schedule=constant",
        "train.mixed_precision=off",
    ]
    return load_experiment(None, [*base, *overrides])


def tiny_model(cfg: ModelConfig, input_shape: Any, augment: Any = None) -> Any:
    """Three convolutions with tfpipe's outer shape (segmentation or multi-label)."""
    import keras

    from tfpipe.data import Normalize

    inputs = keras.Input(tuple(input_shape), dtype="uint8", name="image")
    x = Normalize(name="normalize")(inputs if augment is None else augment(inputs))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    if cfg.task == "classification":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        x = keras.layers.Dense(cfg.classes, name="head_dense")(x)
    else:
        x = keras.layers.Conv2D(cfg.classes, 1, name="final_conv")(x)
    outputs = keras.layers.Activation(cfg.activation, dtype="float32", name="head")(x)
    return keras.Model(inputs, outputs, name="tiny")


def use_tiny_model(monkeypatch: Any) -> None:
    """Make the trainer build :func:`tiny_model` instead of the configured network."""
    import tfpipe.train.fold

    monkeypatch.setattr(tfpipe.train.fold, "build_model", tiny_model)


# Child processes import the helpers the way the tests do (tests._train_helpers).
CHILD_PRELUDE = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
import tfpipe.train.fold
from tests import _train_helpers
tfpipe.train.fold.build_model = _train_helpers.tiny_model
"""
