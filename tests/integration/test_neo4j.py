"""neo4j_archive / neo4j_restore against a real Neo4j 5 community server (tests/harness/neo4j.py).

One server for the module; starting and stopping it is what costs (about 10 s each), so the
tests share one image made at the start: a graph is created, Neo4j is stopped cleanly, the
data directory is archived twice (files and neo4j-admin dump) into one image. Each test then
puts Neo4j in the state it needs (halted or running) and leaves it as it likes; the
neo4j_server fixture starts it again for whoever needs it running.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import zipfile

import pytest
import yaml

from tests.harness.neo4j import NEO4J_ACCOUNT, Neo4jServer
from tests.harness.process import is_root
from tests.support.images import flip_byte, rewrite_manifest
from tests.support.modules import ROOT, run_module, run_playbook

PASSPHRASE = "neo4j graph backup passphrase"

GRAPH = [
    "CREATE (:Actor {name: 'Ada', born: 1815, tags: ['math', 'poetry'], note: 'ünïcødé ✓'})",
    "UNWIND range(1, 200) AS i CREATE (:Indicator {id: i, value: 'ioc-' + toString(i)})",
    "MATCH (a:Indicator), (b:Indicator) WHERE b.id = a.id + 1 CREATE (a)-[:NEXT {weight: a.id * 2}]->(b)",
    "MATCH (a:Actor), (i:Indicator {id: 7}) CREATE (a)-[:OBSERVED {at: date('2026-11-22')}]->(i)",
    "CREATE INDEX indicator_id FOR (n:Indicator) ON (n.id)",
]


def snapshot(server: Neo4jServer) -> dict:
    """What the tests compare before and after: counts, sample properties, schema."""
    return {
        "nodes": server.query("MATCH (n) RETURN count(n) AS c")[0]["c"],
        "relationships": server.query("MATCH ()-[r]->() RETURN count(r) AS c")[0]["c"],
        "ada": server.query("MATCH (a:Actor {name: 'Ada'}) RETURN a.born AS born, a.tags AS tags, a.note AS note")[0],
        "chain": server.query("MATCH (:Indicator {id: 41})-[r:NEXT]->(b) RETURN r.weight AS weight, b.value AS value")[0],
        "observed": str(server.query("MATCH (:Actor)-[r:OBSERVED]->(i) RETURN r.at AS at, i.id AS id")[0]),
        "indexes": sorted(r["name"] for r in server.query("SHOW INDEXES YIELD name WHERE name = 'indicator_id' RETURN name")),
        "created": server.query("CALL db.info() YIELD creationDate RETURN creationDate")[0]["creationDate"],
    }


def debug_log_store_ids(server: Neo4jServer) -> dict:
    """Store ids as Neo4j itself logs them at start: StoreId{creationTime=..., random=...}."""
    text = (server.logs_dir / "debug.log").read_text(encoding="utf-8", errors="replace")
    found = {}
    for database, creation, random in re.findall(r"\[(\w+)/\w+\] STORE_ID \(Store ID\): StoreId\{creationTime=(-?\d+), random=(-?\d+)", text):
        found[database] = f"{creation}:{random}"
    return found


def start_session(destination, state_dir):
    result = run_module(
        "backup_session",
        state="started",
        destination=str(destination),
        state_dir=str(state_dir),
        passphrase=PASSPHRASE,
        work_factor=10,
        components=["neo4j", "neo4j-dump"],
    )
    assert not result.failed, result
    return result["session"]["work_dir"]


def halted(server: Neo4jServer) -> Neo4jServer:
    if server.running:
        server.halt()
    return server


@pytest.fixture(scope="module")
def graph_backup(server_pool, tmp_path_factory):
    server = server_pool.get(("neo4j",), Neo4jServer)
    if not server.running:
        server.resume()
    for statement in GRAPH:
        server.query(statement)
    server.query("CALL db.awaitIndexes(60)")
    expected = snapshot(server)
    halted(server)

    destination = tmp_path_factory.mktemp("images")
    work_dir = start_session(destination, tmp_path_factory.mktemp("state"))
    files = run_module("neo4j_archive", session=work_dir, home=str(server.home))
    assert not files.failed, files
    dump = run_module("neo4j_archive", session=work_dir, home=str(server.home), method="dump", name="neo4j-dump")
    assert not dump.failed, dump
    sealed = run_module("backup_session", state="sealed", session=work_dir)
    assert not sealed.failed and sealed["verdict"] == "success", sealed
    return {"server": server, "image": sealed["image"], "expected": expected, "files": files, "dump": dump}


def test_archive_records_the_store_ids_neo4j_logs(graph_backup):
    server, files, dump = graph_backup["server"], graph_backup["files"], graph_backup["dump"]
    logged = debug_log_store_ids(server)
    assert set(files["store_ids"]) == {"neo4j", "system"}
    assert files["store_ids"] == {db: logged[db] for db in files["store_ids"]}
    assert dump["store_ids"] == files["store_ids"]
    # The store's creation time is the one Neo4j reports for the database.
    created = datetime.datetime.fromisoformat(graph_backup["expected"]["created"])
    assert files["stores"]["neo4j"]["creation_time"] == round(created.timestamp() * 1000)
    assert files["members"] == ["neo4j/data.tar.zst.age", "neo4j/index.jsonl.zst.age"]
    assert files["file_count"] > 20 and files["total_bytes"] > 0
    assert sorted(dump["members"]) == ["neo4j-dump/neo4j.dump.zst.age", "neo4j-dump/system.dump.zst.age"]
    with zipfile.ZipFile(graph_backup["image"]) as image:
        manifest = json.loads(image.read("manifest.json"))
    assert manifest["consistency"]["neo4j"] == {"store_ids": files["store_ids"]}
    assert manifest["consistency"]["neo4j-dump"] == {"store_ids": files["store_ids"]}
    assert manifest["components"]["neo4j"]["details"]["method"] == "files"
    # The graph counts taken from the stopped store's files are Cypher's counts.
    expected = graph_backup["expected"]
    graph = {"nodes": expected["nodes"], "relationships": expected["relationships"]}
    assert files["fingerprint"]["counts"]["neo4j"] == dump["fingerprint"]["counts"]["neo4j"] == graph
    assert manifest["components"]["neo4j"]["details"]["fingerprint"]["counts"]["neo4j"] == graph


def test_restore_files_into_a_wiped_data_directory(graph_backup):
    server = halted(graph_backup["server"])
    server.wipe_data()
    owner = {"owner": NEO4J_ACCOUNT, "group": NEO4J_ACCOUNT} if is_root() else {}
    result = run_module("neo4j_restore", image=graph_backup["image"], passphrase=PASSPHRASE, home=str(server.home), **owner)
    assert not result.failed, result
    assert result["changed"] is True and result["replaced"] is False and result["method"] == "files"
    assert result["store_ids"] == result["expected_store_ids"] == graph_backup["files"]["store_ids"]
    assert result["counts"]["neo4j"] == {"nodes": graph_backup["expected"]["nodes"], "relationships": graph_backup["expected"]["relationships"]}
    if is_root():
        for path in [server.data_dir, *server.data_dir.rglob("*")]:
            assert path.lstat().st_uid == server.account.pw_uid, path
    server.resume()  # Neo4j, running as its own account, opens what was restored
    assert snapshot(server) == graph_backup["expected"]


def test_restore_fails_naming_the_graph_when_counts_differ(graph_backup, tmp_path):
    """The counts recorded at backup time are what the restore compares with: change one."""
    server = halted(graph_backup["server"])
    tampered = tmp_path / "tampered.zip"

    def more_nodes(manifest):
        manifest["components"]["neo4j"]["details"]["fingerprint"]["counts"]["neo4j"]["nodes"] += 1

    rewrite_manifest(graph_backup["image"], tampered, more_nodes)
    nodes = graph_backup["expected"]["nodes"]
    result = run_module("neo4j_restore", image=str(tampered), passphrase=PASSPHRASE, home=str(server.home), replace=True)
    assert result.failed and f"the restored graph differs from the backup: graph neo4j: {nodes} nodes, {nodes + 1} at backup time" in result["msg"]
    assert result["done"] == [f"restored {server.data_dir}"]
    unchecked = run_module("neo4j_restore", image=str(tampered), passphrase=PASSPHRASE, home=str(server.home), replace=True, verify_counts=False)
    assert not unchecked.failed and "counts" not in unchecked


@pytest.mark.fault("server running", "neo4j_archive and neo4j_restore while Neo4j runs (store locks held)")
def test_refuses_while_neo4j_runs(neo4j_server, graph_backup, tmp_path, fault):
    server = neo4j_server
    before = sorted(p.name for p in server.data_dir.iterdir())
    (tmp_path / "dest").mkdir()
    work_dir = start_session(tmp_path / "dest", tmp_path / "state")
    archive = run_module("neo4j_archive", session=work_dir, home=str(server.home))
    assert archive.failed
    assert "Neo4j is running, refusing to archive" in archive["msg"]
    assert f"the pid file {server.pid_file}" in archive["msg"]
    assert "holds the store locks databases/store_lock" in archive["msg"]
    assert f"Bolt address 127.0.0.1:{server.port}" in archive["msg"]
    # The store lock alone is enough evidence (no pid file, no port probe).
    lock_only = run_module("neo4j_archive", session=work_dir, home=str(server.home), pid_file=str(tmp_path / "none.pid"), bolt_address="")
    assert lock_only.failed and "holds the store lock" in lock_only["msg"] and "pid file" not in lock_only["msg"]
    sealed = run_module("backup_session", state="sealed", session=work_dir)
    assert sealed.failed and sealed["verdict"] == "failed"  # nothing captured, nothing published
    assert not list((tmp_path / "dest").glob("*.zip"))

    restore = run_module("neo4j_restore", image=graph_backup["image"], passphrase=PASSPHRASE, home=str(server.home), replace=True)
    fault.observe(
        false_success=not (archive.failed and lock_only.failed and sealed.failed and restore.failed),
        data_lost=sorted(p.name for p in server.data_dir.iterdir()) != before,
    )
    fault.scan([PASSPHRASE], archive, sealed, restore)
    assert restore.failed and "Neo4j is running, refusing to restore" in restore["msg"]
    assert sorted(p.name for p in server.data_dir.iterdir()) == before
    assert snapshot(server) == graph_backup["expected"]


@pytest.mark.fault("corrupt member", "neo4j_restore (dump) replace=true of an image whose system dump is damaged", item="18.2")
def test_restore_dump_replaces_existing_databases_only_when_asked(graph_backup, tmp_path, fault):
    server = graph_backup["server"]
    if server.running:
        server.query("MATCH (n:Indicator) WHERE n.id > 100 DETACH DELETE n")  # diverge from the image
    halted(server)
    args = {"image": graph_backup["image"], "passphrase": PASSPHRASE, "home": str(server.home), "component": "neo4j-dump"}

    refused = run_module("neo4j_restore", **args)
    assert refused.failed and "databases already present" in refused["msg"] and "replace=true" in refused["msg"]
    preview = run_module("neo4j_restore", check=True, replace=True, **args)
    assert not preview.failed and preview["changed"] is True and preview["replaced"] is True

    # #18.2: the dumps are authenticated before the first load overwrites anything; without
    # that check, the failure names the database already loaded.
    damaged = flip_byte(graph_backup["image"], "neo4j-dump/system.dump.zst.age", tmp_path / "damaged.zip", where=0.9)
    store = server.data_dir / "databases" / "neo4j" / "neostore"
    before = store.stat().st_mtime_ns
    damaged_args = dict(args)
    damaged_args["image"] = str(damaged)
    refused = run_module("neo4j_restore", replace=True, **damaged_args)
    fault.observe(false_success=not refused.failed, data_lost=store.stat().st_mtime_ns != before)
    fault.scan([PASSPHRASE], refused)
    assert refused.failed and "neo4j-dump/system.dump.zst.age" in refused["msg"] and "Nothing was changed" in refused["msg"], refused
    assert store.stat().st_mtime_ns == before, "a database was overwritten before the image was authenticated"
    unchecked = run_module("neo4j_restore", replace=True, authenticate=False, **damaged_args)
    assert unchecked.failed and unchecked["done"][0] == "loaded database neo4j (replacing the one there)", unchecked
    assert "Already changed before the failure: loaded database neo4j" in unchecked["msg"]

    result = run_module("neo4j_restore", replace=True, **args)
    assert not result.failed, result
    assert result["method"] == "dump" and result["databases"] == ["neo4j", "system"]
    assert result["store_ids"] == graph_backup["files"]["store_ids"]
    if is_root():
        assert (server.data_dir / "databases" / "neo4j" / "neostore").stat().st_uid == server.account.pw_uid
    server.resume()
    assert snapshot(server) == graph_backup["expected"]


def test_restore_dump_under_another_name(graph_backup, tmp_path):
    """#17.1: a migration mapping renames a database - the dump is loaded under the new name,
    store id and counts compared with what the image recorded under the old one."""
    server = halted(graph_backup["server"])
    args = {"image": graph_backup["image"], "passphrase": PASSPHRASE, "home": str(server.home), "component": "neo4j-dump", "databases": ["neo4j"]}
    files = run_module("neo4j_restore", image=graph_backup["image"], passphrase=PASSPHRASE, home=str(server.home), rename={"neo4j": "graphb"})
    assert files.failed and "method=files" in files["msg"] and "keep: true" in files["msg"], files
    system = run_module("neo4j_restore", rename={"system": "systemb", "neo4j": "no"}, **args)
    assert system.failed and "system cannot be renamed" in system["msg"] and "'no' is not a valid database name" in system["msg"], system
    present = run_module("neo4j_restore", rename={"neo4j": "system"}, **{**args, "databases": []})
    assert present.failed and "two databases would be loaded as system" in present["msg"], present
    # A migration mapping renaming the database is refused before anything is touched: the
    # image's method=files component holds it too (both components have a database neo4j).
    template = run_module("mapping_template", image=graph_backup["image"], passphrase=PASSPHRASE, dest=str(tmp_path / "mapping.yml"))
    assert not template.failed, template
    mapping = {"values": [dict(v, keep=v["source"] != "neo4j", target="graphb" if v["source"] == "neo4j" else "") for v in template["environment_values"]]}
    refused = run_module("mapping_apply", image=graph_backup["image"], passphrase=PASSPHRASE, mapping=mapping)
    assert refused.failed and "component neo4j (Neo4j, method=files) restores its whole data directory" in refused["msg"], refused
    assert "nothing was restored" in refused["msg"] and "neo4j-dump" not in refused["msg"]
    loaded = server.data_dir / "databases" / "graphb"
    try:
        renamed = run_module("neo4j_restore", rename={"neo4j": "graphb"}, **args)
        assert not renamed.failed, renamed
        assert renamed["databases"] == ["graphb"] and renamed["renamed"] == {"neo4j": "graphb"}
        assert renamed["store_ids"] == {"graphb": graph_backup["files"]["store_ids"]["neo4j"]}
        assert renamed["counts"]["graphb"] == {"nodes": graph_backup["expected"]["nodes"], "relationships": graph_backup["expected"]["relationships"]}
        assert (loaded / "neostore").is_file()
        again = run_module("neo4j_restore", rename={"neo4j": "graphb"}, **args)
        assert again.failed and "databases already present" in again["msg"] and "graphb" in again["msg"], again
    finally:
        for path in (loaded, server.data_dir / "transactions" / "graphb"):
            if path.exists():
                shutil.rmtree(path)


def test_files_restore_refuses_a_data_directory_that_is_not_empty(graph_backup, tmp_path):
    server = halted(graph_backup["server"])
    marker = server.data_dir / "databases" / "neo4j" / "neostore"
    before = marker.stat().st_mtime_ns
    args = {"image": graph_backup["image"], "passphrase": PASSPHRASE, "home": str(server.home)}
    refused = run_module("neo4j_restore", **args)
    assert refused.failed and "is not empty" in refused["msg"] and "replace=true" in refused["msg"]
    assert marker.stat().st_mtime_ns == before

    # A stale pid file is worth a note, not a refusal.
    server.pid_file.write_text("999999\n")
    try:
        replaced = run_module("neo4j_restore", replace=True, **args)
    finally:
        server.pid_file.unlink()
    assert not replaced.failed, replaced
    assert replaced["replaced"] is True and replaced["store_ids"] == graph_backup["files"]["store_ids"]
    assert any("stale pid file" in note for note in replaced["notes"])
    assert not [p for p in server.data_dir.iterdir() if p.name.startswith(".lifeboat-")]

    # Into a new directory elsewhere (no Neo4j there: no probe), with the image's ownership.
    elsewhere = tmp_path / "restored" / "data"
    copy = run_module("neo4j_restore", data_dir=str(elsewhere), bolt_address="", pid_file=str(tmp_path / "none.pid"), **args)
    assert not copy.failed, copy
    assert copy["store_ids"] == graph_backup["files"]["store_ids"]
    if is_root():
        assert (elsewhere / "databases" / "neo4j" / "neostore").stat().st_uid == server.account.pw_uid
    assert sorted(os.listdir(elsewhere / "databases")) == sorted(os.listdir(server.data_dir / "databases"))


@pytest.mark.fault("wrong key", "neo4j_restore given a wrong passphrase", item="18.2")
def test_wrong_passphrase_leaves_the_data_directory_alone(graph_backup, tmp_path, fault):
    server = halted(graph_backup["server"])
    target = tmp_path / "data"
    args = {"data_dir": str(target), "home": str(server.home), "bolt_address": ""}
    result = run_module("neo4j_restore", image=graph_backup["image"], passphrase="not the passphrase", **args)
    fault.observe(false_success=not result.failed, data_lost=target.exists())
    fault.scan([PASSPHRASE, "not the passphrase"], result)
    assert result.failed and "passphrase" in result["msg"]
    assert not target.exists()


def tree_state(path):
    """Every path under ``path`` with its type, size and modification time."""
    return {str(p.relative_to(path)): (p.is_dir(), p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(path.rglob("*"))}


def test_backup_and_restore_playbooks_with_a_neo4j_component(graph_backup, tmp_path):
    """playbooks/backup.yml, drill.yml and restore.yml with a profile holding a neo4j component
    of each method (files, neo4j-admin dump)."""
    server = halted(graph_backup["server"])
    (tmp_path / "dest").mkdir()
    component = {"name": "graph", "kind": "neo4j", "home": str(server.home)}
    if is_root():
        component.update(owner=NEO4J_ACCOUNT, owner_group=NEO4J_ACCOUNT)
    dump_component = {"name": "graph-dump", "kind": "neo4j", "method": "dump", "home": str(server.home)}
    node = {
        "ansible_connection": "local",
        "backup_destination": str(tmp_path / "dest"),
        "backup_state_dir": str(tmp_path / "state"),
        "backup_facts_dir": str(tmp_path / "facts"),
        "backup_passphrase": PASSPHRASE,
        "backup_work_factor": 12,
        "backup_profile": {"name": "graph", "platform": {"name": "graph", "version": "1"}, "components": [component, dump_component], "checks": []},
    }
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"node1": node}}}))

    backup = run_playbook((ROOT / "playbooks" / "backup.yml").read_text(), tmp_path, inventory=str(inventory))
    assert backup.returncode == 0, backup.stdout[-4000:]
    (image,) = (tmp_path / "dest").glob("*.zip")
    with zipfile.ZipFile(image) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["consistency"]["graph"] == manifest["consistency"]["graph-dump"] == {"store_ids": graph_backup["files"]["store_ids"]}
    assert manifest["components"]["graph-dump"]["details"]["method"] == "dump"

    # A drill of that image (#17): the store files (graph), the dumps loaded by the node's own
    # neo4j-admin with a neo4j.conf of the sandbox's own (graph-dump), into a sandbox; store ids
    # and counts compared. Nothing of the installation (its home, data, conf) is written.
    production = tree_state(server.home)
    sandboxes = tmp_path / "sandboxes"
    sandboxes.mkdir()
    drill_vars = {"drill_dir": str(sandboxes), "drill_report_dir": str(tmp_path / "reports")}
    drill = run_playbook((ROOT / "playbooks" / "drill.yml").read_text(), tmp_path, inventory=str(inventory), extra_vars=drill_vars)
    assert drill.returncode == 0, drill.stdout[-4000:]
    (report,) = (tmp_path / "reports").glob("*.json")
    entries = {e["name"]: e for e in json.loads(report.read_text())["nodes"]["node1"]["components"]}
    graph = {"nodes": graph_backup["expected"]["nodes"], "relationships": graph_backup["expected"]["relationships"]}
    for name, method in (("graph", "files"), ("graph-dump", "dump")):
        entry = entries[name]
        assert entry["result"] == "passed" and entry["details"]["method"] == method and entry["details"]["graphs"]["neo4j"] == graph, entry
        assert entry["details"]["store_ids"] == graph_backup["files"]["store_ids"] and entry["seconds"] > 0, entry
    assert re.search(r"node1\s+graph-dump\s+neo4j\s+passed\s+\S+s\s+\S+\s+store ids equal; neo4j: \d+ nodes", drill.stdout), drill.stdout[-3000:]
    assert tree_state(server.home) == production, "the drill wrote into the Neo4j installation"
    assert not list(sandboxes.iterdir())

    # A damaged dump member fails the drill, naming it; nothing is loaded.
    damaged = flip_byte(image, "graph-dump/neo4j.dump.zst.age", tmp_path / "damaged.zip")
    drill_vars.update(drill_image=str(damaged), drill_report_dir=str(tmp_path / "damaged-reports"))
    failed = run_playbook((ROOT / "playbooks" / "drill.yml").read_text(), tmp_path, inventory=str(inventory), extra_vars=drill_vars)
    assert failed.returncode != 0, failed.stdout[-4000:]
    (report,) = (tmp_path / "damaged-reports").glob("*.json")
    result = json.loads(report.read_text())["nodes"]["node1"]
    assert result["verdict"] == "failed" and "graph-dump/neo4j.dump.zst.age" in result["reason"], result
    assert tree_state(server.home) == production and not list(sandboxes.iterdir())

    server.wipe_data()
    restore = run_playbook((ROOT / "playbooks" / "restore.yml").read_text(), tmp_path, inventory=str(inventory), extra_vars={"restore_components": ["graph"]})
    assert restore.returncode == 0, restore.stdout[-4000:]
    server.resume()
    assert snapshot(server) == graph_backup["expected"]


def test_restore_dump_into_another_data_directory_leaves_the_configured_one_alone(graph_backup, tmp_path):
    """data_dir other than the one neo4j.conf names: neo4j-admin loads there too (it reads
    its data directory from configuration only), and the configured server's store is not
    touched. Before, neo4j-admin loaded into the server's own data directory."""
    server = halted(graph_backup["server"])
    store = server.data_dir / "databases" / "neo4j" / "neostore"
    before = store.stat().st_mtime_ns
    elsewhere = tmp_path / "elsewhere"
    args = {"image": graph_backup["image"], "passphrase": PASSPHRASE, "home": str(server.home), "component": "neo4j-dump", "databases": ["neo4j"]}
    result = run_module("neo4j_restore", data_dir=str(elsewhere), **args)
    assert not result.failed, result
    assert result["data_dir"] == str(elsewhere) and result["databases"] == ["neo4j"]
    assert result["store_ids"] == {"neo4j": graph_backup["files"]["store_ids"]["neo4j"]}
    assert (elsewhere / "databases" / "neo4j" / "neostore").is_file()
    assert store.stat().st_mtime_ns == before, "the configured server's store was written"
    # And the archive reads the directory it is given: a dump of it records the same store.
    (tmp_path / "images").mkdir()
    session = start_session(tmp_path / "images", tmp_path / "state")
    dumped = run_module("neo4j_archive", session=session, home=str(server.home), data_dir=str(elsewhere), method="dump", name="neo4j-dump", databases=["neo4j"])
    assert not dumped.failed, dumped
    assert dumped["store_ids"] == {"neo4j": graph_backup["files"]["store_ids"]["neo4j"]}
