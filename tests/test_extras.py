"""Extras: commands that need an optional part of the install name it in one line (exit 2)."""

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

from tfpipe import errors
from tfpipe.cli import main

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
ABSENT = "tfpipe_test_absent_module"


def extra_requirements(extra: str) -> list[str]:
    """Distribution names an extra of pyproject.toml lists (without versions or self-references)."""
    listed = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"][extra]
    names = [re.match(r"[A-Za-z0-9_.-]+", req).group(0) for req in listed]
    return [n for n in names if n != "tfpipe"]


@pytest.mark.parametrize("extra", sorted(errors.EXTRA_MODULES))
def test_extra_modules_are_what_the_extra_installs(extra):
    # A module of EXTRA_MODULES must come from a distribution the extra lists, and each listed
    # distribution must be checked for: else the message would send users to the wrong extra.
    provides = importlib.metadata.packages_distributions()
    sources = {
        dist.lower().replace("_", "-") for m in errors.EXTRA_MODULES[extra] for dist in provides[m]
    }
    listed = {n.lower().replace("_", "-") for n in extra_requirements(extra)}
    assert sources == listed


def test_base_dependencies_hold_no_extra_module():
    base = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    names = {re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower() for req in base}
    for extra in errors.EXTRA_MODULES:
        assert not names & {n.lower() for n in extra_requirements(extra)}, extra


def test_missing_extra_names_the_extra_and_the_module(monkeypatch):
    monkeypatch.setitem(errors.EXTRA_MODULES, "train", ("yaml", ABSENT))
    with pytest.raises(ImportError) as raised:
        errors.require_extra("train", "tfpipe.models")
    assert isinstance(raised.value, errors.TfpipeError)
    assert str(raised.value) == (
        'tfpipe.models needs the [train] extra: pip install -e ".[train]" in the tfpipe '
        f"checkout; missing module(s) {ABSENT}"
    )


def test_installed_extra_passes():
    errors.require_extra("train", "tfpipe train")  # the test install has every extra


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "experiments/kidney.yaml"],
        ["predict", "experiments/kidney.yaml", "--checkpoint", "latest"],
        ["bench-input", "experiments/kidney.yaml"],
        ["demo"],
    ],
    ids=lambda argv: argv[0],
)
def test_model_commands_without_train_extra_are_one_line(monkeypatch, capsys, argv):
    monkeypatch.setitem(errors.EXTRA_MODULES, "train", (ABSENT,))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f'tfpipe {argv[0]}: error: this command needs the [train] extra: pip install -e ".[train]"'
        f" in the tfpipe checkout; missing module(s) {ABSENT}\n"
    )


def test_bench_compare_needs_no_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(errors.EXTRA_MODULES, "train", (ABSENT,))
    missing = tmp_path / "a.json"
    code = main(["bench-input", "--compare", str(missing), str(missing)])
    assert "[train] extra" not in capsys.readouterr().err
    assert code == 2  # the files do not exist: a user error of its own
