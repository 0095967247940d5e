#!/usr/bin/env bash
# Put scripts/get-pip-shim.py where `ansible-test --venv` looks for its cached pip
# bootstrap (the shim says why), for the pip version this ansible-test pins.
source "$(dirname "$0")/common.sh"
pip_version=$("${ROOT}/.venv/bin/python" -c '
from ansible_test._internal.python_requirements import get_venv_packages
class Python: version = "3.11"
print(get_venv_packages(Python())["pip"])')
cache="${HOME}/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if ! cmp -s "${ROOT}/scripts/get-pip-shim.py" "$cache"; then
    mkdir -p "$(dirname "$cache")"
    cp "${ROOT}/scripts/get-pip-shim.py" "$cache"
fi
