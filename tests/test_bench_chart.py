"""The stage chart says what its bars mean and shows the spread of the repeated windows."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.container import BarContainer

from tests._bench_helpers import fake_report, measurement
from tfpipe.bench.chart import draw_stages


def test_stage_bars_are_prefixes_with_min_max_whiskers():
    report = fake_report({"read": 1000, "decode": 200, "batch": 260})  # batch beats decode
    report.stages = [measurement(m.name, m.median, spread=0.1) for m in report.stages]
    fig, ax = plt.subplots()
    draw_stages(ax, report)
    assert "up to and including each stage" in ax.get_title()
    assert "a later one can be faster" in ax.get_title()
    assert "median of 3 timed windows, whisker = min–max" in ax.get_xlabel()
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    whisker = bars.errorbar.lines[2][0].get_segments()  # one horizontal segment per bar
    spans = sorted((float(s[0][0]), float(s[1][0])) for s in whisker)
    want = sorted((min(m.rates), max(m.rates)) for m in report.stages)
    np.testing.assert_allclose(spans, want, rtol=1e-6)
    plt.close(fig)


def test_single_window_says_there_is_no_spread():
    report = fake_report()
    for m in report.stages:
        m.seconds, m.images = m.seconds[:1], m.images[:1]
    fig, ax = plt.subplots()
    draw_stages(ax, report)
    assert "one timed window per stage: no spread shown" in ax.get_xlabel()
    plt.close(fig)
