"""What the benchmark scripts share: the command line, the machine line, writing results.

Timing itself is ``tfpipe.bench.measure``, the core ``tfpipe bench-input`` uses too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from tfpipe.bench.report import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(doc: str, work: str, quick: str) -> argparse.Namespace:
    """``--quick`` (help text ``quick``) and ``--work`` (default ``<tmp>/<work>``)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / work)
    return parser.parse_args()


def machine(load_before: tuple[float, ...], tf_version: str) -> dict:
    """CPUs, load average before and now (others' work on a shared machine), versions."""
    return {
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "tensorflow": tf_version,
        "python": sys.version.split()[0],
    }


def ratio_and_target_tables(result: dict) -> list[str]:
    """Markdown lines for ``result["ratios"]`` (name: value) and ``result["targets"]`` (met)."""
    lines = ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in result["ratios"].items()]
    lines += ["", "| target | met |", "|---|---|"]
    lines += [f"| {k} | {'yes' if v else '**no**'} |" for k, v in result["targets"].items()]
    return lines


def write_results(stem: str, report: dict, markdown: str) -> None:
    """``results/<stem>.json`` and ``.md``, each written atomically; print the Markdown."""
    RESULTS.mkdir(exist_ok=True)
    write_text_atomic(RESULTS / f"{stem}.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(RESULTS / f"{stem}.md", markdown)
    print(markdown)
    print(f"Wrote {RESULTS / stem}.json and .md")
