"""The roles pass a profile component to its module once (module_options in module_defaults).
The guarantee: every option of every module a role runs for a component is reachable, from
the component or from the role itself, with no role edit when a module gains an option. The
option lists come from each module's real argument spec, captured from its main()."""

from __future__ import annotations

import ast
import importlib
import pathlib
import re

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.lifeboat.backup.plugins.filter.module_options import module_options
from ansible_collections.lifeboat.backup.plugins.module_utils import _elasticsearch, _neo4j, _postgresql, _redis
from ansible_collections.lifeboat.backup.plugins.module_utils._module import merge_specs

ROLES = pathlib.Path(__file__).parents[4] / "roles"
PREFIX = "lifeboat.backup."
CALL = re.compile(r"lifeboat\.backup\.module_options\((.*?)\)\s*\)?\s*\}\}", re.S)
# The options a reachability check (shared_only) must pass: a family's connection or layout.
SHARED = set(_postgresql.CONNECTION_SPEC) | set(_elasticsearch.CONNECTION_SPEC) | set(_redis.CONNECTION_SPEC) | set(_neo4j.LAYOUT_SPEC)


class _Captured(Exception):
    pass


def argument_spec(module):
    """The argument spec module ``module`` builds in main(), aliases included."""
    mod = importlib.import_module("ansible_collections.lifeboat.backup.plugins.modules." + module)
    seen = {}

    def capture(argument_spec=None, specs=(), **kwargs):
        seen.update(merge_specs(argument_spec, specs))
        raise _Captured

    original = mod.LifeboatModule
    mod.LifeboatModule = capture
    try:
        with pytest.raises(_Captured):
            mod.main()
    finally:
        mod.LifeboatModule = original
    return seen


def _tasks(items):
    for task in items or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key))


def component_calls():
    """(task file, task name, module, direct args, module_options keyword arguments) of every
    task that passes something to a module of this collection with module_options."""
    calls = []
    for path in sorted(ROLES.glob("*/tasks/*.yml")):
        for task in _tasks(yaml.safe_load(path.read_text())):
            for module, template in (task.get("module_defaults") or {}).items():
                found = CALL.search(str(template))
                if not found:
                    continue
                call = ast.parse("f(%s)" % found.group(1).replace("true", "True").replace("false", "False")).body[0].value
                kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
                wrong = "%s: module_defaults of %s passes another module's options" % (path.name, module)
                assert ast.literal_eval(call.args[0]) == module[len(PREFIX) :], wrong
                calls.append((path.relative_to(ROLES).as_posix(), task["name"], module[len(PREFIX) :], set(task.get(module) or {}), kwargs))
    return calls


CALLS = component_calls()


def test_every_component_module_call_of_the_roles_is_found():
    files = {c[0] for c in CALLS}
    modules = {c[2] for c in CALLS}
    for kind in ("config", "postgresql", "postgresql_basebackup", "elasticsearch", "neo4j", "archive"):
        assert "backup/tasks/component_%s.yml" % kind in files
    for kind in ("config", "postgresql", "elasticsearch", "neo4j"):
        assert "restore/tasks/restore_%s.yml" % kind in files
    assert {"postgresql_info", "elasticsearch_snapshot_info", "queue_drain", "elasticsearch_repository", "table_archive", "table_checkpoint"} <= modules


@pytest.mark.parametrize("call", CALLS, ids=["%s:%s" % (c[0], c[2]) for c in CALLS])
def test_every_module_option_is_reachable_from_a_profile_component(call):
    path, name, module, direct, kwargs = call
    spec = argument_spec(module)
    prefix = kwargs.get("prefix") or ""
    # A component that sets every option, plainly and (in a restore) with the prefix.
    component = dict.fromkeys(spec, "plain")
    component.update({prefix + option: "prefixed" for option in spec if prefix})
    component["owner_group"] = "renamed"
    passed = module_options(component, module, **kwargs)
    wanted = {option for option in spec if option in SHARED} if kwargs.get("shared_only") else set(spec)
    unreachable = sorted(wanted - set(passed) - direct)
    assert not unreachable, "%s (%s): options of %s no profile component can set: %s" % (path, name, module, ", ".join(unreachable))
    assert set(passed) <= set(spec), "%s passes what %s does not take: %s" % (path, module, set(passed) - set(spec))
    if prefix:
        assert all(passed[o] in ("prefixed", "renamed") for o in passed if o not in direct), "restore_<option> wins over <option>"


def test_no_component_task_lists_options_one_by_one():
    """The regression this replaces: `option: "{{ __component.option | default(omit) }}"`."""
    listed = []
    for path in sorted(ROLES.glob("*/tasks/*.yml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"(__component|quiesce_redis)\.\w+ \| default\(omit\)", line):
                listed.append("%s:%d" % (path.relative_to(ROLES), number))
    assert not listed, "options listed one by one instead of module_options: %s" % ", ".join(listed)


PG = {"name": "maindb", "kind": "postgresql", "group": "db", "audit": True, "applies": True, "selected": True, "reason": None}


def test_keeps_the_module_options_of_a_component_and_nothing_else():
    component = dict(PG, login_host="db1", port=5433, jobs=4, verify="full", paths=["/etc"], login_password="s3cret")
    assert module_options(component, "postgresql_dump") == dict(name="maindb", login_host="db1", port=5433, jobs=4, verify="full", login_password="s3cret")
    assert module_options(component, "lifeboat.backup.postgresql_dump") == module_options(component, "postgresql_dump")


def test_shared_only_is_the_connection():
    component = dict(PG, login_host="db1", port=5433, include_queries=True, jobs=4)
    assert module_options(component, "postgresql_info", shared_only=True) == dict(login_host="db1", port=5433)


def test_restore_prefix_wins_and_the_backup_modules_own_options_stay_with_the_backup():
    component = dict(PG, login_host="db1", jobs=4, databases=["app"], restore_jobs=2, restore_clean=True, verify_counts=True, rename={"app": "app2"})
    passed = module_options(component, "postgresql_restore", prefix="restore_", except_own_options_of=["postgresql_dump"])
    assert passed == dict(login_host="db1", jobs=2, clean=True, verify_counts=True, rename={"app": "app2"})


def test_owner_group_is_the_group_option_and_group_is_where_the_component_is_hosted():
    component = {"name": "graph", "kind": "neo4j", "group": "graph", "owner": "neo4j", "owner_group": "adm", "home": "/opt/neo4j"}
    passed = module_options(component, "neo4j_restore", prefix="restore_", except_own_options_of=["neo4j_archive"])
    assert passed == dict(owner="neo4j", group="adm", home="/opt/neo4j")


def test_an_alias_is_passed_under_the_option_name_and_the_option_name_wins():
    old_names = {"host": "r1", "port": 6380, "username": "u"}
    assert module_options(old_names, "queue_drain", shared_only=True) == dict(login_host="r1", login_port=6380, login_user="u")
    assert module_options({"login_host": "new", "host": "old"}, "queue_drain") == dict(login_host="new")
    assert module_options({"host": "old", "login_host": "new"}, "queue_drain") == dict(login_host="new")


@pytest.mark.parametrize("module", ["nope", "ansible.builtin.copy", "../filter/module_options", "postgresql_dump.x"])
def test_an_unknown_module_is_refused(module):
    with pytest.raises(AnsibleFilterError, match="is not a module of lifeboat.backup"):
        module_options({}, module)


def test_a_component_must_be_a_dict():
    with pytest.raises(AnsibleFilterError, match="expects a profile component"):
        module_options(["login_host"], "postgresql_dump")


def test_a_key_that_starts_with_the_prefix_and_is_an_option_itself_passes():
    component = {"name": "pitr", "kind": "postgresql_pitr", "target": {"path": "/a"}, "archive_prefix": "wal/", "archive_name": "main", "checkpoint": "fast"}
    passed = module_options(component, "postgresql_wal_archive", prefix="archive_", except_own_options_of=["postgresql_basebackup"])
    assert passed == dict(target={"path": "/a"}, archive_prefix="wal/", name="main")


def test_excluded_keys_are_not_passed_plainly_but_their_prefixed_form_is():
    component = {"name": "pitr", "login_user": "backup", "parallel": 8, "port": 5432, "restore_port": 5499}
    passed = module_options(component, "postgresql_pitr", prefix="restore_", exclude=["login_user", "parallel"])
    assert passed == dict(port=5499)
    assert (
        module_options(dict(component, restore_login_user="postgres"), "postgresql_pitr", prefix="restore_", exclude=["login_user"])["login_user"] == "postgres"
    )
