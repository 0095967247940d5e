"""The backup role's operations steps (issue 12), through ansible-playbook on one local
"node": retention after the verified run, alerts to real receivers (aiosmtpd with STARTTLS and
AUTH, rsyslogd over TCP, a webhook checking its HMAC signature, a ping URL), the
node_exporter textfile at seal; failing channels and a lost target never change the verdict."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from tests.harness.receivers import SmtpServer, SyslogServer
from tests.support.authproxy import ProxyPKI
from tests.support.images import make_image
from tests.support.modules import ROOT, run_module, run_playbook
from tests.support.trees import PASSPHRASE, make_config_tree
from tests.support.webhook import WebhookReceiver

DAY = 86400
HOOK_SECRET = "whsec-role-\\&!'\" $"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return ProxyPKI(tmp_path_factory.mktemp("ops-pki"))


@pytest.fixture
def node(tmp_path):
    """One node with a configuration component and two older successful images."""
    dest = tmp_path / "dest"
    dest.mkdir()
    old = [Path(make_image(str(dest), node="db1", payload=b"x" * 64, backup_id="old-%d" % age, when=int(time.time()) - age * DAY)).name for age in (3, 2)]
    profile = {"name": "test", "platform": {"name": "demo", "version": "1.0"}, "checks": []}
    profile["components"] = [{"name": "config", "kind": "config", "paths": [str(make_config_tree(tmp_path / "src"))]}]
    host = {"backup_destination": str(dest), "backup_state_dir": str(tmp_path / "state"), "backup_facts_dir": "", "backup_node": "db1"}
    return {"tmp": tmp_path, "dest": dest, "old": old, "profile": profile, "host": host}


def backup(node, verbosity=0, playbook="backup.yml", **extra):
    data = {"all": {"hosts": {"db1": node["host"]}, "vars": {"ansible_connection": "local", "backup_passphrase": PASSPHRASE, "backup_work_factor": 12}}}
    data["all"]["vars"].update(backup_profile=node["profile"], **extra)
    inventory = node["tmp"] / "inventory.yml"
    inventory.write_text(yaml.safe_dump(data))
    return run_playbook((ROOT / "playbooks" / playbook).read_text(), node["tmp"], inventory=str(inventory), verbosity=verbosity)


def test_partial_run_retention_alerts_to_every_channel_metrics_and_failures_reported(node, pki):
    """One partial run: retention keeps the newest success, every channel hears run_partial, a
    webhook answering 500 is noted, a lost target is alerted (copy_failed), an NFS target whose
    mount is gone is alerted as mount_lost, the verdict stays partial."""
    node["profile"]["components"].append({"name": "broken", "kind": "config", "paths": ["relative/path"]})
    textfiles = node["tmp"] / "textfile"
    textfiles.mkdir()
    # The target is gone: the copy fails (copy_failed), retention leaves the targets alone.
    # The NFS target's directory is there but is no NFS mount any more (mount_lost).
    (node["tmp"] / "nas").mkdir()
    lost = [{"type": "local", "path": str(node["tmp"] / "unmounted"), "name": "offsite"}, {"type": "nfs", "path": str(node["tmp"] / "nas"), "name": "nas"}]
    smtp, syslog = SmtpServer(pki, mode="starttls"), SyslogServer(pki)
    hook, down = WebhookReceiver(secret=HOOK_SECRET), WebhookReceiver(statuses=[500] * 4)
    with smtp, syslog, hook, down:
        channels = [
            dict(
                type="email",
                host=smtp.host,
                port=smtp.port,
                username=smtp.user,
                password=smtp.password,
                sender="lifeboat@example.com",
                to=["oncall@example.com"],
                ca_file=str(pki.ca_path),
            ),
            dict(type="syslog", host="127.0.0.1", port=syslog.tcp_port, protocol="tcp"),
            dict(type="webhook", name="chat", url=hook.url + "/hook", secret=HOOK_SECRET),
            dict(type="ping", url=hook.url + "/ping-uuid-in-path"),
            dict(type="webhook", name="broken hook", url=down.url, retries=2, retry_delay=0.1),
        ]
        extra = dict(backup_retention={"keep_last": 1}, backup_storage=lost)
        run = backup(node, verbosity=3, backup_textfile_dir=str(textfiles), lifeboat_alerts=channels, **extra)
        assert run.returncode == 0, run.stdout[-4000:]
        mails = {m["X-Lifeboat-Event"]: m for _envelope, m in smtp.messages()}
        assert set(mails) == {"run_partial", "copy_failed", "mount_lost"} and "db1: backup partial" in mails["run_partial"]["Subject"]
        assert "broken" in mails["run_partial"].get_content() and "offsite" in mails["copy_failed"].get_content()
        assert "nas" in mails["mount_lost"].get_content() and "NFS" in mails["mount_lost"].get_content()
        assert any("run_partial" in line and 'node="db1"' in line for line in syslog.wait_for("db1: backup partial"))
        # Channels are served in parallel: the order between them is not fixed.
        posts = sorted((r.path, r.json()["kind"] if r.path == "/hook" else r.body.decode().split(" (")[0]) for r in hook.requests)
        assert posts == [
            ("/hook", "copy_failed"),
            ("/hook", "mount_lost"),
            ("/hook", "run_partial"),
            ("/ping-uuid-in-path/fail", "db1: backup partial"),
            ("/ping-uuid-in-path/start", "db1: backup started"),
        ], posts
        assert all(r.signature_ok for r in hook.requests if r.path == "/hook")
    for secret in (smtp.password, HOOK_SECRET, "ping-uuid-in-path"):
        assert secret not in run.stdout
    row = run.stdout[run.stdout.index('"db1   partial') :].split("\n")[0]
    assert "retention removed 1 image(s)" in row and "storage:offsite: " in row, row
    assert "alerts failed on broken hook (HTTP 500" in row
    # keep_last 1 counts successes only: the newest old success stays, the partial image too.
    images = sorted(p.name for p in node["dest"].glob("*.zip"))
    assert node["old"][0] not in images and node["old"][1] in images and len(images) == 2
    audit = [json.loads(line) for line in (Path(node["host"]["backup_state_dir"]) / "audit.jsonl").read_text().splitlines()]
    assert [a["removed"][0]["name"] for a in audit if a.get("event") == "retention"] == [node["old"][0]]
    metrics = (textfiles / "lifeboat_backup.prom").read_text()
    assert 'lifeboat_backup_last_verdict{node="db1",verdict="partial"} 1' in metrics
    assert "lifeboat_backup_last_duration_seconds" in metrics and "last_success" not in metrics  # no success recorded yet


def test_push_rewrites_the_textfile_with_each_copy_and_failure(tmp_path):
    image = make_image(str(tmp_path), node="db1", payload=b"x" * 64, backup_id="run-1")
    state, textfiles, offsite = tmp_path / "state", tmp_path / "textfile", tmp_path / "offsite"
    textfiles.mkdir()
    offsite.mkdir()
    common = dict(path=image, state_dir=str(state), textfile_dir=str(textfiles))
    pushed = run_module("image_push", target={"type": "local", "path": str(offsite), "name": "offsite"}, **common)
    assert pushed.rc == 0 and pushed["verified"], pushed
    lost = run_module("image_push", target={"type": "local", "path": str(tmp_path / "unmounted"), "name": "nas"}, **common)
    assert lost.rc != 0
    metrics = (textfiles / "lifeboat_backup.prom").read_text()
    assert re.search(r'lifeboat_backup_last_copy_timestamp_seconds\{node="[^"]+",target="offsite"\} \d+', metrics), metrics
    assert re.search(r'lifeboat_backup_copy_failing\{node="[^"]+",target="nas"\} 1', metrics), metrics
    assert re.search(r'lifeboat_backup_copy_failing\{node="[^"]+",target="offsite"\} 0', metrics), metrics


def test_failed_restore_is_alerted_and_stays_failed(node):
    empty = node["tmp"] / "empty"
    empty.mkdir()
    node["host"]["backup_destination"] = str(empty)
    with WebhookReceiver() as hook, WebhookReceiver(statuses=[500] * 2) as down:
        channels = [dict(type="webhook", name="chat", url=hook.url), dict(type="webhook", name="broken hook", url=down.url, retries=2, retry_delay=0.1)]
        run = backup(node, playbook="restore.yml", lifeboat_alerts=channels)
        assert run.returncode != 0, run.stdout[-3000:]
        [event] = [r.json() for r in hook.requests]
    assert event["kind"] == "restore_failed" and event["node"] == "db1" and event["verdict"] == "failed" and event["reason"], event
    row = run.stdout[run.stdout.index('"db1   failed') :].split("\n")[0]
    assert "alerts failed on broken hook (HTTP 500" in row, row


@pytest.mark.fault("corrupt member", "a byte inside the newest image's member flipped, playbooks/verify.yml with an alert channel")
def test_damaged_image_fails_verify_yml_and_is_alerted(node, fault):
    newest = node["dest"] / node["old"][1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the member
    newest.write_bytes(bytes(data))
    with WebhookReceiver() as hook:
        run = backup(node, playbook="verify.yml", backup_passphrase="", lifeboat_alerts=[dict(type="webhook", url=hook.url)])
        fault.observe(false_success=run.returncode == 0 or not hook.requests)
        assert run.returncode != 0, run.stdout[-3000:]
        [event] = [r.json() for r in hook.requests]
    assert event["kind"] == "verification_failed" and event["image"] == str(newest) and event["reason"], event
