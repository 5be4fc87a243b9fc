"""The live progress display of ``tfpipe bench-input`` (Rich).

One bar counts every timed window and model step of the whole run; its label
names the measurement in progress, so a slow stage is visible while it runs.
Disabled, it still runs the work (tests, ``progress=False``).

Example:
    >>> with BenchProgress(total=3, enabled=False) as bar:
    ...     bar.run("sum", lambda tick: [tick() for _ in range(3)])
    [None, None, None]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


class BenchProgress:
    """A context manager around a Rich progress bar that measurement functions tick."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]bench-input[/] {task.description:<32}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            disable=not enabled,
        )
        self.task = self.progress.add_task("starting", total=total)

    def __enter__(self) -> BenchProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def tick(self) -> None:
        """One timed window (or model step) finished."""
        self.progress.advance(self.task)

    def run(self, description: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, tick=self.tick, **kwargs)`` with ``description`` on the bar."""
        self.progress.update(self.task, description=description)
        return fn(*args, tick=self.tick, **kwargs)
