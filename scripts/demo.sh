#!/usr/bin/env bash
# `make demo`: back up an embedded sandbox platform, break it, restore it, check it
# (demo/run.py says what it does). Needs root: the sandbox's servers run as their own
# system accounts, as they would in production.
source "$(dirname "$0")/common.sh"
cd "${ROOT}" || exit 1
exec "${ROOT}/.venv/bin/python" demo/run.py "$@"
