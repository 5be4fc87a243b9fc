"""MixUp / CutMix (``input.augment.mixup_p``, ``cutmix_p``): values, seeding, dtypes, config.

:func:`tfpipe.data.mix.mix_batch` is checked against the formulas for given
draws; the pipeline's mixed batches are checked against ``mix_batch`` of the
same stream unmixed with the draws from the tiles' seeds. The records: 2
folds × 2 shards × 8 random tiles (16 x 16), batch 4 → 8 batches per epoch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from pydantic import ValidationError

from tests._data_helpers import write_records
from tfpipe.config import AugmentConfig, load_experiment
from tfpipe.data import load
from tfpipe.data.mix import Mixer, cut_box, cyclic_partner, mix_batch
from tfpipe.data.pipeline import _AUGMENT_SALT, _salt
from tfpipe.data.seeds import epoch_key
from tfpipe.errors import ConfigError

B, PER_EPOCH, SIZE = 4, 8, 16
SETTINGS = {"batch_size": B, "shuffle_buffer": 8, "deterministic": True, "with_ids": True}
MIXUP = {"flip": True, "rot90": False, "mixup_p": 0.5, "cutmix_p": 0.5}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mix")
    return write_records(root, folds=2, shards_per_fold=2, per_shard=8, size=SIZE, positive_every=2)


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mix_cls")
    return write_records(root, task="classification", folds=1, per_shard=4, size=SIZE)


def stream(records: Path, count: int, **kwargs) -> list[tuple[np.ndarray, ...]]:
    """The first ``count`` batches of a repeated stream (seed 7), as numpy arrays."""
    ds = load(records, repeat=True, seed=7, **{**SETTINGS, **kwargs})
    return [tuple(t.numpy() for t in batch) for batch in ds.take(count)]


def pipeline_seeds(step: int) -> tf.Tensor:
    """The ``[B, 2]`` seeds of batch ``step`` of the repeated stream (seed 7, deterministic)."""
    key = _salt(epoch_key(7, step // PER_EPOCH), _AUGMENT_SALT)
    positions = tf.range(B, dtype=tf.int64) + (step % PER_EPOCH) * B
    return tf.stack([tf.fill([B], key), positions], 1)


def random_batch(seed: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (B, 8, 8, 3), dtype=np.uint8)
    masks = rng.integers(0, 2, (B, 8, 8, 1), dtype=np.uint8)
    return tf.constant(images), tf.constant(masks)


# ---------------------------------------------------------------- given draws


def test_mixup_blends_images_and_masks_by_lam() -> None:
    images, masks = random_batch()
    partner = np.array([2, 3, 1, 0])
    lam = np.array([0.3, 1.0, 0.55, 0.9], np.float32)
    draws = {"partner": tf.constant(partner, tf.int32), "lam": tf.constant(lam)}
    x, y = mix_batch(images, masks, draws, segmentation=True)
    a, b = images.numpy().astype(np.float32), images.numpy()[partner].astype(np.float32)
    want = np.floor(lam[:, None, None, None] * a + (1 - lam[:, None, None, None]) * b + 0.5)
    assert x.dtype == tf.uint8 and y.dtype == tf.float32
    np.testing.assert_array_equal(x.numpy(), want.astype(np.uint8))
    ma, mb = masks.numpy().astype(np.float32), masks.numpy()[partner].astype(np.float32)
    l4 = lam[:, None, None, None]
    np.testing.assert_allclose(y.numpy(), l4 * ma + (1 - l4) * mb, rtol=0, atol=1e-6)
    # lam = 1: the tile as it was, bit for bit.
    np.testing.assert_array_equal(x.numpy()[1], images.numpy()[1])


def test_cutmix_pastes_exactly_the_box_in_image_and_mask() -> None:
    images, masks = random_batch(1)
    partner = np.array([1, 2, 3, 0])
    box = np.array([[2, 3, 4, 5], [0, 0, 0, 0], [0, 0, 8, 8], [7, 7, 1, 1]], np.int32)
    draws = {"partner": tf.constant(partner, tf.int32), "box": tf.constant(box)}
    x, y = mix_batch(images, masks, draws, segmentation=True)
    assert x.dtype == tf.uint8 and y.dtype == tf.uint8
    want_x, want_y = images.numpy().copy(), masks.numpy().copy()
    for i, (t, left, h, w) in enumerate(box):
        want_x[i, t : t + h, left : left + w] = images.numpy()[
            partner[i], t : t + h, left : left + w
        ]
        want_y[i, t : t + h, left : left + w] = masks.numpy()[
            partner[i], t : t + h, left : left + w
        ]
    np.testing.assert_array_equal(x.numpy(), want_x)
    np.testing.assert_array_equal(y.numpy(), want_y)


def test_labels_mix_by_lam_and_by_the_pasted_area() -> None:
    images = tf.zeros([B, 8, 8, 3], tf.uint8)
    labels = tf.constant(np.eye(B, 3, dtype=np.float32))
    partner = tf.constant([1, 0, 3, 2], tf.int32)
    box = tf.constant([[0, 0, 4, 4], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 8, 2]], tf.int32)
    lam = tf.constant([1.0, 0.25, 1.0, 1.0])
    _, y = mix_batch(images, labels, {"partner": partner, "box": box, "lam": lam}, False)
    kept = np.array([1 - 16 / 64, 0.25, 1.0, 1 - 16 / 64], np.float32)[:, None]
    other = labels.numpy()[[1, 0, 3, 2]]
    np.testing.assert_allclose(y.numpy(), kept * labels.numpy() + (1 - kept) * other, atol=1e-6)


def test_partner_is_a_single_cycle_and_box_has_the_area() -> None:
    keys = tf.constant([0.7, 0.1, 0.4, 0.9, 0.2])
    partner = cyclic_partner(keys).numpy()
    assert partner.tolist() == [3, 4, 0, 1, 2]  # order 1, 4, 2, 0, 3 and back to 1
    centred = cut_box(
        tf.constant([0.25, 0.0]), tf.constant([0.5, 0.5]), tf.constant([0.5, 0.5]), (16, 16)
    )
    assert centred.numpy().tolist() == [[4, 4, 8, 8], [8, 8, 0, 0]]
    corner = cut_box(tf.constant([0.25]), tf.constant([0.0]), tf.constant([0.99]), (16, 16))
    assert corner.numpy().tolist() == [[0, 11, 4, 5]]  # clipped at the edges


def test_draws_are_exclusive_seeded_and_differ_by_epoch() -> None:
    mixer = Mixer(AugmentConfig(mixup_p=0.5, cutmix_p=0.5), segmentation=True)
    seeds = tf.stack([tf.fill([64], tf.constant(3, tf.int64)), tf.range(64, dtype=tf.int64)], 1)
    draws = mixer.draw(seeds, (SIZE, SIZE))
    lam, box = draws["lam"].numpy(), draws["box"].numpy()
    mixed_up, cut = lam < 1.0, box[:, 2] * box[:, 3] > 0
    assert not (mixed_up & cut).any() and mixed_up.any() and cut.any()
    assert sorted(draws["partner"].numpy().tolist()) == list(range(64))
    assert (draws["partner"].numpy() != np.arange(64)).all()
    again = mixer.draw(seeds, (SIZE, SIZE))
    for k in draws:
        np.testing.assert_array_equal(again[k].numpy(), draws[k].numpy())
    other_epoch = mixer.draw(pipeline_seeds(PER_EPOCH), (SIZE, SIZE))
    assert not np.array_equal(
        other_epoch["lam"].numpy(), mixer.draw(pipeline_seeds(0), (SIZE, SIZE))["lam"].numpy()
    )


# ------------------------------------------------------------------- pipeline


def test_pipeline_mixes_the_unmixed_stream_with_the_tiles_seeds(records: Path) -> None:
    plain = stream(records, PER_EPOCH + 2, augment={"flip": True, "rot90": False})
    mixed = stream(records, PER_EPOCH + 2, augment=MIXUP)
    mixer = Mixer(AugmentConfig(**MIXUP), segmentation=True)
    for step, (p, m) in enumerate(zip(plain, mixed, strict=True)):
        assert p[2].tolist() == m[2].tolist(), f"batch {step}: different tiles"
        draws = mixer.draw(pipeline_seeds(step), (SIZE, SIZE))
        x, y = mix_batch(tf.constant(p[0]), tf.constant(p[1]), draws, segmentation=True)
        np.testing.assert_array_equal(m[0], x.numpy(), err_msg=f"batch {step}: images")
        np.testing.assert_array_equal(m[1], y.numpy(), err_msg=f"batch {step}: masks")
    assert mixed[1][1].dtype == np.float32 and 0.0 <= mixed[1][1].min() <= mixed[1][1].max() <= 1.0
    assert any(not np.array_equal(p[0], m[0]) for p, m in zip(plain, mixed, strict=True))


def test_same_seed_same_batches_and_resume_is_exact(records: Path) -> None:
    whole = stream(records, PER_EPOCH + 1, augment=MIXUP)
    # A second run with the same seed, rebuilt at the last batch of epoch 0.
    resumed = stream(records, 2, augment=MIXUP, start_step=PER_EPOCH - 1)
    for got, want in zip(resumed, whole[PER_EPOCH - 1 :], strict=True):
        assert got[2].tolist() == want[2].tolist()
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_off_by_default_and_for_validation(records: Path) -> None:
    assert not Mixer(AugmentConfig(), segmentation=True).on
    tuned = {"mixup_alpha": 2.0, "cutmix_alpha": 0.5}  # no chance set: still off
    for a, b in zip(stream(records, 3), stream(records, 3, augment=tuned), strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    val = [
        load(records, folds=[0], training=False, batch_size=B, augment=aug) for aug in ({}, MIXUP)
    ]
    for a, b in zip(*val, strict=True):
        assert a[1].dtype == tf.uint8
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
        np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())


def test_cutmix_alone_keeps_hard_uint8_masks(records: Path) -> None:
    batches = stream(records, 4, augment={"cutmix_p": 1.0})
    masks = np.concatenate([b[1] for b in batches])
    assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}


def test_classification_labels_are_mixed_float32(classes: Path) -> None:
    ds = load(
        classes,
        batch_size=B,
        seed=1,
        shuffle_buffer=0,
        augment={"mixup_p": 1.0, "mixup_alpha": 1.0},
    )
    _, labels = next(iter(ds))
    assert labels.dtype == tf.float32
    values = labels.numpy()
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert ((values > 0) & (values < 1)).any()  # soft labels


# --------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("augment", "key"),
    [
        ({"mixup_p": 1.5}, "mixup_p"),
        ({"cutmix_p": -0.1}, "cutmix_p"),
        ({"mixup_alpha": 0.0}, "mixup_alpha"),
        ({"cutmix_alpha": -1.0}, "cutmix_alpha"),
        ({"mixup_p": 0.7, "cutmix_p": 0.6}, "mixup_p + cutmix_p must be <= 1"),
    ],
)
def test_bad_settings_name_the_key(records: Path, augment: dict, key: str) -> None:
    with pytest.raises(ValidationError, match="mix"):
        AugmentConfig(**augment)
    with pytest.raises(ConfigError, match=key.replace("+", r"\+")):
        load(records, batch_size=B, augment=augment)


def test_experiment_file_error_names_the_section(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("input:\n  augment:\n    mixup_p: 0.8\n    cutmix_p: 0.8\n")
    with pytest.raises(ConfigError, match=r"mixup_p=0\.8, cutmix_p=0\.8.*exp\.yaml"):
        load_experiment(path)
