"""postgresql_pitr's request and choice of base backup and window, without a server."""

from __future__ import annotations

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _walarchive
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.modules import postgresql_pitr as pitr

BASE = dict(
    recovery_target="latest",
    recovery_target_time=None,
    recovery_target_lsn=None,
    recovery_target_name=None,
    recovery_target_xid=None,
    recovery_target_inclusive=True,
    recovery_target_timeline="latest",
    recovery_target_action="promote",
)


def request(**given):
    return pitr.target_request(dict(BASE, **given))


def test_each_kind_of_target_becomes_postgresql_settings():
    assert request()["recovery"] == {}
    assert request(recovery_target="immediate")["recovery"] == {"recovery_target": "immediate"}
    timed = request(recovery_target_time="2026-11-29T15:50:00Z", recovery_target_inclusive=False)
    assert timed["kind"] == "time" and timed["value"] == 1795967400.0
    assert timed["recovery"] == {"recovery_target_time": "2026-11-29 15:50:00.000000+00", "recovery_target_inclusive": "off"}
    assert request(recovery_target_lsn="0/3a0c7f8")["recovery"]["recovery_target_lsn"] == "0/3A0C7F8"
    assert request(recovery_target_name="before-migration")["recovery"] == {"recovery_target_name": "before-migration"}
    assert request(recovery_target_xid="1187")["recovery"] == {"recovery_target_xid": "1187", "recovery_target_inclusive": "on"}


@pytest.mark.parametrize(
    "given, option",
    [
        (dict(recovery_target_time="yesterday"), "recovery_target_time"),
        (dict(recovery_target_lsn="3A0C7F8"), "recovery_target_lsn"),
        (dict(recovery_target_xid="abc"), "recovery_target_xid"),
        (dict(recovery_target_action="pause"), "recovery_target_action"),
        (dict(recovery_target_timeline="newest"), "recovery_target_timeline"),
    ],
)
def test_bad_targets_name_the_option(given, option):
    with pytest.raises(OptionError) as caught:
        request(**given)
    assert caught.value.option == option


def candidate(label, start, stop, stop_epoch, end_lsn, end_epoch, tli=1, ends_at="end of archive"):
    backup = _walarchive.backup_record(start, stop, tli, stop_epoch, label=label)
    window = {
        "start_lsn": stop,
        "start_epoch": stop_epoch,
        "start_time": _walarchive.iso(stop_epoch),
        "end_lsn": end_lsn,
        "end_epoch": end_epoch,
        "end_time": _walarchive.iso(end_epoch),
        "ends_at": ends_at,
        "first_missing": "000000010000000000000009",
    }
    return backup, tli, window


CANDIDATES = [
    candidate("night", "0/2000028", "0/2000100", 1000.0, "0/9000000", 5000.0),
    candidate("noon", "0/6000028", "0/6000100", 3000.0, "0/9000000", 5000.0),
]


def test_the_newest_base_backup_whose_window_holds_the_target_is_chosen():
    assert pitr.choose(request(recovery_target_time="1970-01-01T00:55:00Z"), CANDIDATES)[0]["label"] == "noon"  # 3300 s
    assert pitr.choose(request(recovery_target_time="1970-01-01T00:40:00Z"), CANDIDATES)[0]["label"] == "night"  # 2400 s: before noon
    assert pitr.choose(request(recovery_target_lsn="0/5000000"), CANDIDATES)[0]["label"] == "night"
    assert pitr.choose(request(), CANDIDATES)[0]["label"] == "noon"
    assert pitr.choose(request(recovery_target_name="x"), CANDIDATES)[0]["label"] == "night"  # the oldest reaches furthest back


def test_targets_outside_every_window_are_refused_with_the_windows():
    with pytest.raises(pitr.RestoreError, match="before the oldest base backup") as early:
        pitr.choose(request(recovery_target_time="1970-01-01T00:10:00Z"), CANDIDATES)
    assert "1970-01-01T00:16:40Z to 1970-01-01T01:23:20Z" in early.value.msg and len(early.value.result["windows"]) == 2
    with pytest.raises(pitr.RestoreError, match="outside every recoverable window"):
        pitr.choose(request(recovery_target_time="1970-01-01T02:00:00Z"), CANDIDATES)
    gapped = [candidate("night", "0/2000028", "0/2000100", 1000.0, "0/5000000", 2000.0, ends_at="gap")]
    with pytest.raises(pitr.RestoreError, match="ends at the missing segment 000000010000000000000009"):
        pitr.choose(request(recovery_target_lsn="0/6000000"), gapped)
