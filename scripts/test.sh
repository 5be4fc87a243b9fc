#!/usr/bin/env bash
# Set everything up (.venv, tfpipe with its [test] extra: pytest, ruff, the Keras backends
# and every other extra but [gpu]) and run the tests (what CI runs).
# Extra arguments go to pytest (e.g. -m slow, -k pipeline).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
install_tfpipe test
exec .venv/bin/pytest "$@"
