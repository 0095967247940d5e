"""Storage targets against real servers on loopback: the modules' round trip on every
protocol, and the failures of issue #11 (server killed mid-upload, wrong credentials,
host key mismatch, target full, permission denied, a name already present, a damaged
copy, passwords full of shell metacharacters)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.harness.storage import STORE_PASSWORD, FtpServer, SambaServer, SshServer, VsftpdServer, restart, store_account
from tests.support.images import make_image
from tests.support.modules import run_module

PROTOCOLS = ["local", "sftp", "rsync", "s3", "smb", "ftps", "ftp"]


class Bucket:
    """What an S3 target holds, seen from the server side (like a directory)."""

    def __init__(self, server, prefix):
        self.client = server.client()
        self.bucket = server.bucket
        self.prefix = prefix + "/"

    def __truediv__(self, name):
        return _Object(self, name)

    def iterdir(self):
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix).get("Contents", [])
        return [_Object(self, o["Key"][len(self.prefix) :]) for o in listing]


class _Object:
    def __init__(self, bucket, name):
        self.bucket, self.name = bucket, name

    def read_bytes(self):
        return self.bucket.client.get_object(Bucket=self.bucket.bucket, Key=self.bucket.prefix + self.name)["Body"].read()

    def read_text(self):
        return self.read_bytes().decode()

    def write_bytes(self, data):
        self.bucket.client.put_object(Bucket=self.bucket.bucket, Key=self.bucket.prefix + self.name, Body=data)

    def exists(self):
        return any(o.name == self.name for o in self.bucket.iterdir())


def _own(path: Path) -> Path:
    account = store_account()
    path.mkdir(parents=True, mode=0o700)
    os.chown(path, account.pw_uid, account.pw_gid)
    return path


@pytest.fixture(params=PROTOCOLS)
def target(request, tmp_path):
    """(target dict, directory where the server keeps what is stored) for each protocol."""
    sub = "t-" + uuid.uuid4().hex[:8]
    if request.param == "local":
        root = _own(tmp_path / "target")
        return {"type": "local", "path": str(root), "name": "disk"}, root
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        return server.target(sub, name="bucket"), Bucket(server, sub)
    if request.param in ("ftp", "ftps"):
        server = request.getfixturevalue(request.param + "_server")
        return server.target(sub, name=request.param), _own(server.data_dir / sub)
    if request.param == "smb":
        server = request.getfixturevalue("smb_server")
        return server.target(sub, name="share"), _own(server.data_dir / sub)
    server = request.getfixturevalue("ssh_server")
    root = _own(server.data_dir / sub)
    return server.target(request.param, path=str(root), name="vault"), root


@pytest.fixture
def image(tmp_path):
    node = tmp_path / "node"
    node.mkdir()
    return make_image(str(node), payload=3 * 1024 * 1024 + 5, passphrase="correct horse battery")


def test_push_info_fetch_round_trip(target, image, tmp_path):
    spec, root = target
    state = tmp_path / "state"
    pushed = run_module("image_push", path=image, target=spec, state_dir=str(state))
    assert not pushed.failed, pushed
    assert pushed["changed"] and pushed["verified"] in ("remote-sha256", "read-back", "server-sha256-parts")
    name = os.path.basename(image)
    assert (root / name).read_bytes() == Path(image).read_bytes()
    assert (root / (name + ".sha256")).read_text().startswith(pushed["sha256"])
    assert not [p for p in root.iterdir() if p.name.startswith(".lifeboat-")]
    again = run_module("image_push", path=image, target=spec, state_dir=str(state))
    assert not again.failed and again["changed"] is False

    info = run_module("storage_info", target=spec)
    assert not info.failed, info
    assert info["reachable"] and info["genuine"] and info["writable"] and not info["changed"]
    assert info["space"] is None if spec["type"] in ("s3", "ftp", "ftps") else info["space"]["free"] > 0
    (listed,) = info["images"]
    assert listed["name"] == name and listed["node"] == "db1" and listed["verdict"] == "success"
    assert listed["encryption"] == "passphrase" and listed["components"] == {"data": "success"}

    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    fetched = run_module("image_fetch", destination=str(rebuilt), node="db1", target=spec)
    assert not fetched.failed, fetched
    assert Path(fetched["path"]).read_bytes() == Path(image).read_bytes()
    assert fetched["image"]["backup_id"] == "20261122T194512Z-3fa2c1d0"
    again = run_module("image_fetch", destination=str(rebuilt), node="db1", target=spec)
    assert not again.failed and again["changed"] is False

    status = (state / "status.json").read_text()
    assert '"copies"' in status and pushed["sha256"] in status


@pytest.mark.fault("name collision", "image_push to a name the target already holds (every protocol)")
def test_a_name_already_present_is_never_overwritten(target, image, fault):
    spec, root = target
    name = os.path.basename(image)
    (root / name).write_bytes(b"an older, different file")
    result = run_module("image_push", path=image, target=spec, state_dir="")
    fault.observe(false_success=not result.failed, data_lost=(root / name).read_bytes() != b"an older, different file")
    assert result.failed and result["storage_error"] == "exists"
    assert "never overwritten" in result["msg"]
    assert (root / name).read_bytes() == b"an older, different file"


@pytest.mark.fault("corrupt member", "a byte of the stored copy flipped, image_fetch (every protocol)")
def test_a_damaged_copy_is_refused_by_fetch(target, image, tmp_path, fault):
    spec, root = target
    assert not run_module("image_push", path=image, target=spec, state_dir="").failed
    copy = root / os.path.basename(image)
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    copy.write_bytes(bytes(raw))
    rebuilt = tmp_path / "rebuilt"
    rebuilt.mkdir()
    result = run_module("image_fetch", destination=str(rebuilt), name=os.path.basename(image), target=spec)
    fault.observe(false_success=not result.failed or list(rebuilt.iterdir()) != [])
    fault.scan([STORE_PASSWORD], result)
    assert result.failed and result["storage_error"] == "integrity"
    assert "damaged" in result["msg"]
    assert list(rebuilt.iterdir()) == []


@pytest.mark.fault("permission denied", "the SSH login may not write the SFTP target's directory", item="11.5")
def test_permission_denied_says_so(ssh_server, image, fault):
    # The SSH login is unprivileged (a local target written by root cannot be denied).
    root = ssh_server.data_dir / ("r-" + uuid.uuid4().hex[:8])
    root.mkdir(mode=0o755)
    spec = ssh_server.target(path=str(root))
    info = run_module("storage_info", target=spec)
    assert not info.failed and info["writable"] is False and "ermission" in info["write_error"]
    result = run_module("image_push", path=image, target=spec, state_dir="")
    fault.observe(false_success=not result.failed or info["writable"] is not False or list(root.iterdir()) != [], data_lost=not _storage_image_ok(image))
    fault.scan([ssh_server.client_key.splitlines()[1]], info, result)
    assert result.failed and result["storage_error"] == "permission"


def test_sftp_with_a_password_full_of_shell_metacharacters(ssh_server, image, tmp_path):
    root = _own(ssh_server.data_dir / ("p-" + uuid.uuid4().hex[:8]))
    spec = ssh_server.target("sftp", path=str(root), private_key=None, password=STORE_PASSWORD)
    result = run_module("image_push", path=image, target=spec, state_dir="")
    assert not result.failed, result
    assert STORE_PASSWORD not in result.stdout + result.stderr


@pytest.mark.fault("wrong key", "SFTP with a wrong password, a wrong key, a changed and an unknown host key")
def test_sftp_wrong_password_wrong_key_and_changed_host_key(ssh_server, image, tmp_path, fault):
    root = _own(ssh_server.data_dir / ("w-" + uuid.uuid4().hex[:8]))
    wrong = run_module("image_push", path=image, target=ssh_server.target(path=str(root), private_key=None, password="not " + STORE_PASSWORD), state_dir="")
    assert wrong.failed and wrong["storage_error"] == "auth" and "authentication failed" in wrong["msg"]
    other = tmp_path / "other_key"
    os.system("ssh-keygen -q -t ed25519 -N '' -f %s" % other)  # noqa: S605 - a throw-away key
    wrong_key = run_module("image_push", path=image, target=ssh_server.target(path=str(root), private_key=other.read_text()), state_dir="")
    assert wrong_key.failed and wrong_key["storage_error"] == "auth"
    forged = "[127.0.0.1]:%d %s" % (
        ssh_server.port,
        (Path(str(other) + ".pub")).read_text().split(" ", 2)[0] + " " + Path(str(other) + ".pub").read_text().split()[1],
    )
    mismatch = run_module("image_push", path=image, target=ssh_server.target(path=str(root), known_hosts=forged), state_dir="")
    assert mismatch.failed and mismatch["storage_error"] == "hostkey" and "CHANGED" in mismatch["msg"]
    unknown = run_module(
        "image_push", path=image, target=ssh_server.target(path=str(root), known_hosts="[otherhost]:22 " + forged.split(" ", 1)[1]), state_dir=""
    )
    fault.observe(false_success=not (wrong.failed and wrong_key.failed and mismatch.failed and unknown.failed) or list(root.iterdir()) != [])
    fault.scan(["not " + STORE_PASSWORD, STORE_PASSWORD, other.read_text()], wrong, wrong_key, mismatch, unknown)
    assert unknown.failed and unknown["storage_error"] == "hostkey" and "accept_new" in unknown["msg"]
    assert list(root.iterdir()) == []
    tofu_file = tmp_path / "known_hosts"
    tofu = run_module(
        "storage_info", target=ssh_server.target(path=str(root), known_hosts=None, host_key_checking="accept_new", known_hosts_file=str(tofu_file))
    )
    assert not tofu.failed and tofu["details"]["host_key_accepted_now"]
    assert tofu_file.read_text().split()[2] == ssh_server.known_hosts.split()[2]


@pytest.mark.fault("killed process", "the SFTP server killed mid-upload, then the push resumed")
def test_server_killed_mid_upload_then_resumed(image, tmp_path, fault):
    big = make_image(str(tmp_path), node="big", payload=24 * 1024 * 1024)
    with SshServer() as ssh:
        root = _own(ssh.data_dir / "k")
        spec = ssh.target(path=str(root), bwlimit=4096, retries=1, retry_delay=0.2)
        name = os.path.basename(big)
        partial = root / (".lifeboat-partial." + name)

        def kill_mid_upload():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < 2 * 1024 * 1024):
                time.sleep(0.05)
            ssh.kill()

        killer = threading.Thread(target=kill_mid_upload)
        killer.start()
        state = tmp_path / "state"
        result = run_module("image_push", path=big, target=spec, state_dir=str(state))
        killer.join()
        fault.observe(false_success=not result.failed or (root / name).exists(), data_lost=not _storage_image_ok(big))
        fault.scan([STORE_PASSWORD], result)
        assert result.failed and result["storage_error"] == "unreachable", result["msg"]
        assert "gave up after 2 attempts" in result["msg"]
        assert not (root / name).exists()
        assert 2 * 1024 * 1024 <= partial.stat().st_size < os.path.getsize(big)
        assert _storage_image_ok(big)
        audit = (state / "audit.jsonl").read_text()
        assert '"verdict": "failed"' in audit and '"error_kind": "unreachable"' in audit
        restart(ssh)
        resumed = run_module("image_push", path=big, target=dict(spec, bwlimit=None), state_dir=str(state))
        assert not resumed.failed, resumed
        assert resumed["resumed_from"] > 0
        fault.observe(data_lost=(root / name).read_bytes() != Path(big).read_bytes())
        assert (root / name).read_bytes() == Path(big).read_bytes()


def _storage_image_ok(path):
    from ansible_collections.lifeboat.backup.plugins.module_utils import _image

    with _image.Image(path) as image:
        return _image.verify_image(image, "checksum")[1] is None


@pytest.mark.fault("disk full", "the SFTP target fills up mid-upload")
def test_target_full_mid_upload(image, tmp_path, fault):
    big = make_image(str(tmp_path), node="big", payload=6 * 1024 * 1024)
    with SshServer() as ssh:
        ssh.fill(2 * 1024 * 1024)
        result = run_module("image_push", path=big, target=ssh.target(path=str(ssh.data_dir)), state_dir="")
        fault.observe(false_success=not result.failed or list(ssh.data_dir.iterdir()) != [])
        fault.scan([STORE_PASSWORD], result)
        assert result.failed and result["storage_error"] == "full", result
        assert "full" in result["msg"]
        assert list(ssh.data_dir.iterdir()) == []  # no final name, and the partial gave its space back
        assert Path(big).stat().st_size > 6 * 1024 * 1024


@pytest.mark.fault("server down", "nothing listens at the storage target's port")
def test_unreachable_server(ssh_server, fault):
    spec = ssh_server.target(port=1, retries=1)
    started = time.monotonic()
    result = run_module("storage_info", target=spec)
    fault.observe(false_success=not result.failed or result.get("reachable") is not False)
    assert result.failed and result.get("storage_error") == "unreachable" and result["reachable"] is False, result["msg"]
    assert "gave up after 2 attempts" in result["msg"]
    assert time.monotonic() - started < 30


@pytest.mark.fault("wrong key", "S3 with a wrong secret key")
def test_s3_wrong_secret_and_missing_bucket(s3_server, image, fault):
    wrong = run_module("image_push", path=image, target=s3_server.target("w", secret_key="not-the-secret"), state_dir="")
    fault.observe(false_success=not wrong.failed)
    fault.scan([s3_server.secret_key, "not-the-secret"], wrong)
    # AWS says SignatureDoesNotMatch, SeaweedFS AccessDenied: either way the message names the key.
    assert wrong.failed and wrong["storage_error"] in ("auth", "permission") and "secret_key" in wrong["msg"]
    assert s3_server.secret_key not in wrong.stdout + wrong.stderr
    missing = run_module("storage_info", target=s3_server.target("w", bucket="no-such-bucket"))
    assert missing.failed and missing["storage_error"] == "not_found" and "target.bucket" in missing["msg"]


@pytest.mark.fault("wrong key", "SMB with a wrong password, a missing share, a directory the account may not write", item="11.5")
def test_smb_wrong_password_missing_share_and_permission(smb_server, image, fault):
    root = _own(smb_server.data_dir / ("w-" + uuid.uuid4().hex[:8]))
    wrong = run_module("image_push", path=image, target=smb_server.target(root.name, password=STORE_PASSWORD + "x"), state_dir="")
    fault.observe(false_success=not wrong.failed or list(root.iterdir()) != [])
    fault.scan([STORE_PASSWORD], wrong)
    assert wrong.failed and wrong["storage_error"] == "auth" and "target.password" in wrong["msg"]
    assert STORE_PASSWORD not in wrong.stdout + wrong.stderr
    share = run_module("storage_info", target=smb_server.target(root.name, share="nosuchshare"))
    assert share.failed and share["storage_error"] == "not_found" and "target.share" in share["msg"], share["msg"]
    locked = smb_server.data_dir / ("r-" + uuid.uuid4().hex[:8])
    locked.mkdir(mode=0o755)
    info = run_module("storage_info", target=smb_server.target(locked.name))
    assert not info.failed and info["writable"] is False, info
    denied = run_module("image_push", path=image, target=smb_server.target(locked.name), state_dir="")
    fault.observe(false_success=not (share.failed and denied.failed) or list(locked.iterdir()) != [], data_lost=not _storage_image_ok(image))
    fault.scan([STORE_PASSWORD], share, info, denied)
    assert denied.failed and denied["storage_error"] == "permission", denied["msg"]


@pytest.mark.fault("disk full", "the SMB share fills up mid-upload")
def test_smb_target_full_mid_upload(tmp_path, fault):
    big = make_image(str(tmp_path), node="big", payload=6 * 1024 * 1024)
    with SambaServer() as smb:
        smb.fill(2 * 1024 * 1024)
        result = run_module("image_push", path=big, target=smb.target(), state_dir="")
        fault.observe(false_success=not result.failed or list(smb.data_dir.iterdir()) != [])
        fault.scan([STORE_PASSWORD], result)
        assert result.failed and result["storage_error"] == "full", result["msg"]
        assert list(smb.data_dir.iterdir()) == []


@pytest.mark.fault("wrong key", "FTPS with a wrong password, a certificate not trusted, a read-only login", item="11.5")
def test_ftps_wrong_password_unknown_certificate_read_only(ftps_server, image, tmp_path, fault):
    # Not "full": pyftpdlib meets ENOSPC with an unhandled exception and no reply, so the
    # client can only time out (vsftpd answers 451/452, which ftp_error maps to "full").
    root = _own(ftps_server.data_dir / ("w-" + uuid.uuid4().hex[:8]))
    wrong = run_module("image_push", path=image, target=ftps_server.target(root.name, password="x" + STORE_PASSWORD), state_dir="")
    fault.observe(false_success=not wrong.failed or list(root.iterdir()) != [])
    fault.scan([STORE_PASSWORD], wrong)
    assert wrong.failed and wrong["storage_error"] == "auth" and "target.password" in wrong["msg"]
    assert STORE_PASSWORD not in wrong.stdout + wrong.stderr
    untrusted = run_module("storage_info", target=ftps_server.target(root.name, ca_file=None))
    assert untrusted.failed and untrusted["storage_error"] == "hostkey" and "certificate" in untrusted["msg"]
    with FtpServer(perm="elr") as read_only:
        info = run_module("storage_info", target=read_only.target())
        assert not info.failed and info["writable"] is False and info["space"] is None and "FTP" in info["space_note"]
        denied = run_module("image_push", path=image, target=read_only.target(), state_dir="")
        fault.observe(false_success=not (untrusted.failed and denied.failed), data_lost=not _storage_image_ok(image))
        fault.scan([STORE_PASSWORD], untrusted, info, denied)
        assert denied.failed and denied["storage_error"] == "permission", denied["msg"]


@pytest.mark.fault("wrong key", "rsync over SSH with a changed host key and a wrong key; the key never in argv", item="11.5")
def test_rsync_key_stays_off_disk_and_argv_and_host_key_is_checked(ssh_server, image, tmp_path, fault):
    root = _own(ssh_server.data_dir / ("r-" + uuid.uuid4().hex[:8]))
    key_line = ssh_server.client_key.splitlines()[1]
    seen = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    seen.append(cmdline.read_bytes())
                except OSError:
                    continue
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        pushed = run_module("image_push", path=image, target=ssh_server.target("rsync", path=str(root)), state_dir="")
    finally:
        stop.set()
        sampler.join()
    assert not pushed.failed, pushed["msg"]
    assert pushed["verified"] == "remote-sha256"
    assert any(b"rsync" in c for c in seen)  # the sampler saw the transfer running
    assert not any(key_line.encode() in c for c in seen)
    assert not list(Path(tempfile_dir()).glob("lifeboat-rsync-*"))  # the agent's directory is gone
    other = tmp_path / "other"
    os.system("ssh-keygen -q -t ed25519 -N '' -f %s" % other)  # noqa: S605 - a throw-away key
    forged = "[127.0.0.1]:%d %s" % (ssh_server.port, " ".join(Path(str(other) + ".pub").read_text().split()[:2]))
    mismatch = run_module("storage_info", target=ssh_server.target("rsync", path=str(root), known_hosts=forged))
    assert mismatch.failed and mismatch["storage_error"] == "hostkey", mismatch["msg"]
    wrong_key = run_module("storage_info", target=ssh_server.target("rsync", path=str(root), private_key=other.read_text()))
    fault.observe(false_success=not (mismatch.failed and wrong_key.failed), secret_leaked=any(key_line.encode() in c for c in seen))
    fault.scan([key_line, other.read_text().splitlines()[1]], pushed, mismatch, wrong_key)
    assert wrong_key.failed and wrong_key["storage_error"] == "auth", wrong_key["msg"]


def tempfile_dir():
    import tempfile

    return tempfile.gettempdir()


@pytest.mark.fault("lost mount", "an NFS target path that is the empty directory of a lost mount, or another file system", item="11.5")
def test_nfs_refuses_a_path_that_is_not_an_nfs_mount_and_records_it(image, tmp_path, fault):
    """The kernel here has no NFS client (docs/storage.md, "How NFS is tested"): what runs
    for real is the mount check on this machine's /proc/self/mountinfo, the local write
    path the NFS backend shares, and the module's own mount failing with a clear message."""
    lost = tmp_path / "mnt-backups"  # the empty directory a lost mount leaves behind
    lost.mkdir()
    state = tmp_path / "state"
    pushed = run_module("image_push", path=image, target={"type": "nfs", "path": str(lost), "name": "filer"}, state_dir=str(state))
    fault.observe(false_success=not pushed.failed or list(lost.iterdir()) != [], data_lost=not _storage_image_ok(image))
    assert pushed.failed and pushed["storage_error"] == "not_mounted" and "lost mount" in pushed["msg"]
    assert list(lost.iterdir()) == []
    audit = (state / "audit.jsonl").read_text()
    assert '"error_kind": "not_mounted"' in audit and '"target": "filer"' in audit
    info = run_module("storage_info", target={"type": "nfs", "path": str(lost)})
    assert info.failed and info["storage_error"] == "not_mounted" and info["genuine"] is False
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "lifeboat-not-nfs", str(disk)], check=True)
    try:
        on_tmpfs = run_module("image_push", path=image, target={"type": "nfs", "path": str(disk)}, state_dir="")
        fault.observe(false_success=not on_tmpfs.failed or list(disk.iterdir()) != [])
        assert on_tmpfs.failed and on_tmpfs["storage_error"] == "not_mounted" and "tmpfs mounted at" in on_tmpfs["msg"]
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    managed = run_module("storage_info", target={"type": "nfs", "host": "127.0.0.1", "export": "/srv/backups", "retries": 0})
    assert managed.failed and managed["storage_error"] in ("unsupported", "unreachable"), managed["msg"]
    assert "127.0.0.1:/srv/backups" in managed["msg"]
    assert not list(Path(tempfile_dir()).glob("lifeboat-nfs-*"))  # the private mount point is gone


@pytest.mark.fault("disk full", "the vsftpd target (FTP and FTPS) fills up mid-upload")
@pytest.mark.parametrize("tls", [True, False], ids=["ftps", "ftp"])
def test_ftp_target_full_mid_upload_on_vsftpd(tls, tmp_path, fault):
    """vsftpd (Debian's FTP server) answers a failed write with 451/452: the push reports the
    target full, leaves no final name, and the other protocol paths (login, TLS, listing by
    NLST and SIZE, no MLSD) work against it."""
    big = make_image(str(tmp_path), node="big", payload=6 * 1024 * 1024)
    small = make_image(str(tmp_path), node="small", payload=64 * 1024)
    with VsftpdServer(tls=tls) as ftp:
        ftp.fill(2 * 1024 * 1024)
        first = run_module("image_push", path=small, target=ftp.target(), state_dir="")
        assert not first.failed, first
        result = run_module("image_push", path=big, target=ftp.target(), state_dir="")
        left = sorted(p.name for p in ftp.data_dir.iterdir())
        fault.observe(false_success=not result.failed or Path(big).name in left, data_lost=Path(small).name not in left)
        fault.scan([STORE_PASSWORD], result)
        assert result.failed and result["storage_error"] == "full", result["msg"]
        assert STORE_PASSWORD not in result.stdout + result.stderr
        # No final name, no partial left behind: only the first image and its checksum sidecar.
        assert sorted(p.name for p in ftp.data_dir.iterdir()) == [Path(small).name, Path(small).name + ".sha256"]
        listed = run_module("storage_info", target=ftp.target())
        assert not listed.failed and [i["name"] for i in listed["images"]] == [Path(small).name], listed
