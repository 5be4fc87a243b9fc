"""The measurement core: images/s arithmetic on datasets with a known rate.

No test here reads a real clock: the known per-element delay advances a
scripted clock, so the expected figures are exact on any machine.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfpipe.bench.measure import Measurement, count_images, time_dataset, time_iterator

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


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="batches"):
        time_iterator(iter([]), "x", batches=0, repeats=1)
