"""docs/storage.md, "Getting an image back by hand", run with the stock clients it names
against the harness servers: an image pushed by image_push is fetched with its sidecar by
sftp, rsync, smbclient and curl, then `sha256sum -c` and `unzip -l` as the page says. The
loopback servers need a port, a known_hosts file and a CA file that the page leaves out;
the passwords go by environment or stdin (never argv), as the page's tools allow."""

from __future__ import annotations

import os
import re
import subprocess
import uuid

import pytest

from tests.harness.storage import STORE_ACCOUNT, STORE_PASSWORD
from tests.integration.test_storage import _own
from tests.support.images import make_image
from tests.support.modules import ROOT, run_module

PAGE = (ROOT / "docs" / "storage.md").read_text()
SECTION = PAGE[PAGE.index("## Getting an image back by hand") : PAGE.index("## Measured")]


def documented(label):
    """The page's command for one kind of target (the comment column stripped)."""
    line = next(line for line in SECTION.splitlines() if line.startswith("# " + label + " "))
    return line[len("# " + label) :].strip()


def fetch_by_hand(kind, server, target, name, workdir):
    if kind in ("sftp", "rsync"):
        known_hosts = workdir.parent / "known_hosts"
        known_hosts.write_text(server.known_hosts)
        ssh_opts = ["-i", str(server.client_key_path), "-o", "UserKnownHostsFile=%s" % known_hosts, "-o", "BatchMode=yes"]
        remote = "%s@127.0.0.1:%s/" % (STORE_ACCOUNT, target["path"])
        if kind == "sftp":
            assert "| sftp -i key -b - lifeboat@backup:" in documented("SFTP")
            batch = "get %s\nget %s.sha256\n" % (name, name)
            argv = ["sftp", "-P", str(server.port), *ssh_opts, "-b", "-", remote]
            return subprocess.run(argv, input=batch, cwd=workdir, capture_output=True, text=True, timeout=60, check=False)
        assert documented("rsync").startswith("rsync -e 'ssh -i key'")
        shell = "ssh -p %d %s" % (server.port, " ".join(ssh_opts))
        argv = ["rsync", "-e", shell, remote + name, remote + name + ".sha256", "."]
        return subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=60, check=False)
    if kind == "smb":
        assert documented("SMB").startswith("smbclient //fs01/backups -U 'CORP\\svc-backup' -m SMB3 --client-protection=encrypt -c")
        argv = ["smbclient", "//127.0.0.1/%s" % server.share, "-p", str(server.port), "-U", STORE_ACCOUNT, "-m", "SMB3", "--client-protection=encrypt"]
        argv += ["-c", "cd %s; get %s; get %s.sha256" % (target["path"], name, name)]
        return subprocess.run(argv, env=dict(os.environ, PASSWD=STORE_PASSWORD), cwd=workdir, capture_output=True, text=True, timeout=60, check=False)
    assert documented("FTPS").startswith("curl --ssl-reqd -u backup -O")
    url = "ftp://127.0.0.1:%d/%s/%s" % (server.port, target["path"], name)
    config = 'user = "%s:%s"\n' % (STORE_ACCOUNT, STORE_PASSWORD.replace("\\", "\\\\").replace('"', '\\"'))
    argv = ["curl", "-sS", "--ssl-reqd", "--cacert", str(server.ca_file), "-K", "-", "-O", url, "-O", url + ".sha256"]
    return subprocess.run(argv, input=config, cwd=workdir, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("kind", ["sftp", "rsync", "smb", "ftps"])
def test_an_image_comes_back_by_hand_with_stock_tools(kind, request, tmp_path):
    node = tmp_path / "node"
    node.mkdir()
    image = make_image(str(node), payload=256 * 1024 + 3, passphrase="correct horse battery")
    name = os.path.basename(image)
    sub = "h-" + uuid.uuid4().hex[:8]
    server = request.getfixturevalue({"sftp": "ssh_server", "rsync": "ssh_server", "smb": "smb_server", "ftps": "ftps_server"}[kind])
    if kind in ("sftp", "rsync"):
        target = server.target(kind, path=str(_own(server.data_dir / sub)))
    else:
        _own(server.data_dir / sub)
        target = server.target(sub)
    pushed = run_module("image_push", path=image, target=target, state_dir="")
    assert not pushed.failed, pushed

    workdir = tmp_path / "by-hand"
    workdir.mkdir()
    fetched = fetch_by_hand(kind, server, dict(target, path=target.get("path") or sub), name, workdir)
    assert fetched.returncode == 0, fetched.stderr
    assert STORE_PASSWORD not in fetched.stdout + fetched.stderr
    assert "sha256sum -c $IMG.sha256" in SECTION and "unzip -l $IMG" in SECTION
    check = subprocess.run(["sha256sum", "-c", name + ".sha256"], cwd=workdir, capture_output=True, text=True, check=False)
    assert check.returncode == 0 and check.stdout.strip() == "%s: OK" % name, check.stdout + check.stderr
    listing = subprocess.run(["unzip", "-l", name], cwd=workdir, capture_output=True, text=True, check=True).stdout
    assert re.search(r"\smanifest\.json\n", listing), listing
