"""Multi-class masks end to end: records, one-hot targets, ignore, losses, metrics, predict.

Two classes ("healthy", "sclerotic") on tiny synthetic slides: pink tissue with
purple (class 1) and green (class 2) discs; the ring around one disc is 255
(ignore). Mask images hold the class index per pixel, as ``source: mask_images``
with ``data.mask_classes`` reads them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
import tifffile

import tfpipe.data
import tfpipe.train.fold
from tfpipe.config import DataConfig, ModelConfig, load_experiment
from tfpipe.data.decode import TileLayout, decode_element, parse_batch
from tfpipe.data.mix import mix_batch
from tfpipe.errors import ConfigError, InputDataError
from tfpipe.io.masks import read_class_rle_csv
from tfpipe.io.rle import decode_rle
from tfpipe.models.builders import output_channels
from tfpipe.models.losses import LOSS_NAMES, SegmentationLoss
from tfpipe.models.metrics import Dice, IoU, segmentation_metrics
from tfpipe.predict.ensemble import EnsemblePredictor
from tfpipe.predict.evaluate import evaluate
from tfpipe.predict.slides import predict_slides
from tfpipe.records.build import build_records
from tfpipe.records.manifest import Manifest, read_manifest

NAMES = ["healthy", "sclerotic"]
TISSUE, HEALTHY, SCLEROTIC = (200, 110, 170), (120, 60, 200), (60, 200, 60)
SHAPE = (192, 256)


def two_class_slide(seed: int, shape: tuple[int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """An RGB slide and its index mask: 0 tissue, 1 purple discs, 2 green discs, 255 a ring."""
    rng = np.random.default_rng(seed)
    h, w = shape
    noise = rng.integers(-15, 16, (h, w, 3))
    image = np.clip(np.array(TISSUE) + noise, 0, 255).astype(np.uint8)
    mask = np.zeros(shape, np.uint8)
    for k, colour in ((1, HEALTHY), (2, SCLEROTIC), (1, HEALTHY), (2, SCLEROTIC)):
        cy, cx = int(rng.integers(24, h - 24)), int(rng.integers(24, w - 24))
        radius = int(rng.integers(10, 20))
        cv2.circle(mask, (cx, cy), radius, k, -1)
        cv2.circle(image, (cx, cy), radius, colour, -1)
    cv2.circle(mask, (cx, cy), radius + 2, 255, 2)  # an uncertain ring around the last disc
    return image, mask


def write_dataset(root: Path, slides: int = 2, bad_value: int | None = None) -> dict:
    """Slides ``root/train/<id>.tiff`` and index masks ``root/masks/<id>.png``."""
    (root / "train").mkdir(parents=True)
    (root / "masks").mkdir()
    truth = {}
    for i in range(slides):
        image, mask = two_class_slide(i)
        if bad_value is not None and i == slides - 1:
            mask[100, 30] = bad_value
        tifffile.imwrite(root / "train" / f"s{i}.tiff", image, photometric="rgb")
        cv2.imwrite(str(root / "masks" / f"s{i}.png"), mask)
        truth[f"s{i}"] = (image, mask)
    return truth


def data_config(root: Path, **changes: object) -> DataConfig:
    values: dict[str, object] = dict(
        source="mask_images",
        images=root / "train",
        masks=root / "masks",
        labels=None,
        mask_classes=NAMES,
        output=root / "records",
        tile_size=64,
        downscale=2,
        folds=2,
        workers=1,
        seed=3,
        shard_records=8,
    )
    values.update(changes)
    return DataConfig(**values)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("twoclass")
    truth = write_dataset(root)
    build_records(data_config(root), progress=False)
    return root, truth


def raw_masks(records: Path) -> dict[bytes, np.ndarray]:
    """Every record's stored index mask, by record id."""
    manifest = read_manifest(records)
    layout = TileLayout.from_manifest(manifest)
    files = [str(p) for p in manifest.shards_for_folds()]
    out = {}
    for batch in tf.data.TFRecordDataset(files).batch(64):
        features = parse_batch(batch, layout)
        for i in range(int(tf.shape(batch)[0])):
            element = decode_element({k: v[i] for k, v in features.items()}, layout)
            out[element["id"].numpy()] = element["target"].numpy()[..., 0]
    return out


# ----------------------------------------------------------------------------- records


def test_records_hold_class_indices_and_the_manifest_names_them(dataset):
    root, _ = dataset
    manifest = read_manifest(root / "records")
    assert manifest.mask_classes == NAMES
    assert manifest.to_json()["mask_classes"] == NAMES
    masks = list(raw_masks(root / "records").values())
    values = set(np.unique(np.concatenate([m.ravel() for m in masks])).tolist())
    assert values == {0, 1, 2, 255}  # nearest resize: no blended values
    assert sum(s.positive for s in manifest.sources.values()) == sum(
        bool(((m > 0) & (m != 255)).any()) for m in masks
    )


def test_binary_manifest_has_no_mask_classes_key():
    manifest = Manifest(Path("x"), "segmentation", 8, 8, 3, "raw", "none", 1, [], {})
    assert "mask_classes" not in manifest.to_json()


def test_a_mask_value_outside_the_classes_is_an_error(tmp_path):
    write_dataset(tmp_path, bad_value=7)
    with pytest.raises(InputDataError, match=r"s1\.png has value 7 at pixel \(y=100, x=30\)"):
        build_records(data_config(tmp_path), progress=False)


def test_class_settings_that_do_not_fit_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.classes must equal the 2 data\.mask_classes"):
        load_experiment(None, ["data.mask_classes=[a, b]"])
    with pytest.raises(ConfigError, match=r"predict\.threshold names class 'c'"):
        load_experiment(
            None, ["data.mask_classes=[a, b]", "model.classes=2", "predict.threshold={c: 0.4}"]
        )
    with pytest.raises(ConfigError, match="distinct"):
        load_experiment(None, ["data.mask_classes=[a, a]", "model.classes=2"])
    write_dataset(tmp_path)
    cfg = data_config(tmp_path, source="rle_csv", labels=tmp_path / "x.csv")
    with pytest.raises(ConfigError, match="rle_csv holds one class"):
        build_records(cfg, progress=False)


# -------------------------------------------------------------------------------- data


@pytest.mark.parametrize("background", [False, True])
def test_load_gives_one_hot_targets_with_ignore_in_every_channel(dataset, background):
    root, _ = dataset
    by_id = raw_masks(root / "records")
    ds = tfpipe.data.load(
        root / "records",
        training=False,
        batch_size=64,
        background_channel=background,
        with_ids=True,
    )
    batches = [(t.numpy(), ids.numpy()) for _, t, ids in ds]
    y = np.concatenate([t for t, _ in batches])
    masks = np.stack([by_id[i] for _, ids in batches for i in ids])
    assert y.dtype == np.uint8 and y.shape == (*masks.shape, 2 + background)
    first = 1 if background else 0  # channel of class 1
    for k in (1, 2):
        expected = np.where(masks == 255, 255, masks == k)
        np.testing.assert_array_equal(y[..., first + k - 1], expected)
    if background:
        np.testing.assert_array_equal(y[..., 0], np.where(masks == 255, 255, masks == 0))


def test_training_geometry_moves_index_masks_then_one_hot(dataset):
    root, _ = dataset
    ds = tfpipe.data.load(
        root / "records",
        training=True,
        batch_size=4,
        background_channel=True,
        augment={"flip": True, "rot90": True, "crop_scale": [0.3, 0.6]},
    )
    y = np.concatenate([t.numpy() for _, t in ds])  # one epoch: every tile once
    ignored = (y == 255).all(-1)
    assert ((y == 255).any(-1) == ignored).all()  # ignore is all channels or none
    assert (y[~ignored].sum(-1) == 1).all()  # exactly one class (background included)
    assert ignored.any() and y[~ignored][:, 2].any()


def test_mixup_keeps_pixels_ignored_where_a_contributing_tile_ignores_them():
    targets = tf.constant([[[[1, 0]], [[255, 255]]], [[[0, 1]], [[0, 0]]]], tf.uint8)  # 2 x (2x1)
    images = tf.zeros([2, 2, 1, 3], tf.uint8)
    draws = {"partner": tf.constant([1, 0]), "lam": tf.constant([0.25, 1.0])}
    _, y = mix_batch(images, targets, draws, segmentation=True)
    assert y.numpy()[0, 0, 0].tolist() == [0.25, 0.75]
    assert y.numpy()[0, 1, 0].tolist() == [255.0, 255.0]  # tile 0 ignores it, lam > 0
    assert y.numpy()[1, 1, 0].tolist() == [0.0, 0.0]  # lam = 1: tile 0 does not contribute


# ------------------------------------------------------------------------ losses, metrics


def _pixels(values: list) -> np.ndarray:
    return np.array(values, np.float32)[None, None]  # [1, 1, N, C]


Y2 = _pixels([[1, 0], [0, 1], [255, 255]])
P2 = _pixels([[0.8, 0.2], [0.4, 0.6], [0.9, 0.9]])


def test_sigmoid_losses_are_per_class_means_over_pixels_not_ignored():
    s = 1e-5
    class0, class1 = (1.6 + s) / (2.2 + s), (1.2 + s) / (1.8 + s)
    assert float(SegmentationLoss("dice")(Y2, P2)) == pytest.approx(1 - (class0 + class1) / 2)
    bce = -np.mean(np.log([0.8 + 1e-7, 0.8 + 1e-7, 0.6 + 1e-7, 0.6 + 1e-7]))
    assert float(SegmentationLoss("bce")(Y2, P2)) == pytest.approx(bce, rel=1e-5)


def test_softmax_losses_use_cross_entropy_and_foreground_dice():
    y = _pixels([[0, 1, 0], [1, 0, 0], [255, 255, 255]])
    p = _pixels([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    loss = SegmentationLoss("bce", softmax=True)
    assert float(loss(y, p)) == pytest.approx(-(np.log(0.7) + np.log(0.6)) / 2, rel=1e-5)
    s = 1e-5
    class1, class2 = (1.4 + s) / (2.0 + s), s / (0.2 + s)
    dice = SegmentationLoss("dice", softmax=True)
    assert float(dice(y, p)) == pytest.approx(1 - (class1 + class2) / 2, rel=1e-5)


@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("kind", LOSS_NAMES)
def test_ignored_pixels_get_no_gradient_and_change_nothing(kind, softmax):
    rng = np.random.default_rng(1)
    channels = 3 if softmax else 2
    hot = np.eye(channels, dtype=np.float32)[rng.integers(0, channels, (2, 4, 4))]
    probs = rng.random((2, 4, 4, channels)).astype(np.float32)
    if softmax:
        probs /= probs.sum(-1, keepdims=True)
    y = hot.copy()
    y[:, 0, :] = 255  # the first row of every image is ignored
    loss = SegmentationLoss(kind, softmax=softmax)
    p = tf.Variable(probs)
    with tf.GradientTape() as tape:
        value = loss(y, tf.identity(p))  # a tensor, as a model's output is
    grad = tape.gradient(value, p).numpy()
    assert np.abs(grad[:, 0]).max() == 0.0 and np.abs(grad[:, 1:]).max() > 0.0
    # The same loss on the tiles without that row (Lovász ranks per image: same pixels).
    assert float(value) == pytest.approx(float(loss(hot[:, 1:], probs[:, 1:])), rel=1e-5)


def test_metrics_score_each_class_and_their_mean():
    metrics = segmentation_metrics(0.5, ["a", "b c"], softmax=False)
    assert [m.name for m in metrics] == ["dice", "iou", "dice_a", "dice_b_c"]
    for m in metrics:
        m.update_state(Y2, P2)
    dice, iou, a, b = (float(m.result()) for m in metrics)
    # Pixel 0: class a, right. Pixel 1: class b, right. Pixel 2 (ignored): predicted, not counted.
    assert (dice, iou, a, b) == (1.0, 1.0, 1.0, 1.0)
    wrong = _pixels([[0.8, 0.2], [0.7, 0.6], [0.1, 0.1]])  # pixel 1 -> a (the more probable)
    for m in metrics:
        m.reset_state()
        m.update_state(Y2, wrong)
    dice, iou, a, b = (float(m.result()) for m in metrics)
    assert a == pytest.approx(2 / 3) and b == 0.0 and dice == pytest.approx(1 / 3)
    assert iou == pytest.approx((1 / 2 + 0) / 2)
    binary = segmentation_metrics(0.5, None, softmax=False)
    assert [type(m) for m in binary] == [Dice, IoU] and binary[0].classes is None


def test_binary_metric_ignores_255_pixels():
    m = Dice(0.5)
    m.update_state(
        np.array([[1, 0, 255]], np.uint8)[..., None], np.array([[0.9, 0.1, 0.9]])[..., None]
    )
    assert float(m.result()) == 1.0


# ------------------------------------------------------------------------------ train


def tiny_model(cfg: ModelConfig, input_shape) -> keras.Model:
    """Two convolutions with tfpipe's outer shape and head (``output_channels`` wide)."""
    from tfpipe.data import Normalize

    inputs = keras.Input(tuple(input_shape), dtype="uint8", name="image")
    x = Normalize(name="normalize")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(output_channels(cfg), 1, name="final_conv")(x)
    outputs = keras.layers.Activation(cfg.activation, dtype="float32", name="head")(x)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_a_tiny_two_class_model_trains_with_per_class_metrics(
    dataset, tmp_path, monkeypatch, activation
):
    from tfpipe.train.callbacks import read_history
    from tfpipe.train.trainer import train_experiment

    monkeypatch.setattr(tfpipe.train.fold, "build_model", tiny_model)
    root, _ = dataset
    exp = load_experiment(
        None,
        [
            f"data.output={root / 'records'}",
            f"data.mask_classes={NAMES}",
            "model.classes=2",
            f"model.activation={activation}",
            f"train.runs_dir={tmp_path}",
            "input.batch_size=4",
            "input.shuffle_buffer=8",
            "train.epochs=2",
            "train.steps_per_epoch=2",
            "train.schedule=constant",
            "train.mixed_precision=off",
        ],
    )
    summary = train_experiment(exp, folds=[0])
    rows = read_history(next(tmp_path.iterdir()) / "fold0" / "history.csv")
    assert {"val_dice", "val_iou", "val_dice_healthy", "val_dice_sclerotic"} <= set(rows[-1])
    best = max(rows, key=lambda r: r["val_dice"])
    mean = (best["val_dice_healthy"] + best["val_dice_sclerotic"]) / 2
    assert summary.folds[0].score == pytest.approx(best["val_dice"]) == pytest.approx(mean)
    assert summary.folds[0].class_dice == pytest.approx(
        {"healthy": best["val_dice_healthy"], "sclerotic": best["val_dice_sclerotic"]}
    )


def test_records_with_two_classes_need_a_two_class_model(dataset, tmp_path):
    from tfpipe.train.trainer import train_experiment

    root, _ = dataset
    exp = load_experiment(None, [f"data.output={root / 'records'}", f"train.runs_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"model.classes must equal the 2 mask class\(es\)"):
        train_experiment(exp, folds=[0])
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------- predict, evaluate


def pointwise_softmax(size: int | None = None) -> keras.Model:
    """Background / purple / green by colour alone: softmax over 1x1-convolution logits."""
    inputs = keras.Input((size, size, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    conv = keras.layers.Conv2D(3, 1)
    logits = conv(x)
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    kernel[0, 0, :, 1] = [-30.0, 0.0, 30.0]  # blue over red: purple
    kernel[0, 0, :, 2] = [-30.0, 30.0, 0.0]  # green over red
    conv.set_weights([kernel, np.array([0.0, -2.0, -2.0], np.float32)])
    outputs = keras.layers.Activation("softmax", name="head")(logits)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("predict")
    truth = write_dataset(root)
    exp = load_experiment(
        None,
        [
            "data.tile_size=64",
            "data.downscale=2",
            f"data.mask_classes={NAMES}",
            "model.classes=2",
            "model.activation=softmax",
            f"predict.images={root / 'train'}",
            "predict.threshold={healthy: 0.5, sclerotic: 0.4}",
            "predict.skip_background=false",
        ],
    )
    summary = predict_slides(
        exp,
        "unused",
        out=root / "sub.csv",
        save_masks=root / "pred_masks",
        save_probabilities=root / "probs",
        predictor=EnsemblePredictor([pointwise_softmax(32)], ["hflip"]),
        progress=False,
    )
    assert summary.threshold == [0.5, 0.4]
    return root, truth


def test_predict_writes_one_rle_per_slide_and_class_that_decodes_to_the_mask(predicted):
    root, truth = predicted
    with (root / "sub.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "class", "predicted"] and len(rows) == 1 + 2 * len(truth)
    rles = read_class_rle_csv(root / "sub.csv")
    for image_id, (_, mask) in truth.items():
        saved = cv2.imread(str(root / "pred_masks" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        for k, name in enumerate(NAMES, start=1):
            decoded = decode_rle(rles[image_id][name], SHAPE)
            np.testing.assert_array_equal(decoded, saved == k)
            overlap = 2 * (decoded & (mask == k)).sum() / (decoded.sum() + (mask == k).sum())
            assert overlap > 0.9, (image_id, name, overlap)
        assert set(np.unique(saved).tolist()) <= {0, 1, 2}


def test_evaluate_scores_each_class(predicted):
    root, _ = predicted
    report = evaluate(root / "sub.csv", root / "masks", verbose=False)
    assert list(report.classes) == NAMES
    assert all(d > 0.9 for d in report.class_dice().values())
    assert report.mean_dice == pytest.approx(np.mean(list(report.class_dice().values())))
    same = evaluate(root / "sub.csv", root / "pred_masks", classes=NAMES, verbose=False)
    assert same.class_dice() == {"healthy": 1.0, "sclerotic": 1.0}
    swept = evaluate(root / "probs", root / "masks", classes=NAMES, verbose=False)
    assert swept.class_dice() == pytest.approx(report.class_dice())  # maps at predict's thresholds
    assert all(r.best_threshold is not None for r in swept.classes.values())


def test_evaluate_command_takes_the_classes(predicted, tmp_path, capsys):
    from tfpipe.cli import main

    root, _ = predicted
    out = tmp_path / "report.json"
    args = ["evaluate", "--pred", str(root / "probs"), "--truth", str(root / "masks")]
    assert main([*args, "--classes", "healthy, sclerotic", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["class_dice"]) == NAMES and report["mean_dice"] > 0.9
    assert "dice per class" in capsys.readouterr().out


def test_predictor_with_the_wrong_class_count_is_a_config_error(predicted, tmp_path):
    root, _ = predicted
    exp = load_experiment(
        None,
        [
            "data.tile_size=128",
            "data.downscale=4",
            f"data.mask_classes={NAMES}",
            "model.classes=2",
            f"predict.images={root / 'train'}",
        ],
    )

    def binary(images: np.ndarray) -> np.ndarray:  # one map per window: a binary model
        return np.zeros(images.shape[:3], np.float32)

    with pytest.raises(ConfigError, match=r"predicts 1 class map\(s\) .* expects 2"):
        predict_slides(exp, "unused", out=tmp_path / "x.csv", predictor=binary, progress=False)
