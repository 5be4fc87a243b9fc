"""The timing core: images/s and CPU arithmetic on datasets with a known rate, rounds.

No test here reads a real clock for a figure: the known per-element delay
advances a scripted clock, so the expected figures are exact on any machine.
"""

import time

import numpy as np
import pytest
import tensorflow as tf

from tfpipe.bench.measure import (
    Measurement,
    count_images,
    cpu_seconds,
    interleave,
    merge,
    round_ratios,
    time_call,
    time_dataset,
    time_iterator,
)

DELAY_S = 0.05  # per element: a serial pipeline then delivers exactly 1 / DELAY_S images/s


class ScriptedClock:
    """Seconds that pass only when the pipeline under test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def delayed_dataset(batch: int, clock: ScriptedClock) -> tf.data.Dataset:
    """Every element costs DELAY_S on ``clock`` when it is produced."""

    def produce(i):
        clock.advance(DELAY_S)
        return i

    ds = tf.data.Dataset.range(1_000_000)
    ds = ds.map(lambda i: tf.py_function(produce, [i], tf.int64))  # serial: one at a time
    options = tf.data.Options()
    # Produce on demand only: an injected prefetch or a fused map-and-batch would run
    # ahead and spend delay outside the timed windows.
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_optimization.inject_prefetch = False
    options.autotune.enabled = False
    return ds.batch(batch).with_options(options)


def test_rate_of_a_known_delay_is_measured_exactly():
    clock = ScriptedClock()
    m = time_dataset(
        delayed_dataset(2, clock),
        "delay",
        batches=6,
        repeats=3,
        warmup=1,
        batched=True,
        bytes_per_image=1000,
        clock=clock,
    )
    known = 1.0 / DELAY_S
    assert m.images == [12, 12, 12]
    assert m.min == pytest.approx(known) and m.max == pytest.approx(known)
    assert m.median == pytest.approx(known)
    assert m.mb_per_s == pytest.approx(known * 1000 / 1e6)
    assert m.ms_per_image == pytest.approx(1000 / known)


def test_warmup_is_excluded_from_the_timed_windows():
    clock = ScriptedClock()

    def slow_start():
        clock.advance(0.3)  # the first element pays for start-up, like a pipeline's first batch
        while True:
            clock.advance(0.005)
            yield np.zeros((2, 3))

    m = time_iterator(slow_start(), "x", batches=10, repeats=2, warmup=1, batched=True, clock=clock)
    steady = 2 / 0.005  # images/s once started; the start-up batch would pull it far down
    assert m.images == [20, 20]
    assert m.min == pytest.approx(steady) and m.max == pytest.approx(steady)


def test_images_are_counted_from_the_leading_dimension():
    ds = tf.data.Dataset.range(10).batch(4)
    sizes = [count_images(el, batched=True) for el in ds]
    assert sizes == [4, 4, 2]
    pair = (tf.zeros([3, 2, 2]), tf.zeros([3, 1]))
    assert count_images(pair, batched=True) == 3
    assert count_images({"image": tf.zeros([5, 2])}, batched=True) == 5
    assert count_images(pair, batched=False) == 1


def test_measurement_round_trips_through_json():
    m = Measurement("decode", [1.0, 2.0, 0.5], [100, 100, 100], 4096.0, 0.2, "note", {"a": 1})
    back = Measurement.from_json(m.to_json())
    assert back == m
    assert (m.min, m.median, m.max) == (50.0, 100.0, 200.0)
    assert m.to_json()["images_per_s"] == {"min": 50.0, "median": 100.0, "max": 200.0}
    assert "cpu_seconds" not in m.to_json()  # wall-only figures keep bench.json as it was
    timed = Measurement("cpu", [1.0], [100], cpu_seconds=[0.5])
    assert Measurement.from_json(timed.to_json()) == timed


def test_cpu_time_is_taken_per_window_with_the_wall_time():
    clock, cpu = ScriptedClock(), ScriptedClock()

    def busy():
        while True:
            clock.advance(0.01)
            cpu.advance(0.02)  # two threads busy: twice the wall time in CPU
            yield np.zeros((4, 2))

    m = time_iterator(busy(), "x", batches=5, repeats=2, warmup=3, cpu_clock=cpu, clock=clock)
    assert m.cpu_seconds == pytest.approx([0.1, 0.1])
    assert m.cpu_ms_per_image == pytest.approx(1000 * 0.1 / 20)
    assert m.warmup_seconds == pytest.approx(0.03)
    assert np.isnan(Measurement("wall only", [1.0], [4]).cpu_ms_per_image)


def test_cpu_seconds_counts_this_process_and_on_request_its_children():
    import subprocess
    import sys

    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.5: pass"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        deadline = time.monotonic() + 60
        while cpu_seconds(children=True) - cpu_seconds() < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cpu_seconds(children=True) - cpu_seconds() >= 0.3  # the child's CPU counts
    finally:
        child.wait(timeout=60)
    before = cpu_seconds()
    sum(i * i for i in range(200_000))
    assert cpu_seconds() > before


def test_time_call_returns_the_result_wall_and_cpu_seconds():
    clock, cpu = ScriptedClock(), ScriptedClock()

    def work():
        clock.advance(2.0)
        cpu.advance(0.5)
        return "done"

    assert time_call(work, cpu_clock=cpu, clock=clock) == ("done", 2.0, 0.5)


def test_interleave_runs_rounds_in_order_and_stops_limited_variants_early():
    calls = []

    def variant(name):
        return lambda: calls.append(name) or len(calls)

    runs = interleave(
        {n: variant(n) for n in "abc"}, 3, limit={"b": 1}, tick=lambda: calls.append("tick")
    )
    order = [c for c in calls if c != "tick"]
    assert order == ["a", "b", "c", "a", "c", "a", "c"]
    assert calls.count("tick") == 7
    assert {k: len(v) for k, v in runs.items()} == {"a": 3, "b": 1, "c": 3}


def test_rounds_merge_into_one_measurement_and_ratios_pair_the_rounds():
    rounds = [
        Measurement("full", [1.0], [100], warmup_seconds=0.5, cpu_seconds=[2.0]),
        Measurement("full", [0.5], [100], warmup_seconds=0.5, cpu_seconds=[1.0]),
        Measurement("full", [2.0], [100], warmup_seconds=0.5, cpu_seconds=[2.0]),
    ]
    m = merge(rounds)
    assert m.name == "full" and m.rates == [100.0, 200.0, 50.0]
    assert (m.median, m.cpu_ms_per_image, m.warmup_seconds) == (100.0, 20.0, 1.5)
    # A slow spell in round 2 hits both variants: the per-round ratio stays 2.
    median, per_round = round_ratios([100.0, 50.0, 100.0], [50.0, 25.0, 40.0])
    assert per_round == [2.0, 2.0, 2.5] and median == 2.0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="batches"):
        time_iterator(iter([]), "x", batches=0, repeats=1)
