"""``input.weighted``: training draws tiles in proportion to ``tile/weight``, seeded and resumable.

The records: 2 folds x 16 tiles of 8 x 8 pixels; tile ``k`` of a fold weighs
``WEIGHTS[k % 4]`` (0, 0.5, 1 or 2: mean 0.875), written as the ETL writes
them (``serialize_example``) with the manifest's per-source ``weight_sum``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests._data_helpers import write_records
from tfpipe.data import load
from tfpipe.data import weighting as wt
from tfpipe.data.seeds import batch_seeds
from tfpipe.errors import ConfigError
from tfpipe.records import format as fmt
from tfpipe.records.example import serialize_example
from tfpipe.records.manifest import Manifest, ShardInfo, SourceStats, sha256_file, write_manifest
from tfpipe.records.writer import ShardWriter, frame_record

WEIGHTS = (0.0, 0.5, 1.0, 2.0)
PER_FOLD = 16
SIZE = 8
MEAN = sum(WEIGHTS) / len(WEIGHTS)


def weight_of(source_id: bytes | str) -> float:
    k = fmt.parse_source_id(source_id)[1]
    return WEIGHTS[k % len(WEIGHTS)]


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("weighted")
    rng = np.random.default_rng(0)
    shards, sources = [], {}
    for fold in range(2):
        name = fmt.shard_name(fold, 0, 1)
        stats = SourceStats(fold=fold)
        with ShardWriter(root / name) as writer:
            for k in range(PER_FOLD):
                image = rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)
                source_id = fmt.source_id(f"slide{fold}", k, 0)
                data = serialize_example(
                    image.tobytes(),
                    "raw",
                    image.shape,
                    source_id=source_id,
                    mask=bytes(SIZE * SIZE),
                    mask_format="raw",
                    weight=weight_of(source_id),
                )
                writer.write(frame_record(data))
                stats.kept += 1
                stats.weight_sum += weight_of(source_id)
        path = root / name
        shards.append(ShardInfo(name, fold, PER_FOLD, path.stat().st_size, sha256_file(path)))
        sources[f"slide{fold}"] = stats
    write_manifest(
        Manifest(
            root=root,
            task="segmentation",
            tile_height=SIZE,
            tile_width=SIZE,
            channels=3,
            encoding="raw",
            compression="none",
            num_folds=2,
            shards=shards,
            sources=sources,
            created="test",
        )
    )
    return root


SETTINGS = {"batch_size": 4, "shuffle_buffer": 8, "deterministic": True, "with_ids": True}


def stream(records: Path, count: int, **kwargs) -> list[tuple[np.ndarray, ...]]:
    ds = load(records, repeat=True, weighted=True, **{**SETTINGS, **kwargs})
    return [tuple(t.numpy() for t in batch) for batch in ds.take(count)]


def within(count: int, draws: int, p: float, sigmas: float = 5.0) -> bool:
    """``count`` of ``draws`` is within ``sigmas`` binomial standard deviations of ``p``."""
    return abs(count - draws * p) <= sigmas * np.sqrt(draws * p * (1 - p)) + 1


def test_resample_emits_each_element_weight_over_mean_times_on_average():
    epochs, weights = 300, tf.constant(WEIGHTS * 4, tf.float32)
    elements = tf.data.Dataset.range(len(WEIGHTS) * 4).repeat(epochs)
    seeds = batch_seeds(tf.constant(11, tf.int64), 1).unbatch()
    out = wt.resample(elements, wt.WeightPlan(MEAN), lambda i: tf.gather(weights, i), seeds)
    counts = Counter(int(i) for i in out)
    assert counts[0] == counts[4] == 0  # weight 0: never drawn
    for i in range(len(WEIGHTS) * 4):
        expected = epochs * WEIGHTS[i % 4] / MEAN
        # Each epoch emits floor(e) or floor(e) + 1 copies: variance <= 1/4 per epoch.
        assert abs(counts[i] - expected) <= 5 * 0.5 * np.sqrt(epochs), (i, counts[i], expected)
    assert abs(sum(counts.values()) - epochs * 16) <= 5 * 0.5 * np.sqrt(epochs * 16)


def test_weighted_training_draws_tiles_in_proportion_to_their_weight(records):
    batches = stream(records, 200, seed=3)  # 800 tiles, about 25 epochs of 32
    ids = [i for b in batches for i in b[2]]
    by_weight = Counter(weight_of(i) for i in ids)
    assert by_weight[0.0] == 0
    total = sum(WEIGHTS)
    for w in WEIGHTS[1:]:
        assert within(by_weight[w], len(ids), w / total), (w, by_weight[w], len(ids))
    per_tile = Counter(ids)
    assert len(per_tile) == 2 * PER_FOLD * 3 // 4  # every tile of weight > 0 comes up


def test_a_resumed_weighted_stream_is_exact(records):
    whole = stream(records, 14, seed=7)  # an epoch is about 8 batches: two epochs
    resumed = stream(records, len(whole) - 5, seed=7, start_step=5)  # across an epoch end
    for got, want in zip(resumed, whole[5:], strict=True):
        assert got[2].tolist() == want[2].tolist()
        np.testing.assert_array_equal(got[0], want[0])


def test_a_cached_dataset_keeps_the_weights(records):
    ids = [i for b in stream(records, 100, seed=3, cache="memory") for i in b[2]]
    by_weight = Counter(weight_of(i) for i in ids)
    assert by_weight[0.0] == 0
    assert within(by_weight[2.0], len(ids), 2.0 / sum(WEIGHTS))


def test_validation_is_not_weighted(records):
    ds = load(records, folds=[0], training=False, weighted=True, batch_size=4, with_ids=True)
    ids = sorted(i.decode() for b in ds for i in b[2].numpy())
    assert ids == sorted(fmt.source_id("slide0", k, 0) for k in range(PER_FOLD))


def test_weighted_needs_weighted_records_and_excludes_balance(records, tmp_path):
    plain = write_records(tmp_path / "plain", folds=2, shards_per_fold=1, per_shard=8)
    with pytest.raises(ConfigError, match=r"tiles of .* weigh 0 in all .*data\.sampling\.anatomy"):
        load(plain, batch_size=4, weighted=True)
    with pytest.raises(ConfigError, match=r"input\.weighted and input\.balance both resample"):
        load(records, batch_size=4, weighted=True, balance=0.5)
