"""The backup and restore roles and playbooks, through ansible-playbook (issue 7).

Two "nodes" on this machine (local connection, each with its own destination and state
directory) back up configuration components; components that need servers are covered in
the component tests and the Molecule cluster scenario.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from ansible_collections.lifeboat.backup.plugins.module_utils import _age
from tests.support.images import flip_byte
from tests.support.leaks import CmdlineSampler, files_containing
from tests.support.modules import ROOT, run_module, run_playbook
from tests.support.trees import PASSPHRASE, snapshot


def inventory(cluster, **extra_vars):
    data = {
        "all": {
            "hosts": cluster["nodes"],
            "vars": dict(
                {"ansible_connection": "local", "backup_passphrase": PASSPHRASE, "backup_work_factor": 12, "backup_profile": cluster["profile"]},
                **extra_vars,
            ),
            "children": {"app": {"hosts": {"node2": {}}}},
        }
    }
    path = cluster["tmp"] / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def playbook(cluster, name, env=None, **extra_vars):
    text = (ROOT / "playbooks" / name).read_text()
    return run_playbook(text, cluster["tmp"], inventory=inventory(cluster, **extra_vars), env=dict({"ANSIBLE_SHOW_CUSTOM_STATS": "true"}, **(env or {})))


class Concurrency:
    """The most processes running a module at once (argv ending in ``module``), among those
    whose environment holds ``token`` (this test's playbook, not another test's), by sampling
    /proc while the ``with`` block runs."""

    def __init__(self, module, token, interval=0.02):
        self.module, self.token, self.interval = module, token, interval
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="concurrency-sampler", daemon=True)

    def _run(self):
        while not self._stop.is_set():
            running = 0
            for entry in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    if any(arg.endswith(self.module) for arg in entry.read_bytes().split(b"\0")):
                        running += self.token in (entry.parent / "environ").read_bytes().split(b"\0")
                except OSError:
                    continue
            self.most = max(self.most, running)
            self.samples += 1
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def summary(output, title):
    """The summary table's rows: node -> verdict."""
    rows = re.findall(r'"(node\d)\s+(\w+)\s+', output[output.index(title) :])
    return dict(rows)


def custom_stats(output):
    return output[output.index("CUSTOM STATS") :]


def test_backup_then_restore_across_two_nodes(cluster):
    # #18.11: the plan also says the destination (node2's is missing here), the quiesce steps,
    # and warns of a listed path that is a symlink to a directory; the backup runs unchanged.
    link = cluster["tmp"] / "conf-link"
    link.symlink_to(cluster["src"] / "conf.d")
    planned = copy.deepcopy(cluster)
    planned["profile"]["components"][0]["paths"].append(str(link))
    planned["nodes"]["node2"]["backup_destination"] = str(cluster["tmp"] / "missing" / "dest")
    # The plan only: no server is reached, no service stopped.
    planned["profile"]["components"].append({"name": "db", "kind": "postgresql", "group": "app", "databases": ["app"], "audit_tables": ["audit_*"]})
    planned["profile"]["quiesce"] = {"services": [{"name": "api", "drain_after": True}, {"name": "worker"}], "queues": ["jobs"], "purge": ["cache"]}
    plan = playbook(planned, "plan.yml")
    assert plan.returncode == 0, plan.stdout[-3000:]
    assert "skip: app: not hosted here (host is not in group app)" in plan.stdout
    assert not os.listdir(cluster["nodes"]["node1"]["backup_destination"])
    assert re.search(r"destination: %s: exists, writable, [0-9.]+ [kMGT]?B free" % re.escape(cluster["nodes"]["node1"]["backup_destination"]), plan.stdout)
    assert "destination: %s: DOES NOT EXIST - the backup would fail; create it (mkdir -m 0700" % planned["nodes"]["node2"]["backup_destination"] in plan.stdout
    assert "or set backup_create_destination: true" in plan.stdout
    steps = "quiesce: stop api, then drain the queues jobs (purge cache), then stop worker; capture; then start worker, api again (whatever happens)"
    assert plan.stdout.count(steps) == 2, plan.stdout[-3000:]
    assert plan.stdout.count("audit rows left out: db: audit_* (their definitions are kept") == 1, "node2 only (group app)"
    assert "WARNING: %s is a symlink to the directory %s: only the link is captured" % (link, (cluster["src"] / "conf.d").resolve()) in plan.stdout

    # Each node has configuration of its own, as in any real cluster (node1: one more
    # directory), so the nodes' restore plans differ: a per-node include would then run
    # node1's components, then node2's, one after another.
    node_only = cluster["tmp"] / "node1-only"
    node_only.mkdir()
    (node_only / "listen.conf").write_text("listen 10.0.0.1\n")
    cluster["nodes"]["node1"]["backup_profile"] = copy.deepcopy(cluster["profile"])
    cluster["nodes"]["node1"]["backup_profile"]["components"][0]["paths"].append(str(node_only))

    backup = playbook(cluster, "backup.yml")
    assert backup.returncode == 0, backup.stdout[-4000:]
    assert summary(backup.stdout, "Backup summary") == {"node1": "success", "node2": "success"}
    assert "lifeboat_backup" in custom_stats(backup.stdout)
    ids = set(re.findall(r'"backup_id": "([^"]+)"', custom_stats(backup.stdout)))
    assert len(ids) == 1, "one backup id for the whole run"
    images = {n: sorted(Path(v["backup_destination"]).glob("*.zip")) for n, v in cluster["nodes"].items()}
    assert all(len(found) == 1 for found in images.values())
    fact = json.loads(Path(cluster["nodes"]["node1"]["backup_facts_dir"], "lifeboat.fact").read_text())
    assert fact["state"] == "idle" and fact["last_success"]["backup_id"] in ids

    before = snapshot(cluster["src"])
    (cluster["src"] / "platform_settings.py").unlink()
    (cluster["src"] / "conf.d" / "10-listen.conf").write_text("broken\n")
    (node_only / "listen.conf").unlink()
    token = "LIFEBOAT_TEST_RUN=%s" % uuid.uuid4().hex
    with Concurrency(b"/AnsiballZ_config_restore.py", token.encode()) as concurrency:
        restore = playbook(
            cluster,
            "restore.yml",
            env=dict([token.split("=")]),
            restore_checks=[{"name": "settings back", "command": "test -f %s" % (cluster["src"] / "platform_settings.py")}],
        )
    assert restore.returncode == 0, restore.stdout[-4000:]
    assert summary(restore.stdout, "Restore summary") == {"node1": "success", "node2": "success"}
    # #18.12: the summary names the backup and what was restored; no template warning for the
    # checks this restore does not have (SQL).
    said = restore.stdout[restore.stdout.index("Restore summary") :]
    assert "restore of backup %s" % ids.pop() in said
    assert re.search(r'"node1 +success .*; restored: config"', said) and re.search(r'"node2 +success .*; restored: (config, app|app, config)"', said), said
    assert "is undefined" not in restore.stdout, restore.stdout[-4000:]
    assert {k: v for k, v in snapshot(cluster["src"]).items() if not k.endswith(".swp")} == {k: v for k, v in before.items() if not k.endswith(".swp")}
    assert (node_only / "listen.conf").read_text() == "listen 10.0.0.1\n"
    # #18.14: the nodes restore together: one task for the first configuration component of
    # both nodes (not one node after the other), then node2's second one.
    runs = re.findall(r"TASK \[lifeboat\.backup\.restore : Configuration files: (\w+)\][^\n]*\n(.*?)\n\n", restore.stdout, flags=re.S)
    assert [(name, sorted(re.findall(r"\[(node\d)\]", hosts))) for name, hosts in runs] == [("config", ["node1", "node2"]), ("app", ["node2"])], runs
    # ... at the same time: the two nodes' config_restore processes were seen running at once
    # (the task output cannot tell: with throttle: 1 it looks the same).
    assert concurrency.samples > 0 and concurrency.most == 2, (concurrency.samples, concurrency.most)

    verify = playbook(cluster, "verify.yml")
    assert verify.returncode == 0 and "members verified at level full" in verify.stdout


@pytest.mark.fault("failed step", "a component that fails on one node of two, without and with backup_halt")
def test_partial_without_halt_whole_run_failed_with_halt(cluster, fault):
    cluster["profile"]["components"].append({"name": "broken", "kind": "config", "paths": ["relative/path"], "group": "app"})
    # #18.8: role booleans as text, as -e and AWX surveys give them (a string "false" is not true).
    partial = playbook(cluster, "backup.yml", backup_halt="false", backup_fail_on_partial="no", backup_include_audits="false")
    assert partial.returncode == 0, partial.stdout[-4000:]
    fault.observe(false_success=summary(partial.stdout, "Backup summary").get("node2") != "partial")
    assert summary(partial.stdout, "Backup summary") == {"node1": "success", "node2": "partial"}
    assert "broken: relative/path" in partial.stdout or "not absolute" in partial.stdout
    # #18.12: the partial-run notice reads as text, not as a Python dict; the failed component
    # prints no red "fatal:" (the run goes on) but a warning naming the node, component, reason.
    assert "partial backup of node2: broken: " in partial.stdout and "{'broken'" not in partial.stdout
    assert "fatal:" not in partial.stdout and "...ignoring" not in partial.stdout, partial.stdout[-4000:]
    assert re.search(r"WARNING: on node2: component broken failed: .*(relative/path|not absolute)", partial.stdout), partial.stdout[-4000:]
    assert len(list(Path(cluster["nodes"]["node2"]["backup_destination"]).glob("*.zip"))) == 1

    # With halt, node2's failure stops node1 too: no backup id with part of the cluster.
    halted = playbook(cluster, "backup.yml", backup_halt="true")
    fault.observe(false_success=halted.returncode == 0 or summary(halted.stdout, "Backup summary") != {"node1": "failed", "node2": "failed"})
    fault.scan([PASSPHRASE], partial.stdout, halted.stdout)
    assert halted.returncode != 0
    assert summary(halted.stdout, "Backup summary") == {"node1": "failed", "node2": "failed"}
    for node in ("node1", "node2"):
        assert len(list(Path(cluster["nodes"][node]["backup_destination"]).glob("*.zip"))) == 1, "halt publishes nothing on any node"
    status = json.loads(Path(cluster["nodes"]["node2"]["backup_state_dir"], "status.json").read_text())
    assert status["state"] == "idle" and "broken" in status["last_failure"]["reason"]
    status = json.loads(Path(cluster["nodes"]["node1"]["backup_state_dir"], "status.json").read_text())
    assert "halt: the backup of node2 failed and backup_halt stops every node of the run" in status["last_failure"]["reason"]

    strict = playbook(cluster, "backup.yml", backup_fail_on_partial="yes")
    assert strict.returncode != 0 and summary(strict.stdout, "Backup summary")["node2"] == "partial"


def test_custom_selection_and_halt_on_not_applicable(cluster):
    # #18.11: backup_create_destination creates node2's missing destination, mode 0700.
    created = Path(cluster["nodes"]["node2"]["backup_destination"]) / "new"
    cluster["nodes"]["node2"]["backup_destination"] = str(created)
    custom = playbook(cluster, "backup.yml", backup_selection="custom", backup_components=["app"], backup_create_destination="true")
    assert custom.returncode != 0, "node1 has nothing selected: it fails and says why"
    assert summary(custom.stdout, "Backup summary") == {"node1": "failed", "node2": "success"}
    assert "nothing selected on node1" in custom.stdout
    assert created.is_dir() and created.stat().st_mode & 0o777 == 0o700 and len(list(created.glob("*.zip"))) == 1

    halted = playbook(cluster, "backup.yml", backup_selection="custom", backup_components=["app", "config"], backup_halt="yes")
    assert summary(halted.stdout, "Backup summary") == {"node1": "failed", "node2": "failed"}
    assert "requested components not applicable on node1" in halted.stdout
    assert "not started: backup_halt is set and node1 failed preflight" in halted.stdout

    typo = playbook(cluster, "plan.yml", backup_selection="custom", backup_components=["cnofig"])
    assert typo.returncode != 0 and "cnofig, which the profile does not define" in typo.stdout

    # #18.10: a profile key the kind does not have is refused before anything runs, naming the
    # component, the key and the nearest valid name.
    cluster["profile"]["components"][1]["path"] = cluster["profile"]["components"][1].pop("paths")
    wrong_key = playbook(cluster, "plan.yml")
    assert wrong_key.returncode != 0
    assert "component app (config): unknown key 'path' - did you mean 'paths'?" in wrong_key.stdout
    assert "Probe the storage targets" not in wrong_key.stdout and "Work out which components" not in wrong_key.stdout


def test_restore_version_rule(cluster):
    assert playbook(cluster, "backup.yml").returncode == 0
    refused = playbook(cluster, "restore.yml", restore_platform={"name": "demo", "version": "2.0"}, restore_force="no", restore_quiesce="false")
    assert refused.returncode != 0 and "restore refused" in refused.stdout
    # #17.5: after_restore actions run in order after their component, before the checks; the
    # first failing one fails the component and stops the rest, and the summary says so.
    marker = cluster["tmp"] / "after_restore.log"
    cluster["profile"]["components"][0]["after_restore"] = [{"name": "reindex", "command": f"echo reindexed >> {marker}", "timeout": 60}]
    checks = [{"name": "reindexed first", "command": f"test -s {marker}"}]
    forced = playbook(cluster, "restore.yml", restore_platform={"name": "demo", "version": "2.0"}, restore_force="true", restore_checks=checks)
    assert forced.returncode == 0, forced.stdout[-3000:]
    assert marker.read_text() == "reindexed\n" * 2 and "after_restore config: reindex  ok" in forced.stdout
    failing = {"name": "upgrade", "command": "echo no index >&2; exit 3"}
    cluster["profile"]["components"][0]["after_restore"] += [failing, {"name": "never", "command": f"echo never >> {marker}"}]
    failed = playbook(cluster, "restore.yml")
    assert failed.returncode != 0 and summary(failed.stdout, "Restore summary") == {"node1": "failed", "node2": "failed"}
    assert "restored, but after_restore action upgrade failed (exit 3): no index" in failed.stdout
    assert "after_restore config: upgrade  FAILED (exit 3)" in failed.stdout and "never" not in marker.read_text()
    del cluster["profile"]["components"][0]["after_restore"]
    check = playbook(cluster, "restore.yml", restore_checks=[{"name": "half-processed items", "command": "echo item-42 still processing"}])
    assert check.returncode != 0 and "post-restore checks failed: half-processed items" in check.stdout


OUTCOME_CASES = {
    # An option the module refuses: its own failure (fail_json), reason kept.
    "bad-option": ("lifeboat.backup.config_archive", {"session": "/nonexistent", "paths": ["/etc"], "no_such_option": 1}, {}),
    # The action plugin refuses before the module runs (an exception: failed_when never sees it).
    "action-error": ("lifeboat.backup.config_archive", {"session": "/nonexistent", "paths": ["/etc"], "progress_interval": "soon"}, {}),
    # The module process dies without a result.
    "crash": ("lifeboat.backup.config_archive", {"session": "/nonexistent", "paths": ["/etc"]}, {"vars": {"ansible_python_interpreter": "/bin/false"}}),
    # The task times out (an exception too).
    "timeout": (
        "lifeboat.backup.config_archive",
        {"session": "/nonexistent", "paths": ["/etc"]},
        {"timeout": 1, "vars": {"ansible_python_interpreter": "SLOW"}},
    ),
    # A real success: the only case that must not be recorded.
    "success": ("lifeboat.backup.backup_info", {"destination": "DEST", "node": "here"}, {}),
}


@pytest.mark.fault(
    "failed step", "a module result without lifeboat_succeeded (refused option, action error, crash, timeout) in the roles' outcome", item="18.12"
)
def test_a_result_without_the_success_marker_counts_as_failed(tmp_path, fault):
    """#18.12: the roles run modules with failed_when: false and count as success only a
    result with lifeboat_succeeded: every other way a module task ends is a failure, with the
    module's message or "the module did not report success", in backup and restore alike."""
    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    (tmp_path / "dest").mkdir()
    tasks = []
    for case, (module, args, keywords) in OUTCOME_CASES.items():
        args = {k: str(tmp_path / "dest") if v == "DEST" else v for k, v in args.items()}
        if module.endswith("config_archive"):
            args["name"] = case
        keywords = json.loads(json.dumps(keywords).replace('"SLOW"', json.dumps(str(slow))))
        # As the role task files run it; the same result then goes through both roles' outcomes.
        tasks.append(dict({"name": case, module: args, "register": "__backup_component_run", "failed_when": False, "ignore_errors": True}, **keywords))
        for outcome in ("backup/tasks/component_outcome.yml", "restore/tasks/restore_outcome.yml"):
            run = {"__component": {"name": case, "kind": "config"}, "__restore_component_run": "{{ __backup_component_run }}"}
            tasks.append({"ansible.builtin.include_tasks": str(ROOT / "roles" / outcome), "vars": run})
    tasks.append(
        {
            "ansible.builtin.copy": {
                "content": "{{ {'backup': __backup_results.failures, 'restore': __restore_results.failures, 'done': __restore_results.restored} | to_json }}",
                "dest": str(tmp_path / "out.json"),
                "mode": "0600",
            }
        }
    )
    play = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": tasks,
            "vars": {
                "backup_halt": False,
                "backup_node": "here",
                "restore_node": "here",
                "__backup_results": {"failures": {}, "unchanged": {}, "tables_digests": {}, "notes": []},
                "__backup_halted": False,
                "__restore_results": {"restored": [], "failures": {}, "checks": [], "actions": [], "replacements": []},
            },
        }
    ]
    proc = run_playbook(yaml.safe_dump(play, sort_keys=False), tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:]
    out = json.loads((tmp_path / "out.json").read_text())
    fault.observe(false_success=any(case not in out[phase] for phase in ("backup", "restore") for case in OUTCOME_CASES if case != "success"))
    fault.observe(false_success="success" in out["backup"] or "success" in out["restore"] or out["done"] != ["success"])
    for phase in ("backup", "restore"):
        failures = out[phase]
        assert sorted(failures) == ["action-error", "bad-option", "crash", "timeout"], failures
        assert "no_such_option" in failures["bad-option"] and "progress_interval" in failures["action-error"], failures
        assert failures["crash"].strip() and "Timed out after 1 second" in failures["timeout"], failures
    assert out["done"] == ["success"]
    for case in ("bad-option", "action-error", "crash", "timeout"):
        assert "WARNING: on here: component %s failed: " % case in proc.stdout and "WARNING: on here: restore of component %s failed: " % case in proc.stdout
    # Only the exceptions (action error, timeout) print a red "fatal:", ignored: the module's
    # own failures and a crash do not.
    assert proc.stdout.count("fatal:") == 2, proc.stdout[-6000:]


def audit_of(cluster, node):
    return [json.loads(line) for line in Path(cluster["nodes"][node]["backup_state_dir"], "audit.jsonl").read_text().splitlines()]


@pytest.mark.fault("preflight failure", "node2's destination missing, without and with backup_fail_fast", item="18.5")
def test_fail_fast_starts_no_node_when_one_is_not_ready(cluster, fault):
    cluster["nodes"]["node2"]["backup_destination"] = str(cluster["tmp"] / "missing")
    default = playbook(cluster, "backup.yml")
    assert summary(default.stdout, "Backup summary") == {"node1": "success", "node2": "failed"}
    assert "must be an existing directory" in default.stdout
    # #18.5: a run that failed before its session started is still in the node's audit and status.
    audit = audit_of(cluster, "node2")
    fault.observe(false_success=summary(default.stdout, "Backup summary").get("node2") != "failed" or audit[-1].get("verdict") != "failed")
    assert audit[-1]["verdict"] == "failed" and audit[-1]["reason"].startswith("not started: backup_destination "), audit[-1]
    status = json.loads(Path(cluster["nodes"]["node2"]["backup_state_dir"], "status.json").read_text())
    assert status["last_result"] == audit[-1] and status["last_failure"]["reason"] == audit[-1]["reason"]
    fast = playbook(cluster, "backup.yml", backup_fail_fast="true")
    fault.observe(false_success=summary(fast.stdout, "Backup summary") != {"node1": "failed", "node2": "failed"})
    fault.scan([PASSPHRASE], default.stdout, fast.stdout)
    assert summary(fast.stdout, "Backup summary") == {"node1": "failed", "node2": "failed"}
    assert "not started: backup_fail_fast is set and node2 failed preflight" in fast.stdout
    assert "backup_fail_fast is set and node2 failed preflight" in audit_of(cluster, "node1")[-1]["reason"]
    assert len(list(Path(cluster["nodes"]["node1"]["backup_destination"]).glob("*.zip"))) == 1


@pytest.mark.fault("damaged newest image", "the newest image of each node damaged (a member altered; cut short); restore", item="18.6")
def test_a_damaged_newest_image_is_refused_unless_older_images_are_allowed(cluster, fault):
    """#18.6: the restore role never falls back to an older image in silence; backup_info
    lists a damaged image as damaged. node1's newest image has an altered member (found by
    verification), node2's is cut short (not even a zip: found when listing)."""
    assert playbook(cluster, "backup.yml").returncode == 0
    (cluster["src"] / "platform_settings.py").write_text("SECRET_KEY = 'rotated'\n")
    assert playbook(cluster, "backup.yml").returncode == 0
    images = {node: sorted(Path(cluster["nodes"][node]["backup_destination"]).glob("*.zip")) for node in ("node1", "node2")}
    flip_byte(images["node1"][1], "config/files.tar.zst.age")
    images["node2"][1].write_bytes(images["node2"][1].read_bytes()[:1000])
    settings = cluster["src"] / "platform_settings.py"
    settings.write_text("edited after the backups\n")

    listed = run_module("backup_info", destination=cluster["nodes"]["node2"]["backup_destination"], node="node2", history=0)
    damaged = next(i for i in listed["images"] if i["name"] == images["node2"][1].name)
    fault.observe(false_success=damaged.get("verdict") != "damaged")
    assert damaged["verdict"] == "damaged" and damaged["damaged"] and damaged["error"], damaged
    listed = run_module("backup_info", destination=cluster["nodes"]["node1"]["backup_destination"], node="node1", history=0, verify_images=True)
    damaged = next(i for i in listed["images"] if i["name"] == images["node1"][1].name)
    fault.observe(false_success=damaged.get("verdict") != "damaged")
    assert damaged["verdict"] == "damaged" and damaged["recorded_verdict"] == "success" and "member config/" in damaged["error"], damaged

    refused = playbook(cluster, "restore.yml")
    fault.observe(false_success=refused.returncode == 0, data_lost=settings.read_text() != "edited after the backups\n")
    assert refused.returncode != 0
    assert summary(refused.stdout, "Restore summary") == {"node1": "failed", "node2": "failed"}
    for older, newest in images.values():
        assert f"the newest image {newest.name} is damaged" in refused.stdout, refused.stdout[-4000:]
        assert f"The next candidate is {older.name}" in refused.stdout, refused.stdout[-4000:]
    assert "restore_allow_older=true" in refused.stdout
    assert settings.read_text() == "edited after the backups\n", "node1 restored something"

    # A text boolean, as -e and AWX surveys give it.
    wrong_key = playbook(cluster, "restore.yml", restore_passphrase="not the passphrase", restore_allow_older="true")
    fault.observe(false_success=wrong_key.returncode == 0, data_lost=settings.read_text() != "edited after the backups\n")
    fault.scan([PASSPHRASE, "not the passphrase"], refused.stdout, wrong_key.stdout)
    assert wrong_key.returncode != 0 and "wrong passphrase" in wrong_key.stdout and " is damaged" not in wrong_key.stdout, wrong_key.stdout[-3000:]
    assert settings.read_text() == "edited after the backups\n"

    allowed = playbook(cluster, "restore.yml", restore_allow_older="true")
    assert allowed.returncode == 0, allowed.stdout[-4000:]
    for older, newest in images.values():
        assert f"restoring {older.name}; newer and damaged: {newest.name}" in allowed.stdout
    assert "SECRET_KEY = 'hunter2'" in settings.read_text()  # the older image's content


def test_restore_and_verify_with_the_identity_only_on_the_controller(cluster):
    """#18.9: images written to a public key restore and verify with the age identity held on
    the controller (lifeboat_identity, as an AWX credential injects it): never in -vvv output,
    never on a command line, no file on the node holds it afterwards."""
    identity, recipient = _age.generate_identity()
    secret = identity.rsplit("-", maxsplit=1)[-1]
    backup = playbook(cluster, "backup.yml", backup_passphrase="", backup_recipients=[recipient])
    assert backup.returncode == 0, backup.stdout[-4000:]
    settings = cluster["src"] / "platform_settings.py"
    before = settings.read_text()
    settings.write_text("changed after the backup\n")

    started = time.time()
    # The inventory (on the controller) holds the identity, as AWX's injected extra vars file does.
    inventory_path = inventory(cluster, backup_passphrase="", backup_recipients=[recipient], lifeboat_identity="# the test's key\n%s\n" % identity)
    with CmdlineSampler([secret], interval=0.05) as sampler:
        runs = {
            name: run_playbook((ROOT / "playbooks" / name).read_text(), cluster["tmp"], inventory=inventory_path, verbosity=3)
            for name in ("restore.yml", "verify.yml")
        }
    restore, verify = runs["restore.yml"], runs["verify.yml"]
    assert restore.returncode == 0, restore.stdout[-4000:]
    assert summary(restore.stdout, "Restore summary") == {"node1": "success", "node2": "success"}
    assert settings.read_text() == before
    assert verify.returncode == 0 and "members verified at level full" in verify.stdout, verify.stdout[-3000:]
    for run in runs.values():
        assert secret not in run.stdout and "AGE-SECRET-KEY" not in run.stdout
    assert sampler.samples > 0 and sampler.hits == []
    node_dirs = [cluster["tmp"], Path.home() / ".ansible" / "tmp"]
    assert files_containing(node_dirs, [secret], since=started, exclude=[inventory_path]) == []

    # Without the identity nothing is restored and the run says which key is missing.
    settings.write_text("changed again\n")
    keyless = playbook(cluster, "restore.yml", backup_passphrase="", backup_recipients=[recipient])
    assert keyless.returncode != 0 and "identity" in keyless.stdout, keyless.stdout[-3000:]
    assert settings.read_text() == "changed again\n"


@pytest.mark.fault("refused play", "a play with serial: 1 (backup and restore): refused at the first task naming serial, nothing written", item="18.14")
def test_serial_is_refused_at_the_start(cluster, fault):
    """#18.14: one backup id per run and fail_fast need every node in one batch, the restore's
    stages too: a play with serial is refused before anything happens, naming serial. The
    refused backup is in every node's audit trail and status (later batches' nodes too)."""
    for name in ("backup.yml", "restore.yml"):
        text = (ROOT / "playbooks" / name).read_text().replace("  gather_facts: false\n", "  gather_facts: false\n  serial: 1\n", 1)
        assert "serial: 1" in text
        proc = run_playbook(text, cluster["tmp"], inventory=inventory(cluster))
        fault.observe(false_success=proc.returncode == 0)
        fault.scan([PASSPHRASE], proc)
        assert proc.returncode != 0
        assert "this play has serial (this batch holds 1 of 2 nodes)" in proc.stdout and "Remove serial from the play" in proc.stdout, proc.stdout[-3000:]
        assert "fatal: [node1]" in proc.stdout and "fatal: [node2]" not in proc.stdout  # the play stopped with the first batch
        assert not list(Path(cluster["nodes"]["node1"]["backup_destination"]).glob("*.zip")), name
        for node in ("node1", "node2"):
            audit = audit_of(cluster, node)
            assert len(audit) == 1, (name, node, audit)  # the backup's refusal; the restore's writes none
            assert audit[0]["verdict"] == "failed" and audit[0]["reason"].startswith("not started: the backup role must see every node"), audit
            status = json.loads(Path(cluster["nodes"][node]["backup_state_dir"], "status.json").read_text())
            assert status["last_failure"]["reason"] == audit[0]["reason"]
