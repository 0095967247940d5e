#!/usr/bin/env bash
# `make test`: every stage, each one run even when an earlier one failed (so one CI run
# tells the whole story), then a summary table. Exit status is non-zero when any stage
# failed.
#
# The quick checks run first, one after another. Then two lanes run side by side, because
# most of an integration or Molecule stage waits on servers, containers and child processes
# (on the 2-core CI machine the stages in one lane left the other core mostly idle):
#   lane 1: unit, integration
#   lane 2: ansible-lint, sanity, molecule, bench-small (--small: correctness only)
# (docs/development.md, "How long `make test` takes", has the figures of the last whole run;
# ansible-lint runs in a lane because the quick checks hold both lanes back, in lane 2
# because since the cluster_failure scenario was folded into cluster it is the shorter).
# Each stage writes .build/logs/<stage>.log; a stage's log is printed whole when the stage
# ends, so lines of the two lanes never interleave. TEST_LANES=1 runs every stage in one
# lane, in the order above. `scripts/run-tests.sh <make targets>` (make test-matrix) runs
# the targets given, in one lane.
source "$(dirname "$0")/common.sh"
cd "${ROOT}" || exit 1

LOGS="${BUILD}/logs"
mkdir -p "${LOGS}"

run_stage() {
    local stage=$1 start result
    start=$(date +%s)
    log "stage: ${stage} (started)"
    if make --no-print-directory "${stage}" >"${LOGS}/${stage}.log" 2>&1; then
        result=passed
    else
        result=FAILED
    fi
    printf '%s %s\n' "${result}" "$(($(date +%s) - start))" >"${LOGS}/${stage}.result"
    # One stage's log at a time on the terminal.
    (
        flock 9
        log "stage: ${stage} ${result} after $(($(date +%s) - start)) s; its output:"
        cat "${LOGS}/${stage}.log"
    ) 9>"${LOGS}/.print.lock"
}

run_lane() {
    local stage
    for stage in "$@"; do run_stage "${stage}"; done
}

if [ $# -gt 0 ]; then
    STAGES=("$@")
    run_lane "${STAGES[@]}"
else
    QUICK=(ruff changelog)
    LANE1=(unit integration)
    LANE2=(ansible-lint sanity molecule bench-small)
    STAGES=("${QUICK[@]}" "${LANE1[@]}" "${LANE2[@]}")
    rm -f "${LOGS}"/*.result
    run_lane "${QUICK[@]}"
    if [ "${TEST_LANES:-2}" = 1 ]; then
        run_lane "${LANE1[@]}" "${LANE2[@]}"
    else
        run_lane "${LANE1[@]}" &
        lane1=$!
        run_lane "${LANE2[@]}" &
        lane2=$!
        wait "${lane1}" "${lane2}"
    fi
fi

overall=0
printf '\n%-14s %-8s %8s  %s\n' stage result seconds summary
for stage in "${STAGES[@]}"; do
    read -r result secs <"${LOGS}/${stage}.result" 2>/dev/null || { result=FAILED secs=-; }
    [ "${result}" = passed ] || overall=1
    # The last line a runner prints about its totals.
    summary=$(grep -E '^=+ .*(passed|failed|error).* =+$|^(PLAY RECAP|All checks passed|[0-9]+ files? already formatted|Passed: |Failed: )|^ERROR: The [0-9]+ sanity test|molecule: ' \
        "${LOGS}/${stage}.log" 2>/dev/null | tail -n 1 | cut -c1-90 || true)
    # ansible-test sanity prints no total when everything passed.
    summary="${summary:-see .build/logs/${stage}.log}"
    printf '%-14s %-8s %8s  %s\n' "${stage}" "${result}" "${secs}" "${summary}"
done
# The fault matrix written by this run's fault tests (docs/development.md, "Fault matrix"):
# one older than the first stage's log is an earlier run's, and is said to be.
"${ROOT}/.venv/bin/python" scripts/fault-summary.py --since "$(stat -c %Y "${LOGS}/${STAGES[0]}.log")" || log "no fault matrix summary"
exit ${overall}
