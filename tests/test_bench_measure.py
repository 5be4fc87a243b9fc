"""The measurement core: images/s arithmetic on datasets with a known rate."""

import time

import numpy as np
import pytest
import tensorflow as tf

from tfpipe.bench.measure import Measurement, count_images, time_dataset, time_iterator

DELAY_S = 0.05  # per element: a serial pipeline can deliver exactly 1 / DELAY_S images/s


def sleeping_dataset(batch: int) -> tf.data.Dataset:
    def sleep(i):
        time.sleep(DELAY_S)
        return i

    ds = tf.data.Dataset.range(1_000_000)
    ds = ds.map(lambda i: tf.py_function(sleep, [i], tf.int64))  # serial: one element at a time
    return ds.batch(batch)


def test_rate_of_a_known_delay_is_measured_within_tolerance():
    m = time_dataset(
        sleeping_dataset(2),
        "sleep",
        batches=6,
        repeats=3,
        warmup=1,
        batched=True,
        bytes_per_image=1000,
    )
    known = 1.0 / DELAY_S
    assert m.images == [12, 12, 12]
    # Sleeping can only overrun (a busy machine wakes threads late), and the per-element
    # overhead of py_function and the iterator is ~0.1 ms of the 50 ms.
    assert 0.85 * known <= m.median <= 1.02 * known
    assert m.min <= m.median <= m.max
    assert m.mb_per_s == pytest.approx(m.median * 1000 / 1e6)
    assert m.ms_per_image == pytest.approx(1000 / m.median)


def test_warmup_is_excluded_from_the_timed_windows():
    def slow_start():
        time.sleep(0.3)  # the first element pays for start-up, like a pipeline's first batch
        while True:
            time.sleep(0.005)
            yield np.zeros((2, 3))

    m = time_iterator(slow_start(), "x", batches=10, repeats=2, warmup=1, batched=True)
    assert m.warmup_seconds >= 0.3
    assert all(s < 0.3 for s in m.seconds)
    assert m.images == [20, 20]


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
