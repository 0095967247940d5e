#!/usr/bin/env bash
# `make test`: every stage in order, each one run even when an earlier one
# failed (so one CI run tells the whole story), then a summary table.
# Exit status is non-zero when any stage failed.
source "$(dirname "$0")/common.sh"
cd "${ROOT}" || exit 1

# `make test`'s stages, or the make targets given (make test-matrix).
STAGES=(ruff ansible-lint changelog sanity unit integration molecule bench-small)
[ $# -eq 0 ] || STAGES=("$@")
declare -A status seconds
overall=0
mkdir -p "${BUILD}/logs"
for stage in "${STAGES[@]}"; do
    log "stage: ${stage}"
    start=$(date +%s)
    if make --no-print-directory "${stage}" 2>&1 | tee "${BUILD}/logs/${stage}.log"; then
        status[$stage]=passed
    else
        status[$stage]=FAILED
        overall=1
    fi
    seconds[$stage]=$(( $(date +%s) - start ))
done

printf '\n%-14s %-8s %8s  %s\n' stage result seconds summary
for stage in "${STAGES[@]}"; do
    # The last line a runner prints about its totals.
    summary=$(grep -E '^=+ .*(passed|failed|error).* =+$|^(PLAY RECAP|All checks passed|[0-9]+ files? already formatted|Passed: |Failed: )|^ERROR: The [0-9]+ sanity test|molecule: ' \
        "${BUILD}/logs/${stage}.log" | tail -n 1 | cut -c1-90 || true)
    # ansible-test sanity prints no total when everything passed.
    summary="${summary:-see .build/logs/${stage}.log}"
    printf '%-14s %-8s %8s  %s\n' "$stage" "${status[$stage]}" "${seconds[$stage]}" "$summary"
done
exit ${overall}
