"""A profile is validated before anything runs (issue #18 item 10): each component against
the keys of its kind, from one schema (plugins/plugin_utils/_profile_schema.py) that also
writes docs/profile-reference.md and agrees with the role task files."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from ansible_collections.lifeboat.backup.plugins.filter.profile_problems import FilterModule
from ansible_collections.lifeboat.backup.plugins.plugin_utils._profile_schema import (
    KINDS,
    REFERENCE,
    USES,
    WHEN_CHANGED_USE,
    component_keys,
    profile_problems,
    reference_markdown,
)

from .test_module_options import CALLS, ROLES

ROOT = pathlib.Path(__file__).parents[4]
SHIPPED = sorted(ROOT.glob("docs/profiles/*.yml")) + sorted(ROOT.glob("extensions/molecule/*/group_vars/all.yml"))


def _profile(*components, **extra):
    return dict({"name": "p", "platform": {"name": "x", "version": "1"}, "components": list(components)}, **extra)


def test_the_filter_is_registered():
    assert FilterModule().filters()["profile_problems"] is profile_problems


def test_path_for_paths_is_refused_with_the_nearest_name():
    problems = profile_problems(_profile({"name": "os", "kind": "config", "path": ["/etc/hosts"]}))
    assert "component os (config): unknown key 'path' - did you mean 'paths'?" in problems
    assert "component os (config): 'paths' is required" in problems


def test_database_for_databases_is_refused_with_the_nearest_name():
    problems = profile_problems(_profile({"name": "maindb", "kind": "postgresql", "login_host": "127.0.0.1", "database": ["ssg"]}))
    assert problems == ["component maindb (postgresql): unknown key 'database' - did you mean 'databases'?"]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.relative_to(ROOT).as_posix() for p in SHIPPED])
def test_every_shipped_profile_validates(path):
    profile = yaml.safe_load(path.read_text())["backup_profile"]
    assert profile["components"], "%s has no components" % path
    assert profile_problems(profile) == []


def test_type_errors_and_choices_are_named():
    problems = profile_problems(
        _profile(
            {"name": "db", "kind": "postgresql", "jobs": "four", "port": [5432], "databases": "app", "restore_globals": "most"},
            {"name": "os", "kind": "config", "paths": ["/etc"], "once": "sometimes"},
        )
    )
    assert "component db (postgresql): 'jobs' must be an integer, not 'four'" in problems
    assert "component db (postgresql): 'port' must be an integer, not [5432]" in problems
    assert any(p.startswith("component db (postgresql): 'restore_globals' must be one of ") for p in problems), problems
    assert "component os (config): 'once' must be a boolean, not 'sometimes'" in problems
    # A comma-separated string is a list to the module too; text booleans are booleans.
    assert not [p for p in problems if "'databases'" in p]
    assert profile_problems(_profile({"name": "os", "kind": "config", "paths": ["/etc"], "once": "yes", "audit": "false"})) == []


def test_unknown_kinds_names_and_duplicates():
    problems = profile_problems(
        _profile({"name": "a", "kind": "postgres"}, {"kind": "config", "paths": ["/etc"]}, {"name": "a", "kind": "config", "paths": ["/x"]}, "text")
    )
    assert problems[0].startswith("component a: unknown kind 'postgres' - did you mean 'postgresql'?")
    assert "component #2: needs name" in problems
    assert "component a (config): the name is used twice" in problems
    assert problems[-1].startswith("component #4: must be a mapping")


def test_what_the_role_sets_itself_is_no_profile_key():
    problems = profile_problems(_profile({"name": "os", "kind": "config", "paths": ["/etc"], "session": "/tmp/x", "halt": True, "restore_passphrase": "x"}))
    assert [p.split("'")[1] for p in problems] == ["session", "halt", "restore_passphrase"]


def test_restore_keys_and_the_backup_modules_own_keys_are_valid():
    assert profile_problems(_profile({"name": "db", "kind": "postgresql", "jobs": 2, "restore_jobs": 4, "restore_clean": "true", "rename": {"a": "b"}})) == []
    assert (
        profile_problems(_profile({"name": "g", "kind": "neo4j", "home": "/opt/neo4j", "owner": "neo4j", "owner_group": "adm", "restore_replace": False})) == []
    )


def test_when_changed_brings_the_connection_keys_and_only_then():
    config = {"name": "app", "kind": "config", "paths": ["/etc/app"], "login_host": "db1", "login_db": "app"}
    assert [p.split("'")[1] for p in profile_problems(_profile(config))] == ["login_host", "login_db"]
    assert profile_problems(_profile(dict(config, when_changed=["public.settings"]))) == []


def test_the_top_level_quiesce_services_and_checks():
    profile = _profile(
        {"name": "os", "kind": "config", "paths": ["/etc"]},
        component=[],
        quiesce={"services": [{"name": "api", "drain_afer": True}, {"stop_command": "x"}], "queue": ["q"]},
        checks=[{"name": "rows", "sql": "SELECT 1", "componnet": "db"}, {"name": "both", "sql": "x", "command": "y"}],
    )
    problems = profile_problems(profile)
    assert "profile: unknown key 'component' - did you mean 'components'?" in problems
    assert "quiesce: unknown key 'queue' - did you mean 'queues'?" in problems
    assert "quiesce service api: unknown key 'drain_afer' - did you mean 'drain_after'?" in problems
    assert "quiesce service #2: needs a name" in problems
    assert "check rows: unknown key 'componnet' - did you mean 'component'?" in problems
    assert "check both: needs a name and either command or sql" in problems
    assert profile_problems("components: []")[0].startswith("the profile must be a mapping")


def test_every_kind_has_its_uses_and_documents_its_keys():
    assert set(USES) == set(KINDS)
    for kind in KINDS:
        keys = component_keys(kind)
        assert {"name", "kind", "group", "once", "audit", "after_restore", "when_changed"} <= set(keys)
        assert all(entry["description"] for entry in keys.values()), kind


# Which kinds each role task file serves (component_postgresql_pitr.yml includes the base backup's).
FILE_KINDS = {"backup/tasks/component_postgresql_basebackup.yml": ("postgresql_basebackup", "postgresql_pitr")}


def _file_kinds(path):
    if path in FILE_KINDS:
        return FILE_KINDS[path]
    stem = pathlib.PurePath(path).stem
    for prefix in ("component_", "restore_", "reach_"):
        if stem.startswith(prefix):
            return (stem[len(prefix) :],)
    return ()


def _task(path, name, module):
    for task in yaml.safe_load((ROLES / path).read_text()):
        if task.get("name") == name:
            return task["lifeboat.backup." + module]
    raise AssertionError(name)


@pytest.mark.parametrize("call", CALLS, ids=["%s:%s" % (c[0], c[2]) for c in CALLS])
def test_the_schema_runs_each_module_as_the_roles_do(call):
    """Each module_options call of a role is a use of the schema, with the same arguments, and
    the options the task sets from elsewhere than the component are the use's role_sets."""
    path, name, module, direct, kwargs = call
    if path.startswith("quiesce/"):
        return
    args = _task(path, name, module)
    from_role = {option for option in direct if "__component.%s " % option not in str(args[option]) + " "}
    kinds = _file_kinds(path) or (("when_changed",) if path.endswith("when_changed.yml") else ())
    assert kinds, "%s: which kind does this file serve?" % path
    for kind in kinds:
        uses = (WHEN_CHANGED_USE,) if kind == "when_changed" else USES[kind]
        found = [u for u in uses if u.module == module]
        assert found, "%s runs %s for kind %s; the profile schema does not" % (path, module, kind)
        use = found[0]
        assert (use.prefix, list(use.except_own_options_of), list(use.exclude), use.shared_only) == (
            kwargs.get("prefix"),
            list(kwargs.get("except_own_options_of", [])),
            list(kwargs.get("exclude", [])),
            bool(kwargs.get("shared_only")),
        ), "%s: module_options(%s) differs from the schema's use %s" % (path, kwargs, use)
        assert set(use.role_sets) == from_role, "%s: the task sets %s itself; the schema says %s" % (path, sorted(from_role), sorted(use.role_sets))


def test_the_reference_page_is_up_to_date():
    page = ROOT / REFERENCE
    assert page.read_text() == reference_markdown(), "regenerate it: PYTHONPATH=.build/collections .venv/bin/python scripts/profile-reference.py"
    for kind in KINDS:
        assert "## Components of kind `%s`" % kind in page.read_text()


def test_module_advice_is_given_in_the_roles_words():
    """#18.12: role errors name role variables and profile keys that reach the option."""
    from ansible_collections.lifeboat.backup.plugins.filter.role_advice import FilterModule as Advice

    advice = Advice().filters()["role_advice"]
    refused = "target database app is not empty (3 tables); restore into an empty or new database (rename), or set clean=true to drop and recreate it"
    assert advice(refused, "postgresql", phase="restore", component="db").endswith("or set restore_clean: true to drop and recreate it")
    # A plain partial is the snapshot's: the restore's own is restore_partial.
    partial = "snapshot s1 is PARTIAL; set partial=true to restore what it holds"
    assert advice(partial, "elasticsearch", phase="restore", component="search") == (
        "snapshot s1 is PARTIAL; set restore_partial: true on component search to restore what it holds"
    )
    assert "partial: true on component search" in advice("allow a PARTIAL snapshot with partial=true", "elasticsearch", component="search")
    assert advice("nothing to say, key=value and x=true", "config", phase="restore") == "nothing to say, key=value and x=true"
    for kind, message in (("postgresql", refused), ("elasticsearch", partial)):
        key = advice(message, kind, phase="restore").split("set ")[-1].split(":")[0]
        assert key in component_keys(kind) or key == "restore_clean", "advice names a key the role would drop: %s" % key
