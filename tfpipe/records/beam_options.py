"""Beam pipeline options for ``build-records --runner beam``: ``--beam-option KEY=VALUE`` -> flags.

Each ``--beam-option KEY=VALUE`` becomes the flag ``--KEY=VALUE`` (a bare
``KEY`` becomes ``--KEY``) of Beam's ``PipelineOptions``, unchanged, so the
options of any runner work: ``runner=DataflowRunner project=... region=...
temp_location=gs://...``, ``runner=FlinkRunner flink_master=host:8081``,
``runner=SparkRunner spark_master_url=spark://host:7077``. Only where the
pipeline runs on the DirectRunner (no ``runner`` option, or
``runner=DirectRunner``) does tfpipe fill in what the user left out:

* ``direct_running_mode=multi_processing`` (worker processes, not threads:
  the map stage is CPU-bound Python);
* ``direct_num_workers`` = ``data.workers``, else the CPU cores (not with
  ``direct_running_mode=in_memory``, which runs one bundle at a time);
* ``default_sdk_harness_log_level=CRITICAL``, unless the ``apache_beam`` logger
  is set to INFO or lower (``build-records --verbose``): the workers' start-up
  warnings are Beam's own noise.

An option Beam does not know is an error on the DirectRunner (a typo there
would be ignored silently); for other runners it is passed on, since a
runner may define options of its own (Flink's and Spark's job servers do).

Example:
    >>> flags(["direct_num_workers=2", "--save_main_session"])
    ['--direct_num_workers=2', '--save_main_session']
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Sequence

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)

from tfpipe.config import DataConfig
from tfpipe.errors import ConfigError
from tfpipe.records.workers import default_workers

_ITEM = re.compile(r"(?:--)?([A-Za-z_][A-Za-z0-9_]*)(=.*)?", re.DOTALL)


def flags(items: Sequence[str]) -> list[str]:
    """``KEY=VALUE`` items as Beam command-line flags (``--KEY=VALUE``; ``KEY`` -> ``--KEY``).

    Raises:
        ConfigError: an item is not ``KEY=VALUE`` or ``KEY``.
    """
    out = []
    for item in items:
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ConfigError(
                f"--beam-option takes KEY=VALUE, a Beam pipeline option such as "
                f"direct_num_workers=2 or runner=DataflowRunner; got {item!r}"
            )
        out.append(f"--{match.group(1)}{match.group(2) or ''}")
    return out


def pipeline_options(cfg: DataConfig, items: Sequence[str]) -> PipelineOptions:
    """The options of a Beam build: the user's items, plus the DirectRunner defaults.

    Args:
        cfg: The ``data`` section (``workers`` sets the DirectRunner's worker count).
        items: ``--beam-option`` values, ``KEY=VALUE``.

    Raises:
        ConfigError: a malformed item, a value Beam rejects, or (on the
            DirectRunner) an option Beam does not know.

    Example:
        >>> opts = pipeline_options(DataConfig(workers=3), [])
        >>> opts.view_as(DirectOptions).direct_num_workers
        3
    """
    given = flags(items)
    user = _parse(given)
    if not is_direct(user):
        return user
    unknown = sorted(set(user.get_all_options(retain_unknown_options=True)) - _known())
    if unknown:
        raise ConfigError(
            f"--beam-option {unknown[0]} is not a Beam pipeline option (DirectRunner); "
            f"got options {list(items)}"
        )
    keys = {flag[2:].split("=", 1)[0] for flag in given}
    defaults = {"direct_running_mode": "multi_processing"}
    if (
        user.view_as(DirectOptions).direct_running_mode != "in_memory"
        or "direct_running_mode" not in keys
    ):
        # in_memory runs one bundle at a time: more workers would only earn a warning
        defaults["direct_num_workers"] = str(cfg.workers or default_workers())
    if logging.getLogger("apache_beam").getEffectiveLevel() > logging.INFO:
        defaults["default_sdk_harness_log_level"] = "CRITICAL"
    extra = [f"--{k}={v}" for k, v in defaults.items() if k not in keys]
    return _parse(given + extra)


def is_direct(options: PipelineOptions) -> bool:
    """Whether ``options`` run the pipeline on the DirectRunner (Beam's default)."""
    runner = options.view_as(StandardOptions).runner
    return runner is None or str(runner).lower().removesuffix("runner") == "direct"


def planned_workers(options: PipelineOptions, cfg: DataConfig) -> int:
    """How many workers the work units are cut for (about four units per worker).

    The DirectRunner's ``direct_num_workers``; on other runners ``num_workers``
    or ``max_num_workers`` when given, else ``data.workers`` or the CPU cores here.
    """
    if is_direct(options):
        return options.view_as(DirectOptions).direct_num_workers
    worker = options.view_as(WorkerOptions)
    return worker.num_workers or worker.max_num_workers or cfg.workers or default_workers()


def describe(options: PipelineOptions) -> str:
    """The runner, and for the DirectRunner its mode and worker count, in a few words."""
    if not is_direct(options):
        return str(options.view_as(StandardOptions).runner)
    direct = options.view_as(DirectOptions)
    return f"DirectRunner ({direct.direct_running_mode}, {direct.direct_num_workers} worker(s))"


def _parse(given: list[str]) -> PipelineOptions:
    """``PipelineOptions`` whose values are checked now (Beam's parser would exit the process)."""
    options = PipelineOptions(given)
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            options.get_all_options(retain_unknown_options=True)
    except SystemExit:
        lines = usage.getvalue().strip().splitlines() or ["invalid value"]
        reason = lines[-1].split("error: ", 1)[-1]
        raise ConfigError(f"--beam-option: {reason}; got {given}") from None
    return options


def _known() -> set[str]:
    """Every option name Beam's option classes define."""
    return set(PipelineOptions([]).get_all_options())
