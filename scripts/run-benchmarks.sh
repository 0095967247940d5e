#!/usr/bin/env bash
# Run every benchmark. `make bench` runs them full size (minutes, GiB of data);
# `make test` runs them with --small, for correctness only: small numbers mean nothing.
source "$(dirname "$0")/common.sh"
cd "${ROOT}" || exit 1
mode=("$@")
status=0
for bench in benchmarks/*/run.py; do
    log "benchmark: ${bench} ${mode[*]}"
    started=${SECONDS}
    if ! "${ROOT}/.venv/bin/python" "$bench" "${mode[@]}"; then
        echo "benchmark FAILED: ${bench}"
        status=1
    fi
    echo "(${bench}: $((SECONDS - started)) s)"
done
exit ${status}
