#!/usr/bin/env bash
# The support matrix beyond the main venv (docs/development.md, "Support matrix"):
#   scripts/matrix.sh sanity 2.16     ansible-test sanity on ansible-core 2.16 (no ignore files)
#   scripts/matrix.sh compile 2.21    ansible-test's compile and import tests of the
#                                     managed-node code on each node Python (3.9, 3.12, 3.13)
#   scripts/matrix.sh unit 3.9        the module and module_utils unit tests on Python 3.9
#   scripts/matrix.sh integration     the module-level integration tests with ansible-core
#                                     2.16 on the controller and the modules on Python 3.9
# `make test-matrix` runs every stage (scripts/run-tests.sh, the Makefile's matrix-*
# targets) and prints a summary. The main venv (ansible-core of requirements/test.txt on Python 3.11) is tested by `make test`.
source "$(dirname "$0")/common.sh"
cd "${ROOT}" || exit 1

# The stages' lists of cores and Pythons are the Makefile's MATRIX_CORES and
# MATRIX_NODE_PYTHONS.
read -r -a NODE_PYTHONS <<<"${MATRIX_NODE_PYTHONS:-3.9 3.12 3.13}"
# The oldest supported pair: the integration pass, and the ansible package (module_utils)
# the 3.9 node gets.
OLDEST_CORE=2.16
OLDEST_PYTHON=3.9
# Integration tests that test modules (run_module or a one-module play); the role,
# Molecule and demo tests need the main core's features and run in `make test`.
NOT_MODULE_LEVEL=(test_demo.py test_roles.py test_quiesce_role.py test_harness.py)

controller_version() {  # the Python a core's venv runs on
    "$1/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

# ansible-test keeps its virtualenvs under $HOME whatever ANSIBLE_HOME says: one HOME per
# clone and core, so no two runs (clones, cores) share them.
ansible_test() {
    local core="$1"; shift
    local venv home copy pythons pip_cache="${HOME}/.cache/pip"
    venv="$(scripts/matrix-venv.sh core "$core")"
    home="${BUILD}/sanity-home-${core}"
    pythons="$(scripts/install-python.sh --bin-dir)"
    for version in "$(controller_version "$venv")" "${NODE_PYTHONS[@]}"; do
        HOME="$home" scripts/install-get-pip-shim.sh "${venv}/bin/python" "$version"
    done
    copy="$(scripts/collection-path.sh --copy)"
    (cd "$copy" && HOME="$home" PIP_CACHE_DIR="$pip_cache" PATH="${venv}/bin:${pythons}:${PATH}" \
        "${venv}/bin/ansible-test" "$@")
}

stage_sanity() {
    local core="$1" venv
    venv="$(scripts/matrix-venv.sh core "$core")"
    log "sanity: ansible-core ${core} ($("${venv}/bin/ansible" --version | head -n 1)), controller Python $(controller_version "$venv")"
    ansible_test "$core" sanity --color no --venv --python "$(controller_version "$venv")"
}

stage_compile() {
    local core="$1" python rc=0
    for python in "${NODE_PYTHONS[@]}"; do
        log "compile and import on Python ${python} (ansible-core ${core})"
        ansible_test "$core" sanity --color no --venv --python "$python" --test compile --test import || rc=1
    done
    return $rc
}

stage_unit() {
    local python="$1" core="" venv
    shift
    [ "$python" = "$OLDEST_PYTHON" ] && core="$OLDEST_CORE"
    venv="$(scripts/matrix-venv.sh node "$python" $core)"
    log "unit: modules and module_utils on $("${venv}/bin/python" -V) with ansible-core $("${venv}/bin/python" -c 'import ansible.release as r; print(r.__version__)') module_utils"
    PYTHONPATH="${BUILD}/collections" "${venv}/bin/python" -m pytest -c tests/pytest.ini \
        tests/unit/plugins/modules tests/unit/plugins/module_utils "$@"
}

stage_integration() {
    local controller node ignore=()
    controller="$(scripts/matrix-venv.sh bench "$OLDEST_CORE")"
    node="$(scripts/matrix-venv.sh node "$OLDEST_PYTHON" "$OLDEST_CORE")"
    "${ROOT}/.venv/bin/python" -m tests.harness.fetch
    for name in "${NOT_MODULE_LEVEL[@]}"; do ignore+=("--ignore=tests/integration/${name}"); done
    log "integration: module-level tests, ansible-core ${OLDEST_CORE} controller, modules on Python ${OLDEST_PYTHON}"
    # tests/support/modules.py runs modules (and plays' ansible_python_interpreter) with
    # LIFEBOAT_MODULE_PYTHON; ansible-playbook is the controller venv's.
    LIFEBOAT_MODULE_PYTHON="${node}/bin/python" PYTHONPATH="${BUILD}/collections" PATH="${controller}/bin:${PATH}" \
        "${controller}/bin/python" -m pytest -c tests/pytest.ini tests/integration "${ignore[@]}" "$@"
}

command="${1:-}"
shift || true
case "$command" in
sanity) stage_sanity "$@" ;;
compile) stage_compile "$@" ;;
unit) stage_unit "$@" ;;
integration) stage_integration "$@" ;;
*) die "usage: $0 sanity CORE | compile CORE | unit PYTHON | integration" ;;
esac
