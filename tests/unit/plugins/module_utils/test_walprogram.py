"""The archive program (lifeboat-wal) without PostgreSQL: settings, the executable zip, the
asynchronous pusher over a pg_wal folder made by hand, the restore_command client and the
fetch server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _storage, _walprogram, _walrestore
from tests.unit.plugins.module_utils.test_wal import SEG, SYSID, segment

NAMES = ["000000010000000000000003", "000000010000000000000004", "000000010000000000000005"]


@pytest.fixture
def setup(tmp_path):
    identity, recipient = _age.generate_identity()
    target = {k: v.get("default") for k, v in _storage.TARGET_OPTIONS.items()}
    target.update(type="local", path=str(tmp_path / "archive"), retry_delay=0.01)
    (tmp_path / "archive").mkdir()
    settings = {
        "format": 1,
        "name": "main",
        "target": target,
        "prefix": "db1",
        "recipients": [recipient],
        "compression": "zstd",
        "parallel": 2,
        "push_timeout": 20,
        "idle_exit": 0.5,
        "spool_dir": str(tmp_path / "spool"),
        "system_identifier": SYSID,
        "segment_size": SEG,
        "server_version_num": 150000,
    }
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    path.chmod(0o600)
    wal = tmp_path / "data" / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    return {"settings": _walprogram.load_settings(str(path)), "path": path, "wal": wal, "identity": identity, "tmp": tmp_path}


def ready(wal, name, data):
    (wal / name).write_bytes(data)
    (wal / "archive_status" / (name + ".ready")).write_bytes(b"")


def test_settings_file_must_be_private(setup):
    setup["path"].chmod(0o644)
    with pytest.raises(_walprogram.ProgramError, match="chmod 600"):
        _walprogram.load_settings(str(setup["path"]))
    setup["path"].chmod(0o600)
    setup["path"].write_text(json.dumps({"target": {}}))
    with pytest.raises(_walprogram.ProgramError, match="lacks"):
        _walprogram.load_settings(str(setup["path"]))


def test_pusher_stores_every_ready_file_in_order_and_cleans_markers(setup):
    settings, wal = setup["settings"], setup["wal"]
    for name in NAMES:
        ready(wal, name, segment(1, int(name[-2:], 16)))
    spool = _walprogram.spool_of(settings)
    _walprogram.ensure_dir(spool)
    _walprogram.register(spool, str(wal))
    assert _walprogram.daemon(settings) == 0  # runs until idle
    for name in NAMES:
        assert os.path.exists(os.path.join(spool, name + ".ok"))
    status = _walprogram.status(settings)
    assert status["pushed"] == 3 and status["errors"] == [] and not status["pusher_running"]
    # PostgreSQL marks them done: the next pusher drops the markers.
    for name in NAMES:
        os.rename(wal / "archive_status" / (name + ".ready"), wal / "archive_status" / (name + ".done"))
    _walprogram.daemon(settings)
    assert not [n for n in os.listdir(spool) if n.endswith(".ok")]
    archive, close = _walprogram.open_archive(settings)
    try:
        assert sorted(e.file for e in archive.index().segments.values()) == NAMES
    finally:
        close()


def test_failing_target_keeps_the_wal_and_reports_until_it_heals(setup):
    settings, wal = setup["settings"], setup["wal"]
    ready(wal, NAMES[0], segment(1, 3))
    spool = _walprogram.spool_of(settings)
    _walprogram.ensure_dir(spool)
    _walprogram.register(spool, str(wal))
    os.rename(settings["target"]["path"], settings["target"]["path"] + ".gone")
    settings["idle_exit"] = 2.5
    worker = threading.Thread(target=_walprogram.daemon, args=(settings,))
    worker.start()
    error = os.path.join(spool, NAMES[0] + ".error")
    deadline = time.monotonic() + 120
    while not os.path.exists(error) and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(error) as handle:
        assert "does not exist" in handle.read()
    assert not os.path.exists(os.path.join(spool, NAMES[0] + ".ok"))
    os.rename(settings["target"]["path"] + ".gone", settings["target"]["path"])
    worker.join(120)
    assert os.path.exists(os.path.join(spool, NAMES[0] + ".ok")) and not os.path.exists(error)
    status = _walprogram.status(settings)
    assert [a["kind"] for a in status["alerts"]] == ["wal_archive_failed", "wal_archive_recovered"]


def test_the_executable_runs_with_only_its_own_files(setup, tmp_path):
    program = tmp_path / "lifeboat-wal"
    program.write_bytes(_walprogram.build(sys.executable))
    program.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin"}
    name = NAMES[0]
    ready(setup["wal"], name, segment(1, 3))
    settings = json.loads(setup["path"].read_text())
    settings["asynchronous"] = False
    setup["path"].write_text(json.dumps(settings))
    pushed = subprocess.run([str(program), "push", str(setup["path"]), "pg_wal/" + name], cwd=setup["wal"].parent, env=env, capture_output=True, check=False)
    assert pushed.returncode == 0, pushed.stderr
    again = subprocess.run([str(program), "push", str(setup["path"]), "pg_wal/" + name], cwd=setup["wal"].parent, env=env, capture_output=True, check=False)
    assert again.returncode == 0, again.stderr
    (setup["wal"] / name).write_bytes(segment(1, 3, salt=b"x"))
    refused = subprocess.run([str(program), "push", str(setup["path"]), "pg_wal/" + name], cwd=setup["wal"].parent, env=env, capture_output=True, check=False)
    assert refused.returncode == 1 and b"never overwritten" in refused.stderr
    usage = subprocess.run([str(program)], env=env, capture_output=True, check=False)
    assert usage.returncode == 2 and b"usage" in usage.stderr
    unreachable = subprocess.run([str(program), "get", str(tmp_path / "no.sock"), name, "x"], env=env, capture_output=True, check=False)
    assert unreachable.returncode == _walprogram.EXIT_ABORT_RECOVERY


def test_fetch_server_serves_prefetches_and_refuses_damage(setup, tmp_path):
    settings = setup["settings"]
    archive, close = _walprogram.open_archive(settings)
    try:
        for name in NAMES:
            path = tmp_path / name
            path.write_bytes(segment(1, int(name[-2:], 16)))
            archive.push(str(path), settings["recipients"])
        index = archive.index()
        chain = [index.find(n) for n in NAMES]
        damaged = tmp_path / "archive" / chain[2].object
        damaged.write_bytes(damaged.read_bytes()[:-20])
        prefetch = tmp_path / "prefetch"
        prefetch.mkdir()
        sock = str(tmp_path / "fetch.sock")
        keys = _age.parse_identities(setup["identity"])
        with _walrestore.FetchServer(archive, index, keys, chain, str(prefetch), sock, prefetch=2) as server:
            deadline = time.monotonic() + 120  # a loaded machine is slow to start threads
            while not ((prefetch / NAMES[0]).exists() and (prefetch / NAMES[1]).exists()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (prefetch / NAMES[0]).read_bytes() == segment(1, 3)  # fetched ahead
            dest = tmp_path / "RECOVERYXLOG"
            assert _walprogram.get(sock, NAMES[0], str(dest)) == 0 and dest.read_bytes() == segment(1, 3)
            assert _walprogram.get(sock, "000000010000000000000009", str(dest)) == 1  # the end of the archive
            assert _walprogram.get(sock, "00000002.history", str(dest)) == 1
            assert _walprogram.get(sock, NAMES[2], str(dest)) == _walprogram.EXIT_ABORT_RECOVERY
            assert server.error[0] == NAMES[2] and "cannot be read back" in server.error[1]
            assert server.missing == ["000000010000000000000009", "00000002.history"]
        assert [e.file for e, _why in _walrestore.verify_chain(archive, chain, keys)] == [NAMES[2]]
    finally:
        close()


def test_target_times_parse():
    assert _walrestore.parse_time("2026-11-29T15:50:00Z") == 1795967400.0
    assert _walrestore.parse_time("2026-11-29 16:50:00+01:00") == 1795967400.0
    assert _walrestore.parse_time("2026-11-29 15:50:00.25 UTC") == 1795967400.25
    assert _walrestore.pg_time(1795967400.25) == "2026-11-29 15:50:00.250000+00"
    with pytest.raises(ValueError, match="not a time"):
        _walrestore.parse_time("yesterday")
