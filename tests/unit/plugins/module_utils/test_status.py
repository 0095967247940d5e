"""Staleness and the node_exporter textfile, without a node. (The cluster status table is a
controller filter: tests/unit/plugins/filter/test_status_table.py - importing a controller
plugin here would make ansible-core 2.19+ treat the node-Python unit run of make test-matrix
as a controller, and decode module arguments with controller profiles that need jinja2.)"""

from __future__ import annotations

import calendar
from pathlib import Path

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
