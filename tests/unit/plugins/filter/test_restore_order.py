"""restore_order: what the restore role restores, in which order (docs/architecture.md)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.lifeboat.backup.plugins.filter.restore_order import restore_order

# Manifest entries as image_info returns them: a base backup's kind is spelt with a hyphen.
IMAGE = {
    "search": {"kind": "elasticsearch", "status": "success"},
    "db1": {"kind": "postgresql-basebackup", "status": "success", "details": {"start_lsn": "0/2000028"}},
    "maindb": {"kind": "postgresql", "status": "success"},
    "config": {"kind": "config", "status": "success"},
    "broken": {"kind": "postgresql", "status": "failed"},
}
PROFILE = [
    {"name": "config", "kind": "config"},
    {"name": "maindb", "kind": "postgresql", "login_password": "secret"},
    {"name": "db1", "kind": "postgresql_pitr", "target": {"type": "local", "path": "/srv/wal"}, "restore_data_dir": "/srv/pg"},
    {"name": "search", "kind": "elasticsearch"},
]


def test_a_pitr_component_is_restored_with_the_databases_and_keeps_its_profile_keys():
    plan = restore_order(IMAGE, PROFILE)
    assert [(c["name"], c["kind"]) for c in plan] == [("config", "config"), ("maindb", "postgresql"), ("db1", "postgresql_pitr"), ("search", "elasticsearch")]
    db1 = plan[2]
    assert db1["target"] == {"type": "local", "path": "/srv/wal"} and db1["restore_data_dir"] == "/srv/pg"
    assert db1["details"] == {"start_lsn": "0/2000028"}
    assert "login_password" not in plan[1]  # the plan is kept in facts: no credentials


def test_a_plain_base_backup_is_left_out_unless_asked_for_by_name():
    profile = [dict(c, kind="postgresql_basebackup") if c["name"] == "db1" else c for c in PROFILE]
    assert "db1" not in [c["name"] for c in restore_order(IMAGE, profile)]
    (only,) = restore_order(IMAGE, profile, only=["db1"])
    assert only["kind"] == "postgresql_basebackup"  # the role then says it is restored by hand


def test_a_component_not_captured_is_refused_by_name():
    with pytest.raises(AnsibleFilterError, match="broken"):
        restore_order(IMAGE, PROFILE, only=["broken"])
