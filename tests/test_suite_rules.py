"""The test suite's own rules: helpers imported one way, every child process with a time limit.

Helpers live in ``tests/_<area>_helpers.py`` and are imported as
``tests._<area>_helpers`` (``pythonpath = ["."]`` in pyproject.toml). The bare
``_<area>_helpers`` form also works under pytest's default import mode, but
it loads a second copy of the module, so a monkeypatch on one copy misses
the other. A child process started without a ``timeout=`` turns a hang into
a test run that never ends.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SUBPROCESS_RUNNERS = {"run", "call", "check_call", "check_output"}


def bare_helper_imports(tree: ast.AST) -> list[int]:
    """Lines that import a ``_*`` module by its bare name (not as ``tests._*``)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        if any(name.startswith("_") and not name.startswith("__") for name in names):
            lines.append(node.lineno)
    return lines


def untimed_subprocess_calls(tree: ast.AST) -> list[int]:
    """Lines of ``subprocess.run(...)`` (and friends) without a ``timeout=`` keyword."""
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "subprocess"
            and node.func.attr in SUBPROCESS_RUNNERS
            and not any(k.arg == "timeout" for k in node.keywords)
        ):
            lines.append(node.lineno)
    return lines


def violations(check) -> list[str]:
    return [
        f"{path.name}:{line}"
        for path in sorted(TESTS.glob("*.py"))
        for line in check(ast.parse(path.read_text()))
    ]


def test_helpers_are_imported_as_tests_modules():
    assert violations(bare_helper_imports) == [], "import helpers as tests._<area>_helpers"


def test_every_subprocess_call_has_a_timeout():
    assert violations(untimed_subprocess_calls) == [], "pass timeout= (a hang guard)"


def test_the_checks_find_what_they_look_for():
    # A check that cannot fail proves nothing: each one flags its own example.
    bad = ast.parse(
        "from _train_helpers import tiny_model\n"
        "import _data_helpers\n"
        "from tests._data_helpers import write_records\n"
        "from __future__ import annotations\n"
        "subprocess.run(['x'], check=True)\n"
        "subprocess.run(['x'], timeout=60)\n"
    )
    assert bare_helper_imports(bad) == [1, 2]
    assert untimed_subprocess_calls(bad) == [5]
