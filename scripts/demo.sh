#!/usr/bin/env bash
# Set everything up (.venv, tfpipe installed in it) and run the demo on built-in
# synthetic slides: data -> records -> train -> bench -> predict -> evaluate.
# Extra arguments go to `tfpipe demo` (e.g. --workdir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
install_tfpipe
exec .venv/bin/tfpipe demo "$@"
