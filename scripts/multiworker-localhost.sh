#!/usr/bin/env bash
# Multi-worker training on this machine: a tf.data service (1 dispatcher, 2 workers) feeding
# two `tfpipe train` workers under MultiWorkerMirroredStrategy; checks identical weights and
# one run (scripts/multiworker_localhost.py). Usage: scripts/multiworker-localhost.sh
# [--workdir DIR] [--timeout S]. Whatever happens (failure, Ctrl-C, kill), every process
# it started is stopped: the Python driver stops them itself, and this trap stops what it
# listed in the pid file if the driver could not.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/tfpipe ]; then
    . scripts/venv.sh
    install_tfpipe train
fi
pid_file=$(mktemp "${TMPDIR:-/tmp}/tfpipe-multiworker-pids.XXXXXX")
cleanup() {
    # Process groups the driver left behind (none after a normal exit: it empties the file).
    while read -r group; do
        [ -n "$group" ] && kill -KILL -- "-$group" 2>/dev/null || true
    done <"$pid_file"
    rm -f "$pid_file"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
.venv/bin/python scripts/multiworker_localhost.py --pid-file "$pid_file" "$@"
