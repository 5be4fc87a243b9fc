#!/usr/bin/env bash
# GPU proof, one command on a host with an NVIDIA GPU: set up .venv with TensorFlow's CUDA
# libraries and the training extra, then run the demo on the GPU recipe and write
# <workdir>/gpu-report.md (see scripts/gpu_check.py). Usage: scripts/gpu-check.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu-check: no nvidia-smi on this host: run it on a machine with an NVIDIA GPU" >&2
    exit 2
fi
install_tfpipe "train,gpu"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
exec .venv/bin/python scripts/gpu_check.py --workdir "${1:-gpu-check}"
