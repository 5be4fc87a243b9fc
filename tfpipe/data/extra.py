"""Extra training records: more records folders mixed into every training fold.

``input.extra_records: [DIR, ...]`` (pseudo-labelled records, for example:
:mod:`tfpipe.records.pseudo`) adds every shard of each folder to a *training*
``load()``. Their records enter the same shard interleave, shuffle and
batches as the main folder's training folds, so a batch mixes both. A
validation ``load()`` never reads them, and the folds (cross-validation by
source image) come from the main records folder alone, so the validation
score stays a score on labelled slides.

Checked before any tf.data work, each a :class:`~tfpipe.errors.ConfigError`
naming both folders:

* the same tile layout (task, tile size, channels, encoding), compression
  and mask classes as the main records (one graph parses every record);
* not the main folder itself, and no source image in both: a validation
  slide that was also pseudo-labelled would put its own pixels into training.

``input.balance`` counts the positive tiles of the extra records too.

Example:
    >>> cfg = InputConfig(extra_records=["records/kidney-pl"])  # doctest: +SKIP
    >>> load("records/kidney", folds=[1, 2, 3], config=cfg)     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from tfpipe.config import InputConfig
from tfpipe.data.balance import count_positives, plan_balance
from tfpipe.data.decode import TileLayout
from tfpipe.data.plan import InputPlan
from tfpipe.data.shards import ShardSet, check_shard_files
from tfpipe.errors import ConfigError
from tfpipe.records.manifest import Manifest, read_manifest


def read_extra_manifests(main: Manifest, extras: Sequence[str | Path]) -> list[Manifest]:
    """The manifests of ``extras``, each checked against the main records.

    Raises:
        RecordsError: an extra folder or its manifest is missing.
        ConfigError: a folder is the main one, shares a source image with it,
            or holds records of another layout (see the module notes).

    Example:
        >>> read_extra_manifests(read_manifest("records/kidney"), ["records/kidney-pl"])
        ... # doctest: +SKIP
        [Manifest(root=PosixPath('records/kidney-pl'), ...)]
    """
    manifests = []
    for root in extras:
        extra = read_manifest(root)
        check_compatible(main, extra)
        manifests.append(extra)
    return manifests


def check_compatible(main: Manifest, extra: Manifest) -> None:
    """Raise a ConfigError when ``extra`` cannot be mixed into ``main``'s training folds."""
    where = f"input.extra_records entry {extra.root} (main records: {main.root})"
    if Path(extra.root).resolve() == Path(main.root).resolve():
        raise ConfigError(
            f"{where} is the main records folder itself: its validation folds would be "
            "trained on; list only other folders in input.extra_records"
        )
    shared = sorted(set(main.sources) & set(extra.sources))
    if shared:
        raise ConfigError(
            f"{where} shares {len(shared)} source image(s) with the main records, e.g. "
            f"{shared[0]!r}: pseudo-label only slides outside the labelled set, or a "
            "validation slide leaks into training"
        )
    mine, theirs = _signature(main), _signature(extra)
    for key in mine:
        if mine[key] != theirs[key]:
            raise ConfigError(
                f"{where} must hold records like the main ones; got {key}={theirs[key]!r} "
                f"but the main records have {key}={mine[key]!r} (rebuild it with the same "
                "data settings)"
            )


def _signature(manifest: Manifest) -> dict[str, object]:
    layout = TileLayout.from_manifest(manifest)
    return {
        "task": layout.task,
        "tile size": (layout.height, layout.width),
        "channels": layout.channels,
        "encoding": layout.encoding,
        "compression": manifest.compression,
        "mask_classes": manifest.mask_classes,
    }


def add_extra_records(
    plan: InputPlan, main: Manifest, extras: list[Manifest], cfg: InputConfig
) -> InputPlan:
    """``plan`` (a training plan of ``main``) with every shard of ``extras`` added.

    The balance (``input.balance``) is planned again over all the records,
    and the cache key names the extra folders, so a file cache of labelled
    records alone is never reused for the mix.
    """
    if not extras:
        return plan
    paths, counts = list(plan.shards.paths), list(plan.shards.counts)
    sizes = list(plan.shards.sizes)
    positives = count_positives(main, plan.folds) if cfg.balance is not None else 0
    identity = [plan.cache_key]
    for extra in extras:
        shards = ShardSet(
            paths=tuple(str(p) for p in extra.shards_for_folds(None)),
            counts=tuple(s.records for s in extra.shards),
            sizes=tuple(s.bytes for s in extra.shards),
            compression=extra.compression,
        )
        for problem in check_shard_files(shards, cfg.skip_corrupt):
            warnings.warn(f"{problem}; its readable records are used (skip_corrupt)", stacklevel=3)
        paths += shards.paths
        counts += shards.counts
        sizes += shards.sizes
        if cfg.balance is not None:
            positives += count_positives(extra, extra.folds)
        identity.append(f"{Path(extra.root).resolve()}|{extra.created}")
    merged = ShardSet(tuple(paths), tuple(counts), tuple(sizes), plan.shards.compression)
    balance = plan.balance
    if cfg.balance is not None:
        where = f"{plan.where} with input.extra_records"
        balance = plan_balance(
            cfg.balance, positives, merged.num_records, oversample=True, where=where
        )
    key = hashlib.sha256("|".join(identity).encode()).hexdigest()[:12]
    return replace(plan, shards=merged, balance=balance, cache_key=key)


def extra_record_count(extras: Sequence[str | Path]) -> int:
    """Records in the extra folders (for steps per epoch); 0 when there are none.

    Example:
        >>> extra_record_count([])
        0
    """
    return sum(read_manifest(root).num_records for root in extras)
