"""--sweep parsing and validation, re-encoding records, and a sweep measured on tiny records."""

import numpy as np
import pytest

from tests._bench_helpers import write_tiny_records
from tfpipe.bench.reencode import reencode_subset
from tfpipe.bench.stages import StagePlan
from tfpipe.bench.sweep import measure_sweep, parse_sweep
from tfpipe.config import load_experiment
from tfpipe.errors import ConfigError
from tfpipe.records.manifest import read_manifest, verify_shards


@pytest.fixture(scope="module")
def exp():
    return load_experiment(None, ["input.batch_size=16"])


def test_values_are_typed_and_the_current_value_is_measured_first(exp):
    spec = parse_sweep("input.batch_size=32,64,128", exp)
    assert (spec.key, spec.values, spec.current) == ("input.batch_size", [16, 32, 64, 128], 16)
    spec = parse_sweep("data.encoding = jpeg, png ,raw", exp)
    assert spec.values == ["jpeg", "png", "raw"] and spec.changes_records
    spec = parse_sweep("input.augment.flip=false", exp)
    assert spec.values == [True, False] and not spec.changes_records


def test_batch_size_sweep_follows_train_batch_size():
    from tfpipe.bench.sweep import with_setting

    exp = load_experiment(None, ["input.batch_size=16", "train.batch_size=8"])
    spec = parse_sweep("input.batch_size=32", exp)
    assert (spec.current, spec.values) == (8, [8, 32])  # what the pipeline really uses
    variant = with_setting(exp, "input.batch_size", 32)
    assert (variant.input.batch_size, variant.train.batch_size) == (32, 32)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "input.batchsize=1,2",
            "unknown --sweep key 'input.batchsize': 'batchsize' is not a setting of input",
        ),
        (
            "inputs.batch_size=1",
            "unknown --sweep key 'inputs.batch_size': 'inputs' is not a setting of the experiment",
        ),
        ("input.batch_size.x=1", "'batch_size' is a value, not a section"),
        (
            "model.arch=unet,fpn",
            "--sweep supports input.* keys and data.encoding, "
            "data.compression (the settings that change input "
            "throughput); got 'model.arch'",
        ),
        (
            "input.batch_size=32,abc",
            "bad value 'abc' for --sweep input.batch_size: Input should be a valid integer",
        ),
        (
            "input.batch_size=0",
            "bad value 0 for --sweep input.batch_size: Input should be greater than or equal to 1",
        ),
        (
            "data.encoding=png,gif",
            "bad value 'gif' for --sweep data.encoding: Input should be 'png', 'jpeg' or 'raw'",
        ),
        ("input.batch_size", "--sweep expects KEY=V1,V2,..."),
        ("input.batch_size=,", "--sweep input.batch_size has no values"),
    ],
)
def test_bad_sweeps_are_config_errors_naming_key_and_value(exp, text, message):
    with pytest.raises(ConfigError) as err:
        parse_sweep(text, exp)
    assert message in str(err.value)


def test_reencoding_keeps_layout_and_pixels(tmp_path):
    import tfpipe.data

    src = read_manifest(write_tiny_records(tmp_path / "png", n=16, size=32))
    raw = read_manifest(reencode_subset(src, "raw", "gzip", tmp_path / "raw", limit=8))
    assert (raw.encoding, raw.compression, raw.num_records) == ("raw", "gzip", 8)
    assert [s.fold for s in raw.shards] == [s.fold for s in src.shards]
    assert all(s.path.endswith(".tfrecord.gz") for s in raw.shards)
    assert verify_shards(raw) == []

    def tiles(root):
        ds = tfpipe.data.load(root, training=False, batch_size=1, with_ids=True)
        return {i[0].numpy(): (x[0].numpy(), y[0].numpy()) for x, y, i in ds}

    before, after = tiles(src.root), tiles(raw.root)
    assert len(after) == 8 and set(after) <= set(before)
    for key, (image, mask) in after.items():  # PNG -> raw is lossless
        np.testing.assert_array_equal(image, before[key][0])
        np.testing.assert_array_equal(mask, before[key][1])


def test_sweep_measures_every_value_on_tiny_records(tmp_path):
    write_tiny_records(tmp_path / "rec", n=32, size=32)
    settings = ["input.batch_size=4", "input.shuffle_buffer=8", "data.encoding=png"]
    exp = load_experiment(None, [f"data.output={tmp_path / 'rec'}", *settings])  # PNG records
    plan = StagePlan.from_experiment(exp, read_manifest(tmp_path / "rec"))
    ticks = []
    result = measure_sweep(
        plan,
        parse_sweep("data.encoding=raw", exp),
        limit=16,
        batches=2,
        repeats=2,
        warmup=1,
        tick=lambda: ticks.append(1),
    )
    assert result.values == ["png", "raw"] and result.current == "png"
    assert [m.images for m in result.measurements] == [[8, 8], [8, 8]]
    assert all(m.median > 0 for m in result.measurements)
    assert "16 re-encoded records" in result.measurements[1].note
    assert len(ticks) == 4
    assert result.best in ("png", "raw")
