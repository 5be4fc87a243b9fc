"""Run folders and the experiment log: config diffs, scores, CSV and Markdown output."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

from tfpipe.cli import main
from tfpipe.config import load_experiment
from tfpipe.errors import ConfigError
from tfpipe.train.rundir import RunDir, create_run, latest_resumable, list_runs, resolve_run
from tfpipe.train.runlog import collect_rows, diff_configs, flatten, print_runs
from tfpipe.train.summary import FoldResult, summarize

REPO = Path(__file__).resolve().parents[1]
# Pin the values the tests diff against, so tuning kidney.yaml does not break them.
BASE = ["train.epochs=20", "train.learning_rate=0.001", "train.batch_size=null", "model.arch=unet"]
BATCH_CHANGE = "train.batch_size: null → 16"


def make_run(
    runs: Path, overrides: list[str], scores: list[float] | None, name: str = "kidney"
) -> RunDir:
    exp = load_experiment(REPO / "experiments" / "kidney.yaml", BASE + overrides)
    run = create_run(runs, name, exp.to_dict())
    folds = [
        FoldResult(k, "dice", s, iou=s - 0.1, seconds=10.0) for k, s in enumerate(scores or [])
    ]
    if scores is not None and len(scores) == 4:
        run.write_json("summary.json", summarize(run.name, "dice", folds, 42.0).to_json())
    else:
        for f in folds:
            run.write_json(f"fold{f.fold}/result.json", f.to_json())
    time.sleep(0.01)
    return run


def test_diff_names_exactly_the_overridden_keys() -> None:
    base = load_experiment(REPO / "experiments" / "kidney.yaml", BASE).to_dict()
    new = load_experiment(
        REPO / "experiments" / "kidney.yaml", [*BASE, "model.arch=linknet", "train.batch_size=16"]
    ).to_dict()
    assert diff_configs(base, new) == ["model.arch: unet → linknet", BATCH_CHANGE]


def test_flatten_and_diff_of_nested_values() -> None:
    assert flatten({"a": {"b": {"c": 1}}, "d": []}) == {"a.b.c": 1, "d": []}
    old = {"train": {"folds": "all", "lookahead": {"k": 5}}, "description": "x"}
    new = {"train": {"folds": [0, 2], "lookahead": {"k": 3}}, "description": "y"}
    assert diff_configs(old, new) == ["train.folds: all → [0, 2]", "train.lookahead.k: 5 → 3"]


def test_log_compares_each_run_with_the_previous_one(tmp_path: Path) -> None:
    make_run(tmp_path, [], [0.80, 0.82, 0.84, 0.86])
    make_run(tmp_path, ["model.arch=linknet", "train.batch_size=16"], [0.70, 0.72, 0.74, 0.76])
    make_run(tmp_path, ["model.arch=linknet", "train.batch_size=16"], [0.9, 0.5])  # unfinished
    rows = collect_rows(tmp_path)
    assert [r.changes for r in rows] == [
        ["(first run)"],
        ["model.arch: unet → linknet", BATCH_CHANGE],
        ["(no change)"],
    ]
    assert rows[0].mean == pytest.approx(0.83) and rows[0].min_fold == pytest.approx(0.80)
    assert rows[0].std == pytest.approx(0.02236, abs=1e-4)
    assert rows[0].complete and (rows[0].folds_done, rows[0].folds_planned) == (4, 4)
    assert not rows[2].complete and (rows[2].folds_done, rows[2].folds_planned) == (2, 4)
    assert rows[2].mean == pytest.approx(0.7)


def test_baseline_mode_and_files(tmp_path: Path) -> None:
    first = make_run(tmp_path, [], [0.80, 0.82, 0.84, 0.86])
    make_run(tmp_path, ["train.learning_rate=0.0005"], [0.81, 0.83, 0.85, 0.87])
    make_run(tmp_path, ["train.epochs=30"], [0.82, 0.84, 0.86, 0.88])
    md, out_csv = tmp_path / "log.md", tmp_path / "log.csv"
    rows = print_runs(tmp_path, baseline=first.name, csv_path=out_csv, md_path=md)
    assert rows[0].changes == ["(baseline)"]
    assert rows[2].changes == ["train.epochs: 20 → 30"]  # against the baseline, not run 2
    text = md.read_text()
    assert text.startswith("| run | changes | CV mean ± std | min fold |")
    assert "dice 0.8500 ± 0.0224" in text and "train.epochs: 20 → 30" in text
    table = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert [float(r["mean"]) for r in table] == pytest.approx([0.83, 0.84, 0.85])
    assert table[1]["changes"] == "train.learning_rate: 0.001 → 0.0005"


def test_resolve_run_by_latest_name_and_path(tmp_path: Path) -> None:
    make_run(tmp_path, [], None, name="a")
    second = make_run(tmp_path, [], None, name="b")
    assert resolve_run(tmp_path, "latest") == second
    assert resolve_run(tmp_path, second.name) == second
    assert resolve_run(tmp_path, str(second.path)) == second
    assert [r.name for r in list_runs(tmp_path)][-1] == second.name
    with pytest.raises(ConfigError, match="run 'nope' not found"):
        resolve_run(tmp_path, "nope")


def test_run_names_are_unique_and_clean(tmp_path: Path) -> None:
    a = create_run(tmp_path, "my run/1", {"name": "x"})
    b = create_run(tmp_path, "my run/1", {"name": "x"})
    assert a.path != b.path and a.name.endswith("my-run-1") and "/" not in b.name
    assert a.read_config() == {"name": "x"}


def test_cli_runs_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps cells at the terminal width
    make_run(tmp_path, [], [0.80, 0.82, 0.84, 0.86])
    make_run(tmp_path, ["model.arch=fpn"], [0.7, 0.7, 0.7, 0.7])
    assert main(["runs", "--runs-dir", str(tmp_path), "--markdown", str(tmp_path / "l.md")]) == 0
    out = capsys.readouterr().out
    assert "model.arch: unet → fpn" in out and "(first run)" in out
    assert (tmp_path / "l.md").is_file()


def write_backup(run: RunDir, fold: int, seconds: float) -> None:
    """A fold's resume backup, as StepBackup leaves it."""
    folder = run.path / f"fold{fold}" / "backup"
    folder.mkdir(parents=True)
    (folder / "ckpt-00001-0000000.weights.h5").write_bytes(b"weights")
    meta = {"epoch": 1, "steps_in_epoch": 0, "weights": "ckpt-00001-0000000.weights.h5"}
    run.write_json(f"fold{fold}/backup/training_metadata.json", {**meta, "seconds": seconds})


def test_unfinished_run_time_counts_finished_folds_and_backups(tmp_path: Path) -> None:
    run = make_run(tmp_path, [], [0.8])  # fold 0 done in 10 s
    write_backup(run, 1, 500.0)  # fold 1 trained 500 s before it was stopped
    empty = make_run(tmp_path, [], None)
    rows = collect_rows(tmp_path)
    assert rows[0].seconds == pytest.approx(510.0) and rows[0].status == "incomplete"
    assert rows[1].seconds == 0.0 and rows[1].status == "nothing saved"
    assert run.resumable and not empty.resumable


def test_latest_resumable_skips_finished_and_empty_runs(tmp_path: Path) -> None:
    stopped = make_run(tmp_path, [], None, name="a")
    write_backup(stopped, 0, 5.0)
    make_run(tmp_path, [], [0.8, 0.8, 0.8, 0.8], name="b")  # finished
    make_run(tmp_path, [], None, name="c")  # killed while starting: config.yaml only
    assert latest_resumable(tmp_path) == stopped
    assert resolve_run(tmp_path, "latest").name.endswith("-c")  # --baseline latest: any run
    (stopped.path / "fold0/backup/ckpt-00001-0000000.weights.h5").unlink()
    with pytest.raises(ConfigError, match=r"no resumable run folder .*3 run\(s\): 1 finished"):
        latest_resumable(tmp_path)


def test_runs_piped_prints_markdown_without_wrapping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    long_name = "a-rather-long-experiment-name-that-would-wrap-at-eighty-columns"
    make_run(tmp_path, [], [0.80, 0.82, 0.84, 0.86], name=long_name)
    make_run(tmp_path, ["model.arch=fpn", "train.batch_size=16"], [0.7, 0.7], name=long_name)
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0  # capsys: stdout is not a terminal
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| run | changes | CV mean ± std | min fold | folds | time | status |"
    assert len(lines) == 4  # header, rule, one line per run
    assert long_name in lines[2] and lines[2].endswith("| 4/4 | 42s | done |")
    assert f"model.arch: unet → fpn; {BATCH_CHANGE}" in lines[3]
    assert lines[3].endswith("| 2/4 | 20s | incomplete |")
