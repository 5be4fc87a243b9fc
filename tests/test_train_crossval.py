"""Fold selection: which validation folds run, what each one trains on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._train_helpers import experiment, write_records
from tfpipe.errors import ConfigError
from tfpipe.train.crossval import plan_folds, select_folds


def test_all_or_chosen_folds() -> None:
    assert select_folds([2, 0, 1, 3], "all", "train.folds") == [0, 1, 2, 3]
    assert select_folds([0, 1, 2, 3], None, "train.folds") == [0, 1, 2, 3]
    assert select_folds([0, 1, 2, 3], [3, 1, 3], "--fold") == [1, 3]


def test_unknown_fold_names_the_source_and_the_folds() -> None:
    with pytest.raises(
        ConfigError,
        match=r"fold 7 does not exist: the records have folds \[0, 1, 2\]; got --fold=\[7\]",
    ):
        select_folds([0, 1, 2], [7], "--fold")


def test_one_fold_cannot_be_cross_validated() -> None:
    with pytest.raises(ConfigError, match="at least 2 folds"):
        select_folds([0], "all", "train.folds")


def test_plan_splits_by_source_image_and_counts_steps(tmp_path: Path) -> None:
    records = write_records(tmp_path / "rec", folds=3, per_fold=10)
    exp = experiment(records, tmp_path / "runs", "train.folds=[0, 2]")
    plan = plan_folds(exp)
    assert plan.folds == [0, 2]
    assert plan.split(2) == ([0, 1], [2])
    assert plan.train_records(2) == 20
    assert plan.steps_per_epoch(2, global_batch=4, requested=None) == 5
    assert plan.steps_per_epoch(2, global_batch=4, requested=3) == 3
    assert plan_folds(exp, folds=[1]).folds == [1]  # --fold wins over train.folds
    train, val = plan.split(0)
    sources_train = {s for f in train for s in plan.manifest.fold_sources(f)}
    assert not sources_train & set(plan.manifest.fold_sources(val[0]))
