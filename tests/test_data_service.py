"""tf.data service on localhost: one dispatcher, two workers, a Keras model trained from them."""

from __future__ import annotations

import gc

import keras
import numpy as np
import pytest

import tfpipe.data as td
from tests._data_helpers import all_ids, write_records
from tfpipe.data import service
from tfpipe.data.exit import release_iterators


@pytest.fixture(scope="module")
def cluster():
    dispatcher = service.start_dispatcher(0)
    workers = [service.start_worker(dispatcher.target, host="localhost") for _ in range(2)]
    yield dispatcher
    # A client iterator still streaming from the workers (Keras keeps fit's
    # until it is collected) can keep a worker's stop() waiting: close them first.
    gc.collect()
    release_iterators()
    for server in [dispatcher, *workers]:
        server.stop()


def test_an_epoch_through_two_workers_reads_every_record_once(cluster, tmp_path):
    # 4 shards of 8 records and batch 4: each worker's share divides into full batches.
    root = write_records(tmp_path / "rec", size=8, encoding="raw", per_shard=8)
    ds = td.load(root, batch_size=4, with_ids=True, service=cluster.target)
    ids = [s.decode() for *_, batch in ds for s in batch.numpy()]
    assert sorted(ids) == sorted(all_ids(root))


def test_keras_trains_from_the_service(cluster, tmp_path):
    root = write_records(tmp_path / "rec", size=16, per_shard=8)
    ds = td.load(root, batch_size=4, service=cluster.target.removeprefix("grpc://"))
    inputs = keras.Input((16, 16, 3), dtype="uint8")
    x = td.Normalize()(inputs)
    outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "binary_crossentropy")
    history = model.fit(ds, epochs=2, steps_per_epoch=3, verbose=0)
    assert len(history.history["loss"]) == 2
    assert np.all(np.isfinite(history.history["loss"]))
