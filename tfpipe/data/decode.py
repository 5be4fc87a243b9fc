"""Parse batches of serialized records and decode their tiles.

``tf.io.parse_example`` on a batch of serialized ``tf.train.Example`` protos is
the vectorised parse: one kernel call per batch instead of one per record.
PNG tiles are decoded a batch at a time by :func:`decode_batch`, in one
``tf.numpy_function`` call that runs :func:`tfpipe.io.png.decode_png` (~3x
cheaper per tile than ``tf.io.decode_png``, same pixels) on every tile of the
batch. That is Python, so a tf.data service worker in another process cannot
run it: there, and for JPEG and raw records, :func:`decode_element` decodes
per tile with TensorFlow ops in a parallel ``map``
(:func:`tfpipe.data.plan.decode_engine` picks).

Decoded elements are dicts, so that later stages (cache, balance, augment)
pass along what they do not touch::

    {"image": uint8 [H, W, C], "target": uint8 [H, W, 1] or float32 [K],
     "id": string, "positive": float32}

Example:
    >>> layout = TileLayout("segmentation", 256, 256, 3, "png")
    >>> ds = tf.data.TFRecordDataset(files).batch(64)           # doctest: +SKIP
    >>> ds = ds.map(lambda s: parse_batch(s, layout)).unbatch()  # doctest: +SKIP
    >>> ds = ds.map(lambda f: decode_element(f, layout))        # doctest: +SKIP
    >>> # or, for PNG records in this process:
    >>> ds = tf.data.TFRecordDataset(files).batch(64)           # doctest: +SKIP
    >>> ds = ds.map(lambda s: decode_batch(parse_batch(s, layout), layout)).unbatch()
    ... # doctest: +SKIP
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfpipe.data.buffers import OUTPUTS
from tfpipe.data.exit import release_iterators_at_exit
from tfpipe.io.png import decode_png, decode_up_filtered, decode_with_libpng
from tfpipe.records import format as fmt
from tfpipe.records.manifest import Manifest


@dataclass(frozen=True)
class TileLayout:
    """What every record of one dataset holds (from its manifest).

    Attributes:
        task: ``segmentation`` or ``classification``.
        height: Tile height in pixels.
        width: Tile width in pixels.
        channels: Image channels.
        encoding: Image encoding of every record: ``png``, ``jpeg`` or ``raw``.
        num_classes: Length of the multi-hot label vector (classification).
    """

    task: str
    height: int
    width: int
    channels: int
    encoding: str
    num_classes: int = 0

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> TileLayout:
        """The layout recorded in ``manifest.json``."""
        return cls(
            task=manifest.task,
            height=manifest.tile_height,
            width=manifest.tile_width,
            channels=manifest.channels,
            encoding=manifest.encoding,
            num_classes=len(manifest.class_names),
        )

    @property
    def tile_bytes(self) -> int:
        """Bytes of one decoded element (image plus mask or labels)."""
        image = self.height * self.width * self.channels
        if self.task == "segmentation":
            return image + self.height * self.width
        return image + 4 * self.num_classes


def parse_spec(layout: TileLayout) -> dict[str, Any]:
    """The shared feature spec, with labels as a fixed-length multi-hot vector."""
    spec = fmt.feature_spec(layout.task)
    if layout.task == "classification":
        # Fixed length gives a dense [B, K] tensor straight from parse_example
        # and fails loudly if a record's label vector has the wrong length.
        spec[fmt.CLASS_LABEL] = tf.io.FixedLenFeature([layout.num_classes], tf.int64)
    return spec


def parse_batch(serialized: tf.Tensor, layout: TileLayout) -> dict[str, tf.Tensor]:
    """Parse a 1-D batch of serialized records into batched feature tensors."""
    return tf.io.parse_example(serialized, parse_spec(layout))


def positive_fraction(serialized: tf.Tensor) -> tf.Tensor:
    """``tile/positive_fraction`` of one serialized record, without decoding its tile."""
    spec = {fmt.POSITIVE_FRACTION: tf.io.FixedLenFeature([], tf.float32, default_value=0.0)}
    return tf.io.parse_single_example(serialized, spec)[fmt.POSITIVE_FRACTION]


def decode_element(features: dict[str, tf.Tensor], layout: TileLayout) -> dict[str, tf.Tensor]:
    """Decode one parsed record into ``{"image", "target", "id", "positive"}``."""
    image = _decode_image(features[fmt.IMAGE_ENCODED], layout)
    if layout.task == "segmentation":
        target = _decode_mask(features[fmt.MASK_ENCODED], features[fmt.MASK_FORMAT], layout)
    else:
        target = tf.cast(features[fmt.CLASS_LABEL], tf.float32)
    return _element(image, target, features)


def _element(image: tf.Tensor, target: tf.Tensor, features: dict) -> dict[str, tf.Tensor]:
    """The decoded element (or batch): pixels, target, and what later stages pass along."""
    return {
        "image": image,
        "target": target,
        "id": features[fmt.SOURCE_ID],
        "positive": features[fmt.POSITIVE_FRACTION],
    }


def parse_steps(
    layout: TileLayout, engine: str
) -> tuple[Callable[[tf.Tensor], dict], Callable[[dict], dict] | None]:
    """The map over batches of serialized records, and the decoding left per tile.

    ``engine`` is :func:`tfpipe.data.plan.decode_engine`'s choice: ``numpy``
    parses and decodes the batch at once (nothing is left per tile: None);
    ``tensorflow`` parses the batch and leaves :func:`decode_element` per tile.
    """
    if engine == "numpy":
        return (lambda s: decode_batch(parse_batch(s, layout), layout)), None
    return (lambda s: parse_batch(s, layout)), (lambda f: decode_element(f, layout))


def decode_batch(features: dict[str, tf.Tensor], layout: TileLayout) -> dict[str, tf.Tensor]:
    """Decode a parsed batch of PNG records at once: :func:`decode_element`, batched.

    Runs in this process only (``tf.numpy_function``). A damaged tile fails
    with the ``image/source_id`` of its record in the message.
    """
    release_iterators_at_exit()
    segmentation = layout.task == "segmentation"
    empty = tf.zeros([0], tf.string)
    inputs = [
        features[fmt.IMAGE_ENCODED],
        features[fmt.MASK_ENCODED] if segmentation else empty,
        features[fmt.MASK_FORMAT] if segmentation else empty,
        features[fmt.SOURCE_ID],
    ]
    kernel = functools.partial(decode_tiles, layout=layout)
    images, masks = tf.numpy_function(kernel, inputs, [tf.uint8, tf.uint8], stateful=False)
    # The batch size stays static when the batch is full by construction (training).
    shape = [features[fmt.IMAGE_ENCODED].shape[0], layout.height, layout.width]
    images = tf.ensure_shape(images, [*shape, layout.channels])
    if segmentation:
        target = tf.ensure_shape(masks, [*shape, 1])
    else:
        target = tf.cast(features[fmt.CLASS_LABEL], tf.float32)
    return _element(images, target, features)


def decode_tiles(
    images: np.ndarray,
    masks: np.ndarray,
    mask_formats: np.ndarray,
    ids: np.ndarray,
    *,
    layout: TileLayout,
) -> tuple[np.ndarray, np.ndarray]:
    """The NumPy side of :func:`decode_batch`: PNG images, PNG or raw masks.

    Returns ``[B, H, W, C]`` images and ``[B, H, W, 1]`` masks (``[0]`` without masks).
    """
    hw = (layout.height, layout.width)
    out = OUTPUTS.take((len(images), *hw, layout.channels))
    out_masks = OUTPUTS.take((len(masks), *hw, 1)) if len(masks) else np.zeros([0], np.uint8)
    # One build writes every tile alike: after a tile the fast path cannot take
    # (records written before the "up" filter), the batch goes straight to libpng.
    fast = True
    for i, data in enumerate(images):
        try:
            fast = fast and decode_up_filtered(data, layout.channels, out[i]) is not None
            if not fast:
                decode_with_libpng(data, layout.channels, out[i])
            if len(masks):
                _decode_mask_np(masks[i], mask_formats[i], out_masks[i])
        except ValueError as err:
            raise ValueError(f"record {ids[i].decode()!r}: {err}") from None
    return out, out_masks


def _decode_mask_np(data: bytes, mask_format: bytes, out: np.ndarray) -> None:
    if mask_format != b"raw":
        decode_png(data, 1, out=out)
    elif len(data) != out.size:
        raise ValueError(f"raw mask has {len(data)} bytes; expected {out.size}")
    else:
        out[...] = np.frombuffer(data, np.uint8).reshape(out.shape)


def _decode_image(data: tf.Tensor, layout: TileLayout) -> tf.Tensor:
    # One encoding per dataset (manifest), so the decoder is chosen once at
    # trace time instead of a per-record tf.case.
    shape = [layout.height, layout.width, layout.channels]
    if layout.encoding == "png":
        image = tf.io.decode_png(data, channels=layout.channels)
    elif layout.encoding == "jpeg":
        image = tf.io.decode_jpeg(data, channels=layout.channels)
    elif layout.encoding == "raw":
        image = tf.reshape(tf.io.decode_raw(data, tf.uint8), shape)
    else:
        raise ValueError(f"unknown image encoding {layout.encoding!r}")
    return tf.ensure_shape(image, shape)


def _decode_mask(data: tf.Tensor, mask_format: tf.Tensor, layout: TileLayout) -> tf.Tensor:
    shape = [layout.height, layout.width, 1]
    mask = tf.cond(
        tf.equal(mask_format, b"raw"),
        lambda: tf.reshape(tf.io.decode_raw(data, tf.uint8), shape),
        lambda: tf.io.decode_png(data, channels=1),
    )
    return tf.ensure_shape(mask, shape)
