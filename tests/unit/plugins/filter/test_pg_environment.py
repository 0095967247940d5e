"""The libpq environment of a post-restore SQL check: never a password in it."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.lifeboat.backup.plugins.filter.pg_environment import pg_environment
from ansible_collections.lifeboat.backup.plugins.filter.restore_order import restore_order

COMPONENTS = [
    {"name": "maindb", "kind": "postgresql", "login_host": "127.0.0.1", "port": 5433, "login_user": "backup", "login_password": "s3cret"},
    {"name": "local", "kind": "postgresql", "login_unix_socket": "/var/run/postgresql"},
]


def test_a_password_becomes_a_password_file_never_a_variable():
    env = pg_environment({"name": "c", "component": "maindb", "database": "intel"}, COMPONENTS, passfile_dir="/tmp/x/")
    assert env == {"PGHOST": "127.0.0.1", "PGPORT": "5433", "PGUSER": "backup", "PGDATABASE": "intel", "PGPASSFILE": "/tmp/x/maindb.pgpass"}
    assert "s3cret" not in repr(env)


def test_a_password_without_passfile_dir_is_refused():
    with pytest.raises(AnsibleFilterError, match="has a login_password; give passfile_dir"):
        pg_environment({"name": "c", "component": "maindb"}, COMPONENTS)


def test_socket_without_password_and_unknown_component():
    assert pg_environment({"name": "c", "component": "local"}, COMPONENTS) == {"PGHOST": "/var/run/postgresql"}
    with pytest.raises(AnsibleFilterError, match="not a PostgreSQL component of the profile"):
        pg_environment({"name": "c", "component": "nope"}, COMPONENTS)


def test_the_restore_plan_carries_no_credentials():
    image = {"maindb": {"kind": "postgresql", "status": "success", "members": [], "details": {}}}
    plan = restore_order(image, profile=COMPONENTS)
    assert plan[0]["login_user"] == "backup" and "login_password" not in plan[0]
