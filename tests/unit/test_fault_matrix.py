"""The fault matrix plugin (tests/support/fault_matrix.py) and its summary (scripts/fault-summary.py).

One real pytest run under two xdist workers records a clean fault, a false success, a marked
test that observed nothing, a skipped one and an unmarked test; the parts are merged into
one matrix and the summary counts what went wrong.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.fault_matrix import merge_parts

ROOT = Path(__file__).resolve().parents[2]


def _summary_module():
    spec = importlib.util.spec_from_file_location("fault_summary", ROOT / "scripts" / "fault-summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SUMMARY = _summary_module()
# Only the plugins needed: autoloading every installed one (hypothesis...) costs seconds per process.
PYTEST = [sys.executable, "-m", "pytest", "-p", "tests.support.fault_matrix", "-p", "no:cacheprovider"]


def _env(matrix):
    return dict(os.environ, LIFEBOAT_FAULT_MATRIX=str(matrix), PYTHONPATH=str(ROOT), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")


FAULT_TESTS = """
import pytest

PASSPHRASE = "correct horse battery"


@pytest.mark.fault("disk full", "destination fills up", item="18.5")
def test_clean(fault):
    result = {"failed": True, "msg": "No space left on device"}
    fault.observe(false_success=not result["failed"], data_lost=False)
    assert fault.scan([PASSPHRASE], result) == []


@pytest.mark.fault("killed process", "the dump is killed")
def test_false_success(fault):
    result = {"failed": False, "msg": "all good", "echo": PASSPHRASE}
    fault.observe(false_success=not result["failed"])
    fault.scan([PASSPHRASE], result)
    assert result["failed"], "a killed dump reported success"


@pytest.mark.fault("wrong key", "a leak the test itself does not assert")
def test_unasserted_leak(fault):
    fault.scan([PASSPHRASE], "the passphrase is " + PASSPHRASE)


@pytest.mark.fault("killed process", "forgot to observe")
def test_observes_nothing(fault):
    assert fault is not None


@pytest.mark.fault("server down", "no such server")
def test_skipped(fault):
    pytest.skip("a skipped fault test: the matrix must report it skipped, never passed")


def test_not_a_fault():
    assert True
"""


@pytest.fixture
def recorded(tmp_path):
    """Run the fault tests above under two xdist workers; return (matrix path, pytest process)."""
    (tmp_path / "test_faults_a.py").write_text(FAULT_TESTS)
    (tmp_path / "test_faults_b.py").write_text(FAULT_TESTS.replace("def test_", "def test_b_"))
    matrix = tmp_path / "out" / "fault-matrix.json"
    command = [*PYTEST, "-p", "xdist.plugin", "-n", "2", "--dist", "loadfile", "-q", str(tmp_path)]
    proc = subprocess.run(command, cwd=tmp_path, env=_env(matrix), capture_output=True, text=True, timeout=120, check=False)
    return matrix, proc


def test_two_workers_merge_into_one_matrix_and_the_summary_counts_the_false_success(recorded):
    matrix_file, proc = recorded
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the false success fails its test
    assert "recorded no observation" in proc.stdout, proc.stdout
    assert "test_unasserted_leak observed: secret_leaked" in proc.stdout, proc.stdout
    matrix = json.loads(matrix_file.read_text())
    assert not list(matrix_file.parent.glob("*.parts/*")), "part files left behind"
    by_test = {r["test"].split("::")[1]: r for r in matrix["faults"]}
    names = ("clean", "false_success", "unasserted_leak", "observes_nothing", "skipped")
    # Unmarked tests are not faults; every marked test from both files (two workers) is.
    assert sorted(by_test) == sorted(f"test_{prefix}{name}" for prefix in ("", "b_") for name in names)
    assert {r["worker"] for r in matrix["faults"]} == {"gw0", "gw1"}
    assert len(matrix["selected"]) == 10 and matrix["not_run"] == []
    clean, false_success = by_test["test_clean"], by_test["test_false_success"]
    assert clean["outcome"] == "passed" and clean["kind"] == "disk full" and clean["item"] == "18.5"
    assert clean["observed"] == {"false_success": False, "data_lost": False, "services_left_down": None, "secret_leaked": False}
    assert false_success["outcome"] == "failed"
    assert false_success["observed"]["false_success"] is True and false_success["observed"]["secret_leaked"] is True
    assert by_test["test_observes_nothing"]["outcome"] == "error"
    assert by_test["test_unasserted_leak"]["outcome"] == "error" and by_test["test_unasserted_leak"]["observed"]["secret_leaked"] is True
    assert by_test["test_skipped"]["outcome"] == "skipped"

    text = SUMMARY.render(matrix)
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert total.split() == ["total", "10", "2", "2/4", "0/2", "0/0", "4/6"], text
    assert "Faults that went wrong: 8" in text
    assert "test_false_success: failed, false successes, secrets leaked" in text
    assert "test_skipped: skipped" in text and "test_observes_nothing: error" in text
    assert "test_unasserted_leak: error, secrets leaked" in text
    assert SUMMARY.main(["--matrix", str(matrix_file), "--strict"]) == 1


def test_parts_merge_keeps_one_record_per_test_and_names_what_did_not_run(tmp_path, capsys):
    record = {"test": "t.py::a", "kind": "k", "fault": "f", "item": None, "outcome": "passed", "observed": {}, "seconds": 1, "worker": "gw0"}
    (tmp_path / "r-gw0.jsonl").write_text(json.dumps({"selected": ["t.py::a", "t.py::b"]}) + "\n" + json.dumps(record) + "\n" + '{"torn')
    (tmp_path / "r-gw1.jsonl").write_text(json.dumps({"selected": ["t.py::a", "t.py::b", "t.py::c"]}) + "\n")
    merged = merge_parts(sorted(tmp_path.glob("r-*.jsonl")))
    assert merged["selected"] == ["t.py::a", "t.py::b", "t.py::c"]
    assert [r["test"] for r in merged["faults"]] == ["t.py::a"]
    assert merged["not_run"] == ["t.py::b", "t.py::c"]
    assert "torn line" in capsys.readouterr().err
    assert ("t.py::c", "selected but not run (its worker died?)") in SUMMARY.problems(merged)


def test_nothing_recorded_is_said_and_an_old_matrix_is_not_taken_for_this_run(tmp_path, capsys):
    missing = tmp_path / "fault-matrix.json"
    assert SUMMARY.main(["--matrix", str(missing)]) == 0
    assert "No fault matrix was recorded" in capsys.readouterr().out
    assert SUMMARY.main(["--matrix", str(missing), "--strict"]) == 1

    missing.write_text(json.dumps({"finished": "2026-01-01T00:00:00+00:00", "faults": [], "selected": [], "not_run": []}))
    assert SUMMARY.main(["--matrix", str(missing), "--since", str(time.time())]) == 0
    assert "No fault matrix was recorded by this run" in capsys.readouterr().out
    assert SUMMARY.main(["--matrix", str(missing)]) == 0
    assert "Faults that went wrong: none" in capsys.readouterr().out


def test_a_run_without_fault_tests_leaves_the_matrix_alone(tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    matrix = tmp_path / "fault-matrix.json"
    matrix.write_text("earlier")
    proc = subprocess.run([*PYTEST, "-q", str(tmp_path)], cwd=tmp_path, env=_env(matrix), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert matrix.read_text() == "earlier"
    # Nor does a --collect-only run of fault tests (it runs none: they are not "not run").
    (tmp_path / "test_faults.py").write_text(FAULT_TESTS)
    command = [*PYTEST, "-q", "--collect-only", str(tmp_path)]
    proc = subprocess.run(command, cwd=tmp_path, env=_env(matrix), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and "test_faults.py::test_clean" in proc.stdout, proc.stdout + proc.stderr
    assert matrix.read_text() == "earlier" and not list(tmp_path.glob("*.parts/*"))


def test_an_unknown_observation_is_refused():
    from tests.support.fault_matrix import FaultObservation  # noqa: PLC0415

    with pytest.raises(TypeError, match="data_lost"):
        FaultObservation().observe(data_loss=True)
    observation = FaultObservation().observe(data_lost=True).observe(data_lost=False)
    assert observation.values["data_lost"] is True, "a bad observation is never undone"


def _marked_fault_tests():
    """{"test_file.py::test_name"} of the integration tests decorated with pytest.mark.fault."""
    found = set()
    for path in sorted((ROOT / "tests" / "integration").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any("mark.fault" in ast.unparse(d) for d in node.decorator_list):
                found.add("%s::%s" % (path.name, node.name))
    return found


def test_the_fault_table_of_the_development_guide_lists_every_fault_test():
    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    table = text.split("## Fault matrix", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"\| `(test_\w+\.py::test_\w+)` \|$", table, re.MULTILINE))
    marked = _marked_fault_tests()
    assert marked, "no fault test found"
    assert sorted(marked - documented) == [], "marked fault tests missing from docs/development.md's table"
    assert sorted(documented - marked) == [], "tests in docs/development.md's fault table that are not marked (or do not exist)"
