"""``load()``: records folder in, ``tf.data.Dataset`` of ``uint8`` batches out.

Training pipeline (each stage redrawn every epoch, reproducible per seed)::

    shard list, shuffled ─▶ interleave(TFRecordDataset, parallel) ─▶ [balance]
      ─▶ shuffle(serialized records) ─▶ batch ─▶ + the batch's seeds
      ─▶ map(parse_example, decode the PNG batch, draw and augment it with OpenCV; parallel)
      ─▶ [tf.data service] ─▶ prefetch

Every stage after the shuffle works on whole batches: a per-element stage
costs CPU per image that the GPU waits for (:mod:`tfpipe.data.finish`).

Behind the tf.data service, and for JPEG or raw records, tiles are decoded
per element with TensorFlow ops instead (:func:`tfpipe.data.plan.decode_engine`):
the batches are split, decoded tile by tile in a parallel map, and batched again.
With ``augment.engine: tensorflow`` (and always with the tf.data service) the
augmentation runs as TensorFlow ops in that per-element map too.

With ``cache`` the decoded tiles are cached and the shuffle, balance and
augmentation move after the cache (so every epoch still differs). Validation
reads the shards in manifest order with no shuffle and no augmentation
(center crop to ``image_size``), deterministically.

An epoch is one pass over the selected shards: the dataset is finite and
every new iteration (each Keras epoch, or each ``.repeat()``) reshuffles and
redraws augmentation. Training batches are always full
(``drop_remainder=True``); validation keeps the last partial batch.

Example:
    >>> train = load("records/kidney", folds=[1, 2, 3], batch_size=16)   # doctest: +SKIP
    >>> val = load("records/kidney", folds=[0], training=False)          # doctest: +SKIP
    >>> model.fit(train, validation_data=val, epochs=5)                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

from tfpipe.config import InputConfig
from tfpipe.data import balance, service
from tfpipe.data.decode import parse_steps, positive_fraction
from tfpipe.data.finish import Finisher, drop_ids
from tfpipe.data.heap import release_heap_each_epoch
from tfpipe.data.plan import InputPlan, cache_target, decode_engine, plan_input, resolve_config
from tfpipe.data.seeds import batch_seeds, with_seeds
from tfpipe.data.shards import read_shards
from tfpipe.errors import RecordsError
from tfpipe.records.manifest import Manifest, read_manifest

# Functions handed to tf.data are plain graph code (explicit tf.cond, no Python
# control flow on tensors); skipping AutoGraph's source conversion saves seconds
# per load() call.
_plain = tf.autograph.experimental.do_not_convert

# Salts keep the seeds of independent random streams apart.
_AUGMENT_SALT = 104729
_BALANCE_SALT = 1299709


def load(
    records_dir: str | Path,
    *,
    folds: int | list[int] | None = None,
    training: bool = True,
    config: InputConfig | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    with_ids: bool = False,
    **overrides: Any,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``uint8`` batches from a records folder.

    Segmentation records give ``(image uint8 [B,H,W,C], mask uint8 [B,H,W,1])``;
    classification records give ``(image uint8 [B,H,W,C], labels float32 [B,K])``;
    the task comes from ``manifest.json``. Feed it to ``model.fit`` directly (put
    :class:`tfpipe.data.Normalize` first in the model). Nothing global is changed:
    no Keras policy, no TF seed.

    Args:
        records_dir: Folder written by ``tfpipe build-records``.
        folds: Fold ids to read (an int or a list); None reads all folds.
        training: True: shuffled, augmented, balanced by ``balance``, full batches,
            through the tf.data service when ``service`` is set. False: manifest
            order, center crop, ``val_balance``, deterministic, always local.
        config: The ``input`` section of an experiment; default ``InputConfig()``.
        batch_size: Overrides ``config.batch_size``.
        seed: Overrides ``config.seed``.
        with_ids: Add a third element, the ``[B]`` string ``image/source_id`` of
            every tile (to inspect order and provenance; not for ``fit``).
        **overrides: Any other ``InputConfig`` field, e.g. ``shuffle_buffer=1024``
            or ``augment={"flip": True, "hue": 0.02}``.

    Returns:
        The dataset; one iteration is one epoch.

    Raises:
        RecordsError: the folder or manifest is missing, from a newer format
            version, a fold does not exist, or a shard is damaged.
        ConfigError: an unknown or invalid setting, or a setting that does not fit
            these records (batch larger than the data, image_size larger than tiles).

    Example:
        >>> ds = load("records/kidney", folds=[1, 2, 3], batch_size=8, shuffle_buffer=256)
        ... # doctest: +SKIP
        >>> images, masks = next(iter(ds))                              # doctest: +SKIP
        >>> images.dtype, images.shape, masks.shape                     # doctest: +SKIP
        (tf.uint8, TensorShape([8, 256, 256, 3]), TensorShape([8, 256, 256, 1]))
    """
    cfg = resolve_config(config, batch_size=batch_size, seed=seed, overrides=overrides)
    manifest = read_manifest(records_dir)
    fold_list = [folds] if isinstance(folds, int) else folds
    plan = plan_input(manifest, fold_list, cfg, training)
    return build_dataset(plan, cfg, training, with_ids)


def split_folds(
    manifest_or_dir: Manifest | str | Path, val_fold: int
) -> tuple[list[int], list[int]]:
    """Cross-validation split: train on every fold but ``val_fold``, validate on it.

    Raises:
        RecordsError: ``val_fold`` is not a fold of this dataset.

    Example:
        >>> split_folds("records/kidney", 0)  # doctest: +SKIP
        ([1, 2, 3], [0])
    """
    manifest = (
        manifest_or_dir if isinstance(manifest_or_dir, Manifest) else read_manifest(manifest_or_dir)
    )
    folds = manifest.folds
    if val_fold not in folds:
        raise RecordsError(
            f"fold {val_fold} does not exist in {manifest.root}: it has folds {folds}"
        )
    return [f for f in folds if f != val_fold], [val_fold]


def build_dataset(
    plan: InputPlan, cfg: InputConfig, training: bool, with_ids: bool = False
) -> tf.data.Dataset:
    """Assemble the tf.data graph for a validated plan (see the module docstring)."""
    det = cfg.deterministic if training else True
    finish = Finisher(plan, cfg, training)
    step, decode = parse_steps(plan.layout, decode_engine(cfg, plan.layout, training))
    records = read_shards(plan.shards, cfg, training)
    cache = cache_target(plan, cfg, training)
    # Steps on whole batches run in as few maps as they can: a map stage costs
    # ~0.2 ms of CPU per batch on its own, ~6 µs per image at 32 per batch.
    batch_steps, tile_steps = [], []
    if cache is None:
        records = _balance_and_shuffle(
            records, plan, cfg, training, lambda r: positive_fraction(r) > 0
        )
        batches = records.batch(cfg.batch_size, drop_remainder=training)
        batch_steps.append(lambda r, s: (step(r), s))
        if decode is not None:
            tile_steps.append(lambda f, s: (decode(f), s))
    else:
        batches = _batches_after_cache(records, cache, step, decode, plan, cfg, training, det)
    # Seeds are drawn after any cache (else every epoch would replay epoch 1's).
    batches = with_seeds(batches, cfg.seed + _AUGMENT_SALT, cfg.batch_size, training)
    if finish.per_element:
        tile_steps.append(finish.element)
    if tile_steps:
        batches = _map_batches(batches, batch_steps, cfg, det)
        batches, batch_steps = _per_tile(batches, tile_steps, cfg, training, det), []
    batch_steps.append(finish.batch)
    if not with_ids:
        batch_steps.append(drop_ids)
    batches = _map_batches(batches, batch_steps, cfg, det)
    batches = batches.with_options(_options(cfg, det))
    if training and cfg.service:
        batches = service.distribute(batches, cfg.service, cfg.service_job_name)
    if cfg.release_heap:
        # In this process, after the service: it is this process's heap that drifts.
        batches = release_heap_each_epoch(batches)
    count = _known_batches(plan, cfg, training)
    if count is not None:
        # Keras then knows the epoch length (progress bar, no "ran out of data" warning).
        batches = batches.apply(tf.data.experimental.assert_cardinality(count))
    if cfg.prefetch != 0:
        batches = batches.prefetch(cfg.prefetch or tf.data.AUTOTUNE)
    return batches


def _batches_after_cache(
    records: tf.data.Dataset,
    cache: str,
    step: Callable[[tf.Tensor], dict],
    decode: Callable[[dict], dict] | None,
    plan: InputPlan,
    cfg: InputConfig,
    training: bool,
    det: bool,
) -> tf.data.Dataset:
    """Decode and cache tiles; balance, shuffle and batch after the cache."""
    decoded = records.batch(cfg.batch_size).map(_plain(step), **_parallel(cfg, det)).unbatch()
    if decode is not None:
        decoded = decoded.map(_plain(decode), **_parallel(cfg, det))
    decoded = decoded.cache(cache)
    decoded = _balance_and_shuffle(decoded, plan, cfg, training, lambda e: e["positive"] > 0)
    return _batch(decoded, cfg, training, det)


def _per_tile(
    batches: tf.data.Dataset,
    steps: list[Callable[..., tuple]],
    cfg: InputConfig,
    training: bool,
    det: bool,
) -> tf.data.Dataset:
    """Run ``steps`` on each ``(element, seed)`` of the batches, in one parallel map.

    The TensorFlow decoding (JPEG, raw, served batches) and the TensorFlow
    augmentation engine work tile by tile.
    """
    tiles = batches.unbatch().map(_plain(_chain(steps)), **_parallel(cfg, det))
    return _batch(tiles, cfg, training, det)


def _map_batches(
    batches: tf.data.Dataset, steps: list[Callable[..., tuple]], cfg: InputConfig, det: bool
) -> tf.data.Dataset:
    """Run ``steps`` one after the other on each batch, in one parallel map."""
    return batches.map(_plain(_chain(steps)), **_parallel(cfg, det)) if steps else batches


def _chain(steps: list[Callable[..., tuple]]) -> Callable[..., tuple]:
    """One function of ``steps``: each takes the tuple that the one before returned."""

    def run(*values: Any) -> tuple:
        for one in steps:
            values = one(*values)
        return values

    return run


def _batch(ds: tf.data.Dataset, cfg: InputConfig, training: bool, det: bool) -> tf.data.Dataset:
    """Batches of decoded tiles; training batches are always full."""
    return ds.batch(cfg.batch_size, drop_remainder=training, **_parallel(cfg, det))


def _parallel(cfg: InputConfig, det: bool) -> dict[str, Any]:
    return {"num_parallel_calls": cfg.parallel_calls or tf.data.AUTOTUNE, "deterministic": det}


def _balance_and_shuffle(
    ds: tf.data.Dataset,
    plan: InputPlan,
    cfg: InputConfig,
    training: bool,
    is_positive: Callable[[Any], tf.Tensor],
) -> tf.data.Dataset:
    """Resample to the planned class balance, then shuffle (training) by ``shuffle_buffer``."""
    if plan.balance is not None:
        # Per-element seeds; validation's are fixed (the same subset every epoch).
        seeds = batch_seeds(cfg.seed + _BALANCE_SALT, 1, redrawn=training).unbatch()
        ds = balance.resample(ds, plan.balance, is_positive, seeds)
    if training and cfg.shuffle_buffer > 0:
        ds = ds.shuffle(cfg.shuffle_buffer, seed=cfg.seed)
    return ds


def _known_batches(plan: InputPlan, cfg: InputConfig, training: bool) -> int | None:
    """Batches per epoch when fixed: not with balancing, skipped records or the service."""
    if plan.balance is not None or cfg.skip_corrupt or (training and cfg.service):
        return None
    if training:
        return plan.num_records // cfg.batch_size
    return -(-plan.num_records // cfg.batch_size)


def _options(cfg: InputConfig, deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    if cfg.prefetch == 0:
        # prefetch: 0 means none; tf.data would otherwise inject one on its own.
        options.experimental_optimization.inject_prefetch = False
    if cfg.ram_budget_mb is not None:
        options.autotune.ram_budget = cfg.ram_budget_mb * 2**20
    if cfg.private_threadpool_size is not None:
        options.threading.private_threadpool_size = cfg.private_threadpool_size
    return options
