"""``load()``: records folder in, ``tf.data.Dataset`` of ``uint8`` batches out.

Training pipeline, one epoch (every random choice drawn from the epoch's key)::

    shard list, shuffled ─▶ interleave(TFRecordDataset, parallel) ─▶ [balance | weights]
      ─▶ shuffle(serialized records) ─▶ batch ─▶ + the tiles' seeds ─▶ [skip]
      ─▶ parse_example, draw the batch's augmentation ─▶ unbatch
      ─▶ map(decode, augment; parallel) ─▶ batch ─▶ [MixUp / CutMix]
      ─▶ [tf.data service] ─▶ prefetch

Everything is TensorFlow ops: no Python runs inside the graph, so the
iterator can be saved and restored with ``tf.train.Checkpoint``, the whole
graph runs on tf.data service workers, and a process can stop reading at any
moment and exit (nothing in flight waits for the interpreter).

Epochs (:func:`tfpipe.data.seeds.epoch_keys`): without ``repeat`` the
dataset is one epoch, and every new iteration (each Keras epoch) reshuffles
and redraws augmentation. With ``repeat`` it is one endless stream of epochs
0, 1, 2, … in which epoch ``e`` depends on ``(seed, e)`` only, so
``start_step`` can rebuild the stream from any batch, skipping the batches
before it as serialized records (cheap: nothing is parsed or decoded).

With ``cache`` the decoded tiles are cached and the shuffle, balance and
augmentation move after the cache (so every epoch still differs). Validation
reads the shards in manifest order with no shuffle and no augmentation
(center crop to ``image_size``), deterministically.

Training batches are always full (``drop_remainder=True`` within each
epoch); validation keeps the last partial batch.

Reproducibility: with ``deterministic=True`` the batches are a pure function
of the seed (and, with ``repeat``, of the epoch): the same on every run and
machine. With ``deterministic=False`` (the default, faster) the parallel
stages hand out elements as they finish, so the *set* of tiles in an epoch
and each tile's augmentation stay the same but their order into batches can
differ from run to run.

Example:
    >>> train = load("records/kidney", folds=[1, 2, 3], batch_size=16)   # doctest: +SKIP
    >>> val = load("records/kidney", folds=[0], training=False)          # doctest: +SKIP
    >>> model.fit(train, validation_data=val, epochs=5)                  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tensorflow as tf

from tfpipe.config import InputConfig
from tfpipe.data import balance, service, weighting
from tfpipe.data.decode import decode_element, parse_batch, positive_fraction
from tfpipe.data.extra import add_extra_records, read_extra_manifests
from tfpipe.data.finish import Finisher
from tfpipe.data.mix import Mixer
from tfpipe.data.plan import InputPlan, cache_target, plan_input, resolve_config
from tfpipe.data.seeds import batch_seeds, epoch_key, epoch_keys, with_seeds
from tfpipe.data.shards import read_shard_files, read_shards
from tfpipe.errors import ConfigError, RecordsError
from tfpipe.records.format import SOURCE_ID
from tfpipe.records.manifest import Manifest, read_manifest

# Functions handed to tf.data are plain graph code (explicit tf.cond, no Python
# control flow on tensors); skipping AutoGraph's source conversion saves seconds
# per load() call.
_plain = tf.autograph.experimental.do_not_convert

# Salts keep the seeds of independent random streams apart.
_AUGMENT_SALT = 104729
_BALANCE_SALT = 1299709
_SHUFFLE_SALT = 15485863
_WEIGHT_SALT = 32452843
# Key of the tiles' seeds in a parsed batch, for MixUp / CutMix.
_MIX_SEEDS = "tfpipe/mix_seeds"


def load(
    records_dir: str | Path,
    *,
    folds: int | list[int] | None = None,
    training: bool = True,
    config: InputConfig | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    with_ids: bool = False,
    repeat: bool = False,
    start_step: int = 0,
    background_channel: bool = False,
    **overrides: Any,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of ``uint8`` batches from a records folder.

    Segmentation records give ``(image uint8 [B,H,W,C], mask uint8 [B,H,W,1])``;
    classification records give ``(image uint8 [B,H,W,C], labels float32 [B,K])``;
    the task comes from ``manifest.json``. Records with several ``mask_classes``
    (K, from the manifest) give one-hot masks ``uint8 [B,H,W,K]`` (channel k-1 is
    class k), ``[B,H,W,K+1]`` with ``background_channel``; an ignored pixel (mask
    value 255) is 255 in every channel. With ``augment.mixup_p > 0`` training
    masks are float32 soft masks in ``[0, 1]`` (MixUp blends them; its blended
    images are rounded back to ``uint8``); CutMix alone keeps ``uint8`` masks
    (:mod:`tfpipe.data.mix`). Feed it to ``model.fit`` directly (put
    :class:`tfpipe.data.Normalize` first in the model). With
    ``augment.colour_in_model`` the colour ops are left to the model: put
    ``tfpipe.data.Augment(config.augment.model_ops())`` before ``Normalize``.
    Nothing global is changed: no Keras policy, no TF seed.

    Args:
        records_dir: Folder written by ``tfpipe build-records``.
        folds: Fold ids to read (an int or a list); None reads all folds.
        training: True: shuffled, augmented, balanced by ``balance``, full batches,
            through the tf.data service when ``service`` is set, with every record of
            ``extra_records`` mixed in (:mod:`tfpipe.data.extra`). False: manifest
            order, center crop, ``val_balance``, deterministic, always local, the
            main folder only.
        config: The ``input`` section of an experiment; default ``InputConfig()``.
        batch_size: Overrides ``config.batch_size``.
        seed: Overrides ``config.seed``.
        with_ids: Add a third element, the ``[B]`` string ``image/source_id`` of
            every tile (to inspect order and provenance; not for ``fit``).
        repeat: One endless stream of epochs 0, 1, 2, … instead of one epoch per
            iteration. Epoch ``e`` is a pure function of ``(seed, e)`` (with
            ``deterministic=True``), so a stream can be rebuilt from any step:
            give ``model.fit`` a ``steps_per_epoch``.
        start_step: With ``repeat``, start at this batch of the stream (resume
            after an interruption): the batches before it are skipped as
            serialized records, never parsed, decoded or augmented.
        background_channel: Segmentation masks get a background channel first
            (what a softmax head with K + 1 outputs trains on); binary records then
            give ``[B,H,W,2]``. Default: K channels, binary masks as stored.
        **overrides: Any other ``InputConfig`` field, e.g. ``shuffle_buffer=1024``
            or ``augment={"flip": True, "hue": 0.02}``.

    Returns:
        The dataset; one iteration is one epoch (without ``repeat``).

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
    if start_step < 0 or (start_step and not repeat):
        raise ConfigError(
            "start_step counts batches of a repeated stream: it needs repeat=True and "
            f"must be >= 0; got start_step={start_step}, repeat={repeat}"
        )
    manifest = read_manifest(records_dir)
    fold_list = [folds] if isinstance(folds, int) else folds
    plan = plan_input(manifest, fold_list, cfg, training)
    if training and cfg.extra_records:
        extras = read_extra_manifests(manifest, cfg.extra_records)
        plan = add_extra_records(plan, manifest, extras, cfg)
    return build_dataset(plan, cfg, training, with_ids, repeat, start_step, background_channel)


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
    plan: InputPlan,
    cfg: InputConfig,
    training: bool,
    with_ids: bool = False,
    repeat: bool = False,
    start_step: int = 0,
    background_channel: bool = False,
) -> tf.data.Dataset:
    """Assemble the tf.data graph for a validated plan (see the module docstring)."""
    det = cfg.deterministic if training else True
    per_epoch = _known_batches(plan, cfg, training)
    first_epoch, skip = _start(start_step, per_epoch) if repeat else (None, 0)
    keys = epoch_keys(cfg.seed, redrawn=training, first_epoch=first_epoch)
    cache = cache_target(plan, cfg, training)
    tiles = None if cache is None else _decoded_tiles(plan, cfg, cache)

    def one_epoch(key: tf.Tensor, skip_batches: int = 0) -> tf.data.Dataset:
        """The epoch's batches of serialized records (or cached tiles), with their seeds,
        from batch ``skip_batches`` on."""
        skipped = skip_batches * cfg.batch_size
        cached = tiles is not None
        source = tiles if cached else read_shards(plan.shards, cfg, training, key)
        items = _balance_and_shuffle(source, plan, cfg, training, key, cached, skipped)
        batches = items.batch(cfg.batch_size, drop_remainder=training)
        salt = _salt(key, _AUGMENT_SALT)
        return with_seeds(batches, salt, cfg.batch_size, training, first=skip_batches)

    if training and cfg.service and tiles is None:
        batches = _served_epoch(plan, cfg, repeat)
    elif skip and per_epoch is not None:
        # Resuming inside an epoch of known length: its first records are dropped as they
        # are read, whole shuffle blocks before the shuffle (never parsed or decoded).
        first = one_epoch(epoch_key(cfg.seed, first_epoch), skip)
        later = epoch_keys(cfg.seed, redrawn=training, first_epoch=first_epoch + 1)
        batches = first.concatenate(later.flat_map(_plain(one_epoch)))
    else:
        batches = keys.flat_map(_plain(one_epoch))
        if skip:
            # Before anything is parsed or decoded: a resumed run pays for reading only.
            batches = batches.skip(skip)
    layout = plan.layout
    finish = Finisher(plan, cfg, training, with_ids, background=background_channel)
    id_key = "id" if tiles is not None else SOURCE_ID
    mixer = Mixer(cfg.augment, layout.task == "segmentation")
    mixing = training and mixer.on

    def prepare(batch: Any, seeds: tf.Tensor) -> Any:
        """Parse a batch of records; draw its augmentation (a batch at a time: fewer ops)."""
        batch = batch if tiles is not None else parse_batch(batch, layout)
        if mixing:
            # The tiles carry their seeds to the mix after the final batch.
            batch = {**batch, _MIX_SEEDS: seeds}
        return (batch, finish.draw(batch[id_key], seeds)) if finish.augmenting else batch

    def tile(element: dict[str, tf.Tensor], params: Any = None) -> tuple[tf.Tensor, ...]:
        out = finish(element if tiles is not None else decode_element(element, layout), params)
        return (*out, element[_MIX_SEEDS]) if mixing else out

    batches = batches.map(_plain(prepare))
    out = batches.unbatch().map(_plain(tile), **_parallel(cfg, det))
    out = out.batch(cfg.batch_size, drop_remainder=training, **_parallel(cfg, det))
    if mixing:
        out = out.map(_plain(mixer), **_parallel(cfg, det))
    out = out.with_options(_options(cfg, det))
    if training and cfg.service:
        out = service.distribute(out, cfg.service, cfg.service_job_name)
    if per_epoch is not None and not repeat:
        # Keras then knows the epoch length (progress bar, no "ran out of data" warning).
        out = out.apply(tf.data.experimental.assert_cardinality(per_epoch))
    if cfg.prefetch != 0:
        out = out.prefetch(cfg.prefetch or tf.data.AUTOTUNE)
    return out


def _served_epoch(plan: InputPlan, cfg: InputConfig, repeat: bool) -> tf.data.Dataset:
    """One epoch (or, with ``repeat``, endless epochs) for tf.data service workers.

    In ``distributed_epoch`` mode the dispatcher splits the graph's first
    source among the workers; a keyed epoch (a ``flat_map`` over epoch keys)
    would have every worker read every shard. Here the shards are that
    source, each read from its first record, the record shuffle is
    ``Dataset.shuffle`` (redrawn each iteration) and the tiles' seeds come from
    a stateful draw per batch: served order is not reproducible anyway
    (workers hand out batches as they finish), so neither are the draws.
    ``repeat`` repeats inside the served graph, after the shuffle: each pass
    is shuffled anew, where a client-side ``repeat()`` of the served dataset
    would start the same seeded graph again and replay the first epoch's order.
    """
    files = tf.data.Dataset.from_tensor_slices(
        (list(plan.shards.paths), tf.constant(plan.shards.counts, tf.int64))
    )
    records = read_shard_files(files, plan.shards, cfg, training=True)
    if plan.balance is not None:
        seeds = tf.data.Dataset.random(seed=cfg.seed + _BALANCE_SALT).batch(2)
        records = balance.resample(records, plan.balance, _positive_record, seeds)
    if plan.weighting is not None:
        seeds = tf.data.Dataset.random(seed=cfg.seed + _WEIGHT_SALT).batch(2)
        records = weighting.resample(records, plan.weighting, weighting.record_weight, seeds)
    if cfg.shuffle_buffer > 0:
        records = records.shuffle(cfg.shuffle_buffer, seed=cfg.seed)
    if repeat:
        records = records.repeat()
    batches = records.batch(cfg.batch_size, drop_remainder=True)
    size = cfg.batch_size

    def with_drawn_seeds(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        key = tf.random.uniform([], maxval=tf.int64.max, dtype=tf.int64)
        return serialized, tf.stack([tf.fill([size], key), tf.range(size, dtype=tf.int64)], 1)

    return batches.map(_plain(with_drawn_seeds))


def _start(start_step: int, per_epoch: int | None) -> tuple[int, int]:
    """``(first epoch, batches to skip in it)`` for a stream that starts at ``start_step``.

    When the epoch length is not fixed (balancing, skipped records), the
    stream starts at epoch 0 and skips whole epochs too, still unparsed.
    """
    if per_epoch is None:
        return 0, start_step
    return start_step // per_epoch, start_step % per_epoch


def _decoded_tiles(plan: InputPlan, cfg: InputConfig, cache: str) -> tf.data.Dataset:
    """Every tile of the plan, decoded once, in manifest order, cached (memory or file)."""
    records = read_shards(plan.shards, cfg, False, tf.constant(0, tf.int64))
    weighted = plan.weighting is not None

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        features = parse_batch(serialized, plan.layout)
        if weighted:  # weighted sampling runs after the cache: the tiles keep their weights
            features["weight"] = weighting.record_weights(serialized)
        return features

    def decode(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        element = decode_element(features, plan.layout)
        return {**element, "weight": features["weight"]} if weighted else element

    parsed = records.batch(cfg.batch_size).map(_plain(parse))
    decoded = parsed.unbatch().map(_plain(decode), **_parallel(cfg, True))
    return decoded.cache(cache)


def _positive_record(record: tf.Tensor) -> tf.Tensor:
    return positive_fraction(record) > 0


def _positive_tile(element: dict[str, tf.Tensor]) -> tf.Tensor:
    return element["positive"] > 0


def _tile_weight(element: dict[str, tf.Tensor]) -> tf.Tensor:
    return element["weight"]


def _salt(key: tf.Tensor, salt: int) -> tf.Tensor:
    """The key of one random stream of an epoch (seeds are hashed again before use)."""
    return tf.bitwise.bitwise_xor(tf.cast(key, tf.int64), tf.constant(salt, tf.int64))


def _parallel(cfg: InputConfig, det: bool) -> dict[str, Any]:
    return {"num_parallel_calls": cfg.parallel_calls or tf.data.AUTOTUNE, "deterministic": det}


def _balance_and_shuffle(
    ds: tf.data.Dataset,
    plan: InputPlan,
    cfg: InputConfig,
    training: bool,
    key: tf.Tensor,
    cached: bool,
    skip: int = 0,
) -> tf.data.Dataset:
    """Resample to the planned class balance or tile weights, then shuffle (training).

    ``cached``: the elements are decoded tiles (after a cache), not serialized records.
    ``skip``: drop the first ``skip`` elements of the result; whole shuffle blocks are
    dropped before the shuffle, at the cost of reading them.
    """
    if plan.balance is not None:
        # Per-element seeds; validation's key is fixed (the same subset every epoch).
        seeds = batch_seeds(_salt(key, _BALANCE_SALT), 1).unbatch()
        is_positive = _positive_tile if cached else _positive_record
        ds = balance.resample(ds, plan.balance, is_positive, seeds)
    if plan.weighting is not None:
        seeds = batch_seeds(_salt(key, _WEIGHT_SALT), 1).unbatch()
        weight_of = _tile_weight if cached else weighting.record_weight
        ds = weighting.resample(ds, plan.weighting, weight_of, seeds)
    if training and cfg.shuffle_buffer > 0:
        blocks = skip // cfg.shuffle_buffer
        if blocks:
            ds = ds.skip(blocks * cfg.shuffle_buffer)
        ds = shuffle_blocks(ds, cfg.shuffle_buffer, _salt(key, _SHUFFLE_SALT), blocks)
        skip -= blocks * cfg.shuffle_buffer
    return ds.skip(skip) if skip else ds


def shuffle_blocks(
    ds: tf.data.Dataset, size: int, key: tf.Tensor, first_block: int = 0
) -> tf.data.Dataset:
    """Permute each block of ``size`` consecutive elements, statelessly, from ``key``.

    ``first_block``: ``ds`` starts at that block of its epoch (the blocks before it
    were skipped), so the blocks get the permutations of their places.

    Why not ``Dataset.shuffle``: inside the per-epoch function it adds a seed
    generator op, a stateful op that makes the iterator impossible to
    checkpoint (``FailedPreconditionError: DummySeedGenerator is stateful``).
    A permutation per block is a pure function of the key, so an epoch is
    rebuilt exactly after a restart; like a shuffle buffer it holds ``size``
    elements, and it moves each one anywhere within its block. Elements leave
    the block one at a time in permuted order. A ``tf.gather`` of the whole
    block held a second copy of it (128 MB of raw 256-px records at ``size``
    512): over 10 epochs, RSS growth of 5 fresh processes each was -6 to +15 %
    (median 9 %) with it, -2 to +10 % (median 0.6 %) one at a time, and 1 to
    17 % moving 8 or 32 at a time, for the same CPU within noise.

    Example:
        >>> ds = shuffle_blocks(tf.data.Dataset.range(8), 4, tf.constant(1, tf.int64))
        >>> sorted(int(x) for x in ds.take(4))
        [0, 1, 2, 3]
    """

    def permuted(block: Any, index: tf.Tensor) -> tf.data.Dataset:
        n = tf.shape(tf.nest.flatten(block)[0])[0]
        seed = tf.stack([tf.cast(key, tf.int64), index])
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=seed)
        take = _plain(lambda i: tf.nest.map_structure(lambda x: x[i], block))
        return tf.data.Dataset.from_tensor_slices(order).map(take)

    blocks = tf.data.Dataset.zip(ds.batch(size), tf.data.Dataset.counter(first_block))
    return blocks.flat_map(_plain(permuted))


def _known_batches(plan: InputPlan, cfg: InputConfig, training: bool) -> int | None:
    """Batches per epoch when fixed: not with balancing, weights, skipped records or the service."""
    if plan.balance is not None or plan.weighting is not None:
        return None
    if cfg.skip_corrupt or (training and cfg.service):
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
