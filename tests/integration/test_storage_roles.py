"""The roles with storage targets (issue #11): the backup role copies each image to
backup_storage after seal and verify, a failed copy makes the node partial (or failed with
backup_storage_required), backup_keep_local=false removes the local image only once every
copy is verified; a rebuilt node (no images, no state, data lost) is restored by the
restore role from the targets alone, content equal."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from tests.harness.storage import SshServer, free_port
from tests.integration.test_roles import playbook, summary
from tests.integration.test_storage import _own
from tests.support.trees import snapshot


@pytest.fixture
def ssh_server(server_pool) -> SshServer:
    return server_pool.get(("sshd",), SshServer)


def _images(directory):
    return sorted(p.name for p in Path(directory).glob("*.zip"))


def test_rebuilt_node_is_restored_from_storage_alone(cluster, ssh_server):  # noqa: F811 - the fixture
    disk = cluster["tmp"] / "second-disk"
    disk.mkdir()
    vault_dir = _own(ssh_server.data_dir / ("r-" + uuid.uuid4().hex[:8]))
    targets = [{"type": "local", "name": "disk", "path": str(disk)}, ssh_server.target("sftp", path=str(vault_dir), name="vault")]

    plan = playbook(cluster, "plan.yml", backup_storage=targets)
    assert plan.returncode == 0, plan.stdout[-3000:]
    assert "storage: vault (sftp://" in plan.stdout and "reachable, " in plan.stdout and " free of " in plan.stdout

    backup = playbook(cluster, "backup.yml", backup_storage=targets, backup_keep_local=False)
    assert backup.returncode == 0, backup.stdout[-4000:]
    assert summary(backup.stdout, "Backup summary") == {"node1": "success", "node2": "success"}
    stored = _images(vault_dir)
    assert len(stored) == 2 and _images(disk) == stored
    assert all((vault_dir / (name + ".sha256")).exists() for name in stored)
    for node in cluster["nodes"].values():
        assert _images(node["backup_destination"]) == [], "backup_keep_local=false: the local image goes once every copy is verified"
        copies = json.loads(Path(node["backup_state_dir"], "status.json").read_text())["copies"]
        assert set(copies) == {"disk", "vault"} and all(c["last_success"]["image"] in stored for c in copies.values())
    assert targets[1]["private_key"].split("\n")[1] not in backup.stdout

    # The node is lost: images, state and data. The first target lost its copies too.
    before = snapshot(cluster["src"])
    for node in cluster["nodes"].values():
        for key in ("backup_destination", "backup_state_dir", "backup_facts_dir"):
            shutil.rmtree(node[key], ignore_errors=True)
    shutil.rmtree(cluster["src"])
    for name in stored:
        (disk / name).unlink()
    restore = playbook(cluster, "restore.yml", restore_storage=targets)
    assert restore.returncode == 0, restore.stdout[-4000:]
    assert summary(restore.stdout, "Restore summary") == {"node1": "success", "node2": "success"}
    assert {k: v for k, v in snapshot(cluster["src"]).items() if not k.endswith(".swp")} == {k: v for k, v in before.items() if not k.endswith(".swp")}
    assert sorted(_images(cluster["nodes"]["node1"]["backup_destination"]) + _images(cluster["nodes"]["node2"]["backup_destination"])) == stored


@pytest.mark.fault(
    "server down",
    "the SFTP storage target not listening: node1 partial, node2 failed (backup_storage_required), the image kept on each node though keep_local is false",
)
def test_a_failed_copy_is_partial_or_failed_when_required(cluster, fault):  # noqa: F811 - the fixture
    down = {"type": "sftp", "name": "down", "host": "127.0.0.1", "port": free_port(), "user": "nobody", "password": "x", "path": "/srv"}
    down.update(retries=0, timeout=5, host_key_checking="accept_new")
    cluster["nodes"]["node2"]["backup_storage_required"] = "true"  # as a string, like -e or an AWX survey
    run = playbook(cluster, "backup.yml", backup_storage=[down], backup_keep_local=False)
    fault.observe(
        false_success=summary(run.stdout, "Backup summary") != {"node1": "partial", "node2": "failed"},
        data_lost=any(len(_images(node["backup_destination"])) != 1 for node in cluster["nodes"].values()),
    )
    assert run.returncode != 0, "node2 requires its copies"
    assert summary(run.stdout, "Backup summary") == {"node1": "partial", "node2": "failed"}
    assert "copy to storage failed (down: " in run.stdout and "backup_storage_required is set" in run.stdout
    # #18.12: node1 goes on as partial with no red "fatal:", its failed copy said in a warning;
    # node2 fails at the end as a failed node does.
    assert "fatal: [node1]" not in run.stdout and "WARNING: on node1: copy to storage target down failed: " in run.stdout, run.stdout[-4000:]
    for node in cluster["nodes"].values():
        assert len(_images(node["backup_destination"])) == 1, "the image stays on the node when a copy failed"
    audit = [json.loads(line) for line in Path(cluster["nodes"]["node1"]["backup_state_dir"], "audit.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "copy" and e["target"] == "down" and e["verdict"] == "failed" for e in audit)
