"""Progress on the controller while a long module runs (issue #18 item 13): a throttled
upload prints progress lines with a rate at progress_interval 1, over a local connection,
over ssh (a real sshd on loopback, as an unprivileged account) and with become to another
user; the results (success, failure, check mode) equal those of runs without progress."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.harness.storage import STORE_ACCOUNT, store_account
from tests.support.images import make_image
from tests.support.modules import run_playbook

# 3 MiB at 1 MiB/s: the upload takes about 3 s, enough for lines at a 1 s interval.
PAYLOAD = 3 * 1024 * 1024
BWLIMIT_KIB = 1024
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable

PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: push with progress
      lifeboat.backup.image_push:
        path: "{{ image }}"
        target: {type: local, path: "{{ base }}/with", bwlimit: %(bw)d}
        state_dir: ""
        progress_interval: 1
      register: with_progress
    - name: push without progress
      lifeboat.backup.image_push:
        path: "{{ image }}"
        target: {type: local, path: "{{ base }}/without", bwlimit: %(bw)d}
        state_dir: ""
        progress_interval: 0
      register: without_progress
    - name: refused push with progress
      lifeboat.backup.image_push:
        path: "{{ image }}"
        target: {type: local, path: "{{ base }}/taken"}
        state_dir: ""
        progress_interval: 1
      register: refused_with
      ignore_errors: true
    - name: refused push without progress
      lifeboat.backup.image_push:
        path: "{{ image }}"
        target: {type: local, path: "{{ base }}/taken"}
        state_dir: ""
        progress_interval: 0
      register: refused_without
      ignore_errors: true
    - name: planned push
      lifeboat.backup.image_push:
        path: "{{ image }}"
        target: {type: local, path: "{{ base }}/planned", bwlimit: %(bw)d}
        state_dir: ""
        progress_interval: 1
      check_mode: true
      register: planned
    - name: keep the results
      ansible.builtin.copy:
        content: >-
          {{ {'with': with_progress, 'without': without_progress, 'refused_with': refused_with,
              'refused_without': refused_without, 'planned': planned} | to_json }}
        dest: "{{ results_dir }}/{{ inventory_hostname }}.json"
        mode: "0600"
      delegate_to: localhost
      connection: local
""" % {"bw": BWLIMIT_KIB}

# What differs between two pushes to two directories, whatever the progress.
VARYING = ("location", "target", "seconds", "invocation")


def _node(shared_dir, name, image):
    """A directory per host, owned by the store account (the ssh and become hosts run as it)."""
    account = store_account()
    base = shared_dir / name
    for sub in ("with", "without", "taken", "planned"):
        (base / sub).mkdir(parents=True)
    # A different image under the same name: the push must refuse it (never overwritten).
    (base / "taken" / os.path.basename(image)).write_bytes(b"other content")
    for path in [base, *base.iterdir(), *(base / "taken").iterdir()]:
        os.chown(path, account.pw_uid, account.pw_gid)
    return str(base)


def _sections(output):
    """Task name -> the lines printed under it."""
    sections, current = {}, None
    for line in output.splitlines():
        found = re.match(r"TASK \[(.*)\]", line)
        if found:
            current = sections.setdefault(found.group(1), [])
        elif current is not None:
            current.append(line)
    return sections


def _same(result):
    return {k: v for k, v in result.items() if k not in VARYING}


@pytest.fixture
def shared_dir():
    """A directory the store account can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="lifeboat-progress-test."))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_progress_lines_while_a_push_runs_and_results_unchanged(tmp_path, shared_dir, ssh_server):
    account = store_account()
    images = shared_dir / "images"
    images.mkdir(mode=0o755)
    image = make_image(str(images), payload=os.urandom(PAYLOAD))
    os.chmod(image, 0o644)
    results = tmp_path / "results"
    results.mkdir()
    node_tmp = shared_dir / "node-tmp"
    node_tmp.mkdir(mode=0o1777)
    os.chmod(node_tmp, 0o1777)
    hosts = {
        "local-node": {"ansible_connection": "local", "base": _node(shared_dir, "local-node", image)},
        "ssh-node": {
            "ansible_connection": "ssh",
            "ansible_host": "127.0.0.1",
            "ansible_port": ssh_server.port,
            "ansible_user": STORE_ACCOUNT,
            "ansible_ssh_private_key_file": str(ssh_server.client_key_path),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "ansible_python_interpreter": SYSTEM_PYTHON,
            "ansible_remote_tmp": str(node_tmp),
            "base": _node(shared_dir, "ssh-node", image),
        },
        "become-node": {
            "ansible_connection": "local",
            "ansible_become": True,
            "ansible_become_method": "su",
            "ansible_become_user": account.pw_name,
            "ansible_python_interpreter": SYSTEM_PYTHON,
            "base": _node(shared_dir, "become-node", image),
        },
    }
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts, "vars": {"image": image, "results_dir": str(results)}}}))
    proc = run_playbook(PLAYBOOK, tmp_path, inventory=str(inventory), timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    sections = _sections(proc.stdout)
    for host in hosts:
        lines = [line for line in sections["push with progress"] if line.startswith("lifeboat.backup.image_push on %s:" % host)]
        with_rate = [line for line in lines if re.search(r" done at [0-9.]+ (KiB|MiB)/s; uploading \S+\.zip, .* of 3\.0 MiB \(\d+%\)", line)]
        assert with_rate, "no progress line with a rate for %s:\n%s" % (host, "\n".join(sections["push with progress"]))
        got = json.loads((results / ("%s.json" % host)).read_text())
        assert got["with"]["changed"] and not got["with"].get("failed"), got["with"]
        assert _same(got["with"]) == _same(got["without"])
        assert got["refused_with"]["failed"] and got["refused_with"]["msg"] == got["refused_without"]["msg"], got
        assert _same(got["refused_with"]) == _same(got["refused_without"])
        assert not got["planned"].get("failed") and "would be copied" in got["planned"]["msg"], got["planned"]
    # Off, and in check mode: not a line. A refusal before any byte moved reports no progress
    # (at most that the module is still starting).
    for quiet in ("push without progress", "refused push without progress", "planned push"):
        assert not [line for line in sections[quiet] if line.startswith("lifeboat.backup.image_push on ")], sections[quiet]
    assert not [line for line in sections["refused push with progress"] if " done" in line], sections["refused push with progress"]
