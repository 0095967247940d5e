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


# #17.5: the after_restore actions of the profile are checked before anything is restored.
AFTER_IMAGE = {"search": {"kind": "elasticsearch", "status": "success"}, "etc": {"kind": "config", "status": "success"}}


def test_after_restore_actions_travel_with_their_component_in_restore_order():
    actions = [{"name": "reindex", "command": "search reindex", "timeout": "600"}]
    plan = restore_order(AFTER_IMAGE, profile=[{"name": "search", "kind": "elasticsearch", "after_restore": actions}])
    assert [c["name"] for c in plan] == ["etc", "search"]
    assert plan[1]["after_restore"] == actions


@pytest.mark.parametrize(
    "actions, message",
    [
        ("search reindex", "after_restore must be a list"),
        ([{"name": "reindex"}], "action #1 needs a name and a command"),
        ([{"name": "reindex", "command": "x", "comand": "y"}], "unknown keys comand"),
        ([{"name": "reindex", "command": "x", "timeout": 0}], "timeout must be a number of seconds"),
        ([{"name": "reindex", "command": "x", "environment": ["A=1"]}], "environment must be a dict"),
    ],
)
def test_a_bad_action_is_refused_naming_the_component(actions, message):
    with pytest.raises(AnsibleFilterError, match=message) as error:
        restore_order(AFTER_IMAGE, profile=[{"name": "search", "kind": "elasticsearch", "after_restore": actions}])
    assert "component search" in str(error.value)


def test_an_archive_component_is_never_restored_unless_named_and_then_refused_by_the_role():
    image = dict(IMAGE, audit={"kind": "archive", "status": "success", "details": {"chains": []}})
    profile = PROFILE + [{"name": "audit", "kind": "archive", "signing_key": "k"}]
    assert "audit" not in [c["name"] for c in restore_order(image, profile)]
    (only,) = restore_order(image, profile, only=["audit"])
    assert only["kind"] == "archive" and "signing_key" not in only  # restore_archive.yml says it is restored by hand
