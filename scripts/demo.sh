#!/usr/bin/env bash
# Set everything up (.venv, tfpipe with its [train] extra) and run the demo on built-in
# synthetic slides: data -> records -> train -> bench -> predict -> evaluate.
# [train] brings what the model steps need (segmentation-models, TensorBoard, matplotlib);
# the base install alone runs only the data commands (pyproject.toml).
# Extra arguments go to `tfpipe demo` (e.g. --workdir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
install_tfpipe train
exec .venv/bin/tfpipe demo "$@"
