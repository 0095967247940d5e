"""image_retention end to end on real images: the node's destination and a storage target
(type local), check mode and diff, the guards (newest success, pinned, unreadable), cluster
runs kept together, a second run that removes nothing, and a lost target that is reported
while the other locations are still done."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.images import make_image
from tests.support.modules import run_module, run_playbook

DAY = 86400


def nightly(directory, node, nights, verdicts=None, run_ids=None):
    """One image a day for ``nights`` days, oldest first; the newest is 1 day less 10 minutes old."""
    # Ages are counted from now, not from when the module was imported: under xdist a file
    # may run half an hour after collection, and its "1 day less 10 minutes" must hold.
    now = time.time()
    paths = []
    for n in range(nights):
        when = int(now - (nights - n) * DAY + 600)
        backup_id = (run_ids or {}).get(n) or "%s-run%02d" % (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when)), n)
        verdict = (verdicts or {}).get(n, "success")
        paths.append(make_image(str(directory), node=node, payload=b"x" * 64, backup_id=backup_id, when=when, verdict=verdict))
    return paths


def names(directory):
    return sorted(p.name for p in directory.iterdir() if p.is_file())


def test_destination_keep_last_check_mode_diff_then_removal(tmp_path):
    dest = tmp_path / "backups"
    dest.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    db = nightly(dest, "db1", 10)
    app = nightly(dest, "app1", 2)
    (dest / (db[0].rsplit("/", 1)[1] + ".sha256")).write_text("0" * 64 + "  x\n")
    before = names(dest)

    plan = run_module("image_retention", check=True, diff=True, destination=str(dest), retention={"keep_last": 3}, state_dir=str(state))
    assert plan.rc == 0 and plan["changed"], plan
    assert names(dest) == before  # check mode touches nothing
    assert [r["name"] for r in plan["removed"]] == [p.rsplit("/", 1)[1] for p in reversed(db[:7])]
    assert {r["rule"] for r in plan["removed"]} == {"not selected by keep_last 3"}
    [location] = plan["locations"]
    assert location["kept"] == 5 and location["removed"] == 7 and location["location"] == "file://%s" % dest
    [diff] = plan["diff"]
    assert "# removed: not selected by keep_last 3" in diff["before"] and db[0].rsplit("/", 1)[1] not in diff["after"]

    done = run_module("image_retention", destination=str(dest), retention={"keep_last": 3}, state_dir=str(state))
    assert done.rc == 0 and done["changed"] and len(done["removed"]) == 7
    assert names(dest) == sorted([p.rsplit("/", 1)[1] for p in db[7:] + app])  # the sidecar went with its image
    audit = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["event"] == "retention" and len(audit[-1]["removed"]) == 7 and audit[-1]["policy"] == "keep_last 3, min_count 1"

    again = run_module("image_retention", destination=str(dest), retention={"keep_last": 3}, state_dir=str(state))
    assert again.rc == 0 and not again["changed"] and again["removed"] == []


def test_the_newest_success_pinned_and_unreadable_images_survive(tmp_path):
    dest = tmp_path / "backups"
    dest.mkdir()
    # 8 nights: the 3 newest failed partway (partial), night 1 pinned by a file, night 2 by its backup id.
    db = nightly(dest, "db1", 8, verdicts={5: "partial", 6: "partial", 7: "partial"}, run_ids={2: "keep-this-run"})
    (dest / (db[1].rsplit("/", 1)[1] + ".pinned")).write_text("audit hold, ticket 4711\n")
    (dest / "19990101T000000Z-db1.zip").write_bytes(b"not a zip at all")
    result = run_module("image_retention", destination=str(dest), node="db1", pinned=["keep-this-run"], retention={"keep_last": 1, "max_age": "2d"})
    assert result.rc == 0, result
    decisions = {d["name"]: d for d in result["locations"][0]["decisions"]}
    base = [p.rsplit("/", 1)[1] for p in db]
    assert decisions[base[4]]["rule"] == "the newest successful item of its series (never removed)"
    assert decisions[base[1]]["rule"] == "pinned" and decisions[base[2]]["rule"] == "pinned"
    # Partial images are counted apart: no newer success exists, so they stay unless older than max_age.
    for partial in base[6:]:
        assert decisions[partial]["action"] == "keep" and decisions[partial]["rule"] == "partial, and no newer successful item exists yet"
    assert decisions[base[5]]["rule"].startswith("partial, older than max_age (2d 23h > 2d)")
    assert decisions["19990101T000000Z-db1.zip"]["rule"].startswith("verdict unknown") and decisions["19990101T000000Z-db1.zip"]["error"]
    assert sorted(r["name"] for r in result["removed"]) == sorted([base[0], base[3], base[5]])
    assert sorted(names(dest)) == sorted([base[1], base[1] + ".pinned", base[2], base[4], *base[6:], "19990101T000000Z-db1.zip"])


def test_a_shared_target_keeps_cluster_runs_together(tmp_path):
    target = tmp_path / "offsite"
    target.mkdir()
    runs = {n: "20261101T020000Z-cluster%02d" % n for n in range(4)}
    nightly(target, "db1", 4, run_ids=runs)
    # app1's newest run was partial: its previous success (run 2) must stay, and with together, db1's run 2 too.
    nightly(target, "app1", 4, verdicts={3: "partial"}, run_ids=runs)
    apart = run_module("image_retention", check=True, targets=[{"type": "local", "path": str(target), "name": "offsite"}], retention={"keep_last": 1})
    assert apart.rc == 0, apart
    assert sorted((r["node"], r["backup_id"][-9:]) for r in apart["removed"]) == [
        ("app1", "cluster00"),
        ("app1", "cluster01"),
        ("db1", "cluster00"),
        ("db1", "cluster01"),
        ("db1", "cluster02"),
    ]
    together = run_module("image_retention", targets=[{"type": "local", "path": str(target), "name": "offsite"}], retention={"keep_last": 1}, together=True)
    assert together.rc == 0 and together["locations"][0]["name"] == "offsite"
    assert sorted((r["node"], r["backup_id"][-9:]) for r in together["removed"]) == [
        ("app1", "cluster00"),
        ("app1", "cluster01"),
        ("db1", "cluster00"),
        ("db1", "cluster01"),
    ]
    kept = {d["name"]: d["rule"] for d in together["locations"][0]["decisions"] if d["action"] == "keep" and d["node"] == "db1"}
    assert any(rule.startswith("kept with its cluster run 20261101T020000Z-cluster02") for rule in kept.values())
    # What another location's plan is told (kept_runs): which image keeps the run, where, by which rule.
    assert together["kept_runs"][runs[2]] == "%s in offsite is kept (%s)" % next(
        (d["name"], d["rule"]) for d in together["locations"][0]["decisions"] if d["action"] == "keep" and d["backup_id"] == runs[2]
    )


@pytest.mark.fault(
    "lost target", "a storage target of image_retention is gone: the run fails naming it, the destination is still pruned, no kept image removed"
)
def test_a_lost_target_is_reported_and_the_destination_still_done(tmp_path, fault):
    dest = tmp_path / "backups"
    dest.mkdir()
    nightly(dest, "db1", 3)
    result = run_module(
        "image_retention",
        destination=str(dest),
        targets=[{"type": "local", "path": str(tmp_path / "gone"), "name": "nas"}],
        retention={"keep_last": 1},
    )
    fault.observe(false_success=result.rc == 0, data_lost=len(names(dest)) < 1)
    assert result.rc != 0 and result["changed"]
    assert "targets[0] (nas)" in result["msg"] and "does not exist" in result["msg"]
    assert "Already changed before the failure: removed" in result["msg"]
    assert len(names(dest)) == 1 and len(result["removed"]) == 2


def test_bad_policy_names_the_option(tmp_path):
    result = run_module("image_retention", destination=str(tmp_path), retention={"keep_daily": 0})
    assert result.failed and result["msg"].startswith("retention.keep_daily must be a whole number")
    result = run_module("image_retention", destination=str(tmp_path), retention={"min_count": 2})
    assert result.failed and "give at least one of keep_last" in result["msg"]
    result = run_module("image_retention", retention={"keep_last": 2})
    assert result.failed and "give destination" in result["msg"]


ROLE_RETENTION = """
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: lifeboat.backup.backup
        tasks_from: retention.yml
      vars:
        backup_result: {verified: true}
"""


def test_the_backup_role_keeps_a_cluster_run_together_across_the_nodes_destinations(tmp_path):
    """Two nodes, each with its own destination: app1's image of run 1 is pinned, so with
    backup_retention_together db1 keeps its image of run 1 too; run 0 goes on both nodes."""
    runs = {n: "20261101T020000Z-cluster%02d" % n for n in range(3)}
    hosts, images = {}, {}
    for node in ("db1", "app1"):
        (tmp_path / node).mkdir()
        (tmp_path / (node + "-state")).mkdir()
        images[node] = [p.rsplit("/", 1)[1] for p in nightly(tmp_path / node, node, 3, run_ids=runs)]
        hosts[node] = {"ansible_connection": "local", "backup_node": node, "backup_destination": str(tmp_path / node)}
        hosts[node]["backup_state_dir"] = str(tmp_path / (node + "-state"))
    (tmp_path / "app1" / (images["app1"][1] + ".pinned")).write_text("held\n")
    inventory = tmp_path / "hosts.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))

    # Apart (the default), keep_last 1 would leave db1 its newest image only.
    together = {"backup_retention": {"keep_last": 1}, "backup_retention_together": "true"}
    done = run_playbook(ROLE_RETENTION, tmp_path, extra_vars=together, inventory=str(inventory))
    assert done.returncode == 0, done.stdout[-3000:]
    assert names(tmp_path / "db1") == sorted(images["db1"][1:])
    assert [n for n in names(tmp_path / "app1") if n.endswith(".zip")] == sorted(images["app1"][1:])
    audit = [json.loads(line) for line in (tmp_path / "db1-state" / "audit.jsonl").read_text().splitlines()]
    assert [entry["backup_id"] for entry in audit[-1]["removed"]] == [runs[0]]
