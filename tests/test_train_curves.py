"""Learning curves: the series drawn equal the history, the PNGs are written, resume keeps them.

The drawing is checked as data (:func:`run_curves` / :func:`mean_curve`, what
the figures plot) and as files (a PNG that matplotlib reads back); pixels are
not compared. The slow tests train the tiny model of ``_train_helpers``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from tfpipe.cli import main
from tfpipe.train.curves import (
    CURVES_NAME,
    fold_curve,
    mean_curve,
    plot_runs,
    run_curves,
    write_run_curves,
)
from tfpipe.train.rundir import RunDir, create_run, read_history

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIELDS = ["epoch", "dice", "iou", "learning_rate", "loss", "val_dice", "val_iou", "val_loss"]


def write_history(folder: Path, rows: list[dict[str, float]]) -> None:
    """A ``history.csv`` as Keras' CSVLogger writes it (epoch 0-based, keys sorted)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def rows_for(val_dice: list[float], offset: float = 0.0) -> list[dict[str, float]]:
    """Epoch rows whose training dice keeps rising while ``val_dice`` does what it is told."""
    return [
        {
            "epoch": e,
            "dice": 0.5 + 0.05 * e,
            "iou": 0.4 + 0.05 * e,
            "learning_rate": 0.001,
            "loss": 1.0 - 0.1 * e + offset,
            "val_dice": v,
            "val_iou": v - 0.1,
            "val_loss": 1.0 - v + offset,
        }
        for e, v in enumerate(val_dice)
    ]


def make_run(runs: Path, name: str, folds: dict[int, list[float]], finished: bool = True) -> RunDir:
    run = create_run(runs, name, {"model": {"task": "segmentation"}})
    for fold, val_dice in folds.items():
        write_history(run.path / f"fold{fold}", rows_for(val_dice, offset=0.01 * fold))
    if finished:
        run.write_json("summary.json", {"run": run.name, "folds": []})
    return run


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300


def assert_no_temp_files(folder: Path) -> None:
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_series_are_the_history_with_1_based_epochs_and_the_best_epoch(tmp_path: Path) -> None:
    run = make_run(tmp_path, "a", {0: [0.6, 0.8, 0.7, 0.65], 1: [0.5, 0.55]})
    (fold0, fold1) = run_curves(run)
    rows = read_history(run.path / "fold0" / "history.csv")
    assert fold0.label == "fold 0" and fold0.metric == "dice"
    assert fold0.epochs == [1, 2, 3, 4]
    assert fold0.loss == [r["loss"] for r in rows]
    assert fold0.val_loss == [r["val_loss"] for r in rows]
    assert fold0.score == [r["dice"] for r in rows]
    assert fold0.val_score == [0.6, 0.8, 0.7, 0.65]
    assert fold0.best == (2, 0.8)  # val dice peaks at epoch 2: epochs 3-4 overfit
    assert fold1.epochs == [1, 2] and fold1.best == (2, 0.55)


def test_auc_histories_and_missing_values() -> None:
    rows = [{"epoch": 0, "loss": 0.7, "auc": 0.6, "val_auc": 0.55}, {"epoch": 1, "loss": 0.6}]
    curve = fold_curve("fold 3", rows)
    assert curve.metric == "auc" and curve.score[0] == 0.6 and math.isnan(curve.score[1])
    assert math.isnan(curve.val_loss[0]) and math.isnan(curve.val_score[1])
    assert curve.best == (1, 0.55)  # NaN never wins
    assert fold_curve("fold 0", [{"epoch": 0, "loss": 0.7}]).best is None


def test_mean_curve_averages_the_folds_that_reached_each_epoch() -> None:
    a = fold_curve("fold 0", rows_for([0.6, 0.8, 0.7]))
    b = fold_curve("fold 1", rows_for([0.4, 0.6]))  # stopped early
    mean = mean_curve("run", [a, b])
    assert mean.epochs == [1, 2, 3]
    assert mean.val_score == pytest.approx([0.5, 0.7, 0.7])
    assert mean.best == (2, pytest.approx(0.7))


def test_run_figure_is_a_png_written_atomically(tmp_path: Path) -> None:
    run = make_run(tmp_path, "a", {0: [0.6, 0.8, 0.7], 1: [0.5, 0.55, 0.6], 2: [0.7]})
    path = write_run_curves(run)
    assert path == run.path / CURVES_NAME
    assert_png(path)
    assert_no_temp_files(run.path)
    empty = create_run(tmp_path, "b", {})
    assert write_run_curves(empty) is None and not (empty.path / CURVES_NAME).exists()


def test_callback_redraws_as_epochs_end_and_never_stops_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tfpipe.train.curves
    from tfpipe.train.callbacks import LearningCurves

    run = make_run(tmp_path, "a", {0: [0.6]}, finished=False)
    callback = LearningCurves(run.path, "dice", every_s=3600.0)
    callback.on_epoch_end(0)  # the first epoch always draws
    assert_png(run.path / CURVES_NAME)
    drawn = (run.path / CURVES_NAME).stat().st_mtime_ns
    (run.path / CURVES_NAME).unlink()
    callback.on_epoch_end(1)  # within every_s of the last figure: not redrawn
    assert not (run.path / CURVES_NAME).exists() and drawn > 0
    callback.on_train_end()  # the end of training always draws
    assert_png(run.path / CURVES_NAME)
    callback.every_s = 0.0

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(tfpipe.train.curves, "write_run_curves", broken)
    callback.on_epoch_end(1)
    callback.on_epoch_end(2)
    out = capsys.readouterr().out
    assert out.count("learning curves not drawn") == 1 and "No space left on device" in out


def test_runs_plot_overlays_two_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = make_run(tmp_path, "a-unet", {0: [0.6, 0.8], 1: [0.5, 0.7]})
    second = make_run(tmp_path, "b-linknet", {0: [0.5, 0.6, 0.65], 1: [0.4, 0.5, 0.55]})
    make_run(tmp_path, "c-killed", {0: [0.3]}, finished=False)  # not drawn by default
    out = tmp_path / "plots" / "overlay.png"
    assert main(["runs", "--runs-dir", str(tmp_path), "--plot", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"learning curves of 2 run(s) ({first.name}, {second.name}): {out}" in printed
    assert_png(out)
    assert_no_temp_files(out.parent)
    # Named runs, unfinished ones included; the default file goes into the runs folder.
    path = plot_runs(tmp_path, ["killed", "latest", "killed"])
    assert path == tmp_path / CURVES_NAME
    assert_png(path)
    assert "learning curves of 1 run(s)" in capsys.readouterr().out  # 'latest' is 'killed'


def test_runs_plot_errors_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(tmp_path, "killed", {0: [0.3]}, finished=False)
    create_run(tmp_path, "nothing", {})
    assert main(["runs", "--runs-dir", str(tmp_path), "--plot"]) == 2
    err = capsys.readouterr().err
    assert "draws the finished runs that have a history.csv; got none" in err
    assert "(2 run folder(s), 0 finished)" in err and err.count("\n") == 1
    assert main(["runs", "--runs-dir", str(tmp_path), "--plot", "nothing"]) == 2
    err = capsys.readouterr().err
    assert "no fold of" in err and "-nothing has a row in its history.csv" in err
    assert main(["runs", "--runs-dir", str(tmp_path), "--plot", "missing"]) == 2
    assert "run 'missing' not found" in capsys.readouterr().err
    assert main(["runs", "--runs-dir", str(tmp_path), "--out", "x.png"]) == 2
    assert "without --plot" in capsys.readouterr().err
    assert not (tmp_path / CURVES_NAME).exists()


@pytest.mark.slow
def test_training_writes_curves_equal_to_the_history_and_resume_keeps_every_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    from tests._train_helpers import experiment, history, use_tiny_model, write_records
    from tfpipe.train.trainer import train_experiment

    class Stop(Exception):
        """Stands for the process being killed."""

    class StopAtEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 2:
                raise Stop

    use_tiny_model(monkeypatch)
    records = write_records(tmp_path / "rec", folds=2, per_fold=8)
    exp = experiment(records, tmp_path / "runs", "train.epochs=4")
    with pytest.raises(Stop):
        train_experiment(exp, folds=[0], callbacks=[StopAtEpoch()])
    run = next((tmp_path / "runs").iterdir())
    # The interrupted run already has the curve of its 2 finished epochs.
    assert_png(run / CURVES_NAME)
    assert [c.epochs for c in run_curves(run)] == [[1, 2]]
    assert json.loads((run / "fold0/backup/training_metadata.json").read_text())["epoch"] == 2

    train_experiment(exp, resume=run)
    assert_png(run / CURVES_NAME)
    assert_no_temp_files(run)
    (curve,) = run_curves(run)
    rows = history(run / "fold0" / "history.csv")
    assert curve.epochs == [1, 2, 3, 4] == [int(r["epoch"]) + 1 for r in rows]
    assert curve.loss == pytest.approx([float(r["loss"]) for r in rows])
    assert curve.val_loss == pytest.approx([float(r["val_loss"]) for r in rows])
    assert curve.score == pytest.approx([float(r["dice"]) for r in rows])
    assert curve.val_score == pytest.approx([float(r["val_dice"]) for r in rows])
    best = max(rows, key=lambda r: float(r["val_dice"]))
    result = json.loads((run / "fold0" / "result.json").read_text())
    assert curve.best[0] == result["best_epoch"] == int(best["epoch"]) + 1
