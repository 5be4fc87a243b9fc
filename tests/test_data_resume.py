"""``load(repeat=True, start_step=N)`` is the uninterrupted stream from batch N on.

With ``deterministic=True`` epoch ``e`` of a repeated stream depends on
``(seed, e)`` only, so a stream rebuilt at batch N (a resumed run) yields
exactly the batches N, N+1, … of the stream started at 0: the same tiles
(``image/source_id``), the same augmented pixels, across epoch boundaries,
and the skipped batches are never decoded. The records: 2 folds × 2 shards
× 8 tiles = 32 tiles; batch 4 → 8 batches per epoch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests._data_helpers import all_ids, write_records
from tfpipe.data import load
from tfpipe.errors import ConfigError
from tfpipe.records import format as fmt
from tfpipe.records.manifest import read_manifest, sha256_file, write_manifest

PER_EPOCH = 8  # 32 tiles // batch 4
SETTINGS = {
    "batch_size": 4,
    "shuffle_buffer": 8,
    "deterministic": True,
    "with_ids": True,
    "augment": {"flip": True, "rot90": True, "brightness": 0.2},
}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_records(tmp_path_factory.mktemp("resume"), folds=2, shards_per_fold=2, per_shard=8)


def batches(records: Path, count: int, **kwargs) -> list[tuple[np.ndarray, ...]]:
    """The first ``count`` batches of a repeated stream, as numpy arrays."""
    ds = load(records, repeat=True, **{**SETTINGS, **kwargs})
    return [tuple(t.numpy() for t in batch) for batch in ds.take(count)]


@pytest.fixture(scope="module")
def whole(records: Path) -> list[tuple[np.ndarray, ...]]:
    """Batches 0 … 2 epochs + 3 of the uninterrupted stream (seed 7)."""
    return batches(records, 2 * PER_EPOCH + 3, seed=7)


def assert_same(got: list[tuple[np.ndarray, ...]], want: list[tuple[np.ndarray, ...]]) -> None:
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a[2].tolist() == b[2].tolist(), f"batch {k}: different tiles"
        np.testing.assert_array_equal(a[0], b[0], err_msg=f"batch {k}: images differ")
        np.testing.assert_array_equal(a[1], b[1], err_msg=f"batch {k}: masks differ")


@pytest.mark.parametrize(
    "start",
    [
        2,  # inside epoch 0, right after one whole shuffle block (8 records)
        3,  # inside epoch 0, a block and a half in
        PER_EPOCH - 1,  # the last batch of epoch 0, then epoch 1
        PER_EPOCH,  # exactly at the start of epoch 1
        PER_EPOCH + 5,  # inside epoch 1, across into epoch 2
    ],
)
def test_start_step_continues_the_uninterrupted_stream(
    records: Path, whole: list[tuple[np.ndarray, ...]], start: int
) -> None:
    resumed = batches(records, len(whole) - start, seed=7, start_step=start)
    assert_same(resumed, whole[start:])


@pytest.mark.parametrize("buffer", [6, 12])
def test_a_resume_lands_on_the_batch_whatever_the_shuffle_block(records: Path, buffer: int) -> None:
    # Whole blocks are dropped before the shuffle and the rest after it: blocks of 6 or
    # 12 records do not line up with batches of 4 (start 3 skips 12 records: 2 blocks
    # of 6, or 1 of 12; start 5 skips 20: 3 blocks of 6 + 2, or 1 of 12 + 8).
    whole = batches(records, PER_EPOCH + 2, seed=3, shuffle_buffer=buffer)
    for start in (3, 5):
        resumed = batches(
            records, PER_EPOCH + 2 - start, seed=3, shuffle_buffer=buffer, start_step=start
        )
        assert_same(resumed, whole[start:])


def test_each_epoch_holds_every_tile_once_and_epochs_differ(
    records: Path, whole: list[tuple[np.ndarray, ...]]
) -> None:
    epochs = [whole[e * PER_EPOCH : (e + 1) * PER_EPOCH] for e in range(2)]
    ids = [[i.decode() for b in epoch for i in b[2]] for epoch in epochs]
    assert sorted(ids[0]) == sorted(ids[1]) == sorted(all_ids(records))
    assert ids[0] != ids[1]  # epoch 1 is reshuffled, not a replay of epoch 0


def test_same_seed_same_stream_other_seed_other_stream(
    records: Path, whole: list[tuple[np.ndarray, ...]]
) -> None:
    assert_same(batches(records, PER_EPOCH + 2, seed=7), whole[: PER_EPOCH + 2])
    other = batches(records, PER_EPOCH, seed=8)
    assert [b[2].tolist() for b in other] != [b[2].tolist() for b in whole[:PER_EPOCH]]


def test_start_step_needs_a_repeated_stream(records: Path) -> None:
    with pytest.raises(ConfigError, match=r"start_step.*repeat=True"):
        load(records, batch_size=4, start_step=3)
    with pytest.raises(ConfigError, match="got start_step=-1"):
        load(records, batch_size=4, repeat=True, start_step=-1)


def spoil_images(source: Path, target: Path, ids: set[bytes]) -> Path:
    """A copy of ``source`` whose tiles ``ids`` hold bytes that are not a PNG."""
    target.mkdir()
    manifest = read_manifest(source)
    shards = []
    for shard in manifest.shards:
        with tf.io.TFRecordWriter(str(target / shard.path)) as writer:
            for record in tf.data.TFRecordDataset(str(source / shard.path)):
                example = tf.train.Example.FromString(record.numpy())
                features = example.features.feature
                if features[fmt.SOURCE_ID].bytes_list.value[0] in ids:
                    features[fmt.IMAGE_ENCODED].bytes_list.value[0] = b"not a png"
                writer.write(example.SerializeToString())
        path = target / shard.path
        shards.append(
            dataclasses.replace(shard, bytes=path.stat().st_size, sha256=sha256_file(path))
        )
    write_manifest(dataclasses.replace(manifest, root=target, shards=shards))
    return target


def test_skipped_batches_are_never_decoded(
    records: Path, whole: list[tuple[np.ndarray, ...]], tmp_path: Path
) -> None:
    start = PER_EPOCH + 2
    # Every tile of the batches before `start` that does not come back after it.
    later = {i for b in whole[start:] for i in b[2]}
    skipped = {i for b in whole[:start] for i in b[2]} - later
    assert skipped  # the test means something only if some tiles are spoiled
    spoiled = spoil_images(records, tmp_path / "spoiled", skipped)
    with pytest.raises(tf.errors.OpError):
        batches(spoiled, start, seed=7)  # decoding a spoiled tile fails...
    resumed = batches(spoiled, len(whole) - start, seed=7, start_step=start)
    assert_same(resumed, whole[start:])  # ...so a resumed stream never decoded one
