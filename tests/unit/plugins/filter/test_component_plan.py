"""Component selection rules (BRIEF section 1, rows 1 to 3; the gateway seed)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.lifeboat.backup.plugins.filter.component_plan import component_plan

GATEWAY = [
    {"name": "os", "kind": "config", "paths": ["/etc/hosts"]},
    {"name": "config", "kind": "config", "paths": ["/opt/gw/etc"]},
    {"name": "maindb", "kind": "postgresql", "group": "db"},
    {"name": "audits", "kind": "postgresql", "group": "db", "audit": True},
    {"name": "search", "kind": "elasticsearch", "group": "search", "once": True},
]
GROUPS = {"db": ["gw1"], "search": ["gw2", "gw3"], "all": ["gw1", "gw2", "gw3"]}
HOSTS = ["gw1", "gw2", "gw3"]


def plan(host, **kwargs):
    return {c["name"]: c for c in component_plan(GATEWAY, host, GROUPS, HOSTS, **kwargs)}


def selected(host, **kwargs):
    return [n for n, c in plan(host, **kwargs).items() if c["selected"]]


def test_standard_selection_is_everything_applicable_except_audits():
    assert selected("gw1") == ["os", "config", "maindb"]
    assert plan("gw1")["audits"]["reason"].startswith("audit component")
    assert selected("gw2") == ["os", "config", "search"]
    assert selected("gw3") == ["os", "config"]
    assert plan("gw3")["search"]["reason"] == "runs once per cluster, on gw2"
    assert plan("gw2")["maindb"]["reason"] == "not hosted here (host is not in group db)"


def test_audits_on_request():
    assert selected("gw1", include_audits=True) == ["os", "config", "maindb", "audits"]


def test_custom_selection_is_exactly_the_listed_ones():
    assert selected("gw1", selection="custom", requested=["maindb", "audits"]) == ["maindb", "audits"]
    on_app = plan("gw2", selection="custom", requested=["maindb", "os"])
    assert [n for n, c in on_app.items() if c["selected"]] == ["os"]
    assert on_app["maindb"]["reason"].startswith("not applicable")


def test_skip_list_and_once_follow_the_play():
    assert selected("gw1", skip=["os"]) == ["config", "maindb"]
    # gw2 not in the play: the search snapshot moves to gw3
    assert component_plan(GATEWAY, "gw3", GROUPS, ["gw1", "gw3"])[4]["selected"]


@pytest.mark.parametrize(
    ("components", "kwargs", "message"),
    [
        ([{"name": "x"}], {}, "needs a name and a kind"),
        ([{"name": "x", "kind": "mysql"}], {}, "unknown kind"),
        ([{"name": "x", "kind": "config"}, {"name": "x", "kind": "config"}], {}, "used twice"),
        (GATEWAY, {"selection": "custom", "requested": ["maindb", "typo"]}, "typo"),
        (GATEWAY, {"selection": "custom"}, "backup_components is empty"),
    ],
)
def test_profile_errors(components, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        component_plan(components, "gw1", GROUPS, HOSTS, **kwargs)


def test_the_plan_carries_no_credentials():
    components = [
        {"name": "db", "kind": "postgresql", "login_password": "pg-secret"},
        {"name": "search", "kind": "elasticsearch", "password": "es-secret", "api_key": "k", "bearer_token": "t"},
    ]
    plan = component_plan(components, "gw1", GROUPS, HOSTS)
    assert [sorted(set(c) & {"login_password", "password", "api_key", "bearer_token"}) for c in plan] == [[], []]
    assert components[0]["login_password"] == "pg-secret", "the profile itself is left alone"


def test_an_archive_component_is_a_kind_and_its_keys_and_targets_stay_out_of_the_plan():
    archive = {
        "name": "log-archive",
        "kind": "archive",
        "login_password": "pg-secret",
        "signing_key": "-----BEGIN PRIVATE KEY-----",
        "passphrase": "chain-secret",
        "targets": [{"name": "vault", "type": "sftp", "private_key": "ssh-secret", "password": "p"}, {"name": "s3", "type": "s3", "secret_key": "s"}],
        "tables": [{"name": "public.audit", "key": ["id"]}],
    }
    (entry,) = component_plan([archive], "gw1", GROUPS, HOSTS)
    assert entry["selected"] and entry["kind"] == "archive"
    text = repr(entry)
    for secret in ("pg-secret", "BEGIN PRIVATE", "chain-secret", "ssh-secret", "'p'", "'s'"):
        assert secret not in text
    assert entry["targets"] == [{"name": "vault", "type": "sftp"}, {"name": "s3", "type": "s3"}]
    assert entry["tables"] == archive["tables"]
    assert archive["targets"][0]["private_key"] == "ssh-secret", "the profile itself is left alone"
