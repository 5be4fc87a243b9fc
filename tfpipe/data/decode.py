"""Parse batches of serialized records and decode their tiles, in TensorFlow ops.

``tf.io.parse_example`` on a batch of serialized ``tf.train.Example`` protos is
the vectorised parse: one kernel call per batch instead of one per record.
Tiles are then decoded one by one (:func:`decode_element`) with TensorFlow's
own decoders (``tf.io.decode_png``, ``decode_jpeg``, ``decode_raw``) in a
parallel ``map``: plain graph ops, so the dataset can be checkpointed, served
by tf.data service workers and torn down at any moment (no Python call is
ever in flight).

Decoded elements are dicts, so that later stages (cache, balance, augment)
pass along what they do not touch::

    {"image": uint8 [H, W, C], "target": uint8 [H, W, 1] or float32 [K],
     "id": string, "positive": float32}

A segmentation target is the record's mask as stored: one class index per
pixel (0 background, k = class k, 255 = ignore; docs/design.md). Geometry
(crop, flips) moves the index mask with nearest sampling; :func:`one_hot`
then turns it into the per-class channels a model trains on (``Finisher``).

Example:
    >>> layout = TileLayout("segmentation", 256, 256, 3, "png")
    >>> ds = tf.data.TFRecordDataset(files).batch(64)           # doctest: +SKIP
    >>> ds = ds.map(lambda s: parse_batch(s, layout)).unbatch()  # doctest: +SKIP
    >>> ds = ds.map(lambda f: decode_element(f, layout))        # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from tfpipe.io.masks import IGNORE_VALUE
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
        mask_classes: Segmentation classes K (mask values 1..K); 1 for binary records.
    """

    task: str
    height: int
    width: int
    channels: int
    encoding: str
    num_classes: int = 0
    mask_classes: int = 1

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
            mask_classes=len(manifest.mask_classes or []) or 1,
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


def target_channels(mask_classes: int, background: bool) -> int:
    """Channels of a segmentation target: K per-class channels, plus background first.

    Example:
        >>> target_channels(1, False), target_channels(2, False), target_channels(2, True)
        (1, 2, 3)
    """
    return mask_classes + int(background)


def one_hot(mask: tf.Tensor, mask_classes: int, background: bool) -> tf.Tensor:
    """Index mask ``[..., 1]`` -> uint8 channels ``[..., C]``: 1 where the pixel is that class.

    Channel ``c`` is class ``c + 1`` (sigmoid heads), or with ``background``
    channel 0 is the background and channel ``c`` class ``c`` (softmax heads).
    An ignored pixel (255) is 255 in every channel, which is how the losses and
    metrics recognise it (any target value above 1). Binary records without a
    background channel come back unchanged (the mask is already that channel).

    Example:
        >>> m = tf.constant([[[0], [2], [255]]], tf.uint8)
        >>> one_hot(m, 2, False)[0].numpy().tolist()
        [[0, 0], [0, 1], [255, 255]]
        >>> one_hot(m, 2, True)[0].numpy().tolist()
        [[1, 0, 0], [0, 0, 1], [255, 255, 255]]
    """
    if mask_classes == 1 and not background:
        return mask
    first = 0 if background else 1
    values = tf.constant(list(range(first, mask_classes + 1)), tf.uint8)
    hot = tf.cast(tf.equal(mask, values), tf.uint8)
    return tf.where(tf.equal(mask, IGNORE_VALUE), tf.constant(IGNORE_VALUE, tf.uint8), hot)


def _decode_mask(data: tf.Tensor, mask_format: tf.Tensor, layout: TileLayout) -> tf.Tensor:
    shape = [layout.height, layout.width, 1]
    mask = tf.cond(
        tf.equal(mask_format, b"raw"),
        lambda: tf.reshape(tf.io.decode_raw(data, tf.uint8), shape),
        lambda: tf.io.decode_png(data, channels=1),
    )
    return tf.ensure_shape(mask, shape)
