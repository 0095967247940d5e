#!/usr/bin/env bash
# Create (or reuse) the project virtualenv. It lives in the cache, keyed by the
# hash of the pinned requirements and the Python version, and .venv points at it.
source "$(dirname "$0")/common.sh"

pick_python() {
    local candidate
    for candidate in "${LIFEBOAT_PYTHON:-}" python3.11 /usr/bin/python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            "$candidate" -c 'import sys; print(sys.executable)'; return 0
        fi
    done
    die "Python 3.11 with the venv module is needed (Debian: apt-get install python3 python3-venv)"
}

PY="$(pick_python)"
key="$( (cat "${ROOT}/requirements/test.txt"; "$PY" -VV) | sha256sum | cut -c1-16)"
venv="${LIFEBOAT_CACHE}/venv-${key}"

build_venv() {
    if [ -x "${venv}/bin/python" ] && [ -e "${venv}/.complete" ]; then
        return 0
    fi
    log "virtualenv: building ${venv} with ${PY}"
    rm -rf "${venv}"
    "$PY" -m venv "${venv}"
    "${venv}/bin/pip" install -q --upgrade pip
    "${venv}/bin/pip" install -q -r "${ROOT}/requirements/test.txt"
    touch "${venv}/.complete"
}
with_lock "venv-${key}" build_venv
ln -sfn "${venv}" "${ROOT}/.venv"
log "virtualenv: ${venv}"
