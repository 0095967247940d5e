"""The module anatomy's one failure path (docs/architecture.md): LifeboatError to fail_json,
kept results, and the failure hooks that record the reason in a session component."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.lifeboat.backup.plugins.module_utils import _session
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, MissingLibraryError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import SUCCESS_KEY, LifeboatModule, merge_specs


class FakeComponent:
    def __init__(self, status="running"):
        self.record = {"status": status}
        self.reasons = []

    def fail(self, reason, details=None):
        self.reasons.append(reason)
        self.record["status"] = "failed"


class FakeSession:
    def __init__(self, component):
        self._component = component

    def component(self, name, kind):
        return self._component


@pytest.fixture
def module(monkeypatch):
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": {"name": "x"}})))
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
    return LifeboatModule(argument_spec=dict(name=dict(type="str")), specs=[dict(extra=dict(type="int", default=3))])


def outcome(module, execute, capsys):
    with pytest.raises(SystemExit) as ended:
        module.run(execute)
    return ended.value.code, json.loads(capsys.readouterr().out)


def test_shared_specs_are_merged_and_copied():
    shared = dict(a=dict(type="str", aliases=["b"]))
    merged = merge_specs(dict(c=dict(type="int")), [shared])
    merged["a"]["aliases"].append("z")
    assert sorted(merged) == ["a", "c"] and shared["a"]["aliases"] == ["b"]
    assert merge_specs(dict(a=dict(type="int")), [shared])["a"] == dict(type="int")  # the module's own wins


def test_result_is_returned(module, capsys):
    code, result = outcome(module, lambda m: dict(changed=True, extra=m.params["extra"]), capsys)
    assert code == 0 and result["changed"] is True and result["extra"] == 3
    # #18.12: the positive success marker the roles test (docs/architecture.md).
    assert result[SUCCESS_KEY] is True


def test_no_failure_carries_the_success_marker(module, capsys):
    """The roles count a result without lifeboat_succeeded as failed: an error (even one that
    returns what the module had kept, or a key of the same name) never carries it."""

    def execute(m):
        m.keep(dict(changed=False, found=["a"]))
        raise LifeboatError("it broke", **{SUCCESS_KEY: True, "size": 1})

    code, result = outcome(module, execute, capsys)
    assert code == 1 and result["failed"] is True and result["size"] == 1
    assert SUCCESS_KEY not in result


def test_error_becomes_one_failure_with_what_was_done(module, capsys):
    def execute(m):
        m.keep(dict(changed=False, found=["a"]))
        raise LifeboatError("it broke; do this", done=["table t dropped"], found=["b"], size=1)

    code, result = outcome(module, execute, capsys)
    assert code == 1 and result["failed"] is True
    assert result["msg"] == "it broke; do this. Already changed before the failure: table t dropped."
    assert result["changed"] is True and result["done"] == ["table t dropped"]
    assert result["found"] == ["b"] and result["size"] == 1  # the error's own values win over the kept ones


def test_kept_changed_counts(module, capsys):
    def execute(m):
        m.keep(dict(changed=True, purged={"q": 3}))
        raise OptionError("timeout", "timeout must be 0 or more")

    _code, result = outcome(module, execute, capsys)
    assert result["changed"] is True and result["purged"] == {"q": 3} and result["option"] == "timeout"


def test_component_records_the_reason_unless_it_recorded_its_own(module, capsys):
    running = FakeComponent()

    def execute(m):
        m.start_component(FakeSession(running), "pg", "postgresql")
        raise LifeboatError("pg_dump exited 1")

    outcome(module, execute, capsys)
    assert running.reasons == ["pg_dump exited 1"]

    done = FakeComponent()

    def execute_after_own_failure(m):
        m.start_component(FakeSession(done), "pg", "postgresql")
        done.fail("dump of app failed: disk full")
        raise LifeboatError("PostgreSQL dump failed: dump of app failed: disk full")

    outcome(module, execute_after_own_failure, capsys)
    assert done.reasons == ["dump of app failed: disk full"]


def test_a_bug_is_recorded_then_raised(module):
    component = FakeComponent()

    def execute(m):
        m.start_component(FakeSession(component), "pg", "postgresql")
        raise KeyError("oops")

    with pytest.raises(KeyError):
        module.run(execute)
    assert component.reasons and component.reasons[0].startswith("internal error (KeyError")


def test_component_spec_names_the_default():
    spec = _session.component_spec("neo4j")
    assert spec == dict(session=dict(type="path", required=True), name=dict(type="str", default="neo4j"))
    assert "required" not in _session.component_spec("elasticsearch", required=False)["session"]


def test_a_missing_library_raised_in_module_utils_is_reported_once(module, capsys, monkeypatch):
    # module_utils raise MissingLibraryError (es.check_libraries, pg.require_driver); the base
    # reports it as missing_required_lib did, with the import traceback
    # (fail_json's exception=), after the hooks.
    from ansible_collections.lifeboat.backup.plugins.module_utils import _elasticsearch, _postgresql

    monkeypatch.setattr(_postgresql, "HAS_PSYCOPG", False)
    monkeypatch.setattr(_postgresql, "PSYCOPG_IMPORT_ERROR", "Traceback: no psycopg")
    component = FakeComponent()

    def execute(m):
        m.start_component(FakeSession(component), "pg", "postgresql")
        _postgresql.require_driver()

    code, result = outcome(module, execute, capsys)
    assert code == 1 and result["msg"].startswith("Failed to import the required Python library (psycopg (or psycopg2)) on ")
    assert result["changed"] is False
    assert component.reasons == [result["msg"]]

    monkeypatch.setattr(_elasticsearch, "HAS_JMESPATH", False)
    _elasticsearch.check_libraries()  # jmespath only when asked for
    with pytest.raises(MissingLibraryError, match=r"required Python library \(jmespath\)") as raised:
        _elasticsearch.check_libraries(jmespath_needed=True)
    assert raised.value.library == "jmespath" and raised.value.fail_kwargs()["exception"] is _elasticsearch.JMESPATH_IMPORT_ERROR


def test_require_fails_with_missing_required_lib(module, capsys):
    code, result = outcome(module, lambda m: m.require("zstandard", False, "Traceback: no zstandard"), capsys)
    assert code == 1 and "required Python library (zstandard)" in result["msg"]
