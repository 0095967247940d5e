"""drill_report and drill_sandbox without servers: the report's table, JSON and HTML, its
verdict (not covered is never passed), no file replaced; the sandbox's refusals."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.modules import run_module

PASSED = {
    "node": "db1",
    "verdict": "passed",
    "image": "/b/20261130T010000Z-db1.zip",
    "backup_id": "20261130T010000Z-1",
    "versions": {"image_platform": {"name": "p", "version": "1"}, "node_platform": {"name": "p", "version": "2"}, "same_platform": False, "servers": []},
    "components": [
        {"name": "config", "kind": "config", "result": "passed", "seconds": 0.5, "compare_seconds": 0.1, "details": {"files": 3}, "actions": []},
        {"name": "search", "kind": "elasticsearch", "result": "not covered", "seconds": None, "reason": "not restored by the drill"},
    ],
}
FAILED = {
    "node": "db2",
    "verdict": "failed",
    "reason": "postgresql: the restored databases differ",
    "components": [
        {
            "name": "postgresql",
            "kind": "postgresql",
            "result": "failed",
            "seconds": 2.0,
            "compare_seconds": 0.3,
            "reason": "app: table public.t: row contents differ <b>",
            "actions": [{"component": "postgresql", "name": "reindex", "passed": True, "rc": 0, "seconds": 1.2}],
        }
    ],
}


def test_report_table_files_and_verdict(tmp_path):
    out = run_module("drill_report", results={"db1": PASSED, "db2": FAILED}, dest=str(tmp_path / "r"))
    assert not out.failed, out
    assert out["verdict"] == "failed" and out["not_covered"] == ["db1/search"]
    table = out["table"]
    assert table[0].split() == ["node", "component", "kind", "result", "restore", "compare", "detail"]
    assert any(line.startswith("db1") and "config" in line and "passed" in line and "0.5s" in line and "3 files equal" in line for line in table)
    assert any("not covered" in line and "search" in line for line in table)
    assert any("DIFFERENT" in line for line in table), "a platform version difference is reported"
    assert "  after_restore postgresql: reindex  ok  1.2s" in table
    data = json.loads(Path(out["json"]).read_text())
    assert data["verdict"] == "failed" and set(data["nodes"]) == {"db1", "db2"}
    page = Path(out["html"]).read_text()
    assert page.count('class="bar"') == 3 and "&lt;b&gt;" in page and '<b>"' not in page, "one bar per component; text escaped"
    assert oct(Path(out["json"]).stat().st_mode & 0o777) == "0o600"
    again = run_module("drill_report", results={"db1": PASSED}, dest=str(tmp_path / "r"))
    assert again["verdict"] == "passed" and again["json"] != out["json"] and Path(out["json"]).exists(), "never replaces a report"


def test_report_of_no_node_is_not_passed(tmp_path):
    out = run_module("drill_report", results={}, dest=str(tmp_path))
    assert out["verdict"] == "failed"


def test_sandbox_refuses_to_remove_what_it_did_not_make(tmp_path):
    (tmp_path / "keep").write_text("x")
    out = run_module("drill_sandbox", path=str(tmp_path), state="absent")
    assert out.failed and "not a drill sandbox" in out["msg"] and (tmp_path / "keep").exists()
    busy = run_module("drill_sandbox", path=str(tmp_path), name="pg")
    assert busy.failed and "is not a drill sandbox" in busy["msg"] or "cannot enter" in busy["msg"], busy
    assert run_module("drill_sandbox", path=str(tmp_path / "absent"), state="absent")["changed"] is False
    marked = run_module("drill_sandbox", path=str(tmp_path / "s"), state="present")
    assert marked["changed"] and (tmp_path / "s" / ".lifeboat-drill-sandbox").exists()
    removed = run_module("drill_sandbox", path=str(tmp_path / "s"), state="absent")
    assert removed["changed"] and removed["stopped"] == [] and not (tmp_path / "s").exists()
    wrong = run_module("drill_sandbox", path=str(tmp_path / "v"), name="pg", version="fifteen")
    assert wrong.failed and wrong["msg"].startswith("version:")
