"""The summary table the roles print and return to AWX/Tower."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.lifeboat.backup.plugins.filter.summary_table import summary_table

RESULTS = {
    "db1": {"verdict": "partial", "image": "/b/20261122T194513Z-db1.zip", "size": 812400000, "failures": {"postgresql": "pg_dump exited 1"}},
    "a-rather-long-node-name.example.net": {"verdict": "success", "image": "/b/x.zip", "size": 1234},
    "search1": {"verdict": "failed", "reason": "the node did not reach the end of the run"},
}


def test_columns_line_up_whatever_the_length_of_the_node_names():
    lines = summary_table(RESULTS, title="backup 42")
    assert lines[0] == "backup 42"
    rows = lines[1:-1]
    starts = {row.index(word) for row, word in zip(rows, ["verdict", "success", "partial", "failed"])}
    assert starts == {len("a-rather-long-node-name.example.net") + 2}


def test_rows_say_what_failed_and_the_total_counts_verdicts():
    lines = summary_table(RESULTS)
    assert "20261122T194513Z-db1.zip; failed: postgresql: pg_dump exited 1" in lines[2]
    assert "812.4 MB" in lines[2]
    assert lines[3].endswith("the node did not reach the end of the run")
    assert lines[-1] == "total: 1 failed, 1 partial, 1 success"


def test_not_a_dict_is_refused():
    with pytest.raises(AnsibleFilterError, match="dict of node -> result"):
        summary_table(["db1"])


def test_notes_follow_what_the_row_says_and_leave_the_verdict():
    noted = dict(RESULTS["db1"], notes=["retention removed 2 image(s)", "", "alerts failed on chat (HTTP 500 Internal Server Error)"])
    [row] = [line for line in summary_table({"db1": noted}) if line.startswith("db1")]
    assert row.split()[1] == "partial"
    assert row.endswith("failed: postgresql: pg_dump exited 1; retention removed 2 image(s); alerts failed on chat (HTTP 500 Internal Server Error)")


def test_after_restore_actions_are_listed_under_their_node():
    actions = [
        {"component": "search", "name": "reindex", "passed": True, "rc": 0, "seconds": 12.34},
        {"component": "search", "name": "upgrade", "passed": False, "rc": 2, "seconds": 0.4, "output": "no such index"},
    ]
    lines = summary_table({"n1": {"verdict": "failed", "reason": "x", "actions": actions}})
    assert lines[2:4] == ["  after_restore search: reindex  ok  12.3s", "  after_restore search: upgrade  FAILED (exit 2)  0.4s  no such index"]


def test_a_restore_row_names_the_components_restored():
    lines = summary_table({"n1": {"verdict": "success", "image": "/b/20261122T194513Z-n1.zip", "size": 10, "restored": ["config", "postgresql"]}})
    assert lines[1].endswith("20261122T194513Z-n1.zip; restored: config, postgresql")


def test_check_mode_says_nothing_was_done():
    lines = summary_table(RESULTS, title="backup 42", check_mode=True)
    assert lines[0] == "backup 42" and lines[1].startswith("CHECK MODE: nothing was done")
    assert not [line for line in summary_table(RESULTS, title="backup 42") if "CHECK MODE" in line]
