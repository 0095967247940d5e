"""Cluster status: backup_info's staleness, copies per target and next run from the schedule
role's record; status.yml's one table and its exit status (stale node, failed last run,
unreachable target), with the alerts it sends to a real HTTP receiver."""

from __future__ import annotations

import json
import shutil
import sys
import time

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _session
from tests.support.images import make_image
from tests.support.modules import run_module, run_playbook
from tests.support.webhook import WebhookReceiver

HOUR = 3600


def node(tmp_path, name, success_age, failed=False, copies_on=None, schedule=None):
    """A node's state and images as a backup run leaves them: an image sealed ``success_age``
    seconds ago, status.json and the audit line written by the session API, optionally a
    later failed run, a copy on a target and the schedule role's record."""
    root = tmp_path / name
    state, images = root / "state", root / "images"
    images.mkdir(parents=True)
    when = int(time.time() - success_age)
    path = make_image(str(images), node=name, payload=b"x" * 256, backup_id="run-%s" % name, when=when - 60)
    node_state = _session.NodeState(str(state))
    node_state.ensure()
    sealed = _session.iso(when)
    record = {"backup_id": "run-%s" % name, "node": name, "started": _session.iso(when - 60), "ended": sealed, "verdict": "success"}
    record.update(image=path, size=4096)
    node_state.update_status(state="idle", last_success={"time": sealed, "backup_id": "run-%s" % name, "image": path, "size": 4096}, last_result=record)
    if failed:
        reason = "every component failed: postgresql: pg_dump exited 1"
        failure = dict(record, verdict="failed", image=None, reason=reason, started=_session.iso(time.time() - 120), ended=_session.utc_now())
        node_state.update_status(last_failure={"time": failure["ended"], "backup_id": "run-2", "reason": reason}, last_result=failure)
    if copies_on:
        copies_on.mkdir(exist_ok=True)
        shutil.copy(path, copies_on)
    if schedule:
        (state / "schedule.json").write_text(json.dumps(schedule))
    return {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "backup_state_dir": str(state), "backup_destination": str(images)}


def inventory(tmp_path, hosts, **group):
    data = {"all": {"hosts": hosts, "vars": group}}
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(data))
    return str(path)


def status(tmp_path, inv, **extra):
    play = "- ansible.builtin.import_playbook: lifeboat.backup.status\n"
    return run_playbook(play, tmp_path, extra_vars=extra or None, inventory=inv)


def test_backup_info_staleness_copies_and_recorded_schedule(tmp_path):
    target = tmp_path / "offsite"
    schedule = {"name": "lifeboat-backup", "kind": "cron", "mode": "controller", "host": "ctl", "expression": "30 2 * * *"}
    host = node(tmp_path, "db1", 30 * HOUR, copies_on=target, schedule=schedule)
    targets = [{"type": "local", "path": str(target), "name": "offsite"}, {"type": "local", "path": str(tmp_path / "lost"), "name": "nas"}]
    info = run_module("backup_info", state_dir=host["backup_state_dir"], destination=host["backup_destination"], node="db1", max_age="26h", targets=targets)
    assert info.rc == 0 and not info["changed"], info
    staleness = info["status"]["staleness"]
    assert staleness["stale"] and staleness["limit_seconds"] == 26 * HOUR and 30 * HOUR - 60 <= staleness["age_seconds"] <= 30 * HOUR + 60
    assert staleness["reason"].startswith("the last successful backup is 1d 6h old, more than max_age 1d 2h")
    offsite, nas = info["copies"]
    assert offsite["reachable"] and offsite["images"] == 1 and offsite["newest_success"]["verdict"] == "success"
    assert not nas["reachable"] and nas["kind"] == "not_found" and "does not exist" in nas["error"]
    assert info["images"][0]["copies"] == ["offsite"]
    assert info["status"]["next_run"].endswith("T02:30:00Z") and "cron on ctl" in info["status"]["schedule"]
    fresh = run_module("backup_info", state_dir=host["backup_state_dir"], max_age="2d")
    assert fresh["status"]["staleness"]["stale"] is False and "copies" not in fresh


def test_systemd_record_gives_the_next_run_by_systemd_analyze(tmp_path):
    host = node(tmp_path, "db1", HOUR, schedule={"name": "nightly", "kind": "systemd", "mode": "node", "host": "db1", "expression": "Mon..Fri *-*-* 01:30:00"})
    info = run_module("backup_info", state_dir=host["backup_state_dir"], schedule="nightly.timer")
    next_run = info["status"]["next_run"]
    assert next_run.endswith("T01:30:00Z"), info["status"]
    assert time.strptime(next_run, "%Y-%m-%dT%H:%M:%SZ").tm_wday < 5


def test_status_playbook_green_then_red(tmp_path):
    target = tmp_path / "offsite"
    schedule = {"name": "lifeboat-backup", "kind": "cron", "mode": "controller", "host": "ctl", "expression": "0 2 * * *"}
    hosts = {
        "db1": node(tmp_path, "db1", 2 * HOUR, copies_on=target, schedule=schedule),
        "app1": node(tmp_path, "app1", 3 * HOUR, copies_on=target, schedule=schedule),
    }
    storage = [{"type": "local", "path": str(target), "name": "offsite"}]
    green = status(tmp_path, inventory(tmp_path, hosts, backup_storage=storage))
    assert green.returncode == 0, green.stdout[-4000:]
    table = green.stdout[green.stdout.index("node  ") :]
    assert "db1   OK" in table and "app1  OK" in table and "offsite: 1 (latest)" in table and "T02:00:00Z" in table
    assert "2 node(s), 0 with problems" in table

    # app1's last success is now 3 days old, db1's last run failed, and then the target is lost.
    hosts = {
        "db1": node(tmp_path / "red", "db1", 2 * HOUR, failed=True, copies_on=target),
        "app1": node(tmp_path / "red", "app1", 72 * HOUR, copies_on=target),
    }
    with WebhookReceiver() as hook:
        alerts = [{"type": "webhook", "url": hook.url, "name": "chat", "retry_delay": 0.1}]
        red = status(tmp_path, inventory(tmp_path, hosts, backup_storage=storage, lifeboat_alerts=alerts), status_max_age="1d")
        assert red.returncode == 2, red.stdout[-4000:]
        assert "app1  STALE" in red.stdout and "db1   FAILING" in red.stdout
        assert "app1: stale: the last successful backup is 3d" in red.stdout
        assert "db1: last run failed: every component failed: postgresql: pg_dump exited 1" in red.stdout
        assert [(r.json()["kind"], r.json()["node"]) for r in hook.requests] == [("backup_stale", "app1")]

        lost = [{"type": "local", "path": str(tmp_path / "unmounted"), "name": "offsite"}]
        hosts = {"db1": node(tmp_path / "lost", "db1", HOUR)}
        gone = status(tmp_path, inventory(tmp_path, hosts, backup_storage=lost, lifeboat_alerts=alerts))
        assert gone.returncode == 2 and "offsite: UNREACHABLE" in gone.stdout
        assert "db1: target offsite unreachable: target directory" in gone.stdout
        assert [r.json()["kind"] for r in hook.requests][-1] == "storage_unreachable"


@pytest.mark.fault("node unreachable", "a node of the status check unreachable (SSH to a closed port): UNREACHABLE, the check exits 4")
def test_an_unreachable_node_turns_the_check_red(tmp_path, fault):
    hosts = {"db1": node(tmp_path, "db1", HOUR), "gone1": {"ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_connection": "ssh"}}
    proc = status(tmp_path, inventory(tmp_path, hosts))
    fault.observe(false_success=proc.returncode == 0 or "gone1  UNREACHABLE" not in proc.stdout)
    assert proc.returncode == 4, proc.stdout[-3000:]
    assert "gone1  UNREACHABLE" in proc.stdout and "db1    OK" in proc.stdout
