"""``tfpipe inspect-records``: counts, statistics, checksums and a contact sheet.

Reads ``manifest.json``, prints records per fold, source and shard with the
dataset statistics, verifies every shard's size, sha256 and record count
against the manifest (each problem becomes one message and ``report.ok`` is
False), and draws ``n_tiles`` records chosen at random (seeded) into a PNG
contact sheet with the mask outlined. No TensorFlow: shards are read by
:mod:`tfpipe.records.reader`, which also checks each frame's CRC. Counts come
from the TFRecord framing (:func:`~tfpipe.records.reader.count_frames`): a
manifest that lists more or fewer records than a shard holds is reported even
when the shard's bytes match its sha256.

Example:
    >>> report = inspect_records("records/kidney")    # doctest: +SKIP
    >>> report.ok, report.sheet                      # doctest: +SKIP
    (True, PosixPath('records/kidney/sheet.png'))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tfpipe.errors import RecordsError
from tfpipe.records import format as fmt
from tfpipe.records.manifest import Manifest, read_manifest, verify_shards
from tfpipe.records.reader import count_frames, iter_records, parse_example
from tfpipe.records.sheet import SheetTile, compose, decode_field, write_png
from tfpipe.records.summary import print_summary

MAX_SHARD_ROWS = 40


@dataclass
class InspectReport:
    """What ``inspect_records`` found."""

    root: Path
    ok: bool
    problems: list[str] = field(default_factory=list)
    records: int = 0
    records_per_fold: dict[int, int] = field(default_factory=dict)
    sheet: Path | None = None
    sampled: list[str] = field(default_factory=list)
    """Source ids of the tiles on the contact sheet."""


def inspect_records(
    root: str | Path,
    sheet: str | Path | None = None,
    n_tiles: int = 32,
    verify: bool = True,
    seed: int = 0,
) -> InspectReport:
    """Summarise a records folder, verify its shards and write a contact sheet.

    Args:
        root: The records folder (holds ``manifest.json``).
        sheet: PNG path for the contact sheet; default ``<root>/sheet.png``.
        n_tiles: Tiles on the sheet (0 skips the sheet).
        verify: Check the size, sha256 and record count of every shard.
        seed: Chooses which records go on the sheet.

    Returns:
        An :class:`InspectReport`; ``ok`` is False when a shard is missing or corrupt.

    Raises:
        RecordsError: the folder or its manifest is missing or unreadable.

    Example:
        >>> inspect_records("records/kidney", n_tiles=16, verify=False).records  # doctest: +SKIP
        4711
    """
    manifest = read_manifest(root)
    console = Console()
    _print_overview(manifest, console)
    report = InspectReport(Path(root), ok=True, records=manifest.num_records)
    for s in manifest.shards:
        report.records_per_fold[s.fold] = report.records_per_fold.get(s.fold, 0) + s.records
    if verify:
        report.problems += verify_shards(manifest)
        report.problems += verify_counts(manifest)
    if n_tiles > 0 and manifest.num_records:
        path = Path(sheet) if sheet is not None else Path(root) / "sheet.png"
        try:
            tiles = sample_tiles(manifest, n_tiles, seed)
        except RecordsError as err:
            report.problems.append(str(err))
        else:
            report.sampled = [t.title for t in tiles]
            title = f"{Path(root).name}: {len(tiles)} of {manifest.num_records} records"
            report.sheet = write_png(path, compose(tiles, title))
    report.ok = not report.problems
    _print_verdict(report, verify, console)
    return report


def verify_counts(manifest: Manifest) -> list[str]:
    """Count each shard's records from its framing; one message per shard the manifest misdescribes.

    Uncompressed shards cost one 12-byte read per record; GZIP shards are
    decompressed once. Missing shards are left to ``verify_shards``.

    Example:
        >>> verify_counts(read_manifest("records/kidney"))  # doctest: +SKIP
        []
    """
    problems = []
    for s in manifest.shards:
        path = manifest.root / s.path
        if not path.is_file():
            continue
        frames = count_frames(path, manifest.compression)
        if frames.records != s.records or frames.damage is not None:
            damage = f" ({frames.damage})" if frames.damage else ""
            problems.append(
                f"{path}: manifest.json lists {s.records} records, its TFRecord framing "
                f"holds {frames.records}{damage}"
            )
    return problems


def sample_tiles(manifest: Manifest, n_tiles: int, seed: int) -> list[SheetTile]:
    """Decode ``n_tiles`` records chosen uniformly at random (seeded) from all shards."""
    counts = np.array([s.records for s in manifest.shards])
    chosen = np.random.default_rng(seed).choice(
        counts.sum(), size=min(n_tiles, int(counts.sum())), replace=False
    )
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    tiles = []
    for shard, start, count in zip(manifest.shards, starts, counts, strict=True):
        wanted = sorted(int(i - start) for i in chosen if start <= i < start + count)
        if not wanted:
            continue
        records = iter_records(manifest.root / shard.path, manifest.compression)
        for index, data in enumerate(records):
            if index == wanted[0]:
                tiles.append(_to_tile(parse_example(data), manifest.class_names))
                wanted.pop(0)
            if not wanted:
                break
    return tiles


def _to_tile(ex: dict[str, list], class_names: list[str]) -> SheetTile:
    shape = (ex[fmt.IMAGE_HEIGHT][0], ex[fmt.IMAGE_WIDTH][0], ex[fmt.IMAGE_CHANNELS][0])
    image = decode_field(ex[fmt.IMAGE_ENCODED][0], ex[fmt.IMAGE_FORMAT][0], shape)
    mask = None
    if fmt.MASK_ENCODED in ex:
        mask = decode_field(ex[fmt.MASK_ENCODED][0], ex[fmt.MASK_FORMAT][0], shape[:2])
    title = ex[fmt.SOURCE_ID][0].decode()
    if fmt.CLASS_LABEL in ex:
        hot = ex[fmt.CLASS_LABEL]
        note = ", ".join(n for n, v in zip(class_names, hot, strict=False) if v) or "(no label)"
    else:
        positive = ex.get(fmt.POSITIVE_FRACTION, [0.0])[0]
        note = f"positive {positive:.1%}" if mask is not None else "unlabelled"
    return SheetTile(image, mask, title, note)


def _print_overview(m: Manifest, console: Console) -> None:
    console.print(
        f"[bold]{m.root}[/]: {m.task}, {m.num_records} records of "
        f"{m.tile_height}x{m.tile_width}x{m.channels} {m.encoding} "
        f"(compression {m.compression}), {m.num_folds} folds, format v{m.format_version}, "
        f"tfpipe {m.tfpipe_version}, built {m.created}"
    )
    folds = Table(title="folds")
    for name in ("fold", "sources", "records", "shards", "MiB"):
        folds.add_column(name, justify="right")
    for k in range(m.num_folds):
        shards = [s for s in m.shards if s.fold == k]
        folds.add_row(
            str(k),
            str(len(m.fold_sources(k))),
            str(sum(s.records for s in shards)),
            str(len(shards)),
            f"{sum(s.bytes for s in shards) / 2**20:.1f}",
        )
    console.print(folds)
    print_summary(m, console)
    shards = Table(title="shards")
    for name in ("shard", "fold", "records", "bytes", "sha256"):
        shards.add_column(name, justify="left" if name in ("shard", "sha256") else "right")
    for s in m.shards[:MAX_SHARD_ROWS]:
        shards.add_row(s.path, str(s.fold), str(s.records), str(s.bytes), s.sha256[:16])
    if len(m.shards) > MAX_SHARD_ROWS:
        shards.add_row(f"... {len(m.shards) - MAX_SHARD_ROWS} more", "", "", "", "")
    console.print(shards)
    stats = ", ".join(f"{k}={_short(v)}" for k, v in m.stats.items())
    console.print(f"stats: {stats}")


def _print_verdict(report: InspectReport, verify: bool, console: Console) -> None:
    for problem in report.problems:
        console.print(f"[red]problem:[/] {problem}")
    if report.sheet is not None:
        console.print(f"contact sheet: {report.sheet}")
    if not verify:
        console.print("checksums not verified (--no-verify)")
    elif report.ok:
        console.print(
            "[green]all shards match their size, sha256 and record count in the manifest[/]"
        )


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)
