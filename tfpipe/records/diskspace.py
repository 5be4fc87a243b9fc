"""Disk space for a build: an estimate up front, a check before the shards, a full disk as one line.

A build writes next to ``data.output``: spill files (the map stage's
encoded records), then the shards, which coexist with the spills until the
last shard is written, so it needs about twice the size of its records. The
checks here are cheap and only as exact as what is known when they run:

1. **Before the map stage** (:meth:`SpaceBudget.estimate`): planned tiles
   (every grid of ``data.sampling``, object tiles) times a typical record
   size for the encoding, twice. Background tiles are
   dropped later, so this is an upper estimate: too little space is a
   warning, not an error.
2. **Before the shards** (:meth:`SpaceBudget.check_shards`): the spill files'
   exact size is what uncompressed shards will take; less free space than
   that fails at once, before a shard is written.
3. **A full disk anyway** (ENOSPC or EDQUOT from a worker or the writer):
   :meth:`SpaceBudget.error` turns it into a one-line
   :class:`~tfpipe.errors.DiskFullError` naming the folder and the space needed.

The previous output is never touched by a failed build.

Example:
    >>> describe_bytes(3_400_000_000), describe_bytes(52_000_000), describe_bytes(20_000)
    ('3.4 GB', '52.0 MB', '20 kB')
"""

from __future__ import annotations

import errno
import warnings
from dataclasses import dataclass
from pathlib import Path
from shutil import disk_usage

from tfpipe.config import DataConfig
from tfpipe.errors import DiskFullError
from tfpipe.records.sampling import grid_rows
from tfpipe.records.sources import SourceItem, SourcePlan
from tfpipe.records.tiling import TileSpec

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# Typical encoded image size as a share of raw RGB bytes (tissue tiles, measured on demo data).
IMAGE_SHARE = {"raw": 1.0, "png": 0.6, "jpeg": 0.15}
RECORD_OVERHEAD = 256  # Example keys, ids, shape, framing
MANIFEST_MARGIN = 1 << 20


def describe_bytes(n: float) -> str:
    """``n`` bytes in GB or MB (one decimal), or in kB below 1 MB."""
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def is_disk_full(err: BaseException) -> bool:
    """True for an OSError saying the disk or the quota is full.

    Example:
        >>> is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
        True
    """
    return isinstance(err, OSError) and err.errno in DISK_FULL


def planned_tiles(item: SourceItem, offsets: tuple[int, ...], cfg: DataConfig) -> int:
    """Tiles of ``item`` before filtering: every grid cut (data.sampling) plus its object tiles."""
    spec = TileSpec.from_config(cfg)
    grids = sum(
        len(grid_rows(item.height, o, spec)) * len(grid_rows(item.width, o, spec)) for o in offsets
    )
    return grids + len(item.windows)


def record_bytes(cfg: DataConfig, masked: bool) -> int:
    """Typical bytes of one framed record under ``cfg``'s tile size and encoding."""
    side = cfg.tile_size // cfg.downscale
    image = side * side * 3 * IMAGE_SHARE[cfg.encoding]
    mask = 0 if not masked else side * side if cfg.encoding == "raw" else side * side // 16
    return int(image + mask) + RECORD_OVERHEAD


@dataclass
class SpaceBudget:
    """Free space next to the output and what the build is expected to need there."""

    output: Path
    free: int
    """Bytes free in the output's folder when the build started."""
    need: int = 0
    """Bytes the build is expected to need there (0 until estimated)."""

    @property
    def folder(self) -> Path:
        """Where the temporary folder (spills and shards) lives."""
        return self.output.parent

    @classmethod
    def measure(cls, output: Path) -> SpaceBudget:
        """Free space in ``output``'s folder now (the folder must exist)."""
        return cls(output, disk_usage(output.parent).free)

    def estimate(self, plan: SourcePlan, cfg: DataConfig) -> None:
        """Estimate the need from the sources; warn when the free space looks too small."""
        if plan.task == "classification":
            tiles = len(plan.items)
        else:
            tiles = sum(planned_tiles(it, plan.grid_offsets, cfg) for it in plan.items)
        self.need = 2 * tiles * record_bytes(cfg, masked=plan.task == "segmentation")
        if self.need > self.free:
            warnings.warn(
                f"{self.folder} has {describe_bytes(self.free)} free; building {self.output} "
                f"may need up to {describe_bytes(self.need)} there ({tiles} tiles if none were "
                "background, twice: spill files and shards coexist); it fails cleanly if the "
                "disk fills up",
                stacklevel=3,
            )

    def check_shards(self, spill_bytes: int, compression: str) -> None:
        """Fail before writing shards that cannot fit next to the spill files.

        Raises:
            DiskFullError: uncompressed shards (``spill_bytes``) exceed the free space.
        """
        self.need = 2 * spill_bytes
        if compression != "none":
            return  # gzip shards are smaller by an unknown factor: ENOSPC decides
        free = disk_usage(self.folder).free
        if free < spill_bytes + MANIFEST_MARGIN:
            raise DiskFullError(
                f"not enough free space in {self.folder} to write the shards of {self.output}: "
                f"they need about {describe_bytes(spill_bytes)}, {describe_bytes(free)} is free "
                f"(the map stage's spill files, {describe_bytes(spill_bytes)}, stay until the "
                f"last shard is written); {self._advice()}"
            )

    def error(self, err: OSError) -> DiskFullError:
        """The one-line error for a full disk met while building."""
        need = (
            f"the build needs about {describe_bytes(self.need)} free there"
            if self.need
            else "the build needs more free space there"
        )
        return DiskFullError(
            f"disk full while building {self.output}: {err.strerror or 'no space left'} in "
            f"{self.folder}; {need} (spill files and shards coexist: ~2x the records), "
            f"{describe_bytes(self.free)} was free when it started; {self._advice()}"
        )

    def _advice(self) -> str:
        kept = "is unchanged" if self.output.exists() else "was not created"
        return (
            f"free some space or point data.output (--output) at a bigger disk; "
            f"{self.output} {kept}"
        )
