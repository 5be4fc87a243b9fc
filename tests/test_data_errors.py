"""User errors: each one is a clear TfpipeError (or a TF error naming the shard)."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf

import tfpipe.data as td
from tests._data_helpers import all_ids, write_records
from tfpipe.errors import ConfigError, RecordsError


@pytest.fixture
def records(tmp_path):
    return write_records(tmp_path / "rec", size=8, encoding="raw", per_shard=16)


def _count(ds) -> int:
    return sum(int(images.shape[0]) for images, *_ in ds)


def _flip_byte(path, record: int, in_header: bool = False) -> None:
    """Flip one byte of record ``record``: in its payload, or in its length field."""
    data = bytearray(path.read_bytes())
    offset = 0
    for _ in range(record):
        offset += 16 + int.from_bytes(data[offset : offset + 8], "little")
    length = int.from_bytes(data[offset : offset + 8], "little")
    data[offset + 2 if in_header else offset + 12 + length // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _change_count(root, shard_name: str, delta: int) -> None:
    """Make manifest.json list ``delta`` more records for one shard than it holds."""
    path = root / "manifest.json"
    raw = json.loads(path.read_text())
    (entry,) = [s for s in raw["shards"] if s["path"] == shard_name]
    entry["records"] += delta
    path.write_text(json.dumps(raw))


def test_missing_records_folder(tmp_path):
    with pytest.raises(RecordsError, match=r"records folder not found: .*nowhere"):
        td.load(tmp_path / "nowhere")


def test_manifest_from_a_newer_format_version(records):
    path = records / "manifest.json"
    raw = json.loads(path.read_text())
    raw["format_version"] = 99
    path.write_text(json.dumps(raw))
    with pytest.raises(RecordsError, match=r"format_version=99.*upgrade tfpipe"):
        td.load(records)


def test_fold_that_does_not_exist(records):
    with pytest.raises(RecordsError, match=r"fold 5 does not exist .* folds 0..1"):
        td.load(records, folds=[0, 5])
    with pytest.raises(RecordsError, match="fold 7 does not exist"):
        td.split_folds(records, 7)


def test_batch_larger_than_the_training_data(records):
    with pytest.raises(ConfigError, match=r"batch_size=40 but .* holds 32 records"):
        td.load(records, folds=[0], batch_size=40)
    # Validation keeps partial batches, so a large batch is fine there.
    assert _count(td.load(records, folds=[0], training=False, batch_size=40)) == 32


def test_unknown_or_invalid_settings(records):
    with pytest.raises(ConfigError, match="unknown input setting 'shuffle_buf'"):
        td.load(records, shuffle_buf=10)
    with pytest.raises(ConfigError, match="batch_size=0"):
        td.load(records, batch_size=0)
    with pytest.raises(ConfigError, match="image_size=16 for 8x8 tiles"):
        td.load(records, image_size=16)


def test_colour_ops_on_grey_tiles(tmp_path):
    root = write_records(tmp_path / "grey", size=8, channels=1)
    with pytest.raises(ConfigError, match="need RGB tiles"):
        td.load(root, batch_size=4, augment={"hue": 0.1})


def test_truncated_shard_is_named_before_reading(records):
    shard = sorted(records.glob("fold0-*"))[1]
    shard.write_bytes(shard.read_bytes()[:-30])
    with pytest.raises(
        RecordsError,
        match=f"shard .*{shard.name} is truncated or corrupt: manifest.json lists 16 records, "
        r"its TFRecord framing holds 15 \(record 15 is truncated.*set input.skip_corrupt: true",
    ):
        td.load(records)


def test_damaged_record_header_is_named_before_reading(records):
    shard = sorted(records.glob("fold1-*"))[1]
    _flip_byte(shard, 3, in_header=True)
    with pytest.raises(
        RecordsError, match=rf"{shard.name} .*framing holds 3 \(record 3 has a bad length CRC"
    ):
        td.load(records, folds=[1])
    td.load(records, folds=[0])  # only the shards of the requested folds are checked


def test_manifest_listing_more_records_than_a_shard_holds(records, capfd):
    shard = sorted(records.glob("fold0-*"))[0]
    _change_count(records, shard.name, +5)
    with pytest.raises(
        RecordsError,
        match=f"{shard.name} is truncated or corrupt: manifest.json lists 21 records, "
        "its TFRecord framing holds 16; rebuild the records",
    ):
        td.load(records, folds=[0])
    with pytest.warns(UserWarning, match=f"{shard.name} .*lists 21 records.*holds 16"):
        ds = td.load(records, folds=[0], training=False, batch_size=4, skip_corrupt=True)
    assert _count(ds) == 32
    assert f"skipped 5 unreadable records of shard {shard}" in capfd.readouterr().err


def test_manifest_listing_fewer_records_than_a_shard_holds(records):
    # Not a damaged shard to skip: the records past the manifest's count would vanish.
    shard = sorted(records.glob("fold1-*"))[0]
    _change_count(records, shard.name, -5)
    for skip in (False, True):
        with pytest.raises(
            RecordsError,
            match=f"{shard.name} holds 16 records .* but manifest.json lists 11.*rebuild",
        ):
            td.load(records, skip_corrupt=skip)


def test_missing_shard_is_named(records):
    shard = sorted(records.glob("fold1-*"))[0]
    shard.unlink()
    with pytest.raises(RecordsError, match=f"{shard.name} is listed in manifest.json but missing"):
        td.load(records)


def test_corrupt_shard_fails_with_its_name(records):
    shard = sorted(records.glob("fold0-*"))[0]
    _flip_byte(shard, 8)  # the framing is intact: only reading finds it (data CRC)
    ds = td.load(records, folds=[0], training=False, batch_size=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{shard.name} is corrupt"):
        _count(ds)


@pytest.mark.parametrize("seed", range(4))
def test_corrupt_shard_fails_wherever_the_epoch_starts_reading_it(records, seed):
    # Training starts each shard at a random record and reads the skipped part
    # last: the damage fails the epoch whether it lies before or after that start.
    shard = sorted(records.glob("fold0-*"))[0]
    _flip_byte(shard, 5)
    ds = td.load(records, folds=[0], training=True, batch_size=4, seed=seed)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{shard.name} is corrupt"):
        _count(ds)


def test_skip_corrupt_skips_counts_and_logs(records, capfd):
    shard = sorted(records.glob("fold0-*"))[0]
    _flip_byte(shard, 8)
    ds = td.load(records, folds=[0], training=False, batch_size=4, skip_corrupt=True)
    assert _count(ds) == 16 + 8  # the other shard in full, the damaged one up to the damage
    err = capfd.readouterr().err
    assert f"skipped 8 unreadable records of shard {shard}" in err


def test_skip_corrupt_reads_what_is_left_of_a_truncated_shard(records):
    shard = sorted(records.glob("fold1-*"))[0]
    shard.write_bytes(shard.read_bytes()[:-30])
    with pytest.warns(UserWarning, match=f"{shard.name} is truncated or corrupt.*holds 15"):
        ds = td.load(records, folds=[1], training=False, batch_size=4, skip_corrupt=True)
    assert _count(ds) == 31
    assert len(all_ids(records, [1])) == 32


def test_cache_prefix_in_a_missing_folder(records, tmp_path):
    with pytest.raises(ConfigError, match=r"folder .*nowhere does not exist"):
        td.load(records, cache=str(tmp_path / "nowhere" / "tiles"))
