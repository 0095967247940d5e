#!/usr/bin/env bash
# Put scripts/get-pip-shim.py where `ansible-test --venv` looks for its cached pip
# bootstrap (the shim says why), for the pip version this ansible-test pins.
#   scripts/install-get-pip-shim.sh [VENV_PYTHON [PYTHON_VERSION]]   (default: the main venv, 3.11)
source "$(dirname "$0")/common.sh"
venv_python="${1:-${ROOT}/.venv/bin/python}"
pip_version=$("$venv_python" -c '
import sys
from ansible_test._internal.python_requirements import get_venv_packages
class Python: version = sys.argv[1]
print(get_venv_packages(Python())["pip"])' "${2:-3.11}")
cache="${HOME}/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if ! cmp -s "${ROOT}/scripts/get-pip-shim.py" "$cache"; then
    mkdir -p "$(dirname "$cache")"
    cp "${ROOT}/scripts/get-pip-shim.py" "$cache"
fi
