"""The experiment log (``tfpipe runs``): what changed between runs and what it scored.

Each run folder keeps its resolved ``config.yaml``; diffing two of them as
dotted keys (``model.arch: unet → linknet``) names exactly what an experiment
changed, whether it came from an edited YAML file or from ``--set``
overrides. Every run is compared with the run before it, or with one chosen
``baseline``; its cross-validation score comes from ``summary.json`` (or, for
an unfinished run, from the folds done so far). A run's time adds up all its
sessions: a resumed run counts the time before the interruption too.

Example::

    $ tfpipe train experiments/kidney.yaml
    $ tfpipe train experiments/kidney.yaml --set model.arch=linknet --set train.batch_size=16
    $ tfpipe runs --markdown runs/log.md

    | run | changes | CV mean ± std | min fold | folds | time | status |
    |---|---|---|---|---|---|---|
    | 20250101-120000-kidney | (first run) | dice 0.8312 ± 0.0121 | 0.8150 | 4/4 | 12m03s | done |
    | 20250101-130000-kidney | model.arch: unet → linknet; train.batch_size: null → 16 | … |
"""

from __future__ import annotations

import csv
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tfpipe.train.rundir import RESULT_NAME, RunDir, list_runs, resolve_run, write_text_atomic
from tfpipe.train.summary import FoldResult, format_seconds, summarize

# Keys that describe a run rather than change it.
IGNORED_KEYS = ("description",)
COLUMNS = ("run", "changes", "cv", "min_fold", "folds", "time", "status")


@dataclass
class RunRow:
    """One line of the experiment log."""

    run: str
    changes: list[str]
    metric: str
    mean: float
    std: float
    min_fold: float
    folds_done: int
    folds_planned: int
    seconds: float
    complete: bool
    saved: bool = True
    """False for a run folder with no finished fold and no backup (killed while starting,
    or diverged in its first epoch): nothing to resume."""

    @property
    def status(self) -> str:
        if self.complete:
            return "done"
        return "incomplete" if self.saved else "nothing saved"

    def cells(self) -> dict[str, str]:
        """The row as display strings, keyed by :data:`COLUMNS`."""
        scored = not math.isnan(self.mean)
        return {
            "run": self.run,
            "changes": "; ".join(self.changes),
            "cv": f"{self.metric} {self.mean:.4f} ± {self.std:.4f}" if scored else "-",
            "min_fold": f"{self.min_fold:.4f}" if scored else "-",
            "folds": f"{self.folds_done}/{self.folds_planned}",
            "time": format_seconds(self.seconds),
            "status": self.status,
        }


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"arch": "unet"}}`` → ``{"model.arch": "unet"}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def diff_configs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"key: old → new"`` for every dotted key whose value differs, sorted by key.

    Example:
        >>> diff_configs({"model": {"arch": "unet"}}, {"model": {"arch": "linknet"}})
        ['model.arch: unet → linknet']
    """
    a, b = flatten(old), flatten(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] in IGNORED_KEYS or a.get(key) == b.get(key):
            continue
        changes.append(f"{key}: {_show(a.get(key, '(unset)'))} → {_show(b.get(key, '(unset)'))}")
    return changes


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def collect_rows(runs_dir: Path, baseline: str | None = None) -> list[RunRow]:
    """One :class:`RunRow` per run folder, in start order, diffed against the previous run
    (or against ``baseline``)."""
    runs = list_runs(runs_dir)
    base = resolve_run(runs_dir, baseline) if baseline else None
    base_config = base.read_config() if base else None
    rows, previous = [], None
    for run in runs:
        config = run.read_config()
        reference = base_config if base_config is not None else previous
        if base is not None and run.path.resolve() == base.path.resolve():
            changes = ["(baseline)"]
        elif reference is None:
            changes = ["(first run)"]
        else:
            changes = diff_configs(reference, config) or ["(no change)"]
        rows.append(_row(run, config, changes))
        previous = config
    return rows


def _row(run: RunDir, config: dict[str, Any], changes: list[str]) -> RunRow:
    summary = run.read_json("summary.json")
    planned = _planned_folds(config)
    backups: list[dict[str, Any] | None] = []
    if summary is not None:
        folds = [FoldResult.from_json(f) for f in summary["folds"]]
        seconds, complete = summary.get("seconds", 0.0), True
    else:
        folds = [
            FoldResult.from_json(data)
            for path in sorted(run.path.glob(f"fold*/{RESULT_NAME}"))
            if (data := run.read_json(str(path.relative_to(run.path)))) is not None
        ]
        # Finished folds plus the training time saved with unfinished folds' backups.
        backups = [
            run.backup_state(int(d.name[4:]))
            for d in run.fold_dirs()
            if not (d / RESULT_NAME).is_file()
        ]
        seconds = sum(f.seconds for f in folds) + sum(b.get("seconds", 0.0) for b in backups if b)
        complete = False
    metric = folds[0].metric if folds else _metric_of(config)
    agg = summarize(run.name, metric, folds, seconds)
    return RunRow(
        run=run.name,
        changes=changes,
        metric=metric,
        mean=agg.mean,
        std=agg.std,
        min_fold=agg.min,
        folds_done=len(folds),
        folds_planned=planned or len(folds),
        seconds=seconds,
        complete=complete,
        saved=complete or bool(folds) or any(backups),
    )


def _planned_folds(config: dict[str, Any]) -> int:
    folds = config.get("train", {}).get("folds", "all")
    return len(folds) if isinstance(folds, list) else int(config.get("data", {}).get("folds", 0))


def _metric_of(config: dict[str, Any]) -> str:
    return "auc" if config.get("model", {}).get("task") == "classification" else "dice"


def to_markdown(rows: list[RunRow]) -> str:
    """The log as a Markdown table."""
    header = ("run", "changes", "CV mean ± std", "min fold", "folds", "time", "status")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = row.cells()
        lines.append("| " + " | ".join(cells[c].replace("|", "\\|") for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[RunRow]) -> str:
    """The log as CSV, numbers unformatted."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "run",
            "changes",
            "metric",
            "mean",
            "std",
            "min_fold",
            "folds_done",
            "folds_planned",
            "seconds",
            "complete",
        ]
    )
    for r in rows:
        writer.writerow(
            [
                r.run,
                "; ".join(r.changes),
                r.metric,
                r.mean,
                r.std,
                r.min_fold,
                r.folds_done,
                r.folds_planned,
                round(r.seconds, 1),
                r.complete,
            ]
        )
    return out.getvalue()


def print_runs(
    runs_dir: str | Path = "runs",
    baseline: str | None = None,
    csv_path: str | Path | None = None,
    md_path: str | Path | None = None,
) -> list[RunRow]:
    """Print the experiment log of ``runs_dir`` as a table; optionally write CSV and Markdown.

    On a terminal the table is drawn with rich (cells wrap to fit); when
    stdout is a pipe or a file it is printed as the Markdown table, one line
    per run, so nothing is cut or wrapped.

    Args:
        runs_dir: Folder holding the run folders (``train.runs_dir``).
        baseline: Compare every run with this run (``latest``, folder name or path)
            instead of with the run before it.
        csv_path: Also write the table here as CSV.
        md_path: Also write the table here as Markdown.

    Returns:
        The rows, oldest run first.

    Example:
        >>> print_runs("runs", md_path="runs/log.md")  # doctest: +SKIP
    """
    rows = collect_rows(Path(runs_dir), baseline)
    if not rows:
        print(f"no runs in {runs_dir}")
    elif sys.stdout.isatty():
        print_table(rows, runs_dir)
    else:
        # Piped or redirected: one line per run, nothing wrapped at a terminal width.
        print(to_markdown(rows), end="")
    if csv_path is not None:
        write_text_atomic(Path(csv_path), to_csv(rows))
    if md_path is not None:
        write_text_atomic(Path(md_path), to_markdown(rows))
    return rows


def print_table(rows: list[RunRow], runs_dir: str | Path) -> None:
    """The log as a rich table on the terminal, one change per line."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"experiment log: {runs_dir}")
    for title, justify in (
        ("run", "left"),
        ("changes", "left"),
        ("CV mean ± std", "right"),
        ("min fold", "right"),
        ("folds", "right"),
        ("time", "right"),
        ("status", "left"),
    ):
        table.add_column(title, justify=justify, overflow="fold")
    for row in rows:
        cells = row.cells()
        cells["changes"] = "\n".join(row.changes)  # one change per line on screen
        table.add_row(*(cells[c] for c in COLUMNS))
    Console().print(table)
