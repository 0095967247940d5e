"""The cluster status table (filter lifeboat.backup.status_table), on the controller."""

from __future__ import annotations

import calendar

from ansible_collections.lifeboat.backup.plugins.filter.status_table import status_table

NOW = calendar.timegm((2026, 11, 29, 12, 0, 0))
STATUS = {
    "last_success": {"time": "2026-11-29T02:04:00Z", "size": 91382734, "image": "/b/20261129T020000Z-db1.zip"},
    "last_result": {"verdict": "partial", "started": "2026-11-29T02:00:00Z", "ended": "2026-11-29T02:04:00Z", "node": "db1"},
}


def test_status_table_and_problems():
    ok = {"status": dict(STATUS, next_run="2026-11-30T02:00:00Z", staleness={"stale": False}), "copies": [{"name": "offsite", "reachable": True, "images": 3}]}
    bad = {
        "status": {"last_result": {"verdict": "failed", "reason": "pg_dump exited 1"}, "staleness": {"stale": True, "reason": "no successful backup recorded"}},
        "copies": [{"name": "offsite", "reachable": False, "error": "target directory /mnt/x does not exist"}],
    }
    nodes = {"db1": ok, "app1": bad, "gone": {"unreachable": True, "msg": "ssh: connection refused"}}
    problems = status_table(nodes, problems=True, now=NOW)
    assert problems["db1"] == []
    assert problems["app1"] == [
        "stale: no successful backup recorded",
        "last run failed: pg_dump exited 1",
        "target offsite unreachable: target directory /mnt/x does not exist",
    ]
    assert problems["gone"] == ["cannot be asked: unreachable: ssh: connection refused"]
    lines = status_table(nodes, now=NOW)
    assert lines[0].split() == ["node", "state", "last", "success", "age", "size", "copies", "next", "run", "last", "failure"]
    assert lines[1].startswith("app1  STALE") and "offsite: UNREACHABLE" in lines[1]
    assert lines[2].startswith("db1   OK") and "9h 56m" in lines[2] and "91.4 MB" in lines[2] and "offsite: 3" in lines[2]
    assert lines[3].startswith("gone  UNREACHABLE")
    assert lines[-1] == "3 node(s), 2 with problems"
    assert status_table({"db1": dict(ok, status=dict(ok["status"], last_result={"verdict": "partial"}))}, problems=True, fail_on_partial=True)["db1"]
