"""neo4j_archive / neo4j_restore failure paths on a synthetic store (no Neo4j needed):
a neo4j-admin that fails or is killed (a stand-in script: unit tests may fake a
subprocess), a damaged member, a file that changes while it is read. The real server
round trips are in tests/integration/test_neo4j.py."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
import zipfile

import pytest

from tests.support.modules import run_module
from tests.unit.plugins.module_utils.test_neo4j import neostore_bytes

PASSPHRASE = "synthetic store passphrase"
STORE_ID = "1795378252028:1834726679562575866"


def make_home(root):
    """A Neo4j home with one database whose neostore carries a known store id."""
    home = root / "neo4j"
    database = home / "data" / "databases" / "neo4j"
    database.mkdir(parents=True)
    (home / "data" / "databases" / "store_lock").write_text("")
    (database / "neostore").write_bytes(neostore_bytes(1795378252028, 1834726679562575866, uuid.uuid4()) + b"\0" * 64)
    (database / "neostore.nodestore.db").write_bytes(os.urandom(64 * 1024))
    (home / "data" / "transactions" / "neo4j").mkdir(parents=True)
    (home / "data" / "transactions" / "neo4j" / "neostore.transaction.db.0").write_bytes(os.urandom(4096))
    (home / "data" / "server_id").write_text("synthetic\n")
    return home


@pytest.fixture
def place(tmp_path):
    (tmp_path / "dest").mkdir()
    return {"tmp": tmp_path, "home": make_home(tmp_path)}


def start(place):
    started = run_module(
        "backup_session", state="started", destination=str(place["tmp"] / "dest"), state_dir=str(place["tmp"] / "state"), passphrase=PASSPHRASE, work_factor=10
    )
    assert not started.failed, started
    return started["session"]["work_dir"]


def fake_admin(place, script):
    path = place["home"] / "bin" / "neo4j-admin"
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def archive_files(place):
    work = start(place)
    result = run_module("neo4j_archive", session=work, home=str(place["home"]), bolt_address="")
    assert not result.failed, result
    sealed = run_module("backup_session", state="sealed", session=work)
    assert sealed["verdict"] == "success", sealed
    return sealed["image"], result


def test_files_round_trip_and_marker(place):
    image, archived = archive_files(place)
    assert archived["store_ids"] == {"neo4j": STORE_ID}
    with zipfile.ZipFile(image) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["consistency"]["neo4j"] == {"store_ids": {"neo4j": STORE_ID}}
    target = place["tmp"] / "restored"
    restored = run_module("neo4j_restore", image=image, passphrase=PASSPHRASE, data_dir=str(target), home=str(place["home"]), bolt_address="")
    assert not restored.failed, restored
    assert restored["store_ids"] == {"neo4j": STORE_ID} and restored["file_count"] == 5
    source = place["home"] / "data"
    for path in source.rglob("*"):
        twin = target / path.relative_to(source)
        assert twin.exists(), twin
        if path.is_file():
            assert twin.read_bytes() == path.read_bytes()
            assert twin.stat().st_mode == path.stat().st_mode


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("printf 'partial dump'; echo 'disk full while dumping' >&2; exit 1\n", "exited 1: disk full while dumping"),
        ("printf 'partial dump'; kill -9 $$\n", "was killed by signal 9"),
        ("exit 0\n", "wrote nothing"),
    ],
)
def test_failed_dump_fails_the_component_and_publishes_nothing(place, script, expected):
    fake_admin(place, script)
    work = start(place)
    result = run_module("neo4j_archive", session=work, home=str(place["home"]), bolt_address="", method="dump")
    assert result.failed and expected in result["msg"], result["msg"]
    sealed = run_module("backup_session", state="sealed", session=work)
    assert sealed.failed and sealed["verdict"] == "failed" and expected in sealed["failures"]["neo4j"]
    assert not list((place["tmp"] / "dest").glob("*.zip"))


def test_dump_needs_neo4j_admin(place, tmp_path):
    work = start(place)
    result = run_module("neo4j_archive", session=work, home=str(place["home"]), bolt_address="", method="dump", env={"PATH": str(tmp_path / "empty")})
    assert result.failed and "neo4j-admin not found" in result["msg"] and "method=files" in result["msg"]


def test_not_a_data_directory(place):
    work = start(place)
    result = run_module("neo4j_archive", session=work, home=str(place["tmp"]), bolt_address="")
    assert result.failed and "does not exist or is not a directory" in result["msg"]
    (place["tmp"] / "data").mkdir()
    result = run_module("neo4j_archive", session=work, home=str(place["tmp"]), bolt_address="")
    assert result.failed and "no Neo4j database under" in result["msg"]


def test_damaged_member_leaves_the_data_directory_as_it_was(place):
    image, _archived = archive_files(place)
    with zipfile.ZipFile(image) as archive:
        info = archive.getinfo("neo4j/data.tar.zst.age")
    with open(image, "r+b") as handle:
        handle.seek(info.header_offset + 26)
        skip = int.from_bytes(handle.read(2), "little") + int.from_bytes(handle.read(2), "little")
        position = info.header_offset + 30 + skip + info.compress_size // 2
        handle.seek(position)
        byte = handle.read(1)
        handle.seek(position)
        handle.write(bytes([byte[0] ^ 0x01]))
    data = place["home"] / "data"
    before = {str(p): p.read_bytes() for p in data.rglob("*") if p.is_file()}
    result = run_module("neo4j_restore", image=image, passphrase=PASSPHRASE, home=str(place["home"]), bolt_address="", replace=True)
    assert result.failed and "the data directory is as it was" in result["msg"] and "neo4j/data.tar.zst.age" in result["msg"]
    assert {str(p): p.read_bytes() for p in data.rglob("*") if p.is_file()} == before
    assert not [p for p in data.iterdir() if p.name.startswith(".lifeboat-")]


def test_store_id_mismatch_is_refused_before_anything_is_replaced(place):
    image, _archived = archive_files(place)
    # Rewrite the manifest's marker: the restored store is then not the one "recorded".
    tampered = place["tmp"] / "tampered.zip"
    with zipfile.ZipFile(image) as source, zipfile.ZipFile(tampered, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "manifest.json":
                manifest = json.loads(data)
                manifest["components"]["neo4j"]["markers"]["store_ids"]["neo4j"] = "1:2"
                data = json.dumps(manifest).encode()
            target.writestr(info, data)
    marker = place["home"] / "data" / "server_id"
    marker.write_text("the current store\n")
    result = run_module("neo4j_restore", image=str(tampered), passphrase=PASSPHRASE, home=str(place["home"]), bolt_address="", replace=True)
    assert result.failed and "neo4j has 1795378252028:1834726679562575866, the image recorded 1:2" in result["msg"]
    assert marker.read_text() == "the current store\n"


def test_changing_file_fails_the_archive(place):
    # A store file that grows while it is read means something writes to the store: the
    # archive must fail rather than publish a torn copy. A child keeps appending to it.
    growing = place["home"] / "data" / "databases" / "neo4j" / "neostore.relationshipstore.db"
    # 16 MiB: reading, compressing and encrypting it takes long enough that the writer is
    # scheduled meanwhile even on a busy machine (with 1 MiB it sometimes was not).
    growing.write_bytes(b"\0" * (16 * 1024 * 1024))
    size = growing.stat().st_size
    writer = os.fork()
    if writer == 0:  # pragma: no cover - the writer, ended by the test below
        with open(growing, "ab", buffering=0) as handle:
            while True:
                handle.write(b"x" * 512)
                time.sleep(0.0005)
    try:
        deadline = time.monotonic() + 10
        while growing.stat().st_size == size and time.monotonic() < deadline:
            time.sleep(0.01)  # the writer is writing before the archive starts
        work = start(place)
        result = run_module("neo4j_archive", session=work, home=str(place["home"]), bolt_address="")
    finally:
        os.kill(writer, signal.SIGKILL)
        os.waitpid(writer, 0)
    assert result.failed and "something is writing to the data directory" in result["msg"], result.get("msg")
