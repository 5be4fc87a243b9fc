"""Reading an experiment file: YAML, ``--set key=value`` overrides, errors that name the key.

Example:
    >>> exp = load_experiment(None, ["train.epochs=3"])
    >>> exp.train.epochs
    3
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tfpipe.config.experiment import Experiment
from tfpipe.errors import ConfigError


def load_experiment(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
) -> Experiment:
    """Read an experiment YAML file, apply ``key=value`` overrides and validate.

    Args:
        path: The YAML file; None gives the defaults (the HuBMAP layout).
        overrides: ``--set`` strings such as ``"train.epochs=3"`` or
            ``"model.arch=linknet"``. Values are parsed as YAML scalars/lists.

    Returns:
        The validated :class:`Experiment`.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, or a
            value has the wrong type; the message names key, file and rule.

    Example:
        >>> exp = load_experiment(None, ["data.tile_size=512"])
        >>> exp.data.tile_size
        512
    """
    where = str(path) if path is not None else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"experiment file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{p} is not valid YAML: {err}") from None
        if loaded is None:
            raise ConfigError(
                f"experiment file {p} is empty: it must hold a mapping of sections "
                "(name:, data:, input:, model:, train:, ...); got no settings"
            )
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p} must hold a mapping of sections; got {type(loaded).__name__}")
        raw = loaded
    set_keys = {apply_override(raw, item): item for item in overrides or []}
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, where, set_keys)) from None
    exp.source_path = Path(path) if path is not None else None
    return exp


def apply_override(raw: dict[str, Any], item: str) -> str:
    """Set ``a.b.c=value`` inside the nested dict ``raw`` (value parsed as YAML); return
    the dotted key."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. train.epochs=3); got {item!r}")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set key must be dotted names like train.epochs; got {key!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value
    return ".".join(parts)


def format_validation_error(
    err: ValidationError, where: str, set_keys: dict[str, str] | None = None
) -> str:
    """One line per problem: ``rule; got key=value in file`` (or ``from --set key=value``).

    Args:
        err: pydantic's error.
        where: The experiment file (or ``<defaults>``).
        set_keys: Dotted key → the ``--set`` item that set it.
    """
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-", "lax-")))
        got, origin = e.get("input"), value_origin(key, where, set_keys or {})
        if e["type"] == "extra_forbidden":
            section = key.rsplit(".", 1)[0] if "." in key else "top level"
            lines.append(f"unknown key {key!r} {origin} (not a setting of {section})")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if isinstance(got, dict):  # a rule across keys of a section
            lines.append(f"{msg} (section {key or 'top level'} {origin})")
        else:
            lines.append(f"{msg}; got {key}={got!r} {origin}")
    return "invalid experiment:\n  " + "\n  ".join(lines)


def value_origin(key: str, where: str, set_keys: dict[str, str]) -> str:
    """``from --set k=v`` when an override set ``key`` (or a section above it), else
    ``in <file>``, naming the overrides inside ``key`` when it is a section."""
    for dotted, item in reversed(set_keys.items()):
        if key == dotted or key.startswith(f"{dotted}."):
            return f"from --set {item}"
    inside = [item for dotted, item in set_keys.items() if not key or dotted.startswith(f"{key}.")]
    if inside:
        return f"in {where} with " + ", ".join(f"--set {item}" for item in inside)
    return f"in {where}"
