"""The pipelines ``bench_input.py`` compares tfpipe.data against.

* ``naive_dataset``: the TFRecords read the simple way: one shard after the
  other, serial ``map`` (parse one record, decode, augment with the same
  ``Augmenter`` and the same host ops as ``load()``: with
  ``colour_in_model`` no colour), ``batch``, no prefetch, no interleave.
* ``onthefly_dataset``: no records at all: windows read straight from the
  TIFF with ``tfpipe.io.open_slide``, the RLE mask decoded per window,
  both resized with OpenCV and background skipped in a Python generator
  wrapped in ``tf.data.Dataset.from_generator`` (the usual notebook
  approach). It does no augmentation, which only flatters it.
* ``torch_loader``: a PyTorch ``DataLoader`` with 2 worker processes reading
  the same tiles saved as PNG files, with the same augmentation written in
  OpenCV (transpose/flip, one ``cv2.transform`` with the affine colour
  matrix of ``tfpipe.data.colour``), the fastest way to write it per tile in
  NumPy. With ``colour=False`` the workers skip the colour step (as if the
  colour ran on the GPU, like ``colour_in_model``): the like-for-like
  baseline of a pipeline that leaves colour to the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tfpipe.config import AugmentConfig


def naive_dataset(plan: Any, augment: AugmentConfig, batch_size: int) -> Any:
    """Serial, unprefetched tf.data over the plan's shards (shard by shard)."""
    import tensorflow as tf

    from tfpipe.bench.ablation import unoptimised
    from tfpipe.data.augment import Augmenter
    from tfpipe.data.decode import decode_element, parse_spec

    layout = plan.layout
    spec = parse_spec(layout)
    aug = Augmenter(augment.host_ops(), (layout.height, layout.width), plan.size)
    compression = "GZIP" if plan.shards.compression == "gzip" else ""
    records = tf.data.TFRecordDataset(list(plan.shards.paths), compression_type=compression)
    seeds = tf.data.Dataset.counter().map(lambda i: tf.stack([tf.constant(0, tf.int64), i]))

    def one(record: Any, seed: Any) -> tuple[Any, Any]:
        element = decode_element(tf.io.parse_single_example(record, spec), layout)
        return aug(element["image"], element["target"], seed)

    ds = tf.data.Dataset.zip(records, seeds).map(one).batch(batch_size)
    # Nothing here is AUTOTUNE, so only the rewrites need switching off.
    return ds.with_options(unoptimised())


def onthefly_dataset(data_dir: Path, data_cfg: Any, batch_size: int) -> Any:
    """Tissue tiles cut from the TIFFs on the fly in a Python generator (no records).

    Same geometry and tissue filter as the records (``data`` section of the
    experiment): windows of ``tile_size`` read at full resolution, resized by
    ``downscale`` with ``INTER_AREA`` (mask: nearest), background skipped.
    """
    import tensorflow as tf

    from tfpipe.io.masks import read_rle_csv
    from tfpipe.io.rle import RleMask
    from tfpipe.io.tiff import open_slide

    rles = read_rle_csv(data_dir / "train.csv")
    slides = sorted((data_dir / "train").glob("*.tif*"))
    tile, out = data_cfg.tile_size, data_cfg.tile_size // data_cfg.downscale
    rule = data_cfg.filter

    def tiles() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            for path in slides:
                with open_slide(path) as slide:
                    mask = RleMask(rles.get(path.stem, ""), (slide.height, slide.width))
                    for y in range(0, slide.height - tile + 1, tile):
                        for x in range(0, slide.width - tile + 1, tile):
                            image = slide.read_window(y, x, tile, tile)
                            labels = mask.read_window(y, x, tile, tile)
                            image = cv2.resize(image, (out, out), interpolation=cv2.INTER_AREA)
                            labels = cv2.resize(labels, (out, out), interpolation=cv2.INTER_NEAREST)
                            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
                            tissue = (hsv[..., 1] > rule.saturation_min) & (
                                hsv[..., 2] < rule.brightness_max
                            )
                            if labels.any() or tissue.mean() >= rule.min_tissue_fraction:
                                yield image, labels[..., None]

    signature = (
        tf.TensorSpec((out, out, 3), tf.uint8),
        tf.TensorSpec((out, out, 1), tf.uint8),
    )
    return tf.data.Dataset.from_generator(tiles, output_signature=signature).batch(batch_size)


def export_pngs(shards: Any, folder: Path) -> list[tuple[Path, Path]]:
    """Write each record's encoded image and mask (``shards``: a ``ShardSet``) as PNG files.

    Byte for byte, so that both loaders decode exactly the same PNG streams.
    Returns the (image, mask) path pairs.
    """
    import tensorflow as tf

    from tfpipe.bench.reencode import read_records
    from tfpipe.records import format as fmt

    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for path in shards.paths:
        for serialized in read_records(Path(path), shards.compression):
            feature = tf.train.Example.FromString(serialized).features.feature
            i = len(pairs)
            pair = (folder / f"{i:05d}-image.png", folder / f"{i:05d}-mask.png")
            pair[0].write_bytes(feature[fmt.IMAGE_ENCODED].bytes_list.value[0])
            pair[1].write_bytes(feature[fmt.MASK_ENCODED].bytes_list.value[0])
            pairs.append(pair)
    return pairs


class PngTiles:
    """``torch.utils.data.Dataset`` of PNG tile pairs with tfpipe's augmentation in OpenCV.

    ``colour=False`` skips the colour jitter (flips and quarter turns only).
    """

    def __init__(
        self, pairs: list[tuple[Path, Path]], augment: AugmentConfig, colour: bool = True
    ) -> None:
        self.pairs = pairs
        self.augment = augment
        self.colour = colour

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch

        image_path, mask_path = self.pairs[index]
        image = cv2.cvtColor(cv2.imread(str(image_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        rng = np.random.default_rng()
        image, mask = _dihedral(image, mask, rng, self.augment)
        if self.colour:
            image = _colour(image, rng, self.augment)
        return torch.from_numpy(image), torch.from_numpy(np.ascontiguousarray(mask)[..., None])


def torch_loader(
    pairs: list[tuple[Path, Path]], augment: AugmentConfig, batch_size: int, colour: bool = True
) -> Any:
    """A shuffling DataLoader with 2 persistent worker processes (``colour``: see ``PngTiles``)."""
    import torch

    return torch.utils.data.DataLoader(
        PngTiles(pairs, augment, colour),
        batch_size=batch_size,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
        drop_last=True,
        worker_init_fn=_single_threaded,
        # spawn, not fork: the parent runs TensorFlow's thread pools.
        multiprocessing_context="spawn",
    )


def cycle(loader: Any) -> Iterator[Any]:
    """Batches of a DataLoader, epoch after epoch."""
    while True:
        yield from loader


def _single_threaded(_: int) -> None:
    import torch

    # Two workers on two cores: library thread pools would only oversubscribe.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _dihedral(image: np.ndarray, mask: np.ndarray, rng: Any, cfg: AugmentConfig):
    # OpenCV's SIMD flips and transpose. With flip
    # and rot90 on (kidney.yaml) this is a uniform draw of the 8 symmetries of the square.
    if cfg.rot90 and rng.random() < 0.5:
        image, mask = cv2.transpose(image), cv2.transpose(mask)
    for axis, wanted in ((0, cfg.rot90), (1, cfg.flip)):
        if wanted and rng.random() < 0.5:
            image, mask = cv2.flip(image, axis), cv2.flip(mask, axis)
    return image, mask


def _colour(image: np.ndarray, rng: Any, cfg: AugmentConfig) -> np.ndarray:
    if not any((cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)):
        return image
    u = rng.uniform(-1.0, 1.0, 4).astype(np.float32)
    scale = 1.0 + cfg.contrast * u[1]
    offset = cfg.brightness * 255.0 * u[0] + (1.0 - scale) * float(image[::4, ::4].mean())
    matrix = scale * colour_matrix_np(1.0 + cfg.saturation * u[2], cfg.hue * u[3])
    affine = np.concatenate([matrix, np.full((3, 1), offset, np.float32)], 1)
    return cv2.transform(image, affine)  # one pass, rounded and saturated


# tfpipe.data.colour's matrix in NumPy: the workers must not import TensorFlow.
# bench_input.py checks that both give the same matrix.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
)


def colour_matrix_np(saturation: float, hue: float) -> np.ndarray:
    """Saturation scaling, then a hue rotation of ``hue`` turns in YIQ."""
    sat = saturation * np.eye(3, dtype=np.float32) + (1 - saturation) * np.outer(
        np.ones(3, np.float32), _LUMA
    )
    c, s = np.cos(-2 * np.pi * hue), np.sin(-2 * np.pi * hue)
    rotate = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)
    return (np.linalg.inv(_RGB_TO_YIQ) @ rotate @ _RGB_TO_YIQ @ sat).astype(np.float32)
