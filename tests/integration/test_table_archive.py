"""Table archiving (issue #16) against real PostgreSQL 15 servers from the harness.

A transaction-manager-like pair of tables (raw_data, keyed by recordid, with a TIMESTAMP in
epoch milliseconds, and init_table, one row per session, linked by sessionid) is archived in
batches, verified, and restored into other tables; content is compared row for row. The
tamper cases of the issue are each detected and named by table_archive_verify and by the
standalone verifier (run under the system Python, which has cryptography and no Ansible).
Crash cases kill the module (SIGKILL) before the commit and during the delete, or stop the
server mid-run; the next run must leave every row exactly once, in the table or in a
committed segment. Rows inserted while a run archives are neither lost nor archived twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible_collections.lifeboat.backup.plugins.module_utils import _age
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_segment as fmt
from tests.harness.servers import PostgresServer
from tests.support.modules import run_module, run_playbook, spawn_module

ROOT = Path(__file__).resolve().parents[2]
VERIFIER = ROOT / "plugins" / "module_utils" / "_table_segment.py"
DAY_MS = 86_400_000


# ---- fixtures and helpers -------------------------------------------------------------------------


def _signing_key():
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return pem, fmt.public_key_text(key)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    pem, public = _signing_key()
    other_pem, other_public = _signing_key()
    identity, recipient = _age.generate_identity()
    directory = tmp_path_factory.mktemp("keys")
    identity_file = directory / "identity.txt"
    identity_file.write_text(identity + "\n")
    identity_file.chmod(0o600)
    return SimpleNamespace(pem=pem, public=public, other_pem=other_pem, other_public=other_public, recipient=recipient, identity_file=str(identity_file))


class Platform:
    """A database with the transaction manager's raw_data and init_table, and archive locations."""

    def __init__(self, server, dbname, root, keys):
        self.server = server
        self.dbname = dbname
        self.root = Path(root)
        self.keys = keys
        self.locations = []
        for name in ("primary", "offsite"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
            self.locations.append({"name": name, "type": "local", "path": str(self.root / name)})

    def sql(self, text):
        return self.server.psql(text, dbname=self.dbname)

    def conn(self):
        return {"login_host": self.server.host, "port": self.server.port, "login_password": self.server.password, "login_db": self.dbname}

    def table(self, **extra):
        spec = {
            "name": "public.raw_data",
            "key": ["recordid"],
            "time_column": "timestamp",
            "time_unit": "epoch_ms",
            "older_than": "30 days",
            "batch_rows": 500,
            "children": [{"name": "public.init_table", "link": ["sessionid"]}],
        }
        spec.update(extra)
        return spec

    def archive(self, check=False, env=None, **extra):
        options = {"targets": self.locations, "signing_key": self.keys.pem, "recipients": [self.keys.recipient], "max_batches": 0}
        options["tables"] = [self.table(**extra.pop("table", {}))]
        options.update(extra)
        return run_module("table_archive", check=check, env=env, **self.conn(), **options)

    def checkpoint(self, **extra):
        return run_module("table_checkpoint", **self.conn(), targets=self.locations, signing_key=self.keys.pem, tables=[self.table()], settle=0, **extra)

    def verify(self, locations=None, **extra):
        options = {"tables": [self.table()], "public_keys": [self.keys.public], "fail_on_problems": False}
        options.update(extra)
        return run_module("table_archive_verify", **self.conn(), targets=locations or self.locations, **options)

    @property
    def chain(self):
        return "%s.public.raw_data" % self.dbname

    def chain_dir(self, location="primary"):
        return self.root / location / self.chain

    def count(self, table="raw_data", where="true"):
        return int(self.sql("SELECT count(*) FROM %s WHERE %s" % (table, where)))


def create_tables(platform, rows, young=100, start_days=400):
    """raw_data with ``rows`` old rows (one per second from ``start_days`` ago) and ``young``
    rows of today; a session every 100 rows, its init record in init_table. Values carry the
    characters COPY escapes (tab, newline, backslash), non-ASCII text, NULLs and bytes."""
    platform.sql(
        """
        CREATE TABLE raw_data (
            sessionid bigint NOT NULL, logconnectionid int NOT NULL, recordid bigserial PRIMARY KEY, msgid varchar(120), doctype varchar(120) NOT NULL,
            input int NOT NULL, "timestamp" bigint NOT NULL, rawdata text NOT NULL, digestofrecord bytea);
        CREATE INDEX raw_data_session ON raw_data (sessionid);
        CREATE TABLE init_table (
            sessionid bigint PRIMARY KEY, "timestamp" bigint NOT NULL, n_connections int NOT NULL, sigdata bytea NOT NULL, servercertissuerdn text);
        """
    )
    insert_rows(platform, 1, rows, "(extract(epoch FROM now() - interval '%d days') * 1000)::bigint + i * 1000" % start_days)
    insert_rows(platform, rows + 1, rows + young, "(extract(epoch FROM now()) * 1000)::bigint")
    platform.sql(
        """INSERT INTO init_table SELECT sessionid, min("timestamp"), 10, sha256(sessionid::text::bytea), 'CN=Co-ordinator ' || sessionid
           FROM raw_data GROUP BY sessionid"""
    )
    platform.sql("ANALYZE raw_data; ANALYZE init_table")


def insert_rows(platform, first, last, timestamp_sql):
    platform.sql(
        """INSERT INTO raw_data (recordid, sessionid, logconnectionid, msgid, doctype, input, "timestamp", rawdata, digestofrecord)
           SELECT i, i / 100, i %% 10, CASE WHEN i %% 7 = 0 THEN NULL ELSE 'msg-' || i END, 'PAY', i %% 2, %s,
                  CASE WHEN i %% 50 = 0 THEN E'tab\\there\\nnew line \\\\ backslash é ü 😀 ' || i ELSE repeat(md5(i::text), 4) END,
                  CASE WHEN i %% 3 = 0 THEN NULL ELSE sha256(i::text::bytea) END
           FROM generate_series(%d, %d) i;
           SELECT setval('raw_data_recordid_seq', %d)"""
        % (timestamp_sql, first, last, last)
    )


def checksum(platform, select):
    """Count and an order-independent checksum of the rows of ``select``."""
    return platform.sql("SELECT count(*), coalesce(sum(hashtextextended(t::text, 7)), 0) FROM (%s) t" % select)


def run_verifier(*args, python="/usr/bin/python3"):
    """The standalone verifier, under the system Python (cryptography, no Ansible), isolated."""
    return subprocess.run([python, "-I", str(VERIFIER), *args], capture_output=True, text=True, timeout=300, check=False)


def kinds(result):
    return sorted({p["kind"] for p in result["problems"]})


@pytest.fixture
def platform(pg_database, keys, tmp_path):
    return Platform(pg_database.server, pg_database.name, tmp_path / "archive", keys)


# ---- a million rows -------------------------------------------------------------------------------


def test_million_rows_archive_verify_restore(platform, keys):
    """1,000,000 old rows and their init records: archived in four batches, verified,
    restored into other tables, content equal row for row."""
    create_tables(platform, 1_000_000, young=1000)
    platform.sql("CREATE TABLE expected_raw AS SELECT * FROM raw_data WHERE recordid <= 1000000; CREATE TABLE expected_init AS SELECT * FROM init_table")
    young_sessions = int(platform.sql("SELECT count(DISTINCT sessionid) FROM raw_data WHERE recordid > 1000000"))

    planned = platform.archive(check=True, table={"batch_rows": 250_000})
    assert not planned.failed, planned
    assert planned["tables"][0]["would_move"]["rows"] == 1_000_000 and planned["tables"][0]["would_move"]["segments"] == 4
    assert platform.count() == 1_001_000 and not planned["changed"]

    temp_files = "SELECT temp_files || ' ' || temp_bytes FROM pg_stat_database WHERE datname = current_database()"
    temp_before = platform.sql(temp_files)
    started = time.monotonic()
    result = platform.archive(table={"batch_rows": 250_000})
    archive_seconds = time.monotonic() - started
    assert not result.failed, result
    # The rows leave the server only through the COPY: no plaintext copy of a batch (75 MB,
    # far over work_mem) in the server's temporary files on the way.
    assert platform.sql(temp_files) == temp_before, (temp_before, platform.sql(temp_files))
    table = result["tables"][0]
    assert (result["rows"], result["segments"]) == (1_000_000, 4)
    assert [s["rows"] for s in table["segments"]] == [250_000] * 4
    assert table["segments"][0]["first_key"] == ["1"] and table["segments"][-1]["last_key"] == ["1000000"]
    assert platform.count() == 1000 and platform.count("init_table") == young_sessions
    assert table["child_rows"]["public.init_table"] == int(platform.sql("SELECT count(*) FROM expected_init")) - young_sessions

    verified = platform.verify()
    assert verified["valid"], verified["report"]
    report = "\n".join(verified["report"])
    assert "with 4 segments, 1,000,000 records, keys 1 to 1,000,000" in report
    assert "Orphan chain from table public.raw_data, startpoint 1,000,001, endpoint 1,001,000 is valid" in report
    assert "Checked table public.raw_data with total 1,001,000 records (1,000,000 archived in 4 segments, 1,000 live)" in report

    restored = run_module(
        "table_archive_restore",
        **platform.conn(),
        targets=platform.locations,
        chain=platform.chain,
        public_keys=[keys.public],
        identity_file=keys.identity_file,
        target="investigation.raw_data",
        child_targets={"public.init_table": "investigation.init_table"},
        create_target=True,
    )
    assert not restored.failed, restored
    assert restored["segments"] == [1, 2, 3, 4] and restored["tables"][0]["rows_restored"] == 1_000_000
    assert checksum(platform, "SELECT * FROM investigation.raw_data") == checksum(platform, "SELECT * FROM expected_raw")
    assert checksum(platform, "SELECT * FROM investigation.init_table") == checksum(
        platform, "SELECT * FROM expected_init WHERE sessionid NOT IN (SELECT sessionid FROM raw_data)"
    )
    print("archived 1,000,000 rows in %.1f s" % archive_seconds)


# ---- tampering ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tamper_base(server_pool, keys, tmp_path_factory):
    """One archive to tamper with copies of: 3,000 old rows in six segments, 100 live rows and
    a checkpoint of them. Each test tampers with its own copy of the locations."""
    server = server_pool.get(("postgresql", "15"), lambda: PostgresServer(version="15"))
    name = "tamper%d" % os.getpid()
    server.psql('CREATE DATABASE "%s"' % name)
    platform = Platform(server, name, tmp_path_factory.mktemp("tamper"), keys)
    create_tables(platform, 3000, young=100)
    archived = platform.archive()
    assert not archived.failed and archived["segments"] == 6, archived
    checkpointed = platform.checkpoint()
    assert not checkpointed.failed and checkpointed["tables"][0]["checkpoint"]["rows"] == 100, checkpointed
    # A second chain in the same locations, to take a foreign segment from.
    platform.sql(
        "CREATE TABLE audit (id bigserial PRIMARY KEY, at timestamptz NOT NULL, what text); "
        "INSERT INTO audit (at, what) SELECT now() - interval '2 years' + i * interval '1 hour', 'event ' || i FROM generate_series(1, 600) i"
    )
    audit = platform.archive(tables=[{"name": "public.audit", "time_column": "at", "older_than": "1 year", "batch_rows": 300}])
    assert not audit.failed and audit["segments"] == 2, audit
    yield platform
    server.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


@pytest.fixture
def tampered(tamper_base, tmp_path):
    """A copy of the base archive's primary location: (platform, chain directory, locations)."""
    copy = tmp_path / "primary"
    shutil.copytree(tamper_base.root / "primary", copy)
    return tamper_base, copy / tamper_base.chain, [{"name": "copy", "type": "local", "path": str(copy)}]


def flip_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def resign(path, pem, change=None):
    """Re-sign an entry with another key (after ``change(entry)``), as a forger without the key would."""
    document = json.loads(path.read_text())
    entry = document["entry"]
    if change:
        change(entry)
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    entry["signer"] = fmt.public_key_text(key)
    path.write_bytes(fmt.encode(fmt.sign(entry, key)))


def tamper_payload_byte(chain, platform):
    flip_byte(chain / "00000003.sql.zst.age")
    return "payload_altered", "segment 3"


def tamper_entry_byte(chain, platform):
    path = chain / "00000004.json"
    path.write_text(path.read_text().replace('"rows": 500', '"rows": 499', 1))
    return "signature_invalid", "00000004.json"


def tamper_remove_segment(chain, platform):
    (chain / "00000002.json").unlink()
    (chain / "00000002.sql.zst.age").unlink()
    return "segment_missing", "entry 2 is missing"


def tamper_swap_segments(chain, platform):
    for suffix in (".json", ".sql.zst.age"):
        a, b = chain / ("00000002" + suffix), chain / ("00000003" + suffix)
        a.rename(chain / "swap")
        b.rename(a)
        (chain / "swap").rename(b)
    return "out_of_order", "00000002.json holds entry 3"


def tamper_foreign_segment(chain, platform):
    source = chain.parent / ("%s.public.audit" % platform.dbname)
    shutil.copy(source / "00000001.json", chain / "00000008.json")
    shutil.copy(source / "00000001.sql.zst.age", chain / "00000008.sql.zst.age")
    return "foreign_entry", "00000008.json belongs to chain %s.public.audit" % platform.dbname


def tamper_other_key(chain, platform):
    resign(chain / "00000005.json", platform.keys.other_pem)
    return "unknown_signing_key", "00000005.json is signed with %s" % platform.keys.other_public


def tamper_truncate_tail(chain, platform):
    (chain / "00000007.json").unlink()  # the checkpoint, the chain's last entry
    return "head_missing", "entries were removed from its end"


TAMPERS = [tamper_payload_byte, tamper_entry_byte, tamper_remove_segment, tamper_swap_segments, tamper_foreign_segment, tamper_other_key, tamper_truncate_tail]


@pytest.mark.fault("corrupt member", "an archived table's chain tampered with (one per case): table_archive_verify finds and names it, online and offline")
@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.__name__[len("tamper_") :] for t in TAMPERS])
def test_tampered_archive_is_detected_and_named(tampered, tamper, fault):
    platform, chain, locations = tampered
    kind, words = tamper(chain, platform)
    found = platform.verify(locations=locations)
    fault.observe(false_success=bool(found.get("valid")))
    assert not found.failed, found
    assert not found["valid"] and kind in kinds(found), found["report"]
    assert any(words in p["message"] for p in found["problems"] if p["kind"] == kind), found["problems"]
    assert any(line.startswith("PROBLEM [%s]" % kind) for line in found["report"]), found["report"]
    # The task fails by default, naming the problem.
    failing = platform.verify(locations=locations, fail_on_problems=True)
    fault.observe(false_success=not failing.failed)
    assert failing.failed and kind in failing["msg"] and failing["problems"]
    if kind != "head_missing":  # only the database knows where the chain ended
        offline = run_verifier("--public-key", platform.keys.public, "--json", str(chain))
        fault.observe(false_success=offline.returncode == 0)
        assert offline.returncode == 1, offline.stderr
        assert kind in {p["kind"] for p in json.loads(offline.stdout)["problems"]}, offline.stdout


def test_untampered_archive_verifies_offline_and_online(tamper_base):
    platform = tamper_base
    found = platform.verify(level="full", identity_file=platform.keys.identity_file)
    assert not found.failed and found["valid"], found["report"]
    text = "\n".join(found["report"])
    assert "with 6 segments, 3,000 records, keys 1 to 3,000" in text
    assert "Orphan chain from table public.raw_data, startpoint 3,001, endpoint 3,100 is valid" in text
    assert "Checkpoint 7: 100 records when recorded; now 0 archived since and 100 live: matches" in text
    assert all(s["payload_status"] == "rows recounted" for s in found["chains"][0]["segments"])
    # Offline: every chain of the location, with the stock age and zstd recounting the rows.
    offline = run_verifier("--public-key", platform.keys.public, "--identity", platform.keys.identity_file, str(platform.root / "primary"))
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "Result: valid - no problem found" in offline.stdout and "payload rows recounted" in offline.stdout
    wrong_key = run_verifier("--public-key", platform.keys.other_public, str(platform.root / "primary"))
    assert wrong_key.returncode == 1 and "unknown_signing_key" in wrong_key.stdout


@pytest.mark.parametrize("change", ["delete", "update"])
def test_live_rows_changed_below_a_checkpoint(tamper_base, change):
    platform = tamper_base
    statement = {"delete": "DELETE FROM raw_data WHERE recordid = 3050", "update": "UPDATE raw_data SET rawdata = 'forged' WHERE recordid = 3050"}[change]
    platform.sql("CREATE TABLE saved AS SELECT * FROM raw_data WHERE recordid = 3050")
    try:
        platform.sql(statement)
        found = platform.verify()
    finally:
        platform.sql("DELETE FROM raw_data WHERE recordid = 3050; INSERT INTO raw_data SELECT * FROM saved; DROP TABLE saved")
    words = {"delete": "1 rows deleted", "update": "rows altered"}[change]
    assert "checkpoint_mismatch" in kinds(found), found["report"]
    assert any(words in p["message"] for p in found["problems"]), found["problems"]
    assert any(line.startswith("Orphan chain from table public.raw_data") and "is NOT valid" in line for line in found["report"]), found["report"]
    assert platform.verify()["valid"]


# ---- crashes -------------------------------------------------------------------------------------------


def wait_for(path, proc=None, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError("the module ended before reaching the hold point: %s" % (proc.communicate()[1][-2000:],))
        assert time.monotonic() < deadline, "the module never reached %s" % path
        time.sleep(0.05)


def spawn_archive(platform, point, flag, **extra):
    options = {"tables": [platform.table(**extra.pop("table", {}))], "spool_dir": str(platform.root)}
    options.update(extra)
    return spawn_module(
        "table_archive",
        env={"LIFEBOAT_TEST_HOLD": "%s:%s" % (point, flag)},
        **platform.conn(),
        targets=platform.locations,
        signing_key=platform.keys.pem,
        recipients=[platform.keys.recipient],
        **options,
    )


def assert_every_row_once(platform, expected_rows):
    """Every row of ``expected`` (a snapshot taken before archiving) is exactly once in the
    table or in a committed segment, with the same content."""
    verified = platform.verify(level="full", identity_file=platform.keys.identity_file)
    assert verified["valid"], verified["report"]
    platform.sql("DROP SCHEMA IF EXISTS back CASCADE")
    restored = run_module(
        "table_archive_restore",
        **platform.conn(),
        targets=platform.locations,
        chain=platform.chain,
        public_keys=[platform.keys.public],
        identity_file=platform.keys.identity_file,
        target="back.raw_data",
        child_targets={"public.init_table": "back.init_table"},
        create_target=True,
    )
    assert not restored.failed, restored
    both = "SELECT * FROM back.raw_data UNION ALL SELECT * FROM raw_data"
    assert platform.sql("SELECT count(*) - count(DISTINCT recordid) FROM (%s) t" % both) == "0", "rows archived and still in the table"
    assert checksum(platform, both) == checksum(platform, "SELECT * FROM expected"), "rows lost or changed"
    assert int(platform.sql("SELECT count(*) FROM (%s) t" % both)) == expected_rows
    init_both = "SELECT * FROM back.init_table UNION ALL SELECT * FROM init_table"
    assert checksum(platform, init_both) == checksum(platform, "SELECT * FROM expected_init")


def crash_setup(platform):
    create_tables(platform, 3000, young=100)
    platform.sql("CREATE TABLE expected AS SELECT * FROM raw_data; CREATE TABLE expected_init AS SELECT * FROM init_table")
    first = platform.archive(max_batches=2)
    assert not first.failed and first["segments"] == 2, first


@pytest.mark.fault("killed process", "table_archive killed (SIGKILL) after writing a segment, before COMMIT")
def test_killed_after_writing_before_commit(platform, tmp_path, fault):
    """kill -9 once segment 3 is written, synced and read back everywhere, before COMMIT:
    its rows are still in the table; the next run removes the uncommitted segment and
    archives them again."""
    crash_setup(platform)
    flag = tmp_path / "held"
    running = spawn_archive(platform, "before_commit", flag)
    wait_for(flag, running.proc)
    running.kill()
    for location in ("primary", "offsite"):
        assert (platform.chain_dir(location) / "00000003.json").exists()
    assert platform.count(where="recordid BETWEEN 1001 AND 1500") == 500, "rows of the uncommitted segment must still be there"
    interrupted = platform.verify()
    fault.observe(false_success=kinds(interrupted) == [], data_lost=platform.count(where="recordid BETWEEN 1001 AND 1500") != 500)
    assert kinds(interrupted) == ["uncommitted_entry"], interrupted["report"]
    again = platform.archive()
    assert not again.failed, again
    undone = [r for r in again["tables"][0]["recovered"] if r["action"] == "undone"]
    assert {(r["location"], r["file"]) for r in undone} >= {("primary", "00000003.json"), ("offsite", "00000003.json"), ("primary", "00000003.sql.zst.age")}
    fault.observe(data_lost=again.failed or again["rows"] != 2000 or platform.count() != 100)
    assert again["rows"] == 2000 and platform.count() == 100
    assert_every_row_once(platform, 3100)


@pytest.mark.fault("killed process", "table_archive killed (SIGKILL) while COPY (DELETE ...) streams a segment")
def test_killed_during_the_delete(platform, tmp_path, fault):
    """kill -9 while COPY (DELETE ...) streams segment 3: the server rolls the delete back."""
    crash_setup(platform)
    flag = tmp_path / "held"
    running = spawn_archive(platform, "mid_copy", flag)
    wait_for(flag, running.proc)
    assert any(n.startswith("lifeboat-spool-") for n in os.listdir(platform.root)), "the segment is being spooled"
    running.kill()
    time.sleep(0.5)  # the server notices the closed connection and rolls back
    fault.observe(data_lost=platform.count(where="recordid BETWEEN 1001 AND 1500") != 500)
    assert platform.count(where="recordid BETWEEN 1001 AND 1500") == 500
    assert not (platform.chain_dir() / "00000003.json").exists()
    again = platform.archive(spool_dir=str(platform.root))
    assert not again.failed and again["rows"] == 2000, again
    assert any(r["action"] == "removed" for r in again["tables"][0]["recovered"]), "the killed run's spool file is removed"
    assert not any(n.startswith("lifeboat-spool-") for n in os.listdir(platform.root))
    assert_every_row_once(platform, 3100)


@pytest.mark.fault("server down", "PostgreSQL stops (fast shutdown) while table_archive has a batch in flight")
@pytest.mark.parametrize("point", ["mid_copy", "before_commit"])
def test_server_stopped_mid_run(keys, tmp_path, point, fault):
    """The database server stops (fast shutdown) while a batch is in flight: the run fails
    saying so; once the server is back, the next run finishes, every row exactly once."""
    with PostgresServer() as server:
        server.psql('CREATE DATABASE "crash"')
        platform = Platform(server, "crash", tmp_path / "archive", keys)
        crash_setup(platform)
        flag = tmp_path / "held"
        running = spawn_archive(platform, point, flag)
        wait_for(flag, running.proc)
        server.halt("fast")
        flag.unlink()
        failed = running.result()
        fault.observe(false_success=not failed.failed)
        fault.scan([server.password], failed)
        assert failed.failed and ("terminat" in failed["msg"] or "connection" in failed["msg"]), (failed, failed.stderr[-3000:])
        assert "2 segments" not in failed["msg"]
        server.resume()
        again = platform.archive()
        fault.observe(data_lost=again.failed or again["rows"] != 2000)
        assert not again.failed and again["rows"] == 2000, again
        assert_every_row_once(platform, 3100)


def test_rows_inserted_while_archiving(platform, tmp_path):
    """A writer keeps inserting old and new rows while the table is archived in 30 batches:
    each one ends up exactly once, in the table or in the archive."""
    create_tables(platform, 15_000, young=0)
    stop = threading.Event()
    inserted = []

    def writer():
        import psycopg

        with psycopg.connect(platform.server.dsn(platform.dbname), autocommit=True) as conn:
            while not stop.is_set():
                age = "400 days" if len(inserted) % 2 else "0 days"
                row = conn.execute(
                    'INSERT INTO raw_data (sessionid, logconnectionid, doctype, input, "timestamp", rawdata) '
                    "VALUES (100000 + %s, 0, 'PAY', 0, (extract(epoch FROM now() - %s::interval) * 1000)::bigint, 'concurrent') RETURNING recordid",
                    (len(inserted), age),
                ).fetchone()
                inserted.append(row[0])
                time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = platform.archive(table={"batch_rows": 500})
    finally:
        stop.set()
        thread.join()
    assert not result.failed, result
    assert len(inserted) > 50, "the writer ran during the archiving"
    platform.sql("CREATE TABLE expected AS SELECT * FROM raw_data WHERE false; CREATE TABLE expected_init AS SELECT * FROM init_table")
    again = platform.archive()
    assert not again.failed, again
    # Every id ever inserted is once in archive + table; old concurrent rows were archived by one run or the other.
    both = "SELECT recordid FROM back.raw_data UNION ALL SELECT recordid FROM raw_data"
    verified = platform.verify()
    assert verified["valid"], verified["report"]
    platform.sql("DROP SCHEMA IF EXISTS back CASCADE")
    restored = run_module(
        "table_archive_restore",
        **platform.conn(),
        targets=platform.locations,
        chain=platform.chain,
        identity_file=platform.keys.identity_file,
        target="back.raw_data",
        children=False,
        create_target=True,
    )
    assert not restored.failed, restored
    assert platform.sql("SELECT count(*) - count(DISTINCT recordid) FROM (%s) t" % both) == "0"
    ids = set(range(1, 15_001)) | set(inserted)
    found = {int(v) for v in platform.sql(both).split()}
    assert found == ids, "lost: %s; unexpected: %s" % (sorted(ids - found)[:10], sorted(found - ids)[:10])
    # The archive is the table's beginning in key order: it stops at the first young row.
    old = "\"timestamp\" < (extract(epoch FROM now() - interval '30 days') * 1000)::bigint"
    left = platform.sql("SELECT count(*) FROM raw_data WHERE %s AND recordid < (SELECT min(recordid) FROM raw_data WHERE NOT %s)" % (old, old))
    assert left == "0", "old rows left before the first young one"


# ---- the page of docs, as written ------------------------------------------------------------------------


DOC = ROOT / "docs" / "table-archive.md"


def test_recovery_by_hand_as_documented(platform, keys, tmp_path):
    """docs/table-archive.md, "By hand, with stock tools": its ```sh blocks run in order in
    one bash, with only the first block's values changed to this archive's."""
    create_tables(platform, 1000, young=10)
    platform.sql("CREATE TABLE expected AS SELECT * FROM raw_data WHERE recordid <= 1000; CREATE TABLE expected_init AS SELECT * FROM init_table")
    archived = platform.archive()
    assert not archived.failed and archived["segments"] == 2, archived
    assert platform.count(where="recordid <= 1000") == 0

    blocks = re.findall(r"^```sh\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)
    assert len(blocks) == 6, "the page's sh blocks changed: update this test"
    values = {
        "ARCHIVE": str(platform.root / "primary"),
        "CHAIN": platform.chain,
        "IDENTITY": keys.identity_file,
        "PUBLIC_KEY": keys.public,
        "VERIFIER": str(VERIFIER),
        "WORK": str(tmp_path / "work"),
    }
    first = blocks[0]
    for name, value in values.items():
        first, count = re.subn(r"^%s=\S+$" % name, "%s=%s" % (name, value), first, flags=re.M)
        assert count == 1, "the first block must set %s" % name
    first, count = re.subn(
        r"^export PGHOST=.*$",
        "export PGHOST=%s PGPORT=%s PGUSER=postgres PGDATABASE=%s" % (platform.server.host, platform.server.port, platform.dbname),
        first,
        flags=re.M,
    )
    assert count == 1
    env = dict(os.environ, PGPASSWORD=platform.server.password)
    steps = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", "\n".join([first] + blocks[1:-1])], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert steps.returncode == 0, steps.stdout[-3000:] + steps.stderr[-3000:]
    assert "Result: valid - no problem found" in steps.stdout and "payload rows recounted" in steps.stdout
    assert '"rows": 500' in steps.stdout
    assert checksum(platform, "SELECT * FROM raw_data WHERE recordid <= 1000") == checksum(platform, "SELECT * FROM expected")
    assert checksum(platform, "SELECT * FROM init_table") == checksum(platform, "SELECT * FROM expected_init")
    assert (tmp_path / "work").exists()
    cleanup = subprocess.run(["bash", "-e", "-c", "\n".join([first, blocks[-1]])], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert cleanup.returncode == 0 and not (tmp_path / "work").exists(), cleanup.stderr


# ---- in a backup session ---------------------------------------------------------------------------------


def test_archive_component_records_heads_in_the_image(platform, keys, tmp_path):
    """With a session, the run is an ``archive`` component: the segments stay in the archive
    locations, the image's manifest records each chain's head, and a verifier given the
    image finds entries removed from the end of the chain without the database."""
    create_tables(platform, 1500, young=10)
    (tmp_path / "dest").mkdir()
    started = run_module(
        "backup_session", state="started", destination=str(tmp_path / "dest"), state_dir=str(tmp_path / "state"), recipients=[keys.recipient], facts_dir=""
    )
    assert not started.failed, started
    archived = platform.archive(session=started["session"]["work_dir"], name="audit-archive")
    assert not archived.failed and archived["segments"] == 3, archived
    sealed = run_module("backup_session", state="sealed", session=started["session"]["work_dir"])
    assert not sealed.failed and sealed["verdict"] == "success", sealed
    with zipfile.ZipFile(sealed["image"]) as image:
        manifest = json.loads(image.read("manifest.json"))
        assert not [n for n in image.namelist() if n.endswith(".sql.zst.age")], "segments never go into images"
    component = manifest["components"]["audit-archive"]
    assert component["kind"] == "archive" and component["status"] == "success"
    assert component["details"]["public_key"] == keys.public
    assert component["details"]["heads"][0]["seq"] == 3 and component["details"]["heads"][0]["chain"] == platform.chain

    offline = {"chains": [platform.chain], "images": [sealed["image"]], "public_keys": [keys.public], "fail_on_problems": False}
    whole = run_module("table_archive_verify", targets=platform.locations, **offline)
    assert whole["valid"] and whole["image_heads"][0]["seq"] == 3, whole["report"]
    for location in ("primary", "offsite"):
        (platform.chain_dir(location) / "00000003.json").unlink()
        (platform.chain_dir(location) / "00000003.sql.zst.age").unlink()
    truncated = run_module("table_archive_verify", targets=platform.locations, **offline)
    assert kinds(truncated) == ["head_missing"], truncated["report"]
    assert any("recorded entry 3" in p["message"] and os.path.basename(sealed["image"]) in p["message"] for p in truncated["problems"])


# ---- expiry ----------------------------------------------------------------------------------------------


def test_expiry_removes_payloads_only_when_asked_and_says_so(platform, keys):
    """expire_after removes old payloads after a signed expiry entry names them; the chain
    still verifies (expired, not missing); expired rows cannot be restored; a removal an
    earlier run could not finish is finished."""
    create_tables(platform, 3000, young=10)
    kept_forever = platform.archive()
    assert not kept_forever.failed and kept_forever["segments"] == 6 and "expired" not in json.dumps(kept_forever["tables"][0].get("expired") or [])
    assert len(list(platform.chain_dir().glob("*.sql.zst.age"))) == 6, "nothing expires without expire_after"

    planned = platform.archive(check=True, table={"expire_after": "52w"})
    assert [e["seq"] for e in planned["tables"][0]["would_expire"]] == [1, 2, 3, 4, 5], planned
    assert len(list(platform.chain_dir().glob("*.sql.zst.age"))) == 6

    expired = platform.archive(table={"expire_after": "52w"})
    assert not expired.failed and expired["changed"], expired
    assert {(e["location"], e["file"]) for e in expired["tables"][0]["expired"]} == {
        (loc, "%08d.sql.zst.age" % seq) for loc in ("primary", "offsite") for seq in range(1, 6)
    }
    for location in ("primary", "offsite"):
        assert sorted(p.name for p in platform.chain_dir(location).glob("*.sql.zst.age")) == ["00000006.sql.zst.age"]
        assert (platform.chain_dir(location) / "00000007.json").exists(), "the expiry entry"
    entry = json.loads((platform.chain_dir() / "00000007.json").read_text())["entry"]
    assert entry["kind"] == "expiry" and [e["seq"] for e in entry["expired"]] == [1, 2, 3, 4, 5] and "52w" in entry["rule"]

    verified = platform.verify()
    assert verified["valid"], verified["report"]
    assert [s["payload_status"] for s in verified["chains"][0]["segments"]] == ["expired (entry 7)"] * 5 + ["intact"]
    assert any(line.startswith("  Expiry 7 (") and "segments 1-5 removed on purpose" in line for line in verified["report"]), verified["report"]
    offline = run_verifier("--public-key", keys.public, str(platform.chain_dir()))
    assert offline.returncode == 0, offline.stdout

    common = dict(
        **platform.conn(),
        targets=platform.locations,
        chain=platform.chain,
        identity_file=keys.identity_file,
        target="back.raw_data",
        children=False,
        create_target=True,
    )
    refused = run_module("table_archive_restore", segments=[2], **common)
    assert refused.failed and "expired" in refused["msg"] and refused.get("option") == "segments"
    rest = run_module("table_archive_restore", **common)
    assert not rest.failed and rest["segments"] == [6] and rest["tables"][0]["rows_restored"] == 500, rest

    # A payload an interrupted expiry left behind is removed by the next run.
    shutil.copy(platform.chain_dir("primary") / "00000006.sql.zst.age", platform.chain_dir("offsite") / "00000003.sql.zst.age")
    finished = platform.archive(table={"expire_after": "52w"})
    assert not finished.failed and {e["file"] for e in finished["tables"][0]["expired"]} == {"00000003.sql.zst.age"}, finished
    assert not (platform.chain_dir("offsite") / "00000003.sql.zst.age").exists()


# ---- failure paths, keys, secrets -------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.fault("disk full", "the second archive location fills up mid-run")
def test_a_location_that_fills_up_stops_the_run_and_deletes_nothing_more(platform, small_tmpfs, fault):
    """The second location fills up mid-run: the failing batch is rolled back and its entry
    removed from the first location too; the segments committed before it stay; the message
    names the location and what to do."""
    create_tables(platform, 6000, young=10)
    locations = [platform.locations[0], {"name": "small", "type": "local", "path": str(small_tmpfs)}]
    full = platform.archive(targets=locations, table={"batch_rows": 1000}, compression="none", recipients=[], encryption="none")
    assert full.failed, full
    assert "small" in full["msg"] and ("free space" in full["msg"] or "full" in full["msg"]), full["msg"]
    head = int(platform.sql("SELECT seq FROM lifeboat.table_archive_chains"))
    assert head >= 1, "some segments fit before the location filled"
    assert "committed" in full["msg"] and "Already changed" in full["msg"], full["msg"]
    entries = sorted(p.name for p in platform.chain_dir().glob("*.json"))
    assert entries == ["%08d.json" % s for s in range(head + 1)], "no entry of the failed batch is left in the other location"
    archived = 1000 * head
    fault.observe(false_success=not full.failed, data_lost=platform.count() != 6010 - archived)
    assert platform.count() == 6010 - archived, "the failed batch's rows are all still there"


def test_signing_key_rotation(platform, keys, tmp_path):
    """A chain signed with key A takes key B only through a rotation entry signed by A; a
    verifier that trusts A trusts the rest."""
    create_tables(platform, 2000, young=10)
    assert not platform.archive(max_batches=2).failed
    new_pem, new_public = _signing_key()
    refused = platform.archive(signing_key=new_pem)
    assert refused.failed and refused.get("option") == "signing_key" and "previous_signing_key" in refused["msg"], refused
    assert platform.count() == 1010
    rotated = platform.archive(signing_key=new_pem, previous_signing_key=keys.pem)
    assert not rotated.failed and rotated["public_key"] == new_public and rotated["segments"] == 2, rotated
    rotation = json.loads((platform.chain_dir() / "00000003.json").read_text())
    assert rotation["entry"]["kind"] == "rotation" and rotation["entry"]["next_signer"] == new_public and rotation["signature"]["key"] == keys.public
    assert platform.verify()["valid"], "A is trusted, A handed over to B"
    stranger = platform.verify(public_keys=[new_public])
    assert "unknown_signing_key" in kinds(stranger), "B alone does not vouch for the entries A signed"


def test_passphrase_protected_chain(platform, tmp_path):
    """With a passphrase, the chain's own identity is kept as identity.age; a wrong
    passphrase is refused before anything moves; restore and the stock age open it."""
    create_tables(platform, 1000, young=10)
    secret = "correct horse battery staple"
    first = platform.archive(recipients=[], passphrase=secret, work_factor=10)
    assert not first.failed and first["segments"] == 2, first
    identity = platform.chain_dir() / "identity.age"
    assert identity.exists() and (platform.chain_dir("offsite") / "identity.age").read_bytes() == identity.read_bytes()
    create_more = (
        "INSERT INTO raw_data (sessionid, logconnectionid, doctype, input, \"timestamp\", rawdata) SELECT 90, 0, 'PAY', 0, 0, 'late' FROM generate_series(1, 5)"
    )
    platform.sql(create_more)
    wrong = platform.archive(recipients=[], passphrase="not the passphrase")
    assert wrong.failed and "passphrase does not open" in wrong["msg"], wrong
    assert platform.count(where="rawdata = 'late'") == 5, "nothing moved"
    restored = run_module(
        "table_archive_restore",
        **platform.conn(),
        targets=platform.locations,
        chain=platform.chain,
        passphrase=secret,
        target="back.raw_data",
        children=False,
        create_target=True,
    )
    assert not restored.failed and restored["tables"][0]["rows_restored"] == 1000, restored
    payload = platform.chain_dir() / "00000001.sql.zst.age"
    entry = json.loads((platform.chain_dir() / "00000001.json").read_text())["entry"]
    assert entry["payload"]["identity"]["sha256"] == hashlib.sha256(identity.read_bytes()).hexdigest()
    assert secret.encode() not in identity.read_bytes() and b"AGE-SECRET-KEY" not in identity.read_bytes()
    assert b"COPY" not in payload.read_bytes()


@pytest.mark.parametrize(
    "change, option, words",
    [
        ({"tables": [{"name": "public.nosuch", "older_than": "1 day"}]}, "tables[0].name", "does not exist"),
        ({"tables": [{"name": "public.raw_data", "key": ["sessionid"], "older_than": "1 day"}]}, "tables[0].key", "not unique"),
        ({"tables": [{"name": "public.raw_data", "older_than": "1 day", "before": "5"}]}, "tables[0].older_than", "exactly one cut-off"),
        (
            {"tables": [{"name": "public.raw_data", "time_column": "timestamp", "time_unit": "epoch_ms", "older_than": "soon"}]},
            "tables[0].older_than",
            "interval",
        ),
        ({"tables": [{"name": "public.raw_data", "older_than": "1 day", "expire_after": "forever"}]}, "tables[0].expire_after", "duration"),
        ({"signing_key": "not a key"}, "signing_key", "openssl genpkey"),
        ({"targets": []}, "targets", "at least one archive location"),
        ({"recipients": ["age1notakey"]}, "encryption", "recipients"),
        ({"tables": [{"name": "public.audited", "older_than": "1 day"}]}, "tables[0].children", "ON DELETE CASCADE"),
    ],
)
def test_bad_options_are_named_before_anything_moves(platform, change, option, words):
    create_tables(platform, 100, young=0)
    platform.sql(
        "CREATE TABLE audited (id int PRIMARY KEY, at timestamptz); CREATE TABLE notes (id int, audited int REFERENCES audited(id) ON DELETE CASCADE);"
        "INSERT INTO audited VALUES (1, now() - interval '1 year'); INSERT INTO notes VALUES (1, 1)"
    )
    options = {"tables": [platform.table()]}
    options.update(change)
    if change.get("tables", [{}])[0].get("name") == "public.audited":
        options["tables"][0]["time_column"] = "at"
    result = platform.archive(**options)
    assert result.failed and result.get("option") == option and words in result["msg"], result
    assert platform.count() == 100 and platform.sql("SELECT count(*) FROM notes") == "1"
    assert not list(platform.chain_dir().glob("*.json"))


def test_no_secret_in_verbose_output(platform, keys, tmp_path):
    """ansible-playbook -vvv: the signing key, the passphrase and the database password are
    never shown, whatever the modules return or fail with."""
    create_tables(platform, 500, young=5)
    secret = "archive passphrase 12345"
    playbook = """
- hosts: localhost
  gather_facts: false
  vars:
    targets: [{name: primary, type: local, path: "{{ location }}"}]
    table: {name: public.raw_data, key: [recordid], time_column: timestamp, time_unit: epoch_ms, older_than: 30 days}
  tasks:
    - name: Archive
      lifeboat.backup.table_archive:
        login_host: "{{ pg_host }}"
        port: "{{ pg_port }}"
        login_password: "{{ pg_password }}"
        login_db: "{{ db }}"
        targets: "{{ targets }}"
        signing_key: "{{ signing_key }}"
        passphrase: "{{ passphrase }}"
        work_factor: 10
        tables: ["{{ table }}"]
    - name: Archive with a wrong passphrase (fails)
      lifeboat.backup.table_archive:
        login_host: "{{ pg_host }}"
        port: "{{ pg_port }}"
        login_password: "{{ pg_password }}"
        login_db: "{{ db }}"
        targets: "{{ targets }}"
        signing_key: "{{ signing_key }}"
        passphrase: "{{ passphrase }} but wrong"
        tables: ["{{ table }}"]
      ignore_errors: true
    - name: Restore
      lifeboat.backup.table_archive_restore:
        login_host: "{{ pg_host }}"
        port: "{{ pg_port }}"
        login_password: "{{ pg_password }}"
        login_db: "{{ db }}"
        targets: "{{ targets }}"
        chain: "{{ db }}.public.raw_data"
        passphrase: "{{ passphrase }}"
        target: back.raw_data
        create_target: true
"""
    result = run_playbook(
        playbook,
        tmp_path,
        verbosity=3,
        extra_vars={
            "pg_host": platform.server.host,
            "pg_port": platform.server.port,
            "pg_password": platform.server.password,
            "db": platform.dbname,
            "location": str(platform.root / "primary"),
            "signing_key": keys.pem,
            "passphrase": secret,
        },
    )
    assert "failed=0" in result.stdout.split("PLAY RECAP")[-1], result.stdout[-3000:]
    assert "passphrase does not open" in result.stdout
    body = keys.pem.splitlines()[1]
    for leaked in (body, secret, platform.server.password):
        assert leaked not in result.stdout
