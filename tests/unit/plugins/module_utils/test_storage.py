"""Storage targets: option validation, the local backend's contract, images on a target."""

from __future__ import annotations

import hashlib
import io
import json
import os

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _session, _storage
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._storage_backend import PARTIAL_PREFIX, StorageError, check_name
from tests.support.images import make_image


def local(path, **extra):
    params = {k: v.get("default") for k, v in _storage.TARGET_OPTIONS.items()}
    params.update(type="local", path=str(path), retry_delay=0.01)
    params.update(extra)
    return _storage.open_target(params)


def params_of(**given):
    params = {k: v.get("default") for k, v in _storage.TARGET_OPTIONS.items()}
    params.update(given)
    return params


@pytest.mark.parametrize(
    "given, option",
    [
        (dict(type="local"), "target.path"),
        (dict(type="local", path="relative/dir"), "target.path"),
        (dict(type="smb", host="h", share="s", user="u"), "target.password"),
        (dict(type="sftp", host="h", user="u", path="/b", password="p"), "target.known_hosts"),
        (dict(type="rsync", host="h", user="u", path="/b", known_hosts="h ssh-ed25519 AAAA"), "target.private_key"),
        (dict(type="nfs", path="relative"), "target.path"),
        (dict(type="nfs", export="/srv", path="sub"), "target.host"),
        (dict(type="ftps", host="h", user="u"), "target.password"),
        (dict(type="s3"), "target.bucket"),
    ],
)
def test_validation_names_the_option(given, option):
    with pytest.raises(OptionError) as caught:
        _storage.validate(params_of(**given))
    assert caught.value.option == option
    assert option in caught.value.msg


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "./a", "a//b", ".lifeboat-partial.x", "a\\b", "dir/.lifeboat-probe-1"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(StorageError) as caught:
        check_name(name)
    assert caught.value.kind == "config"


def test_secret_options_are_no_log():
    secret = {k for k, v in _storage.TARGET_OPTIONS.items() if v.get("no_log")}
    assert secret == {"password", "private_key", "private_key_passphrase", "secret_key", "session_token"}


def test_put_is_atomic_verified_and_never_overwrites(tmp_path):
    source = tmp_path / "src.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    source.write_bytes(data)
    root = tmp_path / "target"
    root.mkdir()
    seen = []
    with local(root) as backend:
        record = backend.put("dir/img.zip", str(source), progress=lambda done, total: seen.append((done, total)))
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["size"] == len(data)
        assert record["verified"] == "read-back"
        assert (root / "dir" / "img.zip").read_bytes() == data
        assert seen[-1] == (len(data), len(data))
        assert not list((root / "dir").glob(PARTIAL_PREFIX + "*"))
        with pytest.raises(StorageError) as caught:
            backend.put("dir/img.zip", io.BytesIO(b"other"))
        assert caught.value.kind == "exists"
        assert (root / "dir" / "img.zip").read_bytes() == data
        assert backend.stat("dir/img.zip")["size"] == len(data)
        assert backend.stat("dir/missing") is None
        assert [e["name"] for e in backend.list("dir/")] == ["dir/img.zip"]
        assert [e["name"] for e in backend.list("dir/im")] == ["dir/img.zip"]
        assert backend.list("dir/x") == []
        assert backend.list("nowhere/") == []
        assert backend.read_range("dir/img.zip", 5, 10) == data[5:15]
        assert backend.read_range("dir/img.zip", len(data) - 3, 10) == data[-3:]
        sink = io.BytesIO()
        got = backend.get("dir/img.zip", sink)
        assert sink.getvalue() == data and got["sha256"] == record["sha256"]
        assert backend.delete("dir/img.zip") is True
        assert backend.delete("dir/img.zip") is False


def test_put_resumes_a_partial_upload(tmp_path):
    data = os.urandom(2 * 1024 * 1024)
    source = tmp_path / "src.bin"
    source.write_bytes(data)
    root = tmp_path / "target"
    root.mkdir()
    (root / (PARTIAL_PREFIX + "img.zip")).write_bytes(data[:1000])
    with local(root) as backend:
        record = backend.put("img.zip", str(source))
    assert record["resumed_from"] == 1000
    assert (root / "img.zip").read_bytes() == data


def test_a_damaged_partial_is_caught_by_the_check_and_the_upload_redone(tmp_path):
    data = os.urandom(1024 * 1024)
    source = tmp_path / "src.bin"
    source.write_bytes(data)
    root = tmp_path / "target"
    root.mkdir()
    (root / (PARTIAL_PREFIX + "img.zip")).write_bytes(b"\0" * 1000)  # not the source's first bytes
    with local(root) as backend:
        record = backend.put("img.zip", str(source))
    assert record["attempts"] == 2
    assert (root / "img.zip").read_bytes() == data


def test_missing_directory_and_permission(tmp_path):
    with local(tmp_path / "absent") as backend:
        with pytest.raises(StorageError) as caught:
            backend.probe()
        assert caught.value.kind == "not_found"
        assert "target.path" in caught.value.msg


def test_probe_and_space(tmp_path):
    with local(tmp_path) as backend:
        report = backend.probe()
    assert report["reachable"] and report["genuine"] and report["writable"]
    assert report["space"]["total"] >= report["space"]["free"] > 0
    assert not list(tmp_path.iterdir())  # the probe file is gone


def test_images_with_sidecar_manifest_by_ranged_reads_and_fetch(tmp_path):
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    path = make_image(str(node_dir), payload=3 * 1024 * 1024, passphrase="correct horse battery")
    root = tmp_path / "target"
    root.mkdir()
    with local(root) as backend:
        record = _storage.push_image(backend, path)
        assert record["changed"] is True
        again = _storage.push_image(backend, path)
        assert again["changed"] is False and again["sha256"] == record["sha256"]
        sidecar = (root / (os.path.basename(path) + ".sha256")).read_text()
        assert sidecar == "%s  %s\n" % (record["sha256"], os.path.basename(path))
        reads = []
        original = backend.read_range
        backend.read_range = lambda *a: reads.append(a[1:]) or original(*a)
        images = _storage.list_images(backend)
        backend.read_range = original
        assert [i["name"] for i in images] == [os.path.basename(path)]
        image = images[0]
        assert image["node"] == "db1" and image["verdict"] == "success" and image["encryption"] == "passphrase"
        assert image["components"] == {"data": "success"} and image["sidecar"] is True
        assert sum(length for _offset, length in reads) < 300 * 1024  # never the whole 3 MiB image
        restore_dir = tmp_path / "rebuilt"
        restore_dir.mkdir()
        fetched = _storage.fetch_image(backend, image["name"], str(restore_dir))
        with open(fetched["path"], "rb") as got, open(path, "rb") as sent:
            assert got.read() == sent.read()
        assert len(fetched["checks"]) == 2
        with pytest.raises(StorageError) as caught:
            _storage.fetch_image(backend, image["name"], str(restore_dir))
        assert caught.value.kind == "exists"


def test_other_content_under_the_same_name_is_never_overwritten(tmp_path):
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    path = make_image(str(node_dir), payload=64 * 1024)
    root = tmp_path / "target"
    root.mkdir()
    (root / os.path.basename(path)).write_bytes(b"something else")
    with local(root) as backend, pytest.raises(StorageError) as caught:
        _storage.push_image(backend, path)
    assert caught.value.kind == "exists" and "never overwritten" in caught.value.msg
    assert (root / os.path.basename(path)).read_bytes() == b"something else"


def test_a_damaged_copy_is_refused_by_fetch(tmp_path):
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    path = make_image(str(node_dir), payload=512 * 1024)
    root = tmp_path / "target"
    root.mkdir()
    with local(root) as backend:
        _storage.push_image(backend, path)
        copy = root / os.path.basename(path)
        raw = bytearray(copy.read_bytes())
        raw[1000] ^= 0xFF
        copy.write_bytes(bytes(raw))
        dest = tmp_path / "rebuilt"
        dest.mkdir()
        with pytest.raises(StorageError) as caught:
            _storage.fetch_image(backend, os.path.basename(path), str(dest))
        assert caught.value.kind == "integrity" and "damaged" in caught.value.msg
        assert list(dest.iterdir()) == []
        (root / (os.path.basename(path) + ".sha256")).unlink()  # no sidecar: the members' checksums still catch it
        with pytest.raises(StorageError) as caught:
            _storage.fetch_image(backend, os.path.basename(path), str(dest))
        assert caught.value.kind == "integrity" and "member data/blob.bin" in caught.value.msg
        assert list(dest.iterdir()) == []


def test_copies_are_recorded_in_status_and_audit(tmp_path):
    state = tmp_path / "state"
    _storage.record_copy(str(state), "offsite", "file:///x", "/b/img.zip", {"size": 3, "sha256": "ab", "verified": "read-back", "seconds": 1.0}, backup_id="b1")
    _storage.record_copy(str(state), "offsite", "file:///x", "/b/img2.zip", None, backup_id="b2", reason="server down")
    status = _session.NodeState(str(state)).status()
    assert status["copies"]["offsite"]["last_success"]["image"] == "img.zip"
    assert status["copies"]["offsite"]["last_error"]["reason"] == "server down"
    lines = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    assert [(r["event"], r["verdict"]) for r in lines] == [("copy", "success"), ("copy", "failed")]


MOUNTINFO = """22 1 0:21 / / rw,relatime - ext4 /dev/vda rw
40 22 0:50 / /mnt/backups rw,relatime shared:1 - nfs4 filer:/export/backups rw,vers=4.2,rsize=1048576,proto=tcp
41 22 0:51 / /mnt/old rw,relatime - nfs filer:/old rw,vers=3
42 22 0:52 / /mnt/with\\040space rw - nfs4 filer:/s rw,vers=4.1
43 22 0:53 / /mnt/usb rw - vfat /dev/sdb1 rw
"""


@pytest.mark.parametrize(
    "path, version, source, kind",
    [
        ("/mnt/backups/lifeboat", "4", None, None),
        ("/mnt/backups", "4.2", "filer:/export/backups", None),
        ("/mnt/with space/x", "4.1", None, None),
        ("/mnt/backups/lifeboat", "4.1", None, "not_mounted"),  # wrong version
        ("/mnt/backups/lifeboat", "4", "other:/export", "not_mounted"),  # another export
        ("/mnt/old/x", "4", None, "not_mounted"),  # NFS v3
        ("/mnt/usb/x", "4", None, "not_mounted"),  # a local disk
        ("/mnt/backupsX/x", "4", None, "not_mounted"),  # a prefix of a name is not a mount
        ("/srv/empty-below-lost-mount", "4", None, "not_mounted"),
    ],
)
def test_nfs_mount_check(path, version, source, kind):
    from ansible_collections.lifeboat.backup.plugins.module_utils import _storage_nfs

    mounts = _storage_nfs.parse_mountinfo(MOUNTINFO)
    if kind is None:
        assert _storage_nfs.check_nfs_mount(path, mounts, version, source)["fstype"] in ("nfs4", "nfs")
    else:
        with pytest.raises(StorageError) as caught:
            _storage_nfs.check_nfs_mount(path, mounts, version, source)
        assert caught.value.kind == kind
