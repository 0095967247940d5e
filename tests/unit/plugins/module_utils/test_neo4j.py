"""module_utils/_neo4j.py: layout from neo4j.conf, store id parsing, and the 'is it running' checks
(real locks, real processes; no Neo4j needed)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _neo4j


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7688", ("127.0.0.1", 7688)),
        (":7689", ("", 7689)),
        ("0.0.0.0", ("0.0.0.0", 7687)),
        ("[::1]:7690", ("::1", 7690)),
        ("db.internal:7687", ("db.internal", 7687)),
    ],
)
def test_parse_address(text, expected):
    assert _neo4j.parse_address(text) == expected


def test_parse_address_rejects_a_bad_port():
    with pytest.raises(_neo4j.Neo4jError, match="not host:port"):
        _neo4j.parse_address("host:bolt")


def test_layout_defaults_without_a_config(tmp_path):
    layout = _neo4j.Layout(home=str(tmp_path))
    assert layout.config is None
    assert layout.data_dir == str(tmp_path / "data")
    assert layout.pid_file == str(tmp_path / "run" / "neo4j.pid")
    assert layout.bolt == ("127.0.0.1", 7687)
    assert layout.env() == {"NEO4J_HOME": str(tmp_path)}


def test_layout_reads_neo4j5_settings(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "neo4j.conf").write_text(
        "# comment\nserver.directories.data=/srv/graph/data\nserver.directories.run=run2\n"
        "server.default_listen_address=10.0.0.5\nserver.bolt.listen_address=:7699\n"
    )
    layout = _neo4j.Layout(home=str(tmp_path))
    assert layout.config == str(tmp_path / "conf" / "neo4j.conf")
    assert layout.data_dir == "/srv/graph/data"
    assert layout.pid_file == str(tmp_path / "run2" / "neo4j.pid")
    assert layout.bolt == ("10.0.0.5", 7699)
    assert layout.env() == {"NEO4J_HOME": str(tmp_path), "NEO4J_CONF": str(tmp_path / "conf")}


def test_layout_understands_neo4j4_names_and_explicit_options(tmp_path):
    conf = tmp_path / "eclecticiq-neo4j.conf"
    conf.write_text("dbms.directories.data=neo4j/data\ndbms.connector.bolt.enabled=false\n")
    layout = _neo4j.Layout(home=str(tmp_path), config=str(conf))
    assert layout.data_dir == str(tmp_path / "neo4j" / "data")
    assert layout.bolt is None  # Bolt disabled: nothing to probe
    explicit = _neo4j.Layout(home=str(tmp_path), config=str(conf), data_dir="/x/data", pid_file="/x/n.pid", bolt_address="127.0.0.1:1")
    assert (explicit.data_dir, explicit.pid_file, explicit.bolt) == ("/x/data", "/x/n.pid", ("127.0.0.1", 1))
    assert _neo4j.Layout(home=str(tmp_path), bolt_address="").bolt is None


def test_admin_options_point_neo4j_admin_at_a_data_dir_the_configuration_does_not_name(tmp_path):
    conf = tmp_path / "neo4j.conf"
    conf.write_text("server.directories.data=/var/lib/neo4j/data\n")
    with _neo4j.Layout(home=str(tmp_path), config=str(conf)).admin_options() as options:
        assert options == []
    with _neo4j.Layout(home=str(tmp_path), config=str(conf), data_dir="/var/lib/neo4j/data/").admin_options() as options:
        assert options == []  # the same directory, spelled differently
    with _neo4j.Layout(home=str(tmp_path), config=str(conf), data_dir="/srv/restored").admin_options() as options:
        [option] = options
        path = option.partition("--additional-config=")[2]
        assert Path(path).read_text(encoding="utf-8") == "server.directories.data=/srv/restored\n"
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert not os.path.exists(path), "the file is removed after neo4j-admin ran"


def test_layout_refuses_a_missing_config(tmp_path):
    with pytest.raises(_neo4j.Neo4jError, match="config .* does not exist"):
        _neo4j.Layout(home=str(tmp_path), config=str(tmp_path / "nope.conf"))


def neostore_bytes(creation, random, external, engine=b"record", family=b"aligned", major=1, minor=1):
    """A neostore head in the Neo4j 5 layout: 9-byte slots, header byte 1 = in use."""

    def slots(payload, count):
        payload = payload.ljust(8 * count, b"\0")
        return b"".join(b"\x01" + payload[i * 8 : (i + 1) * 8] for i in range(count))

    store_id = b"\x01" + struct.pack(">qq", creation, random) + bytes([len(engine)]) + engine + bytes([len(family)]) + family + bytes([major, minor])
    legacy = struct.pack(">q", -3523014627327384477)
    unused = b"\x00" * 9 * 2
    return slots(external.bytes, 2) + unused + slots(legacy, 1) + slots(store_id, 8)


def test_read_store_id(tmp_path):
    external = uuid.UUID("b68cd4cb-da94-47a2-ba78-94b48ec8c126")
    (tmp_path / "neostore").write_bytes(neostore_bytes(1795378252028, -6991638630361737212, external) + b"\0" * 100)
    store = _neo4j.read_store_id(str(tmp_path))
    assert store["store_id"] == "1795378252028:-6991638630361737212"
    assert store["created"] == "2026-11-22T20:10:52Z"
    assert store["format"] == "record-aligned-1.1"
    assert store["external_store_uuid"] == str(external)
    assert store["database_id"] is None


def test_read_store_id_refuses_another_layout(tmp_path):
    (tmp_path / "neostore").write_bytes(b"\0" * 200)
    with pytest.raises(_neo4j.Neo4jError, match="holds no store id"):
        _neo4j.read_store_id(str(tmp_path))
    with pytest.raises(_neo4j.Neo4jError, match="cannot read"):
        _neo4j.read_store_id(str(tmp_path / "absent"))


HOLD_LOCK = """
import fcntl, sys, time
handle = open(sys.argv[1], "r+")
fcntl.lockf(handle, fcntl.LOCK_EX)  # what Java's FileChannel.tryLock takes
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def locked_store(tmp_path):
    """A data directory whose store lock is held by another process, as a running Neo4j holds it."""
    databases = tmp_path / "data" / "databases"
    (databases / "neo4j").mkdir(parents=True)
    lock = databases / "store_lock"
    lock.write_text("")
    (databases / "neo4j" / "database_lock").write_text("")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield tmp_path, holder
    holder.kill()
    holder.wait()


def test_lock_holder_names_the_process_without_taking_the_lock(locked_store):
    home, holder = locked_store
    lock = home / "data" / "databases" / "store_lock"
    assert _neo4j.lock_holder(str(lock)) == holder.pid
    assert _neo4j.lock_holder(str(home / "data" / "databases" / "neo4j" / "database_lock")) is None
    assert _neo4j.lock_holder(str(home / "absent")) is None
    holder.kill()
    holder.wait()
    assert _neo4j.lock_holder(str(lock)) is None


def test_running_evidence_from_each_sign(locked_store):
    home, holder = locked_store
    layout = _neo4j.Layout(home=str(home), bolt_address="")
    evidence, notes = _neo4j.running_evidence(layout)
    assert len(evidence) == 1 and f"process {holder.pid}" in evidence[0] and "databases/store_lock" in evidence[0]
    assert notes == []

    (home / "run").mkdir()
    (home / "run" / "neo4j.pid").write_text(f"{holder.pid}\n")
    evidence, _notes = _neo4j.running_evidence(layout)
    assert any(e.startswith(f"the pid file {home}/run/neo4j.pid names the running process {holder.pid}") for e in evidence)

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        probing = _neo4j.Layout(home=str(home), bolt_address=f"127.0.0.1:{port}")
        evidence, _notes = _neo4j.running_evidence(probing)
        assert f"Bolt address 127.0.0.1:{port}" in evidence[-1]
    message = _neo4j.refuse_message("archive /x", evidence)
    assert message.startswith("Neo4j is running, refusing to archive /x:") and "no online backup" in message


def test_stale_pid_file_is_a_note_not_evidence(tmp_path):
    (tmp_path / "run").mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run" / "neo4j.pid").write_text(f"{dead.pid}\n")
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{dead.pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    evidence, notes = _neo4j.running_evidence(_neo4j.Layout(home=str(tmp_path), bolt_address=""))
    assert evidence == []
    assert notes and notes[0].startswith(f"stale pid file {tmp_path}/run/neo4j.pid: process {dead.pid} is gone")


def test_find_admin(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    layout = _neo4j.Layout(home=str(tmp_path), bolt_address="")
    with pytest.raises(_neo4j.Neo4jError, match="neo4j-admin not found"):
        _neo4j.find_admin(layout)
    (tmp_path / "bin").mkdir()
    admin = tmp_path / "bin" / "neo4j-admin"
    admin.write_text("#!/bin/sh\n")
    admin.chmod(0o755)
    assert _neo4j.find_admin(layout) == str(admin)
    with pytest.raises(_neo4j.Neo4jError, match="does not exist or is not executable"):
        _neo4j.find_admin(layout, str(tmp_path / "other"))
