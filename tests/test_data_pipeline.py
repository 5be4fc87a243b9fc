"""tfpipe.data.load: outputs, model.fit, folds, codecs, config sources, cache, global state."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfpipe.data as td
from tests._data_helpers import all_ids, write_records
from tfpipe.config import load_experiment
from tfpipe.data.pipeline import shuffle_blocks
from tfpipe.errors import ConfigError


def _ids(ds: tf.data.Dataset) -> list[str]:
    return [s.decode() for *_, ids in ds for s in ids.numpy()]


def _position_tile(fold: int, k: int, rng: np.random.Generator):
    """Tile whose pixels encode (y, x, k), so crops and codecs can be checked exactly."""
    y, x = np.mgrid[0:32, 0:32]
    image = np.stack([y * 4, x * 4, np.full_like(y, k)], -1).astype(np.uint8)
    mask = ((y + x + k) % 3 == 0).astype(np.uint8)
    return image, mask


def _tiny_segmenter() -> object:
    import keras

    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = td.Normalize()(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "binary_crossentropy")
    return model


def test_segmentation_batches_fit_a_keras_model(tmp_path):
    root = write_records(tmp_path / "rec")
    train_folds, val_folds = td.split_folds(root, 1)
    train = td.load(root, folds=train_folds, batch_size=4)
    val = td.load(root, folds=val_folds, training=False, batch_size=5)
    images, masks = next(iter(train))
    assert images.dtype == tf.uint8 and images.shape == (4, 32, 32, 3)
    assert masks.dtype == tf.uint8 and masks.shape == (4, 32, 32, 1)
    # Epoch lengths are known to Keras: 16 records in full batches of 4; 16 in 5+5+5+1.
    assert len(train) == 4 and len(val) == 4
    model = _tiny_segmenter()
    history = model.fit(
        train, validation_data=val, epochs=1, steps_per_epoch=2, validation_steps=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
    assert np.isfinite(history.history["val_loss"][0])


def test_classification_gives_multi_hot_float_labels(tmp_path):
    root = write_records(tmp_path / "rec", task="classification", num_classes=3)
    ds = td.load(root, training=False, batch_size=5, with_ids=True)
    for images, labels, ids in ds:
        assert images.dtype == tf.uint8 and labels.dtype == tf.float32
        assert labels.shape[1] == 3
        for label, sid in zip(labels.numpy(), ids.numpy(), strict=True):
            k = int(sid.decode().split(":")[1])
            assert label.tolist() == [float((k + c) % 2 == 0) for c in range(3)]


@pytest.mark.parametrize(("encoding", "compression"), [("png", "gzip"), ("raw", "none")])
def test_decoded_tiles_equal_the_written_ones(tmp_path, encoding, compression):
    root = write_records(
        tmp_path / "rec", encoding=encoding, compression=compression, tile_fn=_position_tile
    )
    ds = td.load(root, folds=[0], training=False, batch_size=4, with_ids=True)
    rng = np.random.default_rng(0)
    for images, masks, ids in ds:
        for image, mask, sid in zip(images.numpy(), masks.numpy(), ids.numpy(), strict=True):
            k = int(sid.decode().split(":")[1])
            want_image, want_mask = _position_tile(0, k, rng)
            np.testing.assert_array_equal(image, want_image)
            np.testing.assert_array_equal(mask[..., 0], want_mask)


def test_validation_center_crops_to_image_size(tmp_path):
    root = write_records(tmp_path / "rec", tile_fn=_position_tile)
    ds = td.load(root, folds=[0], training=False, batch_size=2, image_size=16)
    images, masks = next(iter(ds))
    assert images.shape == (2, 16, 16, 3) and masks.shape == (2, 16, 16, 1)
    # Row y of the crop is row y + 8 of the tile (channel 0 holds 4 * y).
    np.testing.assert_array_equal(images[0, :, 0, 0].numpy(), 4 * np.arange(8, 24))


def test_training_epoch_visits_every_record_once_cropped_to_image_size(tmp_path):
    root = write_records(tmp_path / "rec", per_shard=8)
    ds = td.load(root, batch_size=4, image_size=24, with_ids=True)
    images, masks, _ = next(iter(ds))
    assert images.shape == (4, 24, 24, 3) and masks.shape == (4, 24, 24, 1)
    assert sorted(_ids(ds)) == sorted(all_ids(root))


def test_folds_select_whole_slides(tmp_path):
    root = write_records(tmp_path / "rec", folds=3)
    assert td.split_folds(root, 1) == ([0, 2], [1])
    ids = _ids(td.load(root, folds=[2], training=False, batch_size=4, with_ids=True))
    assert sorted(ids) == sorted(all_ids(root, [2]))
    ids = _ids(td.load(root, folds=1, training=False, batch_size=4, with_ids=True))
    assert {i.split(":")[0] for i in ids} == {"slide1"}


def test_settings_come_from_an_experiment_and_keywords_override_them(tmp_path):
    root = write_records(tmp_path / "rec")
    exp = load_experiment(None, ["input.batch_size=2", "input.augment.brightness=0.05"])
    images, _ = next(iter(td.load(root, config=exp.input)))
    assert images.shape[0] == 2
    images, _ = next(iter(td.load(root, config=exp.input, batch_size=3, shuffle_buffer=8)))
    assert images.shape[0] == 3


@pytest.mark.parametrize("cache", ["memory", "file"])
def test_cache_keeps_epochs_distinct_and_complete(tmp_path, cache):
    root = write_records(tmp_path / "rec")
    target = "memory" if cache == "memory" else str(tmp_path / "cache" / "tiles")
    (tmp_path / "cache").mkdir()
    ds = td.load(root, batch_size=4, with_ids=True, cache=target, deterministic=True)
    first, second = _ids(ds), _ids(ds)
    assert sorted(first) == sorted(second) == sorted(all_ids(root))
    assert first != second
    if cache == "file":
        assert any((tmp_path / "cache").iterdir())


def test_memory_cache_warns_when_tiles_do_not_fit(tmp_path, monkeypatch):
    import psutil

    root = write_records(tmp_path / "rec")

    class Tiny:
        available = 1000

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    with pytest.warns(ResourceWarning, match="need about"):
        td.load(root, batch_size=4, cache="memory")


def test_options_apply_and_no_global_state_changes(tmp_path):
    import keras
    from tensorflow.python.eager import context

    root = write_records(tmp_path / "rec")
    policy, floatx = keras.config.dtype_policy().name, keras.config.floatx()
    seed = context.global_seed()
    ds = td.load(
        root,
        batch_size=4,
        ram_budget_mb=64,
        private_threadpool_size=2,
        prefetch=2,
        deterministic=True,
        augment={"noise_std": 2.0, "crop_scale": (0.5, 1.0)},
    )
    options = ds.options()
    assert options.autotune.ram_budget == 64 * 2**20
    assert options.threading.private_threadpool_size == 2
    assert options.deterministic is True
    assert options.experimental_optimization.inject_prefetch is not False
    # prefetch: 0 means no prefetch at all: tf.data must not inject one either.
    unprefetched = td.load(root, batch_size=4, prefetch=0).options()
    assert unprefetched.experimental_optimization.inject_prefetch is False
    assert next(iter(ds))[0].shape == (4, 32, 32, 3)
    assert ds.element_spec[0].shape == (4, 32, 32, 3)  # static, as Keras wants it
    assert ds.element_spec[1].shape == (4, 32, 32, 1)
    assert keras.config.dtype_policy().name == policy
    assert keras.config.floatx() == floatx
    assert context.global_seed() == seed


def test_data_layer_imports_no_model_code_and_sets_no_global_state():
    import ast
    from pathlib import Path

    forbidden = (
        "segmentation_models",
        "efficientnet",
        "classification_models",
        "tfpipe.models",
        "tfpipe.train",
        "tfpipe.bench",
        "tfpipe.predict",
        "tfpipe.demo",
        "tfpipe.cli",
    )
    global_setters = ("set_global_policy", "set_seed", "set_floatx", "set_random_seed")
    for path in Path(td.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                assert not any(n.startswith(forbidden) for n in names), (path.name, names)
            if isinstance(node, ast.Attribute):
                assert node.attr not in global_setters, (path.name, node.attr)


def _batches(ds: tf.data.Dataset) -> list[tuple[np.ndarray, ...]]:
    return [tuple(x.numpy() for x in batch) for batch in ds]


def _assert_same_batches(got: list, want: list, what: str) -> None:
    assert len(got) == len(want), what
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g, w, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=what)


def test_every_encoding_and_cache_path_gives_the_same_epochs(tmp_path):
    # PNG and raw records hold the same tiles: same seed, same epochs, in the
    # same order, with the same augmentation. A cache decodes the tiles once in
    # manifest order and shuffles after it, so its order differs, not its tiles.
    roots = {enc: write_records(tmp_path / enc, encoding=enc) for enc in ("png", "raw")}
    augment = {"flip": True, "rot90": True, "brightness": 0.1, "hue": 0.02}

    def two_epochs(encoding: str, cache: str) -> list:
        ds = td.load(
            roots[encoding],
            batch_size=4,
            augment=augment,
            cache=cache,
            seed=5,
            deterministic=True,
            with_ids=True,
        )
        return _batches(ds) + _batches(ds)

    runs = {(enc, cache): two_epochs(enc, cache) for enc in roots for cache in ("none", "memory")}
    for cache in ("none", "memory"):
        assert len(runs["png", cache]) == 16
        _assert_same_batches(runs["raw", cache], runs["png", cache], f"raw vs png, {cache}")
    for epoch in (slice(0, 8), slice(8, 16)):
        ids = [
            sorted(np.concatenate([b[2] for b in runs["png", c][epoch]]))
            for c in ("none", "memory")
        ]
        assert ids[0] == ids[1]
    assert [b[2].tolist() for b in runs["png", "none"][:8]] != [
        b[2].tolist() for b in runs["png", "none"][8:]
    ], "two epochs in the same order"


def test_validation_is_the_same_per_batch_or_per_tile_with_a_short_last_batch(tmp_path):
    def epoch(encoding: str) -> list:
        root = write_records(tmp_path / encoding, encoding=encoding, size=40)
        ds = td.load(root, folds=[0], training=False, batch_size=5, image_size=32, with_ids=True)
        return _batches(ds)

    png = epoch("png")
    assert [len(ids) for *_, ids in png] == [5, 5, 5, 1]
    assert png[0][0].shape == (5, 32, 32, 3) and png[0][1].shape == (5, 32, 32, 1)
    _assert_same_batches(epoch("raw"), png, "raw against png records")


def test_shuffle_blocks_permutes_each_block_from_its_key():
    ds = tf.data.Dataset.range(10)
    key = tf.constant(11, tf.int64)
    out = [int(x) for x in shuffle_blocks(ds, 4, key)]
    assert sorted(out[:4]) == [0, 1, 2, 3] and sorted(out[4:8]) == [4, 5, 6, 7]
    assert sorted(out[8:]) == [8, 9]  # the last, short block too
    assert out != list(range(10))
    assert [int(x) for x in shuffle_blocks(ds, 4, key)] == out
    assert [int(x) for x in shuffle_blocks(ds, 4, tf.constant(12, tf.int64))] != out


@pytest.mark.parametrize("repeat", [False, True])
def test_the_default_iterator_saves_and_restores_to_the_same_next_batch(tmp_path, repeat):
    root = write_records(tmp_path / "r")
    augment = {"flip": True, "rot90": True, "brightness": 0.1}
    ds = td.load(root, batch_size=4, augment=augment, with_ids=True, repeat=repeat)
    iterator = iter(ds)
    for _ in range(6 if repeat else 3):  # with repeat: into the second epoch
        next(iterator)
    checkpoint = tf.train.Checkpoint(iterator=iterator)
    path = checkpoint.save(str(tmp_path / "ckpt" / "it"))
    want = [next(iterator) for _ in range(2)]
    checkpoint.restore(path)
    got = [next(iterator) for _ in range(2)]
    _assert_same_batches(
        [tuple(x.numpy() for x in b) for b in got],
        [tuple(x.numpy() for x in b) for b in want],
        "restored iterator",
    )


def test_start_step_needs_a_repeated_stream(tmp_path):
    root = write_records(tmp_path / "r")
    with pytest.raises(ConfigError, match="start_step counts batches of a repeated stream"):
        td.load(root, batch_size=4, start_step=3)
