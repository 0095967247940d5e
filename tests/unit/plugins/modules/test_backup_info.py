"""The cron reader behind backup_info's next_run."""

from __future__ import annotations

import calendar

import pytest

from ansible_collections.lifeboat.backup.plugins.modules import backup_info


def ts(text):
    return calendar.timegm(__import__("time").strptime(text, "%Y-%m-%d %H:%M"))


@pytest.mark.parametrize(
    ("expression", "now", "expected"),
    [
        ("0 2 * * *", "2026-11-22 19:45", "2026-11-23 02:00"),
        ("0 2 * * *", "2026-11-22 01:59", "2026-11-22 02:00"),
        ("*/15 * * * *", "2026-11-22 19:45", "2026-11-22 20:00"),
        ("30 4 1 * *", "2026-11-22 19:45", "2026-12-01 04:30"),
        ("0 3 * * sun", "2026-11-22 19:45", "2026-11-29 03:00"),  # 22 Nov 2026 is a Sunday
        ("0 0 29 2 *", "2026-11-22 19:45", "2028-02-29 00:00"),
        ("@daily", "2026-11-22 19:45", "2026-11-23 00:00"),
        ("0 12 13 * fri", "2026-11-22 19:45", "2026-11-27 12:00"),  # day OR weekday
    ],
)
def test_next_cron_run(expression, now, expected):
    assert backup_info.next_cron_run(expression, ts(now)) == ts(expected)


def test_bad_expression():
    with pytest.raises(ValueError):
        backup_info.next_cron_run("0 2 * *", 0)
