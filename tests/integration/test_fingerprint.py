"""Content fingerprints (#17): taken at backup time by the component modules, compared after
a restore by postgresql_fingerprint / elasticsearch_fingerprint and neo4j_restore."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _fingerprint
from tests.harness.servers import PostgresServer
from tests.support.modules import run_module


@pytest.fixture(scope="module")
def age_key():
    return _age.generate_identity()


@pytest.fixture(scope="module")
def target_cluster():
    with PostgresServer() as server:
        yield server


def pg_conn(server):
    return {"login_host": server.host, "port": server.port, "login_password": server.password}


def manifest(image):
    with zipfile.ZipFile(image) as archive:
        return json.loads(archive.read("manifest.json"))


def backup(tmp_path, recipient, module, **args):
    """A session with one component module run in it; the sealed image's path."""
    (tmp_path / "dest").mkdir(exist_ok=True)
    where = dict(destination=str(tmp_path / "dest"), state_dir=str(tmp_path / "state"))
    started = run_module("backup_session", state="started", recipients=[recipient], node="n1", **where)
    assert not started.failed, started
    ran = run_module(module, session=started["session"]["work_dir"], **args)
    assert not ran.failed, ran
    sealed = run_module("backup_session", state="sealed", session=started["session"]["work_dir"])
    assert sealed["verdict"] == "success", sealed
    return sealed["image"]


def fill(db):
    db.psql(
        """CREATE TABLE entity (id serial PRIMARY KEY, title text, score float8, seen timestamptz, tags text[], doc jsonb, raw bytea, price money);
        INSERT INTO entity (title, score, seen, tags, doc, raw, price)
          SELECT 'entity ' || g, g / 3.0, '2026-01-01'::timestamptz + g * interval '1 minute', ARRAY['a', 'ü'],
                 jsonb_build_object('n', g), decode(md5(g::text), 'hex'), g * 1.5 FROM generate_series(1, 3000) g;
        CREATE TABLE big (id int PRIMARY KEY, payload text);
        INSERT INTO big SELECT g, repeat('x', 200) || g FROM generate_series(1, 20000) g;
        CREATE TABLE heap_only (v text);
        INSERT INTO heap_only SELECT 'row ' || g || repeat('y', 200) FROM generate_series(1, 20000) g;
        CREATE SEQUENCE invoice_no;
        SELECT nextval('invoice_no') FROM generate_series(1, 42);
        SELECT lo_from_bytea(0, 'a large object');"""
    )


def test_postgresql_fingerprint_round_trip_and_every_difference_named(pg_database, target_cluster, age_key, tmp_path):
    identity, recipient = age_key
    fill(pg_database)
    name = pg_database.name
    # big (about 5 MB) is above the limit: sampled by primary key; heap_only has no key: counted.
    image = backup(tmp_path, recipient, "postgresql_dump", databases=[name], globals=False, fingerprint_max_bytes=1024 * 1024, **pg_conn(pg_database.server))
    component = manifest(image)["components"]["postgresql"]
    details = component["details"]
    db = details["databases"][0]
    assert db["fingerprint"]["tables"] == 3 and db["fingerprint"]["rows"] == 43000
    assert db["fingerprint"]["sampled"] == ["public.big"] and db["fingerprint"]["counts_only"] == ["public.heap_only"]
    assert ["public", "entity", 3000] in db["row_counts"], "the manifest carries the counts (verify_counts works by default)"
    member = details["fingerprint"]["member"]
    assert member.startswith("postgresql/fingerprint.json") and member.endswith(".age"), "digests are encrypted"
    assert "digest" not in json.dumps(component), "no digest in the plaintext manifest"

    restored = run_module("postgresql_restore", image=image, identity=identity, verify_counts=True, **pg_conn(target_cluster))
    assert not restored.failed, restored
    compared = run_module("postgresql_fingerprint", image=image, identity=identity, **pg_conn(target_cluster))
    assert not compared.failed, compared
    entry = compared["databases"][0]
    assert compared["equal"] and entry["digests"] == 1 and entry["samples"] == 1 and entry["counts"] == 1 and entry["sequences"] == 2

    target = target_cluster
    target.psql("UPDATE entity SET title = 'changed' WHERE id = 17", dbname=name)
    target.psql("DELETE FROM heap_only WHERE v LIKE 'row 5y%'", dbname=name)
    target.psql("SELECT setval('invoice_no', 3)", dbname=name)
    changed = run_module("postgresql_fingerprint", image=image, identity=identity, **pg_conn(target))
    assert changed.failed and not changed["equal"]
    assert changed["differences"] == [
        f"{name}: table public.entity: row contents differ from the backup (same row count 3000)",
        f"{name}: table public.heap_only has 19999 rows, 20000 at backup time",
        f"{name}: sequence public.invoice_no is at 3, below 42 recorded before the dump",
    ], changed["differences"]
    assert "public.entity" in changed["msg"]

    # A change in a sampled row is found only when it falls in the sample: change them all.
    target.psql("UPDATE entity SET title = 'entity 17' WHERE id = 17", dbname=name)
    target.psql("INSERT INTO heap_only VALUES ('row 5' || repeat('y', 200)); SELECT setval('invoice_no', 42)", dbname=name)
    target.psql("UPDATE big SET payload = payload || '!'", dbname=name)
    sampled = run_module("postgresql_fingerprint", image=image, identity=identity, **pg_conn(target))
    assert sampled["differences"] == [f"{name}: table public.big: sampled rows differ from the backup (same row count 20000)"]

    renamed = run_module("postgresql_fingerprint", image=image, identity=identity, rename={name: "nowhere"}, **pg_conn(target))
    assert renamed.failed and "nowhere: cannot be read" in renamed["differences"][0]
    wrong = run_module("postgresql_fingerprint", image=image, identity=identity, databases=["other"], **pg_conn(target))
    assert wrong.failed and wrong["msg"].startswith("databases: other not in the fingerprint")
    target.psql(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_fingerprint_none_and_its_refusal(pg_database, age_key, tmp_path):
    identity, recipient = age_key
    pg_database.psql("CREATE TABLE t AS SELECT 1 AS x")
    image = backup(tmp_path, recipient, "postgresql_dump", databases=[pg_database.name], globals=False, fingerprint="none", **pg_conn(pg_database.server))
    details = manifest(image)["components"]["postgresql"]["details"]
    assert "fingerprint" not in details and "row_counts" not in details["databases"][0]
    refused = run_module("postgresql_fingerprint", image=image, identity=identity, **pg_conn(pg_database.server))
    assert refused.failed and "has no fingerprint" in refused["msg"] and "fingerprint=none" in refused["msg"]


def test_neo4j_store_counts_match_cypher(neo4j_server):
    neo4j_server.query("MATCH (n) DETACH DELETE n")
    neo4j_server.query("UNWIND range(1, 300) AS i CREATE (:Item {n: i})")
    neo4j_server.query("MATCH (a:Item), (b:Item) WHERE b.n = a.n + 1 AND a.n <= 120 CREATE (a)-[:NEXT]->(b)")
    neo4j_server.query("MATCH (a:Item) WHERE a.n > 290 DETACH DELETE a")
    nodes = neo4j_server.query("MATCH (n) RETURN count(n) AS c")[0]["c"]
    relationships = neo4j_server.query("MATCH ()-[r]->() RETURN count(r) AS c")[0]["c"]
    neo4j_server.halt()
    counts = _fingerprint.neo4j_counts(str(Path(neo4j_server.data_dir) / "databases" / "neo4j"))
    assert counts == {"nodes": nodes, "relationships": relationships} == {"nodes": 290, "relationships": 120}


def test_search_fingerprint_round_trip_sample_and_differences(search_server, namespace, tmp_path):
    from tests.support.search import PASSPHRASE, conn, make_indices, register, seal, start_session  # noqa: PLC0415

    es = search_server
    indices, alias = make_indices(es, namespace, {"small": 60, "large": 250}, shards=1)
    repository = f"{namespace}-repo"
    register(es, repository, es.repo_dir / namespace)
    work_dir = start_session(tmp_path)
    taken = run_module(
        "elasticsearch_snapshot",
        repository=repository,
        indices=[f"{namespace}-*"],
        session=work_dir,
        fingerprint_max_docs=100,
        fingerprint_sample=20,
        **conn(es),
    )
    assert taken.rc == 0, taken
    image = seal(work_dir)["image"]
    summary = manifest(image)["components"]["elasticsearch"]["details"]["fingerprint"]
    assert summary["stable"] and summary["indices"] == {
        f"{namespace}-small": {"docs": 60, "method": "full", "aliases": [alias]},
        f"{namespace}-large": {"docs": 250, "method": "sample", "aliases": [alias]},
    }
    assert summary["member"] in taken["members"]

    compare = dict(image=image, passphrase=PASSPHRASE, **conn(es))
    same = run_module("elasticsearch_fingerprint", **compare)
    assert same.rc == 0 and same["equal"] and same["stable"], same

    es.request("POST", f"/{namespace}-small/_doc/5", params={"refresh": "true"}, json={"n": 5, "changed": True})
    es.request("DELETE", f"/{namespace}-large/_doc/3", params={"refresh": "true"})
    es.request("POST", "/_aliases", json={"actions": [{"remove": {"index": f"{namespace}-small", "alias": alias}}]})
    changed = run_module("elasticsearch_fingerprint", **compare)
    assert changed.failed and not changed["equal"]
    assert changed["differences"] == [
        f"index {namespace}-large has 249 documents, 250 at backup time",
        f"index {namespace}-large: 1 of 20 sampled documents differ or are missing (first: 3)",
        f"index {namespace}-small has aliases none, ['{alias}'] at backup time",
        f"index {namespace}-small: document contents differ from the backup (same count 60)",
    ], changed["differences"]
    es.request("DELETE", f"/{namespace}-small")
    gone = run_module("elasticsearch_fingerprint", indices=[f"{namespace}-small"], **compare)
    assert gone["differences"] == [f"index {namespace}-small is missing"]
