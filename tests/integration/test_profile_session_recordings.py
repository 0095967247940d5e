"""docs/profiles/session-recordings.yml as its comments say to run it: the recordings directory
backed up by the backup role as its own component, encrypted to a public key only, then the
recordings' retention applied with the documented task - which never touches the system
images that share the destination."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

from ansible_collections.lifeboat.backup.plugins.module_utils import _age
from tests.support.modules import ROOT, run_module, run_playbook
from tests.support.trees import PASSPHRASE

PROFILE = ROOT / "docs" / "profiles" / "session-recordings.yml"
JOB = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - %s
  roles:
    - role: lifeboat.backup.backup

- hosts: localhost
  gather_facts: false
  vars_files:
    - %s
  tasks:
    - name: Keep the recordings' images as their policy says
      lifeboat.backup.image_retention:
        destination: "{{ backup_destination }}"
        retention: "{{ recordings_retention | combine({'pattern': backup_prefix ~ '-*'}) }}"
""" % (PROFILE, PROFILE)


def system_image(destination, tmp_path):
    """A system backup of the vault in the same destination (no prefix)."""
    (tmp_path / "etc-vault").mkdir()
    (tmp_path / "etc-vault" / "vault.conf").write_text("port = 443\n")
    session = dict(destination=str(destination), state_dir=str(tmp_path / "sys-state"), passphrase=PASSPHRASE, work_factor=12, facts_dir="")
    started = run_module("backup_session", state="started", **session)
    assert not started.failed, started
    work_dir = started["session"]["work_dir"]
    assert not run_module("config_archive", session=work_dir, paths=[str(tmp_path / "etc-vault")]).failed
    return Path(run_module("backup_session", state="sealed", session=work_dir)["image"])


def test_recordings_profile_as_documented(tmp_path):
    recordings = tmp_path / "recordings"
    (recordings / "2026" / "11").mkdir(parents=True)
    (recordings / "2026" / "11" / "session-1.webm").write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 64)
    (recordings / "2026" / "11" / "session-2.webm.part").write_bytes(b"still recording")
    identity, recipient = _age.generate_identity()
    (tmp_path / "auditors.key").write_text(identity + "\n")
    destination = tmp_path / "dest"
    destination.mkdir()
    system = system_image(destination, tmp_path)
    extra = {
        "recordings_dir": str(recordings),
        "recordings_public_key": recipient,
        "backup_destination": str(destination),
        "backup_state_dir": str(tmp_path / "state"),
        "backup_facts_dir": "",
        "vault_version": "3.25",
    }
    for _run in range(2):
        proc = run_playbook(JOB, tmp_path, extra_vars=extra)
        assert proc.returncode == 0, proc.stdout[-4000:]
        time.sleep(1.1)  # image names have one-second resolution
    images = sorted(p.name for p in destination.glob("*.zip"))
    kept = [name for name in images if name.startswith("recordings-")]
    assert len(kept) == 1 and system.name in images, images  # keep_daily: one per day; the system image untouched

    with zipfile.ZipFile(destination / kept[0]) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert "lifeboat/identity.age" not in archive.namelist()  # public key only: no passphrase identity
    assert list(manifest["components"]) == ["recordings"]
    restored = tmp_path / "restored"
    image = str(destination / kept[0])
    result = run_module("config_restore", image=image, component="recordings", identity_file=str(tmp_path / "auditors.key"), root=str(restored))
    assert not result.failed, result
    back = restored / str(recordings).lstrip("/") / "2026" / "11"
    assert (back / "session-1.webm").read_bytes() == (recordings / "2026" / "11" / "session-1.webm").read_bytes()
    assert not (back / "session-2.webm.part").exists()
    # The passphrase of the system backups opens nothing here: only the auditors' key does.
    refused = run_module("config_restore", image=image, component="recordings", passphrase=PASSPHRASE, root=str(tmp_path / "nope"))
    assert refused.failed and "recipients" in refused["msg"] and not (tmp_path / "nope").exists()
