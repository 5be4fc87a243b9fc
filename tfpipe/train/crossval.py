"""Cross-validation by source image: which folds to train, and what each one reads.

``build-records`` assigns whole source images (slides, patients) to folds, so
training on every fold but K and validating on K never shows the model a
tile of a validation image. ``train.folds`` (or ``--fold K``) picks the
validation folds to run; ``all`` runs every fold of the records.

Example:
    >>> plan = plan_folds(exp)                       # doctest: +SKIP
    >>> plan.folds, plan.split(0)                    # doctest: +SKIP
    ([0, 1, 2, 3], ([1, 2, 3], [0]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tfpipe.config import Experiment
from tfpipe.errors import ConfigError
from tfpipe.records.manifest import Manifest, read_manifest


@dataclass
class FoldPlan:
    """The records of an experiment and the validation folds to train."""

    records: Path
    manifest: Manifest
    folds: list[int]

    def split(self, fold: int) -> tuple[list[int], list[int]]:
        """``(train folds, validation folds)`` for validation fold ``fold``."""
        from tfpipe.data import split_folds

        return split_folds(self.manifest, fold)

    def train_records(self, fold: int) -> int:
        """Records in the training folds of ``fold``."""
        return self.manifest.records_in_folds(self.split(fold)[0])

    def steps_per_epoch(self, fold: int, global_batch: int, requested: int | None) -> int:
        """``requested``, or one pass over the training folds in full batches (at least 1)."""
        if requested is not None:
            return requested
        return max(1, self.train_records(fold) // global_batch)


def select_folds(
    available: Sequence[int], requested: Sequence[int] | str | None, where: str
) -> list[int]:
    """The validation folds to run, checked against the records' folds.

    Args:
        available: Fold ids present in the records.
        requested: ``"all"``/None, or fold ids (``train.folds`` or ``--fold``).
        where: Where the request came from, for the error message.

    Raises:
        ConfigError: a requested fold is not in the records, or there are fewer
            than two folds (nothing to validate on).

    Example:
        >>> select_folds([0, 1, 2, 3], [2], "--fold")
        [2]
    """
    available = sorted(available)
    if len(available) < 2:
        raise ConfigError(
            f"cross-validation needs records with at least 2 folds; the records have "
            f"{len(available)} (set data.folds >= 2 and rebuild the records)"
        )
    if requested is None or requested == "all":
        return available
    chosen = sorted(set(int(f) for f in requested))
    missing = [f for f in chosen if f not in available]
    if missing:
        raise ConfigError(
            f"fold {missing[0]} does not exist: the records have folds {available}; "
            f"got {where}={list(requested)}"
        )
    return chosen


def plan_folds(exp: Experiment, folds: Sequence[int] | None = None) -> FoldPlan:
    """Read the experiment's records manifest and choose the folds to train.

    Args:
        exp: The experiment; its records are ``data.output``.
        folds: ``--fold`` values; None uses ``train.folds``.

    Raises:
        RecordsError: the records folder or manifest is missing.
        ConfigError: a fold does not exist.
    """
    manifest = read_manifest(exp.data.output)
    where = "--fold" if folds else f"train.folds in {exp.source_path or '<defaults>'}"
    chosen = select_folds(manifest.folds, folds if folds else exp.train.folds, where)
    return FoldPlan(records=Path(exp.data.output), manifest=manifest, folds=chosen)
