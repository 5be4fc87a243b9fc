"""``manifest.json``: what a records folder holds, and the proof it is intact.

Written last by ``build-records`` (inside the temporary folder, before the
atomic rename) and read by every later stage: ``tfpipe.data`` selects shards
by fold from it, ``inspect-records`` verifies the sha256 of every shard.

Example:
    >>> from tfpipe.records.manifest import read_manifest
    >>> m = read_manifest("records/kidney")            # doctest: +SKIP
    >>> m.shards_for_folds([1, 2, 3])[:1]               # doctest: +SKIP
    [PosixPath('records/kidney/fold1-00000-of-00002.tfrecord')]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tfpipe.errors import RecordsError
from tfpipe.records.format import MANIFEST_NAME, RECORDS_FORMAT_VERSION


@dataclass
class ShardInfo:
    """One shard file: its fold, record count, size and checksum."""

    path: str  # relative to the records folder
    fold: int
    records: int
    bytes: int
    sha256: str


@dataclass
class SourceStats:
    """What the ETL did with one source image."""

    fold: int
    tiles_total: int = 0
    kept: int = 0
    dropped_background: int = 0
    dropped_empty: int = 0
    positive: int = 0
    seconds: float = 0.0
    weight_sum: float = 0.0
    """Sum of the kept tiles' ``tile/weight`` (``data.sampling.anatomy``); 0: no weights."""


@dataclass
class Manifest:
    """The parsed ``manifest.json`` of one records folder."""

    root: Path
    task: str  # "segmentation", "classification" or "unlabelled" (no mask key)
    tile_height: int
    tile_width: int
    channels: int
    encoding: str
    compression: str
    num_folds: int
    shards: list[ShardInfo]
    sources: dict[str, SourceStats]
    class_names: list[str] = field(default_factory=list)
    mask_classes: list[str] | None = None
    """Segmentation class names, mask value k = ``mask_classes[k-1]``; None (the key
    absent from the file): binary masks, one class."""
    config: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    format_version: int = RECORDS_FORMAT_VERSION
    tfpipe_version: str = ""
    created: str = ""

    @property
    def num_records(self) -> int:
        return sum(s.records for s in self.shards)

    @property
    def folds(self) -> list[int]:
        """Fold ids that hold at least one shard, sorted."""
        return sorted({s.fold for s in self.shards})

    def fold_sources(self, fold: int) -> list[str]:
        """Source image ids assigned to ``fold``."""
        return sorted(k for k, v in self.sources.items() if v.fold == fold)

    def records_in_folds(self, folds: list[int]) -> int:
        return sum(s.records for s in self.shards if s.fold in folds)

    def shards_for_folds(self, folds: list[int] | None = None) -> list[Path]:
        """Absolute shard paths of the given folds (all folds when None).

        Raises:
            RecordsError: a requested fold does not exist in this dataset.
        """
        if folds is not None:
            missing = sorted(set(folds) - set(range(self.num_folds)))
            if missing:
                raise RecordsError(
                    f"fold {missing[0]} does not exist in {self.root}: "
                    f"it has folds 0..{self.num_folds - 1}"
                )
        return [self.root / s.path for s in self.shards if folds is None or s.fold in set(folds)]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("root")
        if d["mask_classes"] is None:  # binary records: the file as before the key existed
            d.pop("mask_classes")
        for source in d["sources"].values():
            if not source["weight_sum"]:  # records without tile/weight: the file as before
                source.pop("weight_sum")
        return d


def read_manifest(root: str | Path) -> Manifest:
    """Load ``<root>/manifest.json``.

    Raises:
        RecordsError: the folder or manifest is missing, unreadable, or written by a
            newer format version than this tfpipe understands.
    """
    root = Path(root)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise RecordsError(f"records folder not found: {root} (run `tfpipe build-records` first)")
    if not path.is_file():
        raise RecordsError(f"{path} is missing: {root} is not a complete records folder")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RecordsError(f"cannot read {path}: {err}") from None
    version = raw.get("format_version")
    if not isinstance(version, int) or version > RECORDS_FORMAT_VERSION:
        raise RecordsError(
            f"{path} has format_version={version!r}; this tfpipe reads versions "
            f"<= {RECORDS_FORMAT_VERSION} (upgrade tfpipe)"
        )
    try:
        shards = [ShardInfo(**s) for s in raw.pop("shards")]
        sources = {k: SourceStats(**v) for k, v in raw.pop("sources").items()}
        return Manifest(root=root, shards=shards, sources=sources, **raw)
    except (KeyError, TypeError) as err:
        raise RecordsError(f"{path} is malformed: {err}") from None


def write_manifest(manifest: Manifest, root: str | Path | None = None) -> Path:
    """Write ``manifest.json`` into ``root`` (default ``manifest.root``)."""
    path = Path(root or manifest.root) / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n")
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Streaming sha256 of a file (shards can be GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_shards(manifest: Manifest) -> list[str]:
    """Check every shard's size and sha256; return one message per problem (empty = intact)."""
    problems = []
    for s in manifest.shards:
        p = manifest.root / s.path
        if not p.is_file():
            problems.append(f"{p}: missing")
        elif p.stat().st_size != s.bytes:
            problems.append(f"{p}: {p.stat().st_size} bytes, manifest says {s.bytes}")
        elif sha256_file(p) != s.sha256:
            problems.append(f"{p}: sha256 differs from the manifest (corrupt)")
    return problems
