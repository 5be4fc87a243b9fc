"""Class balance: the positive fraction reaches the target, epochs keep their meaning.

Records: 2 folds x 2 shards x 25 = 100 tiles, every 5th positive (20 %).
Tolerances are binomial: ~500 training draws give a standard deviation of
0.022 around 0.5, so +-0.07 is about 3 sd; seeds are fixed, so no flakiness.
"""

from __future__ import annotations

import numpy as np
import pytest

import tfpipe.data as td
from tests._data_helpers import write_records
from tfpipe.data.balance import plan_balance
from tfpipe.errors import ConfigError


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("balance") / "rec"
    return write_records(root, size=8, encoding="raw", per_shard=25, positive_every=5)


def _epoch(ds) -> tuple[list[str], list[bool]]:
    ids, positive = [], []
    for _, masks, batch_ids in ds:
        ids += [s.decode() for s in batch_ids.numpy()]
        positive += list(masks.numpy().reshape(len(masks), -1).max(axis=1) > 0)
    return ids, positive


def test_training_balance_reaches_the_target_and_keeps_epoch_size(records):
    ds = td.load(records, batch_size=5, with_ids=True, balance=0.5)
    ids, positive = _epoch(ds.repeat(5))
    assert abs(np.mean(positive) - 0.5) < 0.07
    # An epoch keeps about N = 100 tiles (minus the partial last batch).
    assert 80 * 5 <= len(ids) <= 110 * 5


def test_natural_distribution_without_balance(records):
    ids, positive = _epoch(td.load(records, batch_size=5, with_ids=True))
    assert len(ids) == 100 and np.mean(positive) == pytest.approx(0.2)


def test_validation_balance_is_a_fixed_subset_without_repeats(records):
    ds = td.load(records, training=False, batch_size=5, with_ids=True, val_balance=0.5)
    first_ids, positive = _epoch(ds)
    second_ids, _ = _epoch(ds)
    assert first_ids == second_ids
    assert len(set(first_ids)) == len(first_ids)
    # All 20 positives are kept; about 20 of the 80 empty tiles (sd ~ 3.9).
    assert sum(positive) == 20
    assert abs(np.mean(positive) - 0.5) < 0.15


def test_balance_works_after_a_cache(records):
    ds = td.load(records, batch_size=5, with_ids=True, balance=0.8, cache="memory")
    positive = _epoch(ds.repeat(4))[1]
    assert abs(np.mean(positive) - 0.8) < 0.07


def test_plan_keeps_expected_epoch_size_for_training():
    plan = plan_balance(0.5, positives=20, total=100, oversample=True, where="x")
    assert plan.expected_records(100) == pytest.approx(100)
    val = plan_balance(0.5, positives=20, total=100, oversample=False, where="x")
    assert val.w_pos == 1.0 and val.w_neg == pytest.approx(0.25)


def test_balance_needs_both_classes():
    with pytest.raises(ConfigError, match="only positive"):
        plan_balance(0.5, positives=10, total=10, oversample=True, where="records/x")
    with pytest.raises(ConfigError, match="no positive"):
        plan_balance(0.5, positives=0, total=10, oversample=True, where="records/x")
    assert plan_balance(1.0, positives=10, total=10, oversample=True, where="x").w_pos == 1.0


def test_balance_rejects_classification_records(tmp_path):
    root = write_records(tmp_path / "rec", task="classification")
    with pytest.raises(ConfigError, match="segmentation records"):
        td.load(root, batch_size=4, balance=0.5)
