"""Imports flow one way: cli -> demo -> bench -> train/predict -> models -> data -> records -> io.

Each package of ``tfpipe`` has a layer; a module may import tfpipe code only
from its own package or from a lower layer. ``tfpipe.data`` therefore never
imports model, training or prediction code, and the ETL (``records``, ``io``)
never imports the input layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tfpipe"
LAYERS = {
    "tfpipe": 0,  # the root package: __version__ only
    "errors": 0,
    "config": 1,
    "io": 2,
    "records": 3,
    "synthetic": 3,  # demo data: writes TIFFs and CSVs with tfpipe.io
    "data": 4,
    "models": 5,
    "train": 6,
    "predict": 6,
    "bench": 7,
    "demo": 8,
    "cli": 9,
}


def package_of(module: str) -> str:
    parts = module.removesuffix(".__init__").split(".")
    return parts[1] if len(parts) > 1 else "tfpipe"


def tfpipe_imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return [n for n in names if n == "tfpipe" or n.startswith("tfpipe.")]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_package_has_a_layer():
    packages = {
        package_of(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)) for p in MODULES
    }
    assert packages <= set(LAYERS), f"packages without a layer: {sorted(packages - set(LAYERS))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_imports_only_go_down(path):
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    own = package_of(module)
    upward = [
        name
        for name in tfpipe_imports(path)
        if package_of(name) != own and LAYERS[package_of(name)] >= LAYERS[own]
    ]
    assert not upward, f"{module} (layer {own}) imports {upward}: imports must flow downward"


def test_the_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from tfpipe.train.trainer import Trainer\nimport tfpipe.records.build\n")
    found = [package_of(n) for n in tfpipe_imports(bad)]
    assert found == ["train", "records"]
    assert LAYERS["train"] > LAYERS["data"] and LAYERS["records"] < LAYERS["data"]
