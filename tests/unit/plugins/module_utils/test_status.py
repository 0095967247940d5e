"""Staleness, the node_exporter textfile and the cluster status table, without a node."""

from __future__ import annotations

import calendar
from pathlib import Path

from ansible_collections.lifeboat.backup.plugins.filter.status_table import status_table
from ansible_collections.lifeboat.backup.plugins.module_utils import _status

NOW = calendar.timegm((2026, 11, 29, 12, 0, 0))
STATUS = {
    "last_success": {"time": "2026-11-29T02:04:00Z", "size": 91382734, "image": "/b/20261129T020000Z-db1.zip"},
    "last_result": {"verdict": "partial", "started": "2026-11-29T02:00:00Z", "ended": "2026-11-29T02:04:00Z", "node": "db1"},
    "copies": {"offsite": {"last_success": {"time": "2026-11-29T02:09:00Z"}, "last_error": None}, "nas": {"last_success": None, "last_error": {"reason": "x"}}},
}


def test_staleness():
    assert _status.staleness(STATUS, 26 * 3600, NOW)["stale"] is False
    stale = _status.staleness(STATUS, 6 * 3600, NOW)
    assert stale["stale"] and stale["age_seconds"] == 9 * 3600 + 56 * 60 and stale["reason"].endswith("old, more than max_age 6h")
    assert _status.staleness({}, 3600, NOW) == {
        "stale": True,
        "age_seconds": None,
        "limit_seconds": 3600,
        "last_success": None,
        "reason": "no successful backup recorded on this node",
    }


def test_textfile_is_prometheus_text_format(tmp_path):
    text = _status.metrics("db1", STATUS, STATUS["copies"], now=NOW)
    assert 'lifeboat_backup_last_success_timestamp_seconds{node="db1"} %d' % calendar.timegm((2026, 11, 29, 2, 4, 0)) in text
    assert 'lifeboat_backup_last_success_size_bytes{node="db1"} 91382734' in text
    assert 'lifeboat_backup_last_duration_seconds{node="db1"} 240' in text
    assert 'lifeboat_backup_last_verdict{node="db1",verdict="partial"} 1' in text and 'verdict="success"} 0' in text
    assert 'lifeboat_backup_last_copy_timestamp_seconds{node="db1",target="offsite"}' in text
    assert 'lifeboat_backup_copy_failing{node="db1",target="nas"} 1' in text
    for line in text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ", "lifeboat_backup_"))
    path = _status.write_textfile(str(tmp_path), 'we"ird\\node', STATUS)
    assert 'node="we\\"ird\\\\node"' in Path(path).read_text() and oct(Path(path).stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["lifeboat_backup.prom"]


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
