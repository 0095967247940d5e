# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: pg_environment
short_description: libpq environment variables for a profile's PostgreSQL component
version_added: 0.1.0
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
description:
  - For a post-restore check with C(sql), builds the C(PG*) environment (host or socket
    directory, port, user, database, TLS settings) from the connection options of the
    profile component the check names.
  - Never C(PGPASSWORD) - Ansible puts a task's C(environment) on the command line it runs,
    where C(ps) and C(-vvv) show it. A component with a C(login_password) gets
    C(PGPASSFILE=<passfile_dir>/<component>.pgpass) instead; write that file first (mode
    0600, one line C(*:*:*:*:<password>) with C(:) and C(\\) escaped, with C(no_log)).
options:
  _input:
    description: The check - C(name), C(sql), C(component) (a PostgreSQL component of the profile) and optionally C(database).
    type: dict
    required: true
  components:
    description: The profile's component list.
    type: list
    elements: dict
    required: true
  passfile_dir:
    description: Directory holding C(<component>.pgpass) for components with a C(login_password).
    type: str
"""

EXAMPLES = r"""
- name: Run a check with psql (the password file written beforehand, with no_log)
  ansible.builtin.command:
    argv: [psql, -X, -A, -t, -c, "{{ check.sql }}"]
  environment: "{{ check | lifeboat.backup.pg_environment(restore_profile.components, passfile_dir=checks_dir.path) }}"
"""

RETURN = r"""
_value:
  description: Environment variables (C(PGHOST), C(PGPORT), C(PGUSER), C(PGPASSFILE), C(PGDATABASE), C(PGSSLMODE), ...).
  type: dict
"""

from ansible.errors import AnsibleFilterError

_MAP = {
    "port": "PGPORT",
    "login_user": "PGUSER",
    "login_db": "PGDATABASE",
    "ssl_mode": "PGSSLMODE",
    "ca_cert": "PGSSLROOTCERT",
    "ssl_cert": "PGSSLCERT",
    "ssl_key": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
}


def _component_of(check, components):
    name = check.get("component")
    wanted = [c for c in components or [] if c.get("name") == name and c.get("kind") in ("postgresql", "postgresql_basebackup")]
    if not wanted:
        known = ", ".join(c.get("name", "?") for c in components or [] if c.get("kind") == "postgresql") or "none"
        raise AnsibleFilterError("check %r: component %r is not a PostgreSQL component of the profile (there are: %s)" % (check.get("name"), name, known))
    return wanted[0]


def _passfile(check, component, passfile_dir):
    name = component.get("name")
    if not passfile_dir:
        raise AnsibleFilterError(
            "check %r: component %r has a login_password; give passfile_dir, the directory holding %s.pgpass, "
            "so that the password never goes on a command line" % (check.get("name"), name, name)
        )
    return "%s/%s.pgpass" % (str(passfile_dir).rstrip("/"), name)


def pg_environment(check, components, passfile_dir=None):
    component = _component_of(check, components)
    env = {var: str(component[key]) for key, var in _MAP.items() if component.get(key) not in (None, "")}
    if component.get("login_password") not in (None, ""):
        env["PGPASSFILE"] = _passfile(check, component, passfile_dir)
    host = component.get("login_unix_socket") or component.get("login_host")
    if host:
        env["PGHOST"] = str(host)
    if check.get("database"):
        env["PGDATABASE"] = str(check["database"])
    return env


class FilterModule:
    def filters(self):
        return {"pg_environment": pg_environment}
