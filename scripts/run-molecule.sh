#!/usr/bin/env bash
# `make molecule`: run `molecule test` for every scenario under extensions/molecule
# (each directory holding a molecule.yml), or only those named:
#   scripts/run-molecule.sh [scenario ...]
# Every scenario runs even when an earlier one failed; one result line each,
# then "molecule: N passed, M failed"; the exit status is non-zero on any
# failure. Containers and networks of this run are removed whatever happens.
#
# A loop rather than `molecule test --all`: --all stops at the first failing
# scenario and prints no per-scenario verdict.
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"
cd "${ROOT}" || exit 1

export CONTAINERS_CONF="${CONTAINERS_CONF:-${ROOT}/extensions/molecule/containers.conf}"
export ANSIBLE_COLLECTIONS_PATH="${BUILD}/collections"
export ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-0}"
PATH="${ROOT}/.venv/bin:${PATH}"
command -v molecule >/dev/null || die "molecule is missing: run make deps"
scripts/collection-path.sh

# The cluster scenario runs OpenSearch from the cached integ-test distribution on the
# host's JDK, both mounted read-only into its search node (a no-op when cached).
python -m tests.harness.fetch opensearch-2.19.6 || die "cannot fetch opensearch-2.19.6 for the cluster scenario"
LIFEBOAT_JAVA_HOME="$(python -c 'from tests.harness.servers import java_home; print(java_home())')" ||
    die "no JDK for the cluster scenario's search node: install openjdk-17-jdk-headless"
export LIFEBOAT_JAVA_HOME

# The base image (cached: a no-op when it exists) and the names of this run.
LIFEBOAT_TESTBED_IMAGE="$(scripts/build-image.sh)"
LIFEBOAT_RUN_ID="$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
export LIFEBOAT_TESTBED_IMAGE LIFEBOAT_RUN_ID

work="$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-molecule.XXXXXX")"

# Belt and braces behind `--destroy always`: whatever carries this run's id.
remove_leftovers() {
    local ids nets
    ids="$(podman ps -aq --filter "label=lifeboat.run=${LIFEBOAT_RUN_ID}")"
    if [ -n "${ids}" ]; then
        log "molecule: removing leftover containers of run ${LIFEBOAT_RUN_ID}"
        # shellcheck disable=SC2086  # one id per word
        podman rm -f ${ids} >/dev/null || true
    fi
    nets="$(podman network ls --format '{{.Name}}' | grep "^lifeboat-${LIFEBOAT_RUN_ID}-" || true)"
    if [ -n "${nets}" ]; then
        log "molecule: removing leftover networks of run ${LIFEBOAT_RUN_ID}"
        # shellcheck disable=SC2086
        podman network rm -f ${nets} >/dev/null || true
    fi
}
cleanup() {
    remove_leftovers
    rm -rf "${work}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scenarios=()
if [ $# -gt 0 ]; then
    scenarios=("$@")
else
    while IFS= read -r file; do
        scenarios+=("$(basename "$(dirname "${file}")")")
    done < <(find extensions/molecule -mindepth 2 -maxdepth 2 -name molecule.yml | sort)
fi
[ ${#scenarios[@]} -gt 0 ] || die "no scenario found under extensions/molecule"

declare -A result seconds
failed=0
for scenario in "${scenarios[@]}"; do
    [ -f "extensions/molecule/${scenario}/molecule.yml" ] ||
        die "no scenario '${scenario}' (extensions/molecule/${scenario}/molecule.yml)"
    log "molecule: scenario ${scenario} (run ${LIFEBOAT_RUN_ID})"
    start=$(date +%s)
    # A private ephemeral directory: two runs of one scenario never share state.
    if MOLECULE_EPHEMERAL_DIRECTORY="${work}/${scenario}" \
        molecule test --scenario-name "${scenario}" --destroy always; then
        result[$scenario]=passed
    else
        result[$scenario]=FAILED
        failed=$((failed + 1))
    fi
    seconds[$scenario]=$(( $(date +%s) - start ))
    remove_leftovers
done

printf '\n%-24s %-8s %8s\n' scenario result seconds
for scenario in "${scenarios[@]}"; do
    printf '%-24s %-8s %8s\n' "${scenario}" "${result[$scenario]}" "${seconds[$scenario]}"
done
echo "molecule: $(( ${#scenarios[@]} - failed )) passed, ${failed} failed"
[ "${failed}" -eq 0 ]
