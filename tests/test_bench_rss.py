"""The input benchmark's RSS figures: growth per process, the median, the report."""

from __future__ import annotations

import pytest

from benchmarks._input_rss import _growth, heap_in_use_mb, rss_markdown


def test_growth_compares_the_last_three_epochs_with_the_first_three():
    rss = [100.0, 90.0, 110.0, 200.0, 105.0, 104.0, 120.0]
    heap = [50.0, 50.0, 50.0, 60.0, 51.0, 51.0, 51.0]

    run = _growth({"rss_mb": rss, "heap_mb": heap})

    assert run["growth_pct"] == pytest.approx(5.0)  # median 105 against median 100
    assert run["last_vs_first_pct"] == pytest.approx(20.0)
    assert run["heap_growth_pct"] == pytest.approx(2.0)


def test_growth_without_glibc_has_no_heap_figure():
    run = _growth({"rss_mb": [10.0, 10.0, 10.0, 11.0], "heap_mb": [None] * 4})

    assert "heap_growth_pct" not in run
    assert run["growth_pct"] == pytest.approx(0.0)


def test_report_lists_every_process_and_the_median():
    runs = [
        _growth({"rss_mb": [100.0, 100.0, g, 2 * g - 100], "heap_mb": [1.0] * 4})
        for g in (102, 103)
    ]
    rss = {"epochs": 4, "processes": 2, "runs": runs, "growth_pct": 1.0, "max_growth_pct": 3.0}

    text = "\n".join(rss_markdown(rss, "as shipped"))

    assert "- process 1: 100, 100, 102, 104; growth 2.0 %; heap in use +0.0 %" in text
    assert "- process 2: 100, 100, 103, 106; growth 3.0 %" in text
    assert "median of the 2 processes: 1.0 % (largest 3.0 %)" in text


def test_heap_in_use_is_a_positive_size_or_unknown():
    mb = heap_in_use_mb()

    assert mb is None or mb > 0
