"""WAL arithmetic, segment headers, history files, continuity: _wal; the archive layout,
push/fetch, windows and pruning on a local target: _walarchive."""

from __future__ import annotations

import io
import json
import os
import struct

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _storage, _wal, _walarchive

MB = 1024 * 1024
SEG = MB  # the smallest segment size PostgreSQL allows keeps these tests fast
SYSID = "7713690055242281204"


def segment(tli, segno, seg_size=SEG, sysid=SYSID, salt=b""):
    header = struct.pack("<HHIQI4xQII", 0xD110, 2, tli, segno * seg_size, 0, int(sysid), seg_size, 8192)
    body = (salt + b"wal record %d/%d " % (tli, segno)) * 1000
    return (header + body).ljust(seg_size, b"\0")


def local_target(path):
    params = {k: v.get("default") for k, v in _storage.TARGET_OPTIONS.items()}
    params.update(type="local", path=str(path), retry_delay=0.01)
    return _storage.open_target(params)


@pytest.fixture(scope="module")
def key():
    identity, recipient = _age.generate_identity()
    return _age.parse_identities(identity), recipient


@pytest.fixture
def archive(tmp_path):
    (tmp_path / "target").mkdir()
    backend = local_target(tmp_path / "target")
    archive = _walarchive.Archive(backend, "db1", SEG, SYSID)
    archive.create_or_check(SYSID, SEG, 150000, "node1")
    yield archive
    backend.close()


def write(tmp_path, name, data):
    path = tmp_path / "pg_wal" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return str(path)


# ---- _wal ---------------------------------------------------------------------------------------


def test_lsn_round_trip_and_errors():
    assert _wal.parse_lsn("0/2000028") == 0x2000028
    assert _wal.parse_lsn("1A/FF") == (0x1A << 32) | 0xFF
    assert _wal.format_lsn(0x1A000000FF) == "1A/FF"
    for bad in ("", "0-1", "G/1", "123456789/0"):
        with pytest.raises(_wal.WalError, match="not a WAL position"):
            _wal.parse_lsn(bad)


@pytest.mark.parametrize("seg_size", [MB, 16 * MB, 1024 * MB])
def test_segment_names_follow_postgresql(seg_size):
    per = 0x100000000 // seg_size
    for tli, segno in ((1, 0), (2, per - 1), (3, per), (0x10, 5 * per + 7)):
        name = _wal.segment_name(tli, segno, seg_size)
        assert len(name) == 24
        assert _wal.parse_segment(name, seg_size) == (tli, segno)
    assert _wal.segment_name(1, 2) == "000000010000000000000002"
    assert _wal.segment_name(1, 256) == "000000010000000100000000"


def test_classify_every_kind_of_archived_file():
    assert _wal.classify("000000010000000000000002") == (_wal.SEGMENT, 1, "000000010000000000000002")
    assert _wal.classify("000000020000000000000005.partial") == (_wal.PARTIAL, 2, "000000020000000000000005")
    assert _wal.classify("000000010000000000000002.00000028.backup") == (_wal.BACKUP, 1, "000000010000000000000002")
    assert _wal.classify("00000002.history") == (_wal.HISTORY, 2, None)
    assert _wal.classify("RECOVERYXLOG") is None
    names = ["000000010000000000000003", "00000002.history", "000000010000000000000002"]
    assert sorted(names, key=_wal.archive_order)[0] == "00000002.history"


def test_segment_header_checks():
    data = segment(1, 7)
    assert _wal.check_segment(data[:64], "000000010000000000000007", len(data), SEG, SYSID)["timeline"] == 1
    with pytest.raises(_wal.WalError, match="misnamed or damaged"):
        _wal.check_segment(data[:64], "000000010000000000000008", len(data), SEG, SYSID)
    # A new timeline's first segment begins with its parent's pages; a newer timeline is wrong.
    assert _wal.check_segment(data[:64], "000000030000000000000007", len(data), SEG, SYSID)["timeline"] == 1
    with pytest.raises(_wal.WalError, match="misnamed or damaged"):
        _wal.check_segment(segment(4, 7)[:64], "000000030000000000000007", len(data), SEG, SYSID)
    with pytest.raises(_wal.WalError, match="two different clusters"):
        _wal.check_segment(data[:64], "000000010000000000000007", len(data), SEG, "1")
    with pytest.raises(_wal.WalError, match="truncated"):
        _wal.check_segment(data[:64], "000000010000000000000007", len(data) - 1, SEG, SYSID)
    with pytest.raises(_wal.WalError, match="not a WAL segment"):
        _wal.check_segment(b"\0" * 64, "000000010000000000000007", len(data), SEG, SYSID)
    with pytest.raises(_wal.WalError, match="16777216-byte segments"):
        _wal.check_segment(data[:64], "000000010000000000000007", len(data), 16 * MB, SYSID)
    # A .partial segment may be shorter.
    assert _wal.check_segment(data[:64], "000000010000000000000007.partial", 100, SEG, SYSID)


def test_history_files_parse_and_define_paths():
    text = "1\t0/5000100\tbefore 2026-11-29 10:00:00+00\n\n2\t0/9000000\tno recovery target specified\n"
    parents = _wal.parse_timeline_history(text, 3)
    assert [(p, _wal.format_lsn(lsn)) for p, lsn, _r in parents] == [(1, "0/5000100"), (2, "0/9000000")]
    path = _wal.timeline_path(3, {3: parents})
    assert [(s.tli, s.begin, s.end) for s in path] == [(1, 0, 0x5000100), (2, 0x5000100, 0x9000000), (3, 0x9000000, None)]
    seg16 = 16 * MB
    assert _wal.owner(path, 4, seg16) == 1 and _wal.owner(path, 5, seg16) == 2 and _wal.owner(path, 9, seg16) == 3
    assert _wal.on_path(path, 1, 0x5000000) and not _wal.on_path(path, 1, 0x6000000)
    with pytest.raises(_wal.WalError, match="no history file"):
        _wal.timeline_path(4, {3: parents})
    with pytest.raises(_wal.WalError, match="out of order"):
        _wal.parse_timeline_history("2\t0/5\tx\n1\t0/6\ty\n", 3)


def test_backup_history_file():
    text = (
        "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)\n"
        "CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-29 20:17:03 UTC\n"
        "LABEL: lifeboat 20261129T201700Z-1\nSTART TIMELINE: 1\nSTOP TIME: 2026-11-29 20:17:04 UTC\nSTOP TIMELINE: 1\n"
    )
    record = _wal.parse_backup_history(text)
    assert record["start_lsn"] == "0/2000028" and record["stop_lsn"] == "0/2000100" and record["stop_timeline"] == 1
    assert record["label"] == "lifeboat 20261129T201700Z-1"
    assert _walarchive.pg_time_epoch(record["stop_time"]) == 1795983424.0
    assert _walarchive.pg_time_epoch("2026-11-29 21:17:04 +01") == 1795983424.0
    assert _walarchive.pg_time_epoch("2026-11-29 21:17:04 CET") is None  # ambiguous: the caller falls back
    with pytest.raises(_wal.WalError, match="lacks"):
        _wal.parse_backup_history("LABEL: x\n")


def test_walk_and_gaps():
    path = _wal.timeline_path(1, {})
    present = {(1, s) for s in (3, 4, 5, 7, 8)}
    last, missing, later = _wal.walk(path, present, 2, SEG, included_until=2)
    assert (last, missing, later) == (5, (1, 6), True)
    last, missing, later = _wal.walk(path, present, 7, SEG)
    assert (last, missing, later) == (8, (1, 9), False)
    assert _wal.gaps(present) == {1: [(6, 6)]}


# ---- _walarchive ------------------------------------------------------------------------------------


def test_push_is_durable_idempotent_and_refuses_other_content(archive, key, tmp_path):
    identities, recipient = key
    data = segment(1, 3)
    path = write(tmp_path, "000000010000000000000003", data)
    first = archive.push(path, [recipient])
    assert not first["duplicate"] and first["size"] == SEG and first["stored_bytes"] < SEG / 10
    assert archive.push(path, [recipient])["duplicate"]  # same content: success
    entry = archive.existing("000000010000000000000003")[0]
    completed = int(os.stat(path).st_mtime)
    assert entry.object == "db1/wal/0000000100000000/000000010000000000000003-%s-%d.zst.age" % (first["sha256"], completed)
    assert entry.written_by == completed
    sink = io.BytesIO()
    assert archive.fetch(entry, identities, sink) == SEG and sink.getvalue() == data
    write(tmp_path, "000000010000000000000003", segment(1, 3, salt=b"other"))
    with pytest.raises(_walarchive.ConflictError, match="never overwritten"):
        archive.push(path, [recipient])
    assert len(archive.existing("000000010000000000000003")) == 1


def test_push_refuses_a_file_that_is_not_what_its_name_says(archive, key, tmp_path):
    _identities, recipient = key
    with pytest.raises(_wal.WalError, match="misnamed"):
        archive.push(write(tmp_path, "000000010000000000000004", segment(1, 3)), [recipient])
    with pytest.raises(_wal.WalError, match="two different clusters"):
        archive.push(write(tmp_path, "000000010000000000000005", segment(1, 5, sysid="42")), [recipient])
    with pytest.raises(_walarchive.ArchiveError, match="not a WAL file name"):
        archive.push(write(tmp_path, "postmaster.pid", b"1"), [recipient])
    assert archive.index().segments == {}


def test_damage_is_found_on_fetch(archive, key, tmp_path):
    identities, recipient = key
    archive.push(write(tmp_path, "000000010000000000000003", segment(1, 3)), [recipient])
    entry = archive.index().find("000000010000000000000003")
    stored = tmp_path / "target" / entry.object
    original = stored.read_bytes()
    blob = bytearray(original)
    blob[len(blob) // 2] ^= 0x40
    stored.chmod(0o600)
    stored.write_bytes(bytes(blob))
    with pytest.raises(_walarchive.DamagedError, match="cannot be read back"):
        archive.fetch(entry, identities)
    stored.write_bytes(bytes(blob[: len(blob) // 2]))
    with pytest.raises(_walarchive.DamagedError, match="truncated"):
        archive.fetch(entry, identities)
    stored.write_bytes(original)
    other, _recipient = _age.generate_identity()
    with pytest.raises(_walarchive.ArchiveError, match="does not open") as wrong_key:
        archive.fetch(entry, _age.parse_identities(other))
    assert not isinstance(wrong_key.value, _walarchive.DamagedError)  # a wrong key is no damage


def test_descriptor_guards_against_another_cluster(archive):
    with pytest.raises(_walarchive.ArchiveError, match="belongs to database system"):
        archive.create_or_check("1", SEG, 150000, "n")
    with pytest.raises(_walarchive.ArchiveError, match="byte segments"):
        archive.create_or_check(SYSID, 16 * MB, 150000, "n")
    other = _walarchive.Archive(archive.backend, "nothing-here")
    with pytest.raises(_walarchive.ArchiveError, match="no WAL archive"):
        other.open()


def fill(archive, tmp_path, recipient, names):
    for name in names:
        tli, segno = _wal.parse_segment(name, SEG)
        archive.push(write(tmp_path, name, segment(tli, segno)), [recipient])


def test_last_archived_is_the_furthest_position_not_the_last_stored(archive, key, tmp_path):
    # The pusher stores in parallel: segment 5 can land after segment 6.
    _identities, recipient = key
    fill(archive, tmp_path, recipient, [_wal.segment_name(1, 6, SEG), _wal.segment_name(1, 5, SEG)])
    folder = tmp_path / "target" / "db1" / "wal" / "0000000100000000"
    newer, older = sorted(folder.glob("00000001000000000000000[56]-*"), reverse=True)
    os.utime(newer, (1000, 1000))
    os.utime(older, (2000, 2000))
    last = archive.index().last_archived()
    assert last.file == _wal.segment_name(1, 6, SEG) and last.mtime == 1000
    fill(archive, tmp_path, recipient, [_wal.segment_name(2, 7, SEG)])
    assert archive.index().last_archived().file == _wal.segment_name(2, 7, SEG)


def test_windows_follow_timelines_and_stop_at_gaps(archive, key, tmp_path):
    _identities, recipient = key
    per = 0x100000000 // SEG
    names = [_wal.segment_name(1, s, SEG) for s in (2, 3, 4, 5, 6)] + [_wal.segment_name(2, s, SEG) for s in (5, 6, 8)]
    fill(archive, tmp_path, recipient, names)
    switch = 5 * SEG + 0x100
    history = write(tmp_path, "00000002.history", b"1\t%s\tbefore 2026-11-29 10:00:00+00\n" % _wal.format_lsn(switch).encode())
    archive.push(history, [recipient])
    backup_file = "%s.00000028.backup" % _wal.segment_name(1, 2, SEG)
    backup_text = (
        "START WAL LOCATION: 0/%X (file x)\nSTOP WAL LOCATION: 0/%X (file x)\nSTART TIME: 2026-11-29 09:00:00 UTC\nLABEL: b1\n"
        "START TIMELINE: 1\nSTOP TIME: 2026-11-29 09:00:01 UTC\nSTOP TIMELINE: 1\n"
    )
    archive.push(write(tmp_path, backup_file, (backup_text % (2 * SEG + 0x28, 2 * SEG + 0x100)).encode()), [recipient])
    index = archive.index()
    assert per > 8 and index.timelines() == [1, 2] and index.parents[2][0][:2] == (1, switch)
    assert index.gaps() == {2: [{"first": _wal.segment_name(2, 7, SEG), "last": _wal.segment_name(2, 7, SEG), "count": 1}]}
    backups = _walarchive.base_backups(index)
    assert [b["label"] for b in backups] == ["b1"]
    on_1 = index.window(backups[0], 1)
    assert on_1["end_segment"] == _wal.segment_name(1, 6, SEG) and on_1["ends_at"] == "end of archive"
    on_2 = index.window(backups[0], 2)
    assert on_2["end_segment"] == _wal.segment_name(2, 6, SEG) and on_2["ends_at"] == "gap"
    assert on_2["first_missing"] == _wal.segment_name(2, 7, SEG)
    assert [e.file for e in index.chain(backups[0], 2)] == names[:3] + names[5:7]
    assert on_2["start_time"] == "2026-11-29T09:00:01Z"
    # A damaged segment counts as missing.
    assert index.window(backups[0], 1, missing=[(1, 4)])["end_segment"] == _wal.segment_name(1, 3, SEG)


def test_prune_keeps_what_the_oldest_retained_backup_needs(archive, key, tmp_path):
    _identities, recipient = key
    fill(archive, tmp_path, recipient, [_wal.segment_name(1, s, SEG) for s in range(1, 8)])
    archive.push(write(tmp_path, "00000002.history", b"1\t0/4000000\tx\n"), [recipient])
    index = archive.index()
    keep = [_walarchive.backup_record("0/%X" % (4 * SEG + 0x28), "0/%X" % (4 * SEG + 0x100), 1)]
    floor, doomed = _walarchive.prune_plan(index, keep)
    assert floor == 4
    assert sorted(e.file for e in doomed) == [_wal.segment_name(1, s, SEG) for s in (1, 2, 3)]
    assert archive.delete(doomed) == 3
    after = archive.index()
    assert sorted(s for _t, s in after.segments) == [4, 5, 6, 7] and "00000002.history" in after.others
    with pytest.raises(_walarchive.ArchiveError, match="no retained base backup"):
        _walarchive.prune_plan(after, [])


def test_encoding_bounded_memory_spools_large_files(tmp_path, key):
    _identities, recipient = key
    source = io.BytesIO(os.urandom(3 * MB))
    encoded, sha, size, head = _walarchive.encode(source, [recipient], "gzip", 1, str(tmp_path))
    try:
        assert size == 3 * MB and len(sha) == 64 and len(head) == _wal.HEADER_SIZE
    finally:
        encoded.close()
    with pytest.raises(_walarchive.ArchiveError, match="public keys only"):
        _walarchive.encode(io.BytesIO(b"x"), [], "zstd")


def test_object_names_parse():
    sha = "a" * 64
    assert _walarchive.parse_object("000000010000000000000002-%s-1795967400.zst.age" % sha) == ("000000010000000000000002", sha, "zstd", 1795967400)
    assert _walarchive.parse_object("000000010000000000000002-%s.zst.age" % sha) == ("000000010000000000000002", sha, "zstd", None)
    assert _walarchive.parse_object("00000002.history-%s.gz.age" % sha) == ("00000002.history", sha, "gzip", None)
    assert _walarchive.parse_object("000000010000000000000002.00000028.backup-%s.age" % sha)[2] == "none"
    assert _walarchive.parse_object("000000010000000000000002.zst.age") is None
    assert json.loads(json.dumps(_walarchive.ARCHIVE_SPEC))
