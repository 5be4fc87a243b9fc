"""End-to-end whole-slide prediction on tiny synthetic slides with tiny known models."""

import csv

import cv2
import numpy as np
import pytest
import tifffile

from tests._predict_helpers import FakeModel, make_slide, pointwise_model
from tfpipe.config import load_experiment
from tfpipe.errors import ConfigError, InputDataError
from tfpipe.io.rle import decode_rle
from tfpipe.predict import outputs
from tfpipe.predict.ensemble import (
    EnsemblePredictor,
    check_run_scale,
    resolve_checkpoints,
    trained_input_size,
)
from tfpipe.predict.evaluate import evaluate
from tfpipe.predict.infer import SlidePlan, predict_probabilities
from tfpipe.predict.slides import predict_slides

SHAPE = (700, 900)  # not a multiple of the 128-px window


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("slides")
    (root / "test").mkdir()
    truths = {
        name: make_slide(root / "test" / f"{name}.tiff", SHAPE, seed)
        for seed, name in enumerate(["s1", "s2"])
    }
    return root, truths


def _exp(root, **predict):
    sets = [f"predict.{k}={v}" for k, v in predict.items()]
    return load_experiment(
        None,
        [
            "data.tile_size=128",
            "data.downscale=4",
            f"predict.images={root / 'test'}",
            f"train.runs_dir={root / 'runs'}",
            *sets,
        ],
    )


def test_predict_writes_exact_rle_and_finds_the_blobs(slides, tmp_path):
    root, truths = slides
    exp = _exp(root, tta="[hflip, vflip, rot90]", overlap=0.5)
    predictor = EnsemblePredictor([pointwise_model(32)], exp.predict.tta)
    summary = predict_slides(
        exp,
        "unused",
        out=tmp_path / "sub.csv",
        save_masks=tmp_path / "masks",
        predictor=predictor,
        progress=False,
    )
    with open(tmp_path / "sub.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "predicted"]
    assert [r[0] for r in rows[1:]] == ["s1", "s2"]
    assert summary.input_size == 32 and summary.scale == 4
    for (image_id, rle), result in zip(rows[1:], summary.slides, strict=True):
        saved = cv2.imread(str(tmp_path / "masks" / f"{image_id}.png"), cv2.IMREAD_GRAYSCALE)
        decoded = decode_rle(rle, SHAPE)
        np.testing.assert_array_equal(decoded * 255, saved)  # RLE == saved mask, exactly
        truth = truths[image_id]
        dice = 2 * (decoded & truth).sum() / (decoded.sum() + truth.sum())
        assert dice > 0.95
        assert result.positive_pixels == decoded.sum()
        assert 0 < result.predicted < result.windows  # background windows were skipped


def test_tta_is_inverted_exactly_for_an_equivariant_model(slides):
    root, _ = slides
    plan = SlidePlan(window=32, scale=4, overlap=0.25, batch_size=5)
    model = pointwise_model(None)
    plain, stats = predict_probabilities(
        root / "test" / "s1.tiff", EnsemblePredictor([model]), plan, progress=False
    )
    tta = EnsemblePredictor([model], ["hflip", "vflip", "rot90"])
    augmented, _ = predict_probabilities(root / "test" / "s1.tiff", tta, plan, progress=False)
    assert plain.shape == (175, 225) and stats.windows == 7 * 10
    np.testing.assert_allclose(augmented, plain, atol=1e-6)
    assert plain.max() > 0.99 and plain.min() == 0.0


def test_tta_averages_inverted_predictions_of_a_position_dependent_model():
    ramp = np.tile(np.arange(4, dtype=np.float32), (4, 1))  # depends on x only, ignores input
    model = FakeModel(lambda x: np.broadcast_to(ramp[None, ..., None], (len(x), 4, 4, 1)), 4)
    out = EnsemblePredictor([model], ["hflip"])(np.zeros((2, 4, 4, 3), np.uint8))
    # identity gives the ramp, hflip's inverse flips it: the mean is flat.
    np.testing.assert_allclose(out, 1.5)
    out = EnsemblePredictor([model], ["vflip"])(np.zeros((1, 4, 4, 3), np.uint8))
    np.testing.assert_allclose(out[0], ramp)  # a vertical flip leaves the ramp unchanged


def test_fold_ensemble_is_the_mean_of_models():
    const = [
        FakeModel(lambda x, v=v: np.full((len(x), 8, 8, 1), v, np.float32), 8) for v in (0.2, 0.6)
    ]
    out = EnsemblePredictor(const, ["hflip"])(np.zeros((3, 8, 8, 3), np.uint8))
    assert out.shape == (3, 8, 8)
    np.testing.assert_allclose(out, 0.4, rtol=1e-6)


def test_large_masks_go_to_tiff_and_probabilities_feed_the_sweep(slides, tmp_path, monkeypatch):
    root, truths = slides
    monkeypatch.setattr(outputs, "PNG_MAX_PIXELS", 0)
    exp = _exp(root, tta="[]")
    predict_slides(
        exp,
        "unused",
        out=tmp_path / "sub.csv",
        save_masks=tmp_path / "masks",
        save_probabilities=tmp_path / "probs",
        predictor=EnsemblePredictor([pointwise_model()]),
        progress=False,
    )
    with open(tmp_path / "sub.csv", newline="") as f:
        rles = {r["id"]: r["predicted"] for r in csv.DictReader(f)}
    saved = tifffile.imread(tmp_path / "masks" / "s2.tiff")
    np.testing.assert_array_equal(decode_rle(rles["s2"], SHAPE) * 255, saved)
    # Truth as mask images; the probability folder's dice at 0.5 equals the CSV's.
    (tmp_path / "truth").mkdir()
    for k, t in truths.items():
        cv2.imwrite(str(tmp_path / "truth" / f"{k}.png"), t * 255)
    from_csv = evaluate(tmp_path / "sub.csv", tmp_path / "truth", verbose=False)
    from_probs = evaluate(tmp_path / "probs", tmp_path / "truth", verbose=False)
    assert [s.dice for s in from_csv.slides] == [s.dice for s in from_probs.slides]
    at_half = next(r for r in from_probs.sweep if r.threshold == 0.5)
    assert at_half.global_dice == pytest.approx(from_csv.global_dice)
    assert from_csv.mean_dice > 0.95


def test_checkpoint_resolution(tmp_path):
    run = tmp_path / "runs" / "20250101-000000-x"
    for k in (1, 0, 10):
        (run / f"fold{k}").mkdir(parents=True)
        (run / f"fold{k}" / "best.keras").write_bytes(b"")
    folds = resolve_checkpoints(run)
    assert [p.parent.name for p in folds] == ["fold0", "fold1", "fold10"]
    assert resolve_checkpoints("latest", tmp_path / "runs") == folds
    assert resolve_checkpoints(run / "fold1") == [run / "fold1" / "best.keras"]
    with pytest.raises(InputDataError, match="does not exist"):
        resolve_checkpoints(tmp_path / "nope")
    with pytest.raises(InputDataError, match="no run"):
        resolve_checkpoints("latest", tmp_path / "empty")
    (run / "config.yaml").write_text("data: {downscale: 2, tile_size: 256}\n")
    assert trained_input_size(folds) == 128
    with pytest.raises(ConfigError, match=r"data\.downscale=2"):
        check_run_scale(folds, 4)
    check_run_scale(folds, 2)


def test_missing_slides_and_bad_level_are_errors(tmp_path):
    exp = load_experiment(None, [f"predict.images={tmp_path}"])
    with pytest.raises(InputDataError, match="no slides"):
        predict_slides(exp, "x", predictor=FakeModel(None), progress=False)
    exp = load_experiment(None, ["data.level=1"])
    with pytest.raises(ConfigError, match=r"data.level=1"):
        predict_slides(exp, "x", predictor=FakeModel(None), progress=False)
