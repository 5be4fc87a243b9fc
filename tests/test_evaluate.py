"""Dice, threshold sweep and overlay of tfpipe.predict.evaluate on hand-made masks."""

import json

import cv2
import numpy as np
import pytest
import tifffile

from tfpipe.cli import main
from tfpipe.errors import InputDataError
from tfpipe.io.masks import write_rle_csv
from tfpipe.io.rle import encode_rle
from tfpipe.predict.evaluate import evaluate
from tfpipe.predict.sources import save_probability_map


def _masks():
    truth_a = np.zeros((20, 30), np.uint8)
    truth_a[2:10, 3:13] = 1  # 80 px
    pred_a = np.zeros((20, 30), np.uint8)
    pred_a[6:14, 3:13] = 1  # 80 px, 40 shared
    truth_b = np.zeros((16, 16), np.uint8)
    truth_b[0:4, 0:4] = 1  # 16 px
    pred_b = truth_b.copy()  # perfect
    return {"a": (pred_a, truth_a), "b": (pred_b, truth_b)}


def _write_case(tmp_path):
    masks = _masks()
    write_rle_csv(tmp_path / "pred.csv", {k: encode_rle(p) for k, (p, _) in masks.items()})
    write_rle_csv(
        tmp_path / "truth.csv", {k: encode_rle(t) for k, (_, t) in masks.items()}, "encoding"
    )
    images = tmp_path / "images"
    images.mkdir()
    for k, (p, _) in masks.items():
        tifffile.imwrite(images / f"{k}.tiff", np.full((*p.shape, 3), 180, np.uint8))
    return images


def test_dice_per_slide_global_and_mean(tmp_path):
    images = _write_case(tmp_path)
    report = evaluate(tmp_path / "pred.csv", tmp_path / "truth.csv", images=images, verbose=False)
    by_id = {s.id: s for s in report.slides}
    assert by_id["a"].intersection == 40
    assert by_id["a"].dice == pytest.approx(0.5)
    assert by_id["b"].dice == pytest.approx(1.0)
    assert report.mean_dice == pytest.approx(0.75)
    assert report.global_dice == pytest.approx(2 * (40 + 16) / (80 + 80 + 16 + 16))
    assert report.sweep == [] and report.best_threshold is None


def test_mask_image_folders_give_the_same_dice(tmp_path):
    masks = _masks()
    for role in ("pred", "truth"):
        (tmp_path / role).mkdir()
    for k, (p, t) in masks.items():
        cv2.imwrite(str(tmp_path / "pred" / f"{k}.png"), p * 255)
        tifffile.imwrite(tmp_path / "truth" / f"{k}.tiff", t)
    report = evaluate(tmp_path / "pred", tmp_path / "truth", verbose=False)
    assert [round(s.dice, 6) for s in report.slides] == [0.5, 1.0]


def test_both_empty_is_perfect_and_one_empty_is_zero(tmp_path):
    write_rle_csv(tmp_path / "p.csv", {"x": "", "y": ""})
    write_rle_csv(tmp_path / "t.csv", {"x": "", "y": "1 4"})
    (tmp_path / "img").mkdir()
    for k in "xy":
        tifffile.imwrite(tmp_path / "img" / f"{k}.tif", np.zeros((4, 4, 3), np.uint8))
    report = evaluate(
        tmp_path / "p.csv", tmp_path / "t.csv", images=tmp_path / "img", verbose=False
    )
    assert [s.dice for s in report.slides] == [1.0, 0.0]


def test_threshold_sweep_on_hand_made_probabilities(tmp_path):
    # Columns hold probabilities 0.33, 0.47, 0.53, 0.67; truth = the two right columns.
    prob = np.tile(np.array([0.33, 0.47, 0.53, 0.67], np.float32), (4, 1))
    save_probability_map(tmp_path / "probs", "s", prob, (4, 4), scale=1, threshold=0.5)
    truth = np.zeros((4, 4), np.uint8)
    truth[:, 2:] = 1
    write_rle_csv(tmp_path / "truth.csv", {"s": encode_rle(truth)}, "encoding")
    report = evaluate(tmp_path / "probs", tmp_path / "truth.csv", verbose=False)
    got = {r.threshold: round(r.global_dice, 4) for r in report.sweep}
    assert got == {
        0.3: 0.6667,  # all 16 predicted, 8 right
        0.35: 0.8,
        0.4: 0.8,
        0.45: 0.8,  # 12 predicted
        0.5: 1.0,
        0.55: 0.6667,
        0.6: 0.6667,
        0.65: 0.6667,  # 4 predicted
        0.7: 0.0,
    }
    assert report.best_threshold == 0.5
    assert report.slides[0].dice == 1.0  # at the map's own threshold


def test_overlay_png_colours(tmp_path):
    images = _write_case(tmp_path)
    out = tmp_path / "overlay.png"
    report = evaluate(
        tmp_path / "pred.csv",
        tmp_path / "truth.csv",
        images=images,
        overlay=out,
        overlay_id="a",
        verbose=False,
    )
    assert report.overlay == out
    picture = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert picture.shape[0] == 20 + 36 and picture.shape[1] >= 30
    tp, fp, fn, bg = picture[7, 5], picture[12, 5], picture[3, 5], picture[18, 25]
    assert tp[1] > tp[0] and tp[1] > tp[2]  # green
    assert fp[0] > fp[1] and fp[0] > fp[2]  # red
    assert fn[2] > fn[0] and fn[2] > fn[1]  # blue
    assert bg[0] == bg[1] == bg[2] == 180  # slide grey, untouched


def test_errors_name_the_problem(tmp_path):
    _write_case(tmp_path)
    with pytest.raises(InputDataError, match="pass --images"):
        evaluate(tmp_path / "pred.csv", tmp_path / "truth.csv", verbose=False)
    write_rle_csv(tmp_path / "t2.csv", {"a": ""}, "encoding")
    with pytest.raises(InputDataError, match="no mask for predicted slide"):
        evaluate(tmp_path / "pred.csv", tmp_path / "t2.csv", verbose=False)
    with pytest.raises(InputDataError, match="not found"):
        evaluate(tmp_path / "nope.csv", tmp_path / "t2.csv", verbose=False)


def test_evaluate_command_writes_json_and_overlay_region(tmp_path):
    images = _write_case(tmp_path)
    args = [
        "evaluate",
        "--pred",
        str(tmp_path / "pred.csv"),
        "--truth",
        str(tmp_path / "truth.csv"),
        "--images",
        str(images),
        "--overlay",
        str(tmp_path / "o.png"),
        "--overlay-id",
        "b",
        "--region",
        "0,0,8,8",
        "--json",
        str(tmp_path / "r.json"),
    ]
    assert main(args) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["mean_dice"] == pytest.approx(0.75)
    assert cv2.imread(str(tmp_path / "o.png")).shape[0] == 8 + 36
    assert main([*args[:-4], "--region", "0,0,-1,8"]) == 2  # a user error, one message
