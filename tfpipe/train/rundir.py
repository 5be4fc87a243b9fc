"""Run folders: ``runs/<YYYYmmdd-HHMMSS>-<name>/``, one per ``tfpipe train``.

Layout::

    runs/20250101-120000-kidney/
      config.yaml          # the resolved experiment (every default filled in)
      curves.png           # learning curves of every fold, redrawn after each epoch
      summary.json         # written when every fold is done
      fold0/
        best.keras         # best epoch on the validation metric, no optimizer state
        best.weights.h5    # while the fold runs: the best epoch's weights (no optimizer)
        last.keras         # only after Ctrl-C; removed when the resumed fold is done
        history.csv        # one row per epoch (CSVLogger)
        tb/                # TensorBoard logs
        backup/            # BackupAndRestore state while the fold runs (for --resume)
        result.json        # the fold's result; its presence marks the fold as done

Every file is written to a temporary name and renamed, so a killed run never
leaves a half-written file behind. A run that fails before its first training
step is removed again by the trainer (nothing in it to resume or compare), so
``--resume latest`` and ``tfpipe runs`` only meet runs that trained.
This module imports no TensorFlow.

Example:
    >>> run = create_run(Path("runs"), "kidney", exp)         # doctest: +SKIP
    >>> run.fold_dir(0) / "best.keras"                       # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tfpipe.errors import ConfigError

CONFIG_NAME = "config.yaml"
HISTORY_NAME = "history.csv"
SUMMARY_NAME = "summary.json"
RESULT_NAME = "result.json"
BACKUP_META = "backup/training_metadata.json"


@dataclass(frozen=True)
class RunDir:
    """One run folder and the paths inside it."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_NAME

    def fold_dir(self, fold: int) -> Path:
        """``fold{k}/``, created on first use."""
        path = self.path / f"fold{fold}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def read_config(self) -> dict[str, Any]:
        """The resolved experiment this run used, as plain data."""
        return yaml.safe_load(self.config_path.read_text()) or {}

    def read_json(self, relative: str) -> dict[str, Any] | None:
        """A JSON file of the run, or None when it is missing or unreadable."""
        path = self.path / relative
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def write_json(self, relative: str, data: dict[str, Any]) -> Path:
        path = self.path / relative
        write_text_atomic(path, json.dumps(data, indent=2) + "\n")
        return path

    def fold_dirs(self) -> list[Path]:
        """The ``fold{k}/`` folders that exist, in fold order."""
        found = [p for p in self.path.glob("fold*") if p.is_dir() and p.name[4:].isdigit()]
        return sorted(found, key=lambda p: int(p.name[4:]))

    def history(self, fold: int) -> list[dict[str, float]]:
        """The rows of ``fold{k}/history.csv``, one per finished epoch (empty when none)."""
        return read_history(self.path / f"fold{fold}" / HISTORY_NAME)

    def backup_state(self, fold: int) -> dict[str, Any] | None:
        """The fold's resume backup (``epoch``, ``steps_in_epoch``, ``seconds``), or None
        when there is none whose weights file exists."""
        meta = self.read_json(f"fold{fold}/{BACKUP_META}")
        weights = self.path / f"fold{fold}" / "backup" / str((meta or {}).get("weights", ""))
        return meta if meta is not None and weights.is_file() else None

    @property
    def finished(self) -> bool:
        """Every planned fold is done (``summary.json`` written)."""
        return self.summary_path.is_file()

    @property
    def resumable(self) -> bool:
        """Unfinished, with something to continue from: a finished fold or a fold backup."""
        if self.finished:
            return False
        return any(
            (d / RESULT_NAME).is_file() or self.backup_state(int(d.name[4:])) is not None
            for d in self.fold_dirs()
        )


def read_history(path: Path) -> list[dict[str, float]]:
    """Rows of a ``history.csv``, one per epoch (the last row wins if an epoch repeats).

    Example:
        >>> read_history(Path("runs/x/fold0/history.csv"))[0]["val_dice"]  # doctest: +SKIP
        0.71
    """
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        rows = [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)
        ]
    by_epoch = {int(r["epoch"]): r for r in rows if "epoch" in r}
    return [by_epoch[e] for e in sorted(by_epoch)]


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_name(name: str) -> str:
    """A run name usable in a folder name (letters, digits, ``-_.``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    return cleaned or "run"


def create_run(runs_dir: Path, name: str, config: dict[str, Any]) -> RunDir:
    """Create ``runs_dir/<timestamp>-<name>/`` and write the resolved ``config.yaml``.

    Two runs started in the same second get ``-2``, ``-3``… suffixes.
    """
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{safe_name(name)}"
    for attempt in range(1, 1000):
        path = runs_dir / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - a thousand runs in one second
        raise ConfigError(f"cannot create a run folder under {runs_dir}")
    run = RunDir(path)
    write_text_atomic(run.config_path, yaml.safe_dump(config, sort_keys=False))
    return run


def list_runs(runs_dir: Path) -> list[RunDir]:
    """Run folders (those holding a config.yaml) in start order."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return [
        RunDir(p) for p in sorted(runs_dir.iterdir()) if p.is_dir() and (p / CONFIG_NAME).is_file()
    ]


def latest_resumable(runs_dir: Path) -> RunDir:
    """The newest run that ``--resume`` can continue (:attr:`RunDir.resumable`).

    Raises:
        ConfigError: no such run; the message says what the other runs are.
    """
    runs = list_runs(runs_dir)
    for run in reversed(runs):
        if run.resumable:
            return run
    if not runs:
        raise ConfigError(f"--resume latest: no run folder in {runs_dir}")
    done = sum(r.finished for r in runs)
    raise ConfigError(
        f"--resume latest: no resumable run folder in {runs_dir} (a resumable run has a fold "
        f"backup or a finished fold and no {SUMMARY_NAME}); its {len(runs)} run(s): {done} "
        f"finished, {len(runs) - done} with nothing to resume. Name a run to --resume to "
        "continue a particular one"
    )


def resolve_run(runs_dir: Path, spec: str | Path) -> RunDir:
    """The run named by ``--resume`` / ``--baseline``: ``latest``, a path, or a folder name.

    Raises:
        ConfigError: no such run (the message lists where it looked).
    """
    if str(spec) == "latest":
        runs = list_runs(runs_dir)
        if not runs:
            raise ConfigError(f"--resume latest: no run folder in {runs_dir}")
        return runs[-1]
    for candidate in (Path(spec), Path(runs_dir) / str(spec)):
        if (candidate / CONFIG_NAME).is_file():
            return RunDir(candidate)
    matches = [r for r in list_runs(runs_dir) if r.name.endswith(str(spec))]
    if len(matches) == 1:
        return matches[0]
    raise ConfigError(
        f"run {str(spec)!r} not found: no {CONFIG_NAME} in {spec} or {Path(runs_dir) / str(spec)}"
        + (f" ({len(matches)} runs end with that name)" if matches else "")
    )
