"""Storage targets: push and fetch of the same image per protocol, against the native tool
on the same server in the same run.

usage: python benchmarks/storage_bench/run.py [--small] [--size MIB] [--only sftp,rsync,...]

For each protocol the collection's push (image_push's code: temporary name, check of
what landed, rename, sidecar) and fetch (download, whole-file SHA-256 against the
sidecar, every member's checksum) run in a child process each, so each reports its own
peak RSS; then the native tool moves the same file: scp (sftp), rsync (rsync), smbclient
(smb, SMB3 encrypted), boto3's transfer manager upload_file/download_file (s3), curl
(ftps). Ratio = native seconds / our seconds (>= 0.9x is the target for rsync, SMB, SFTP
and S3). Servers are the test harness's, on loopback; the numbers are loopback numbers
on a 2-core machine, CPU-bound on both ends. --small (make bench-small / make test):
16 MiB, for correctness only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / ".build" / "collections"))

from tests.harness.storage import STORE_ACCOUNT, STORE_PASSWORD, FtpServer, S3Server, SambaServer, SshServer, store_account  # noqa: E402
from tests.support.images import make_image  # noqa: E402

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[4])
from ansible_collections.lifeboat.backup.plugins.module_utils import _storage
op, image, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
params = {k: v.get("default") for k, v in _storage.TARGET_OPTIONS.items()}
params.update(spec)
started = time.monotonic()
with _storage.open_target(params) as backend:
    if op == "push":
        record = _storage.push_image(backend, image)
    else:
        record = _storage.fetch_image(backend, os.path.basename(image), os.path.dirname(image))
print(json.dumps({"seconds": time.monotonic() - started, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "verified": record.get("verified")}))
"""


def ours(op, image, spec):
    # The spec holds test passwords only; a real push takes them from the module's arguments.
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, op, image, json.dumps(spec), str(ROOT / ".build" / "collections")], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit("%s %s failed:\n%s" % (spec["type"], op, proc.stderr[-3000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed(argv, env=None, stdin=None):
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, **(env or {})), input=stdin, check=False)
    if proc.returncode != 0:
        raise SystemExit("native %s failed: %s" % (argv[0], proc.stderr[-2000:]))
    return time.monotonic() - started


def own_dir(path):
    account = store_account()
    path.mkdir(mode=0o700)
    os.chown(path, account.pw_uid, account.pw_gid)
    return path


def bench_ssh(ssh, image, work, results, only):
    name = os.path.basename(image)
    kh = work / "known_hosts"
    kh.write_text(ssh.known_hosts)
    ssh_opts = ["-i", str(ssh.client_key_path), "-o", "UserKnownHostsFile=%s" % kh, "-o", "BatchMode=yes"]
    remote = "%s@127.0.0.1" % STORE_ACCOUNT
    for kind in ("sftp", "rsync"):
        if kind not in only:
            continue
        root = own_dir(ssh.data_dir / kind)
        native_dir = own_dir(ssh.data_dir / (kind + "-native"))
        spec = ssh.target(kind, path=str(root))
        fetch_dir = work / ("fetch-" + kind)
        fetch_dir.mkdir()
        push = ours("push", image, spec)
        fetch = ours("fetch", str(fetch_dir / name), spec)
        if kind == "sftp":
            native_push = timed(["scp", "-q", "-P", str(ssh.port), *ssh_opts, image, "%s:%s/" % (remote, native_dir)])
            native_fetch = timed(["scp", "-q", "-P", str(ssh.port), *ssh_opts, "%s:%s/%s" % (remote, native_dir, name), str(work / "native-sftp.zip")])
        else:
            shell = "ssh -p %d %s" % (ssh.port, " ".join(ssh_opts))
            native_push = timed(["rsync", "-e", shell, image, "%s:%s/" % (remote, native_dir)])
            native_fetch = timed(["rsync", "-e", shell, "%s:%s/%s" % (remote, native_dir, name), str(work / "native-rsync.zip")])
        results.append((kind, "scp" if kind == "sftp" else "rsync", push, fetch, native_push, native_fetch))


def bench_smb(smb, image, work, results):
    name = os.path.basename(image)
    own_dir(smb.data_dir / "smb")
    own_dir(smb.data_dir / "native")
    spec = smb.target("smb")
    fetch_dir = work / "fetch-smb"
    fetch_dir.mkdir()
    push = ours("push", image, spec)
    fetch = ours("fetch", str(fetch_dir / name), spec)
    base = ["smbclient", "//127.0.0.1/%s" % smb.share, "-p", str(smb.port), "-U", STORE_ACCOUNT, "-m", "SMB3", "--client-protection=encrypt"]
    env = {"PASSWD": STORE_PASSWORD}  # smbclient reads the password from PASSWD, not argv
    native_push = timed([*base, "-c", "cd native; put %s %s" % (image, name)], env=env)
    native_fetch = timed([*base, "-c", "cd native; get %s %s" % (name, work / "native-smb.zip")], env=env)
    results.append(("smb", "smbclient", push, fetch, native_push, native_fetch))


def bench_s3(s3, image, work, results):
    name = os.path.basename(image)
    spec = s3.target("ours")
    fetch_dir = work / "fetch-s3"
    fetch_dir.mkdir()
    push = ours("push", image, spec)
    fetch = ours("fetch", str(fetch_dir / name), spec)
    client = s3.client()
    started = time.monotonic()
    client.upload_file(image, s3.bucket, "native/" + name)
    native_push = time.monotonic() - started
    started = time.monotonic()
    client.download_file(s3.bucket, "native/" + name, str(work / "native-s3.zip"))
    native_fetch = time.monotonic() - started
    results.append(("s3", "boto3 transfer", push, fetch, native_push, native_fetch))


def bench_ftps(ftp, image, work, results):
    name = os.path.basename(image)
    own_dir(ftp.data_dir / "ftps")
    spec = ftp.target("ftps")
    fetch_dir = work / "fetch-ftps"
    fetch_dir.mkdir()
    push = ours("push", image, spec)
    fetch = ours("fetch", str(fetch_dir / name), spec)
    config = 'user = "%s:%s"\n' % (STORE_ACCOUNT, STORE_PASSWORD.replace("\\", "\\\\").replace('"', '\\"'))  # curl -K - reads it from stdin
    url = "ftp://127.0.0.1:%d/%s" % (ftp.port, name)
    common = ["curl", "-sS", "--ssl-reqd", "--cacert", str(ftp.ca_file), "-K", "-"]
    native_push = timed([*common, "-T", image, url], stdin=config)
    native_fetch = timed([*common, "-o", str(work / "native-ftps.zip"), url], stdin=config)
    results.append(("ftps", "curl", push, fetch, native_push, native_fetch))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--size", type=int, help="image size in MiB (default 1024, --small 16)")
    parser.add_argument("--only", default="sftp,rsync,smb,s3,ftps")
    args = parser.parse_args()
    size = (args.size or (16 if args.small else 1024)) * 2**20
    only = set(args.only.split(","))
    results = []
    with tempfile.TemporaryDirectory(prefix="lifeboat-storage-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        image = make_image(tmp, node="bench", payload=size)
        print("image: %.1f MiB; load average %s" % (os.path.getsize(image) / 2**20, os.getloadavg()), flush=True)
        if only & {"sftp", "rsync"}:
            with SshServer() as ssh:
                bench_ssh(ssh, image, work, results, only)
        if "smb" in only:
            with SambaServer() as smb:
                bench_smb(smb, image, work, results)
        if "s3" in only:
            with S3Server() as s3:
                bench_s3(s3, image, work, results)
        if "ftps" in only:
            with FtpServer() as ftp:
                bench_ftps(ftp, image, work, results)
        mb = os.path.getsize(image) / 1e6
    print(
        "\n%-6s %-15s %8s %8s %7s %8s %8s %7s %9s %9s" % ("proto", "native", "push s", "native", "ratio", "fetch s", "native", "ratio", "push RSS", "fetch RSS")
    )
    for kind, tool, push, fetch, native_push, native_fetch in results:
        print(
            "%-6s %-15s %8.2f %8.2f %6.2fx %8.2f %8.2f %6.2fx %7.1fMB %7.1fMB"
            % (
                kind,
                tool,
                push["seconds"],
                native_push,
                native_push / push["seconds"],
                fetch["seconds"],
                native_fetch,
                native_fetch / fetch["seconds"],
                push["rss_kib"] / 1024,
                fetch["rss_kib"] / 1024,
            )
        )
    print(
        "\n%.0f MB per transfer; ours includes the check of what landed (%s) and the sidecar; target >= 0.9x for sftp, rsync, smb, s3; RSS < 100 MB"
        % (mb, ", ".join(sorted({r[2]["verified"] for r in results})))
    )
    print("load average after: %s" % (os.getloadavg(),))


if __name__ == "__main__":
    main()
