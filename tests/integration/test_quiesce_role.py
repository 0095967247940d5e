"""The quiesce role on this host (ansible-playbook, local connection) with two real
command-managed services and a real Redis queue between them: the order of stops and
starts, the drain between the steps, resume after a failing step, leftovers.

The same story runs in a container, around a real backup, on the app node of
extensions/molecule/cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.harness.process import free_port
from tests.support.modules import ROOT, run_module, run_playbook
from tests.support.trees import PASSPHRASE, make_config_tree

TOY = ROOT / "tests" / "support" / "toy_service.py"


class Platform:
    """Two toy services: an 'api' (listens on a port, produces work) and a 'worker'
    (consumes a Redis queue), both started by command like on a host without systemd."""

    def __init__(self, state: Path, redis_server, queue: str):
        self.state = state
        self.redis = redis_server
        self.queue = queue
        self.api_port = free_port()
        password_file = state / "redis.password"
        password_file.write_text(redis_server.password)
        password_file.chmod(0o600)
        python = sys.executable
        self.commands = {
            "api": f"{python} {TOY} api {state} --port {self.api_port}",
            "worker": f"{python} {TOY} worker {state} --consume {queue} --redis-port {redis_server.port} --redis-password-file {password_file} --delay 0.05",
        }

    def service(self, name: str, **extra) -> dict:
        pid = self.state / f"{name}.pid"
        spec = {
            "name": name,
            "start_command": f"setsid -f {self.commands[name]} </dev/null >>{self.state}/{name}.out 2>&1",
            "stop_command": f"kill $(cat {pid})",
            "status_command": f"test -f {pid} && kill -0 $(cat {pid})",
            "pid_files": [str(pid)],
            "stop_timeout": 20,
            "start_timeout": 20,
        }
        if name == "api":
            spec["health_port"] = self.api_port
        spec.update(extra)
        return spec

    def start(self, *names: str) -> None:
        for name in names:
            subprocess.run(["/bin/sh", "-c", self.service(name)["start_command"]], check=True)
        deadline = time.monotonic() + 20
        while not all(self.running(n) for n in names):
            assert time.monotonic() < deadline, f"toy services {names} did not start: {self.events()}"
            time.sleep(0.1)

    def pid(self, name: str) -> int | None:
        try:
            return int((self.state / f"{name}.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def running(self, name: str) -> bool:
        pid = self.pid(name)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def events(self) -> list[str]:
        path = self.state / "events.log"
        return [" ".join(line.split()[1:]) for line in path.read_text().splitlines()] if path.exists() else []

    def stop_all(self) -> None:
        for name in ("api", "worker"):
            pid = self.pid(name)
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass


@pytest.fixture
def platform(tmp_path, redis_server, namespace):
    state = tmp_path / "platform"
    state.mkdir()
    toy = Platform(state, redis_server, f"{namespace}:celery")
    yield toy
    toy.stop_all()


PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Quiesce, back up, resume
      block:
        - name: Stop the platform
          ansible.builtin.include_role:
            name: lifeboat.backup.quiesce
        - name: Stand-in for the backup's components
          ansible.builtin.fail:
            msg: the backup step failed
          when: fail_between | bool
      always:
        - name: Start the platform again
          ansible.builtin.include_role:
            name: lifeboat.backup.quiesce
            tasks_from: resume
        - name: Keep the record for the test
          ansible.builtin.copy:
            content: "{{ quiesce_state | to_json }}"
            dest: "{{ record }}"
            mode: "0600"
"""


def run_quiesce(platform, tmp_path, fail_between=False, verbosity=0, check=False, **role_vars):
    extra = {
        "quiesce_services": [platform.service("api", drain_after=True), platform.service("worker")],
        "quiesce_queues": [platform.queue],
        "quiesce_redis": {"login_host": platform.redis.host, "login_port": platform.redis.port},
        "quiesce_redis_password": platform.redis.password,
        "quiesce_poll_interval": 1,
        "quiesce_drain_timeout": 60,
        "fail_between": fail_between,
        "record": str(tmp_path / "quiesce_state.json"),
        "quiesce_state_dir": str(tmp_path / "state"),
    }
    extra.update(role_vars)
    proc = run_playbook(PLAYBOOK, tmp_path, extra_vars=extra, verbosity=verbosity, check=check)
    record = json.loads((tmp_path / "quiesce_state.json").read_text()) if (tmp_path / "quiesce_state.json").exists() else None
    return proc, record


def test_stops_in_order_drains_between_and_resumes_in_reverse(platform, tmp_path):
    platform.start("worker", "api")
    platform.redis.client().rpush(platform.queue, *[f"task-{i}" for i in range(40)])
    proc, record = run_quiesce(platform, tmp_path, verbosity=3)
    assert proc.returncode == 0, proc.stdout[-4000:]
    # The worker consumed the queue between the two stops; the api stopped first.
    assert platform.events()[2:] == ["stop api", "stop worker", "start worker", "start api"]
    assert platform.redis.client().llen(platform.queue) == 0
    assert record["queues"] == {platform.queue: 0}
    assert record["services"] == {"api": {"manager": "command", "was_running": True}, "worker": {"manager": "command", "was_running": True}}
    assert record["stopped"] == ["api", "worker"]
    assert record["quiesced_at"] <= record["resumed_at"] and record["resume_failures"] == []
    assert platform.running("api") and platform.running("worker")
    assert platform.redis.password not in proc.stdout  # -vvv: argument validation, queue_drain, facts


@pytest.mark.fault("failed step", "the backup step between quiesce and resume fails")
def test_resumes_even_when_a_step_between_fails(platform, tmp_path, fault):
    platform.start("worker", "api")
    proc, record = run_quiesce(platform, tmp_path, fail_between=True)
    fault.observe(false_success=proc.returncode == 0, services_left_down=not (platform.running("api") and platform.running("worker")))
    fault.scan([platform.redis.password], proc.stdout)
    assert proc.returncode != 0 and "the backup step failed" in proc.stdout
    assert platform.events()[2:] == ["stop api", "stop worker", "start worker", "start api"]
    assert platform.running("api") and platform.running("worker")
    assert record["resumed_at"] is not None


def test_check_mode_stops_nothing(platform, tmp_path):
    platform.start("worker", "api")
    inbound = f"{platform.queue}:inbound"  # nobody consumes it
    platform.redis.client().rpush(inbound, "t1", "t2", "t3")
    pids = (platform.pid("api"), platform.pid("worker"))
    proc, _record = run_quiesce(platform, tmp_path, check=True, quiesce_purge=[inbound])
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert platform.events()[2:] == []
    assert (platform.pid("api"), platform.pid("worker")) == pids and platform.running("api") and platform.running("worker")
    assert platform.redis.client().llen(inbound) == 3


def test_a_service_found_stopped_stays_stopped(platform, tmp_path):
    platform.start("api")  # the worker is not running before the quiesce
    proc, record = run_quiesce(platform, tmp_path, quiesce_queues=[])
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert record["services"]["worker"]["was_running"] is False
    assert platform.events()[1:] == ["stop api", "start api"]
    assert not platform.running("worker")


@pytest.mark.fault("leftover process", "a service leaves a child that ignores SIGTERM")
def test_leftover_process_fails_the_stop_unless_force_kill(platform, tmp_path, fault):
    # The api leaves a helper process behind that ignores SIGTERM.
    command = platform.commands["api"]
    platform.commands["api"] = command + " --child"
    platform.start("worker", "api")
    platform.commands["api"] = command  # started again by resume, it leaves nothing
    marker = f"toy-leftover-api:{platform.state}"
    # stop_timeout: how long the role waits for leftovers to go by themselves.
    services = [platform.service("api", processes=[re.escape(marker)], stop_timeout=2), platform.service("worker")]
    try:
        proc, record = run_quiesce(platform, tmp_path, quiesce_queues=[], quiesce_services=services)
        fault.observe(false_success=proc.returncode == 0, services_left_down=not (platform.running("api") and platform.running("worker")))
        assert proc.returncode != 0
        assert "api is stopped but left processes running" in proc.stdout and marker in proc.stdout
        # The stop failed at the api: the worker was never stopped; the api came back.
        assert platform.events()[2:] == ["stop api", "start api"]
        assert platform.running("api") and platform.running("worker")
        pids = pids_of(marker)
        assert record["resume_failures"] == [] and len(pids) == 1

        proc, record = run_quiesce(platform, tmp_path, quiesce_queues=[], quiesce_force_kill=True, quiesce_kill_timeout=1, quiesce_services=services)
        assert proc.returncode == 0, proc.stdout[-4000:]
        fault.observe(services_left_down=not (platform.running("api") and platform.running("worker")))
        fault.scan([platform.redis.password], proc.stdout)
        assert record["killed"] == pids and not pids_of(marker)
        assert platform.running("api") and platform.running("worker")
    finally:
        for pid in pids_of(marker):  # only the helpers this test started, by pid
            os.kill(pid, signal.SIGKILL)


def pids_of(marker: str) -> list[int]:
    """Pids of the processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.fault("controller killed", "the controller dies while the services are stopped (no resume)", item="18.3")
def test_services_left_down_by_a_dead_controller_are_reported_and_brought_back(platform, tmp_path, fault):
    """#18.3: the node records what a run stopped; backup_info reports what no resume started
    again, and the next run's resume starts it even though its survey finds it stopped."""
    platform.start("worker", "api")
    state = tmp_path / "state"
    dies = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Stop the platform
      ansible.builtin.include_role:
        name: lifeboat.backup.quiesce
    - name: The controller dies here (no resume)
      ansible.builtin.fail:
        msg: controller killed
"""
    services = [platform.service("api"), platform.service("worker")]
    extra = {"quiesce_services": services, "quiesce_state_dir": str(state), "quiesce_run": "backup run-that-died", "quiesce_poll_interval": 1}
    died = run_playbook(dies, tmp_path, extra_vars=extra)
    assert died.returncode != 0 and not platform.running("api") and not platform.running("worker"), died.stdout[-3000:]

    info = run_module("backup_info", state_dir=str(state))
    left_down = [(r["service"], r["stopped_by"]) for r in info["status"]["services_left_down"]]
    fault.observe(false_success=not left_down)  # services down and nothing said
    assert left_down == [("api", "backup run-that-died"), ("worker", "backup run-that-died")]
    assert "api (stopped by backup run-that-died" in json.dumps(info.get("warnings")), info.get("warnings")

    proc, record = run_quiesce(platform, tmp_path, quiesce_queues=[], quiesce_services=services)
    assert proc.returncode == 0, "\n".join(line for line in proc.stdout.splitlines() if "fatal" in line or "FAILED" in line or "msg" in line)
    assert "api, worker were stopped by an earlier run (backup run-that-died)" in proc.stdout
    assert [r["name"] for r in record["left_down"]] == ["api", "worker"]
    fault.observe(services_left_down=not (platform.running("api") and platform.running("worker")))
    fault.scan([platform.redis.password], died.stdout, proc.stdout, info)
    assert platform.running("api") and platform.running("worker")
    assert run_module("backup_info", state_dir=str(state))["status"]["services_left_down"] == []


@pytest.mark.fault("service does not start", "resume of a service whose start command fails")
def test_resume_reports_every_service_that_does_not_come_back(platform, tmp_path, fault):
    broken = {"name": "broken", "start_command": "exit 3", "stop_command": "true", "status_command": "false", "start_timeout": 2}
    playbook = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Resume
      ansible.builtin.include_role:
        name: lifeboat.backup.quiesce
        tasks_from: resume
"""
    proc = run_playbook(
        playbook,
        tmp_path,
        extra_vars={"quiesce_services": [platform.service("api"), broken], "quiesce_resume_all": True, "quiesce_poll_interval": 1},
    )
    fault.observe(false_success=proc.returncode == 0, services_left_down=not platform.running("api"))
    assert proc.returncode != 0
    assert "1 service(s) did not come back: broken" in proc.stdout
    assert platform.events() == ["start api"] and platform.running("api")


@pytest.mark.fault(
    "server down",
    "after a backup, the Redis of the work queues stops answering: the next backup and a restore fail in preflight naming it, every service still running",
    item="18.14",
)
def test_backup_role_quiesces_around_the_capture_and_records_the_cut(platform, tmp_path, fault):
    """playbooks/backup.yml with a profile that has a quiesce section: the manifest carries
    the quiesce window and the queue lengths at the cut."""
    platform.start("worker", "api")
    platform.redis.client().rpush(platform.queue, *[f"task-{i}" for i in range(20)])
    source = make_config_tree(tmp_path / "src")
    (tmp_path / "dest").mkdir()
    profile = {
        "name": "toy",
        "platform": {"name": "toy", "version": "1.0"},
        "components": [{"name": "config", "kind": "config", "paths": [str(source)]}],
        "quiesce": {"services": [platform.service("api", drain_after=True), platform.service("worker")], "queues": [platform.queue]},
        "checks": [],
    }
    node = {
        "ansible_connection": "local",
        "backup_destination": str(tmp_path / "dest"),
        "backup_state_dir": str(tmp_path / "state"),
        "backup_facts_dir": str(tmp_path / "facts"),
        "backup_passphrase": PASSPHRASE,
        "backup_work_factor": 12,
        "backup_profile": profile,
        "quiesce_redis": {"host": platform.redis.host, "port": platform.redis.port},
        "quiesce_redis_password": platform.redis.password,
        "quiesce_poll_interval": 1,
    }
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"node1": node}}}))
    proc = run_playbook((ROOT / "playbooks" / "backup.yml").read_text(), tmp_path, inventory=str(inventory))
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert platform.events()[2:] == ["stop api", "stop worker", "start worker", "start api"]
    (image,) = (tmp_path / "dest").glob("*.zip")
    with zipfile.ZipFile(image) as archive:
        consistency = json.loads(archive.read("manifest.json"))["consistency"]
    assert consistency["queue_lengths"] == {platform.queue: 0}
    assert consistency["quiesced_at"] <= consistency["resumed_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", consistency["quiesced_at"])

    # #18.14: a Redis that does not answer is found in the preflight of a backup and of a
    # restore, while every service still runs.
    events = platform.events()
    node["quiesce_redis"] = {"login_host": platform.redis.host, "login_port": free_port(), "connect_timeout": 2}
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"node1": node}}}))
    for name in ("backup.yml", "restore.yml"):
        proc = run_playbook((ROOT / "playbooks" / name).read_text(), tmp_path, inventory=str(inventory))
        fault.observe(false_success=proc.returncode == 0, services_left_down=not (platform.running("api") and platform.running("worker")))
        fault.scan([platform.redis.password], proc)
        assert proc.returncode != 0, name
        assert f"node1: the Redis server of the work queues ({platform.queue}) does not answer" in proc.stdout, proc.stdout[-4000:]
        assert "Nothing was stopped" in proc.stdout
        assert platform.events() == events and platform.running("api") and platform.running("worker"), name
    assert len(list((tmp_path / "dest").glob("*.zip"))) == 1
