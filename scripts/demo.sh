#!/usr/bin/env bash
# `make demo`: backup -> disaster -> restore of an embedded sandbox platform.
source "$(dirname "$0")/common.sh"
cd "${ROOT}" || exit 1
if [ ! -f playbooks/demo.yml ]; then
    cat <<'MSG'
make demo: not wired up yet. It needs the backup and restore roles (issue "Backup and
restore roles and playbooks"), which are not in this checkout. Until then, see
docs/configuration.md for a runnable backup of configuration files.
MSG
    exit 1
fi
exec "${ROOT}/.venv/bin/python" -m tests.demo.run "$@"
