"""Batched PNG decoding in load(): TensorFlow's batches, damage named, a clean exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tfpipe.data as td
from tests._data_helpers import write_records
from tfpipe.config import InputConfig
from tfpipe.data import exit as data_exit
from tfpipe.data import pipeline
from tfpipe.data.decode import TileLayout
from tfpipe.data.plan import decode_engine
from tfpipe.records import format as fmt

KIDNEY = {"flip": True, "rot90": True, "brightness": 0.1, "contrast": 0.1, "hue": 0.02}


def test_png_records_are_decoded_in_batches_except_behind_the_service():
    png = TileLayout("segmentation", 8, 8, 3, "png")
    raw = TileLayout("segmentation", 8, 8, 3, "raw")
    served = InputConfig(service="grpc://localhost:5050")
    assert decode_engine(InputConfig(), png, training=True) == "numpy"
    assert decode_engine(served, png, training=True) == "tensorflow"
    assert decode_engine(served, png, training=False) == "numpy"  # validation is always local
    assert decode_engine(InputConfig(), raw, training=True) == "tensorflow"
    jpeg = TileLayout("classification", 8, 8, 3, "jpeg", num_classes=2)
    assert decode_engine(InputConfig(), jpeg, training=True) == "tensorflow"


@pytest.mark.parametrize(
    ("task", "channels"), [("segmentation", 3), ("segmentation", 1), ("classification", 3)]
)
def test_batched_decoding_gives_the_batches_of_tensorflows_decoder(
    tmp_path, monkeypatch, task, channels
):
    root = write_records(tmp_path / "rec", task=task, channels=channels, per_shard=6)
    augment = KIDNEY if channels == 3 else {"flip": True, "rot90": True, "brightness": 0.1}

    def epoch(engine: str, training: bool) -> list[np.ndarray]:
        monkeypatch.setattr(pipeline, "decode_engine", lambda *_: engine)
        ds = td.load(
            root, batch_size=4, seed=3, training=training, augment=augment, deterministic=True
        )
        return [t.numpy() for batch in ds for t in batch]

    for training in (True, False):
        fast, reference = epoch("numpy", training), epoch("tensorflow", training)
        assert len(fast) == len(reference) > 0
        for a, b in zip(fast, reference, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_damaged_png_tile_names_its_record(tmp_path, monkeypatch):
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
    with pytest.raises(tf.errors.OpError, match=r"record 'slide0[^']*:3[^']*': damaged PNG"):
        for _ in ds:
            pass


def test_release_iterators_frees_live_iterators(tmp_path):
    root = write_records(tmp_path / "rec")
    it = iter(td.load(root, batch_size=4, augment=KIDNEY))
    next(it)
    assert data_exit.release_iterators() >= 1
    assert not hasattr(it, "_iterator_resource")


def test_release_iterators_walks_past_dead_weak_proxies(tmp_path):
    import weakref

    class Referent:
        pass

    referent = Referent()
    proxy = weakref.proxy(referent)
    del referent  # `proxy` is dead now; it is still among gc's objects
    root = write_records(tmp_path / "rec")
    it = iter(td.load(root, batch_size=4, augment=KIDNEY))
    next(it)
    assert data_exit.release_iterators() >= 1
    assert not hasattr(it, "_iterator_resource")
    assert proxy is not None


def test_a_script_that_stops_reading_early_exits(tmp_path):
    # Python calls (decode, augmentation) are in flight when the script ends; without
    # tfpipe.data.exit the interpreter could hang for ever while it shuts down.
    root = write_records(tmp_path / "rec", per_shard=32, size=64)
    script = textwrap.dedent(f"""
        import tfpipe.data as td
        ds = td.load({str(root)!r}, batch_size=4, augment={KIDNEY!r}).repeat()
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


def test_tiles_of_other_png_filters_decode_through_libpng(monkeypatch):
    # Records built before the "up" filter: the first tile shows it, the rest skip the try.
    import cv2

    from tfpipe.data import decode as dec

    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    params = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH]
    pngs = np.array([cv2.imencode(".png", t[..., ::-1], params)[1].tobytes() for t in tiles])
    tries = []
    real = dec.decode_up_filtered
    monkeypatch.setattr(dec, "decode_up_filtered", lambda *a: tries.append(1) or real(*a))
    layout = TileLayout("classification", 8, 8, 3, "png", num_classes=1)
    ids = np.array([b"a", b"b", b"c"])
    images, _ = dec.decode_tiles(pngs, np.array([]), np.array([]), ids, layout=layout)
    np.testing.assert_array_equal(images, tiles)
    assert len(tries) == 1
