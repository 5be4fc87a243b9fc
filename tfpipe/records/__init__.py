"""Offline ETL: source images -> sharded, globally shuffled TFRecords (``tfpipe build-records``).

Public API (imported lazily, so ETL worker processes that import a submodule
do not pay for the rest):

* :func:`build_records` (:mod:`tfpipe.records.build`) — the build.
* :func:`inspect_records` (:mod:`tfpipe.records.inspect`) — counts, checksums, contact sheet.
* :mod:`tfpipe.records.format` / :mod:`tfpipe.records.manifest` — the record contract.

Example:
    >>> from tfpipe.records import build_records, inspect_records
    >>> from tfpipe.config import load_experiment
    >>> manifest = build_records(load_experiment("experiments/kidney.yaml").data)  # doctest: +SKIP
    >>> inspect_records(manifest.root).ok  # doctest: +SKIP
    True
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_records", "inspect_records"]


def __getattr__(name: str) -> Any:
    if name == "build_records":
        from tfpipe.records.build import build_records

        return build_records
    if name == "inspect_records":
        from tfpipe.records.inspect import inspect_records

        return inspect_records
    raise AttributeError(f"module 'tfpipe.records' has no attribute {name!r}")
