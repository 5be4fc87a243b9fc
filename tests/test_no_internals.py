"""tfpipe stays on public APIs: no private TensorFlow/Keras modules, no CPython or libc tricks.

Each pattern below once protected something (a clean exit, a zero-copy
output, a flat RSS) at the price of depending on internals that a new
TensorFlow, Keras or CPython release may change silently. The input graph
also runs no Python: a Python call in flight is what could hang a process at
exit, and what tf.data service workers cannot run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tfpipe"

FORBIDDEN = {
    "private TensorFlow module": r"\btensorflow\.python\b",
    "private Keras module": r"\bkeras\.src\b",
    "reference counts": r"\bgetrefcount\b",
    "garbage collector walk": r"\bgc\.get_objects\b",
    "libc through ctypes": r"^\s*(import ctypes|from ctypes)",
}
# Python inside the tf.data graph of tfpipe.data (prediction may run Python outside it).
PYTHON_IN_GRAPH = r"\b(numpy_function|py_function)\b"


def _sources(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_the_package_uses_no_internals(what):
    pattern = re.compile(FORBIDDEN[what], re.MULTILINE)
    hits = [
        f"{path.relative_to(PACKAGE.parent)}:{text[: m.start()].count(chr(10)) + 1}"
        for path in _sources(PACKAGE)
        for text in [path.read_text()]
        for m in pattern.finditer(text)
    ]
    assert hits == [], f"{what} used at {hits}"


def test_the_input_graph_calls_no_python():
    pattern = re.compile(PYTHON_IN_GRAPH)
    hits = [
        str(path.relative_to(PACKAGE.parent))
        for path in _sources(PACKAGE / "data")
        if pattern.search(path.read_text())
    ]
    assert hits == [], f"tf.numpy_function / tf.py_function in {hits}"


def test_the_checks_find_what_they_look_for(tmp_path):
    # The patterns above do match the code they forbid (a check that cannot fail proves nothing).
    samples = {
        "private TensorFlow module": "from tensorflow.python.data.ops import iterator_ops",
        "private Keras module": "from keras.src.layers import Layer",
        "reference counts": "if sys.getrefcount(x) == 3:",
        "garbage collector walk": "for obj in gc.get_objects():",
        "libc through ctypes": "import ctypes",
    }
    for what, line in samples.items():
        assert re.search(FORBIDDEN[what], line, re.MULTILINE), what
    assert re.search(PYTHON_IN_GRAPH, "tf.numpy_function(f, [x], tf.uint8)")
