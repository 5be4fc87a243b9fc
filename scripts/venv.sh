# Sourced by demo.sh and test.sh: create .venv (once) and install tfpipe into it.
# Usage: install_tfpipe [EXTRAS]    e.g. install_tfpipe test, install_tfpipe train,rasterio
# (no EXTRAS: the base install, the data commands only; pyproject.toml lists the extras)

install_tfpipe() {
    local python=${PYTHON:-python3}
    if [ ! -x .venv/bin/python ]; then
        if ! "$python" -m venv .venv; then
            rm -rf .venv
            echo "scripts: '$python -m venv' failed; trying virtualenv" >&2
            "$python" -m pip install --user --quiet virtualenv && "$python" -m virtualenv .venv || {
                echo "scripts: cannot create .venv with $python; install Python 3.11's venv" \
                    "module (Debian/Ubuntu: apt install python3.11-venv) or set PYTHON=..." >&2
                return 1
            }
        fi
    fi
    .venv/bin/python -m pip install -e ".${1:+[$1]}"
}
