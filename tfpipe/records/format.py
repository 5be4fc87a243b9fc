"""The record format: the contract between build-records, tfpipe.data and predict.

Records are ``tf.train.Example`` protos with the TensorFlow Model Garden key
names (docs/design.md), so other TF tools can read them too. This module holds the
key names, the version of the layout, and the two functions that cross the
boundary: :func:`make_example` (writer side) and :func:`feature_spec` (reader
side). It imports TensorFlow lazily so ETL worker processes stay light.

Example:
    >>> import numpy as np
    >>> from tfpipe.records import format as fmt
    >>> tile = np.zeros((256, 256, 3), np.uint8)
    >>> mask = np.zeros((256, 256), np.uint8)
    >>> ex = fmt.make_example(
    ...     fmt.encode_image(tile, "png"), "png", tile.shape,
    ...     source_id="slide1:0:1024", mask=fmt.encode_image(mask, "png"),
    ...     mask_format="png", positive_fraction=0.0)
    >>> ex.SerializeToString()[:2]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

RECORDS_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_CHANNELS = "image/channels"
SOURCE_ID = "image/source_id"
MASK_ENCODED = "image/segmentation/class/encoded"
MASK_FORMAT = "image/segmentation/class/format"
CLASS_LABEL = "image/class/label"
POSITIVE_FRACTION = "tile/positive_fraction"
TILE_WEIGHT = "tile/weight"
"""Optional: the tile's sampling weight (``data.sampling.anatomy``); absent means 1."""

ENCODINGS = ("png", "jpeg", "raw")


def shard_name(fold: int, index: int, total: int, compression: str = "none") -> str:
    """File name of one shard, e.g. ``fold0-00003-of-00008.tfrecord.gz``."""
    suffix = ".tfrecord.gz" if compression == "gzip" else ".tfrecord"
    return f"fold{fold}-{index:05d}-of-{total:05d}{suffix}"


def source_id(image_id: str, y: int, x: int) -> str:
    """``<image id>:<y>:<x>``, the tile's top-left corner at source resolution."""
    return f"{image_id}:{y}:{x}"


def parse_source_id(value: str | bytes) -> tuple[str, int, int]:
    """Inverse of :func:`source_id`; image ids may themselves contain ``:``."""
    text = value.decode() if isinstance(value, bytes) else value
    image_id, y, x = text.rsplit(":", 2)
    return image_id, int(y), int(x)


def encode_image(array: np.ndarray, encoding: str, quality: int = 95) -> bytes:
    """Encode a uint8 tile (H, W[, C], RGB order) as PNG, JPEG or raw bytes.

    OpenCV does the encoding (it releases the GIL and is faster than PIL);
    it expects BGR, hence the channel flip for 3-channel images.

    PNG rows use the "up" filter only, not libpng's adaptive choice, which
    often picks Paeth, the slowest filter to undo: decoding, the largest cost
    of every training step's input, is 15-40 % faster for the same size within
    5 %, and tfpipe.data.load delivers 1.15-1.25x the images/s (demo tiles:
    2.0 -> 1.6 ms, 107 -> 108.5 kB; a real immunohistochemistry image: 2.3 ->
    1.7 ms, 118 kB both; ``python benchmarks/bench_png_filter.py``: OpenCV's
    libpng, and load() decoding with ``tf.io.decode_png``). Any PNG decoder
    reads them; the record format is unchanged.
    """
    import cv2

    if array.dtype != np.uint8:
        raise ValueError(f"tiles must be uint8; got {array.dtype}")
    if encoding == "raw":
        return np.ascontiguousarray(array).tobytes()
    bgr = array[..., ::-1] if array.ndim == 3 and array.shape[2] == 3 else array
    if encoding == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
        ok, buf = cv2.imencode(".png", bgr, params)
    elif encoding == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        raise ValueError(f"encoding must be one of {ENCODINGS}; got {encoding!r}")
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {array.shape} tile as {encoding}")
    return buf.tobytes()


def make_example(
    image: bytes,
    image_format: str,
    shape: Sequence[int],
    *,
    source_id: str,
    mask: bytes | None = None,
    mask_format: str | None = None,
    labels: Sequence[int] | None = None,
    positive_fraction: float = 0.0,
    weight: float | None = None,
) -> Any:
    """Build one ``tf.train.Example`` with the record format's keys (docs/design.md).

    Args:
        image: Encoded tile bytes.
        image_format: ``png``, ``jpeg`` or ``raw``.
        shape: ``(height, width, channels)`` after resize.
        source_id: ``<image id>:<y>:<x>``.
        mask: Encoded one-channel mask (segmentation), or None.
        mask_format: ``png`` or ``raw`` when a mask is given.
        labels: Multi-hot label vector (classification), or None.
        positive_fraction: Fraction of mask pixels > 0.
        weight: The tile's sampling weight, or None (no ``tile/weight`` key).
    """
    import tensorflow as tf

    def _bytes(v: bytes) -> Any:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def _int(vs: Sequence[int]) -> Any:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in vs]))

    height, width, channels = (int(s) for s in shape)
    feature = {
        IMAGE_ENCODED: _bytes(image),
        IMAGE_FORMAT: _bytes(image_format.encode()),
        IMAGE_HEIGHT: _int([height]),
        IMAGE_WIDTH: _int([width]),
        IMAGE_CHANNELS: _int([channels]),
        SOURCE_ID: _bytes(source_id.encode()),
        POSITIVE_FRACTION: tf.train.Feature(
            float_list=tf.train.FloatList(value=[float(positive_fraction)])
        ),
    }
    if mask is not None:
        feature[MASK_ENCODED] = _bytes(mask)
        feature[MASK_FORMAT] = _bytes((mask_format or "png").encode())
    if labels is not None:
        feature[CLASS_LABEL] = _int(labels)
    if weight is not None:
        feature[TILE_WEIGHT] = tf.train.Feature(float_list=tf.train.FloatList(value=[weight]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def feature_spec(task: str = "segmentation") -> dict[str, Any]:
    """The ``tf.io.parse_example`` spec for ``segmentation``/``classification``/``unlabelled``."""
    import tensorflow as tf

    spec = {
        IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
        IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value=b"png"),
        IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
        IMAGE_CHANNELS: tf.io.FixedLenFeature([], tf.int64, default_value=3),
        SOURCE_ID: tf.io.FixedLenFeature([], tf.string, default_value=b""),
        POSITIVE_FRACTION: tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
    }
    if task == "segmentation":
        spec[MASK_ENCODED] = tf.io.FixedLenFeature([], tf.string)
        spec[MASK_FORMAT] = tf.io.FixedLenFeature([], tf.string, default_value=b"png")
    elif task == "classification":
        spec[CLASS_LABEL] = tf.io.VarLenFeature(tf.int64)
    elif task != "unlabelled":  # unlabelled (prediction) records carry no mask key
        raise ValueError(f"task must be segmentation, classification or unlabelled; got {task!r}")
    return spec
