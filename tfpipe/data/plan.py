"""Check a ``load()`` request (settings, then records) before any tf.data work.

:func:`resolve_config` merges keyword overrides into an ``InputConfig`` and
validates them; :func:`plan_input` checks the request against the manifest.

Everything a user can get wrong (a fold that does not exist, a batch larger
than the data, an output size larger than the tiles, settings that do not fit
the task) fails here with a :class:`~tfpipe.errors.TfpipeError` that names the
records folder, the setting and both values, instead of surfacing later as a
TensorFlow shape error inside ``model.fit``.

Example:
    >>> plan = plan_input(read_manifest("records/kidney"), [1, 2, 3], InputConfig(), True)
    ... # doctest: +SKIP
    >>> plan.num_records, plan.size                                  # doctest: +SKIP
    (5312, 256)
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from pydantic import ValidationError

from tfpipe.config import InputConfig, format_validation_error
from tfpipe.data.balance import BalancePlan, count_positives, plan_balance
from tfpipe.data.decode import TileLayout
from tfpipe.data.shards import ShardSet, check_shard_files
from tfpipe.data.weighting import WeightPlan, plan_weights
from tfpipe.errors import ConfigError, RecordsError
from tfpipe.records.manifest import Manifest


@dataclass(frozen=True)
class InputPlan:
    """What one ``load()`` call will read and produce.

    Attributes:
        root: The records folder.
        folds: Selected folds, sorted.
        shards: Shard files, counts and compression.
        layout: Tile shape, encoding and task.
        size: Output side in pixels.
        balance: Class sampling, or None for the natural distribution.
        cache_key: Identifies (records build, folds, split) for cache file names.
        weighting: Sampling by ``tile/weight`` (``input.weighted``, training), or None.
    """

    root: Path
    folds: list[int]
    shards: ShardSet
    layout: TileLayout
    size: int
    balance: BalancePlan | None
    cache_key: str
    weighting: WeightPlan | None = None

    @property
    def num_records(self) -> int:
        return self.shards.num_records

    @property
    def where(self) -> str:
        return f"{self.root} (folds {self.folds})"


def plan_input(
    manifest: Manifest, folds: list[int] | None, cfg: InputConfig, training: bool
) -> InputPlan:
    """Validate a request and resolve it into an :class:`InputPlan`.

    Raises:
        RecordsError: a fold does not exist, a shard is missing or damaged.
        ConfigError: a setting does not fit these records (named with both values).
    """
    selected = sorted(set(manifest.folds if folds is None else folds))
    paths = manifest.shards_for_folds(selected)  # raises for folds that do not exist
    infos = [s for s in manifest.shards if s.fold in set(selected)]
    shards = ShardSet(
        paths=tuple(str(p) for p in paths),
        counts=tuple(s.records for s in infos),
        sizes=tuple(s.bytes for s in infos),
        compression=manifest.compression,
    )
    for problem in check_shard_files(shards, cfg.skip_corrupt):
        warnings.warn(f"{problem}; its readable records are used (skip_corrupt)", stacklevel=3)
    layout = TileLayout.from_manifest(manifest)
    where = f"{manifest.root} (folds {selected})"
    if shards.num_records == 0:
        raise RecordsError(f"{where} holds no records")
    size = _output_size(cfg, layout, where)
    _check_batch(cfg, shards.num_records, training, where)
    _check_augment(cfg, layout, training, where)
    if cfg.weighted and cfg.balance is not None and training:
        raise ConfigError(
            "input.weighted and input.balance both resample the training tiles; use one: "
            f"got weighted=true, balance={cfg.balance}"
        )
    target = cfg.balance if training else cfg.val_balance
    balance = None
    if target is not None:
        key = "balance" if training else "val_balance"
        if layout.task != "segmentation":
            raise ConfigError(
                f"input.{key} samples by mask coverage and needs segmentation records; "
                f"{manifest.root} holds {layout.task} records"
            )
        positives = count_positives(manifest, selected)
        balance = plan_balance(
            target, positives, shards.num_records, oversample=training, where=where
        )
    weights = None
    if cfg.weighted and training:
        weights = plan_weights(manifest, selected, shards.num_records, where)
    identity = f"{manifest.root.resolve()}|{manifest.created}|{selected}|{training}|{size}"
    if weights is not None:  # cached tiles then carry their weights
        identity += "|weighted"
    cache_key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return InputPlan(manifest.root, selected, shards, layout, size, balance, cache_key, weights)


def resolve_config(
    config: InputConfig | None,
    *,
    batch_size: int | None = None,
    seed: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> InputConfig:
    """``config`` (or the defaults) with keyword overrides applied and validated.

    Raises:
        ConfigError: an unknown setting name or an invalid value.

    Example:
        >>> resolve_config(None, batch_size=4, overrides={"shuffle_buffer": 64}).batch_size
        4
    """
    overrides = dict(overrides or {})
    fields = list(InputConfig.model_fields)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown input setting {unknown[0]!r} passed to tfpipe.data.load(); "
            f"valid settings: {', '.join(fields)}"
        )
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    if seed is not None:
        overrides["seed"] = seed
    values = (config or InputConfig()).model_dump()
    values.update(overrides)
    try:
        return InputConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "tfpipe.data.load() arguments")) from None


def cache_target(plan: InputPlan, cfg: InputConfig, training: bool) -> str | None:
    """``""`` for a memory cache, a file prefix for a file cache, None for no cache.

    Warns (``warnings.warn``) when the decoded tiles would not fit in the
    memory (or disk) that is free now.
    """
    if cfg.cache == "none":
        return None
    need = plan.num_records * plan.layout.tile_bytes
    if cfg.cache == "memory":
        free = psutil.virtual_memory().available
        if need > free:
            warnings.warn(
                f"input.cache=memory: the decoded tiles of {plan.where} need about "
                f"{need / 2**20:.0f} MiB ({plan.num_records} records x "
                f"{plan.layout.tile_bytes} bytes) but only {free / 2**20:.0f} MiB of RAM is "
                "available; use a file cache (input.cache: /fast/disk/prefix) or none",
                ResourceWarning,
                stacklevel=3,
            )
        return ""
    prefix = Path(cfg.cache)
    if not prefix.parent.is_dir():
        raise ConfigError(
            f"input.cache={str(cfg.cache)!r}: folder {prefix.parent} does not exist "
            "(the cache is a file path prefix)"
        )
    free = shutil.disk_usage(prefix.parent).free
    if need > free:
        warnings.warn(
            f"input.cache={cfg.cache}: the decoded tiles of {plan.where} need about "
            f"{need / 2**20:.0f} MiB but {prefix.parent} has {free / 2**20:.0f} MiB free",
            ResourceWarning,
            stacklevel=3,
        )
    split = "train" if training else "val"
    return f"{prefix}-{split}-{plan.cache_key}"


def _output_size(cfg: InputConfig, layout: TileLayout, where: str) -> int:
    smallest = min(layout.height, layout.width)
    if cfg.image_size is None:
        if layout.height != layout.width:
            # Square output keeps rot90 and batching simple; the crop is central.
            return smallest
        return layout.height
    if cfg.image_size > smallest:
        raise ConfigError(
            f"input.image_size must be at most the tile size; got image_size="
            f"{cfg.image_size} for {layout.height}x{layout.width} tiles in {where}"
        )
    return cfg.image_size


def _check_batch(cfg: InputConfig, records: int, training: bool, where: str) -> None:
    if training and cfg.batch_size > records:
        raise ConfigError(
            f"input.batch_size must not exceed the training records (full batches only); "
            f"got batch_size={cfg.batch_size} but {where} holds {records} records"
        )


def _check_augment(cfg: InputConfig, layout: TileLayout, training: bool, where: str) -> None:
    aug = cfg.augment
    if training and layout.channels != 3 and (aug.hue > 0 or aug.saturation > 0):
        raise ConfigError(
            f"input.augment.hue and .saturation need RGB tiles; got hue={aug.hue}, "
            f"saturation={aug.saturation} for {layout.channels}-channel tiles in {where}"
        )
