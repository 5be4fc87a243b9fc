"""Parsing and decoding in TensorFlow ops: the written pixels back, damage fails, a clean exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tfpipe.data as td
from tests._data_helpers import write_records
from tfpipe.data.decode import TileLayout, decode_element, parse_batch
from tfpipe.records import format as fmt

KIDNEY = {"flip": True, "rot90": True, "brightness": 0.1, "contrast": 0.1, "hue": 0.02}


def _smooth_tile(size: int, channels: int) -> np.ndarray:
    """A gradient tile: exact for PNG and raw, a few levels off at most through JPEG."""
    y, x = np.mgrid[0:size, 0:size]
    planes = [4 * y, 4 * x, 2 * (x + y)][:channels]
    return np.stack(planes, -1).astype(np.uint8)


def _decode_one(layout: TileLayout, example: tf.train.Example) -> dict[str, np.ndarray]:
    features = parse_batch(tf.constant([example.SerializeToString()]), layout)
    element = decode_element({k: v[0] for k, v in features.items()}, layout)
    return {k: v.numpy() for k, v in element.items()}


@pytest.mark.parametrize(
    ("encoding", "channels"), [("png", 3), ("png", 1), ("raw", 3), ("raw", 1), ("jpeg", 3)]
)
def test_a_segmentation_record_decodes_to_its_pixels_and_mask(encoding, channels):
    image = _smooth_tile(32, channels)
    mask = (np.add.outer(np.arange(32), np.arange(32)) % 3 == 0).astype(np.uint8)
    mask_format = "raw" if encoding == "raw" else "png"
    example = fmt.make_example(
        fmt.encode_image(image[..., 0] if channels == 1 else image, encoding),
        encoding,
        (32, 32, channels),
        source_id="slide0:7:0",
        mask=fmt.encode_image(mask, mask_format),
        mask_format=mask_format,
        positive_fraction=float(mask.mean()),
    )
    got = _decode_one(TileLayout("segmentation", 32, 32, channels, encoding), example)

    assert got["image"].dtype == np.uint8 and got["image"].shape == (32, 32, channels)
    if encoding == "jpeg":
        error = np.abs(got["image"].astype(int) - image)
        assert error.max() <= 8 and error.mean() < 1.5
    else:
        np.testing.assert_array_equal(got["image"], image)
    np.testing.assert_array_equal(got["target"][..., 0], mask)
    assert got["id"] == b"slide0:7:0"
    assert got["positive"] == pytest.approx(mask.mean())


def test_a_classification_record_decodes_to_float_multi_hot_labels():
    image = _smooth_tile(16, 3)
    example = fmt.make_example(
        fmt.encode_image(image, "png"), "png", (16, 16, 3), source_id="a:0:0", labels=[1, 0, 1]
    )
    got = _decode_one(TileLayout("classification", 16, 16, 3, "png", num_classes=3), example)

    np.testing.assert_array_equal(got["image"], image)
    assert got["target"].dtype == np.float32
    assert got["target"].tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_a_tile_of_another_size_than_the_manifest_says_fails(encoding):
    # 16 x 16 pixels in records whose manifest says 32 x 32: an error, never a wrong shape.
    image = _smooth_tile(16, 3)
    example = fmt.make_example(
        fmt.encode_image(image, encoding), encoding, (16, 16, 3), source_id="a:0:0", labels=[1]
    )
    layout = TileLayout("classification", 32, 32, 3, encoding, num_classes=1)
    with pytest.raises(tf.errors.InvalidArgumentError):
        _decode_one(layout, example)


def test_an_unknown_encoding_is_named():
    layout = TileLayout("classification", 8, 8, 3, "webp", num_classes=1)
    features = {
        fmt.IMAGE_ENCODED: tf.constant(b""),
        fmt.CLASS_LABEL: tf.constant([1], tf.int64),
        fmt.SOURCE_ID: tf.constant(b"a"),
        fmt.POSITIVE_FRACTION: tf.constant(0.0),
    }
    with pytest.raises(ValueError, match="unknown image encoding 'webp'"):
        decode_element(features, layout)


def test_a_damaged_png_tile_fails_the_epoch(tmp_path, monkeypatch):
    real_encode = fmt.encode_image

    def damage_one(array, encoding, *args):
        data = real_encode(array, encoding, *args)
        # Tile k=3 of a fold is all 3s (below): cut its image data short.
        if encoding == "png" and array.ndim == 3 and (array == 3).all():
            return data[: len(data) // 2]
        return data

    def tile(fold, k, rng):
        image = np.full((16, 16, 3), 3 if k == 3 else 100, np.uint8)
        return image, np.zeros((16, 16), np.uint8)

    monkeypatch.setattr(fmt, "encode_image", damage_one)
    root = write_records(tmp_path / "rec", size=16, tile_fn=tile)
    monkeypatch.setattr(fmt, "encode_image", real_encode)
    ds = td.load(root, folds=[0], training=False, batch_size=4)
    with pytest.raises(tf.errors.OpError):
        for _ in ds:
            pass


# Slow: the default run checks the same exit (an augmented repeated stream read and left) in
# test_damaged_inputs.py::test_reading_one_batch_and_leaving_exits, two processes in parallel.
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_script_that_stops_reading_early_exits(tmp_path):
    # Decoding and augmentation are in flight when the script ends; nothing in the graph
    # waits for the interpreter, so it exits (a hang fails on the timeout).
    root = write_records(tmp_path / "rec", per_shard=32, size=64)
    script = textwrap.dedent(f"""
        import tfpipe.data as td
        ds = td.load({str(root)!r}, batch_size=4, augment={KIDNEY!r}, repeat=True)
        it = iter(ds)
        for _ in range(3):
            next(it)
        print("read", flush=True)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "read"
