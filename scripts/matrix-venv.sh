#!/usr/bin/env bash
# Virtualenvs of the support matrix (docs/development.md, "Support matrix"); prints the
# path. Each is cached under ~/.cache/lifeboat keyed by what goes into it, like the main
# venv, and built once under a lock.
#
#   scripts/matrix-venv.sh core 2.16   ansible-core 2.16 alone on its controller Python
#                                       (what ansible-test sanity needs)
#   scripts/matrix-venv.sh bench 2.16  the same with the test bench's libraries (the
#                                       harness, pytest) but none of the other Ansible tools
#   scripts/matrix-venv.sh node 3.9 [CORE]
#                                       a managed node: Python 3.9 with the modules'
#                                       libraries (requirements/node-test.txt) and the
#                                       ansible package of CORE (default: the main venv's
#                                       ansible-core) for its module_utils, as AnsiballZ
#                                       would ship them
source "$(dirname "$0")/common.sh"

# Supported controllers: ansible-core minor -> "pinned version, controller Python".
# The main venv (requirements/test.txt) is the fourth one.
declare -A CORES=(
    [2.16]="2.16.19 3.11"
    [2.18]="2.18.19 3.11"
    [2.21]="2.21.5 3.12"
)
# Not for a controller of another core (they pin their own ansible-core), nor tools the
# matrix does not run.
NOT_FOR_MATRIX='^(ansible|ansible-core|ansible-lint|molecule|molecule-plugins\[podman\]|ruff|antsibull-changelog|radon)=='

# 3.11 is the main venv's interpreter (Debian 12's python3); the others come from
# scripts/install-python.sh.
controller_python() {
    if [ "$1" = 3.11 ]; then
        "${ROOT}/.venv/bin/python" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))'
    else
        "${ROOT}/scripts/install-python.sh" "$1"
    fi
}

main_core_pin() {
    sed -n 's/^ansible-core==\([0-9.]*\).*/\1/p' "${ROOT}/requirements/test.txt"
}

build() {
    local venv="$1" python="$2" requirements="$3" core="$4" ansible_flags="$5"
    if [ -x "${venv}/bin/python" ] && [ -e "${venv}/.complete" ]; then
        return 0
    fi
    log "matrix virtualenv: building ${venv##*/} with $("$python" -V)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "${venv}/bin/python" -m pip install -q --upgrade pip
    "${venv}/bin/python" -m pip install -q -r "$requirements"
    # shellcheck disable=SC2086 # the flags are words
    "${venv}/bin/python" -m pip install -q $ansible_flags "ansible-core==${core}"
    touch "${venv}/.complete"
}

kind="${1:-}"
case "$kind" in
core | bench)
    minor="${2:-}"
    spec="${CORES[$minor]:-}"
    [ -n "$spec" ] || die "no ansible-core ${minor} in scripts/matrix-venv.sh (known: ${!CORES[*]})"
    read -r core python_minor <<<"$spec"
    python="$(controller_python "$python_minor")"
    requirements="${BUILD}/matrix/${kind}-requirements.txt"
    mkdir -p "${BUILD}/matrix"
    if [ "$kind" = bench ]; then
        grep -Ev "$NOT_FOR_MATRIX" "${ROOT}/requirements/test.txt" >"$requirements"
    else
        echo "# ansible-core only" >"$requirements"
    fi
    flags=""
    ;;
node)
    python_minor="${2:-}"
    core="${3:-$(main_core_pin)}"
    case "$core" in 2.*.*) ;; *) core="$(read -r v _ <<<"${CORES[$core]:-}"; echo "$v")" ;; esac
    [ -n "$core" ] || die "unknown ansible-core '${3}' (a version, or one of: ${!CORES[*]})"
    python="$("${ROOT}/scripts/install-python.sh" "$python_minor")"
    requirements="${ROOT}/requirements/node-test.txt"
    # A managed node has no ansible-core (and most cores refuse to install on the node
    # Pythons): the package is there only for its module_utils.
    flags="--no-deps --ignore-requires-python"
    ;;
*) die "usage: $0 core 2.X | bench 2.X | node 3.X [CORE]" ;;
esac

key="$( (echo "$kind $core"; cat "$requirements"; "$python" -VV) | sha256sum | cut -c1-16)"
venv="${LIFEBOAT_CACHE}/venv-${kind}-${python_minor}-${core}-${key}"
with_lock "venv-${kind}-${key}" build "$venv" "$python" "$requirements" "$core" "$flags"
echo "$venv"
