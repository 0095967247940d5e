# Shared settings for the bench scripts. Sourced, not executed.
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Everything downloaded or built is cached here, outside the clone, so a
# second `make test` (or a fresh clone on the same machine) starts warm.
LIFEBOAT_CACHE="${LIFEBOAT_CACHE:-${HOME}/.cache/lifeboat}"
BUILD="${ROOT}/.build"
export ROOT LIFEBOAT_CACHE BUILD
mkdir -p "${LIFEBOAT_CACHE}" "${BUILD}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# Run "$@" while holding an exclusive lock on $1 (a name under the cache), so
# parallel runs (several clones, CI and a developer) never build one thing twice.
with_lock() {
    local name="$1"; shift
    exec {lockfd}>"${LIFEBOAT_CACHE}/${name}.lock"
    flock "${lockfd}"
    "$@"
    local rc=$?
    flock -u "${lockfd}"
    return ${rc}
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
