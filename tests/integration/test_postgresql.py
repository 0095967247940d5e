"""The PostgreSQL component against real PostgreSQL 15 servers from the harness.

Round trips compare content (per-table checksums, sequences, large objects, functions,
materialized views, roles with their password hashes, memberships, grants) between the
source and a fresh cluster. Failure paths: server down, wrong password (checked in
``ansible-playbook -vvv`` output), pg_dump killed mid-stream, client tools older than the
server, a destination too small (tmpfs), a non-empty restore target.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import psycopg
import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image, _session
from tests.harness.process import chown_tree, free_port, service_account
from tests.harness.servers import PostgresServer
from tests.support.images import flip_byte, member_of, rewrite_manifest
from tests.support.modules import run_module, run_playbook

BIN = Path("/usr/lib/postgresql/15/bin")
DOC = Path(__file__).resolve().parents[2] / "docs" / "postgresql.md"


# ---- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def age_key():
    """(identity, recipient): sessions encrypt to the recipient; restores read with the identity."""
    return _age.generate_identity()


@pytest.fixture(scope="module")
def fresh_cluster():
    """A second, empty PostgreSQL 15: the restore target of the round trips."""
    with PostgresServer() as server:
        yield server


def conn(server):
    return {"login_host": server.host, "port": server.port, "login_password": server.password}


class Backup:
    """A backup session in a private destination."""

    def __init__(self, root, recipient, **options):
        self.destination = Path(root) / "dest"
        self.destination.mkdir(exist_ok=True)
        self.state_dir = Path(root) / "state"
        started = run_module(
            "backup_session", state="started", destination=str(self.destination), state_dir=str(self.state_dir), recipients=[recipient], node="db1", **options
        )
        assert not started.failed, started
        self.work_dir = started["session"]["work_dir"]

    def seal(self):
        return run_module("backup_session", state="sealed", session=self.work_dir)

    def images(self):
        return sorted(p.name for p in self.destination.glob("*.zip"))


def manifest(image):
    with zipfile.ZipFile(image) as archive:
        return json.loads(archive.read("manifest.json"))


def rows(server, sql, dbname="postgres"):
    return server.psql(sql, dbname=dbname).splitlines()


def fingerprint(server, dbname):
    """What must survive a round trip, read with SQL on either side."""
    tables = rows(
        server,
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        dbname,
    )
    content = {}
    for table in tables + rows(server, "SELECT format('%I.%I', schemaname, matviewname) FROM pg_matviews ORDER BY 1", dbname):
        content[table] = server.psql(f"SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '') FROM {table} x", dbname)
    return {
        "content": content,
        "sequences": rows(server, "SELECT format('%I.%I %s', schemaname, sequencename, last_value) FROM pg_sequences ORDER BY 1", dbname),
        "large_objects": rows(server, "SELECT md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY 1", dbname),
        "grants": rows(
            server,
            "SELECT c.relname || ' ' || coalesce(c.relacl::text, '') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'app' ORDER BY 1",
            dbname,
        ),
        "functions": rows(
            server, "SELECT p.proname || ' ' || md5(p.prosrc) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'app'", dbname
        ),
        "database": rows(
            server,
            "SELECT coalesce(shobj_description(d.oid, 'pg_database'), '') || ' ' || coalesce((SELECT setconfig::text FROM pg_db_role_setting "
            "WHERE setdatabase = d.oid AND setrole = 0), '') || ' ' || pg_get_userbyid(d.datdba) FROM pg_database d WHERE datname = current_database()",
            dbname,
        ),
    }


def roles_of(server, prefix):
    return rows(
        server,
        f"SELECT r.rolname || ' ' || r.rolcanlogin || ' ' || coalesce(r.rolpassword, '') || ' ' || coalesce((SELECT string_agg(g.rolname, ',') "
        f"FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid), '') FROM pg_authid r WHERE r.rolname LIKE '{prefix}%' ORDER BY 1",
    )


def populate(server, ns):
    """Three databases (a space, non-ASCII) and three roles; app data has the lot."""
    owner, readers, alice = f"{ns}_owner", f"{ns}_readers", f"{ns} alice"
    server.psql(
        f"""CREATE ROLE "{owner}" LOGIN PASSWORD 'owner-pw-{ns}';
        CREATE ROLE "{readers}" NOLOGIN;
        CREATE ROLE "{alice}" LOGIN PASSWORD 'alice ''pw'' {ns}';
        GRANT "{readers}" TO "{alice}";"""
    )
    names = [f"{ns} app data", f"{ns}_données_é", f"{ns}_plain"]
    for name in names:
        server.psql(f'CREATE DATABASE "{name}" OWNER "{owner}"')
    server.psql(
        f"""COMMENT ON DATABASE "{names[0]}" IS 'the app''s data';
        ALTER DATABASE "{names[0]}" SET work_mem = '8MB';"""
    )
    server.psql(
        f"""SET ROLE "{owner}";
        CREATE SCHEMA app;
        CREATE TABLE app.items (id serial PRIMARY KEY, name text NOT NULL, price numeric(10, 2), created timestamptz, tags text[], doc jsonb);
        INSERT INTO app.items (name, price, created, tags, doc)
          SELECT 'item ' || i, i * 1.25, '2026-01-01'::timestamptz + i * interval '1 hour', ARRAY['t' || i % 7, 'ü'], jsonb_build_object('n', i, 'é', 'ß')
          FROM generate_series(1, 2000) i;
        CREATE TABLE app.audit_log (id bigserial PRIMARY KEY, message text);
        INSERT INTO app.audit_log (message) SELECT 'login ' || i FROM generate_series(1, 300) i;
        CREATE SEQUENCE app.invoice_no START 1000;
        SELECT nextval('app.invoice_no') FROM generate_series(1, 5);
        SELECT lo_from_bytea(0, convert_to(repeat('lifeboat large object ', 500), 'UTF8'));
        CREATE FUNCTION app.total(min_price numeric) RETURNS numeric LANGUAGE plpgsql AS $$
        DECLARE result numeric;
        BEGIN
          SELECT sum(price) INTO result FROM app.items WHERE price >= min_price;
          RETURN result;
        END $$;
        CREATE MATERIALIZED VIEW app.item_totals AS SELECT count(*) AS n, sum(price) AS total FROM app.items;
        GRANT USAGE ON SCHEMA app TO "{readers}";
        GRANT SELECT ON app.items, app.item_totals TO "{readers}";""",
        dbname=names[0],
    )
    server.psql(
        """CREATE TABLE "clé" (id int PRIMARY KEY, "texte" text);
        INSERT INTO "clé" VALUES (1, 'é à ü'), (2, '日本語のテキスト'), (3, 'emoji 🛟');""",
        dbname=names[1],
    )
    server.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x", dbname=names[2])
    return names


def drop_all(server, ns, databases):
    for name in databases:
        server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for role in rows(server, f"SELECT format('%I', rolname) FROM pg_roles WHERE rolname LIKE '{ns}%' ORDER BY rolcanlogin DESC"):
        server.psql(f"DROP ROLE IF EXISTS {role}")


# ---- round trips ------------------------------------------------------------------------------------


def test_round_trip_into_a_fresh_cluster(postgres_server, fresh_cluster, namespace, age_key, tmp_path):
    identity, recipient = age_key
    databases = populate(postgres_server, namespace)
    try:
        backup = Backup(tmp_path, recipient)
        # A standard backup leaves audit rows out, and refuses to be told otherwise.
        refused = run_module("postgresql_dump", check=True, session=backup.work_dir, include_audit=True, **conn(postgres_server))
        assert refused.failed and "selection=custom" in refused["msg"]
        dumped = run_module(
            "postgresql_dump",
            session=backup.work_dir,
            databases=databases,
            audit_tables=["app.audit_log"],
            row_counts=True,
            jobs=2,
            **conn(postgres_server),
        )
        assert not dumped.failed, dumped
        assert [d["format"] for d in dumped["databases"]] == ["streams"] * 3
        assert not os.listdir(Path(backup.work_dir) / "scratch"), "the spooled streams must be gone"
        sealed = backup.seal()
        assert sealed["verdict"] == "success", sealed
        details = manifest(sealed["image"])["components"]["postgresql"]
        assert details["markers"]["lsn"]
        app = next(d for d in details["details"]["databases"] if d["name"] == databases[0])
        assert ["app", "items", 2000] in app["row_counts"]
        assert [(r["schema"], r["table"]) for r in app["members"]["rows"]] == [("app", "items")], "app.items streams, audit_log is excluded"
        assert not any(c[1] == "audit_log" for c in app["row_counts"]), "audit rows are excluded in a standard backup"
        assert app["size"] > 0 and app["snapshot"]

        # Every member reads back whole with the key (decrypt, decompress, SHA-256).
        verified = run_module("image_verify", image=sealed["image"], level="full", identity=identity)
        assert verified["valid"], verified

        planned = run_module("postgresql_restore", check=True, image=sealed["image"], identity=identity, **conn(fresh_cluster))
        assert not planned.failed, planned
        assert {d["action"] for d in planned["databases"]} == {"create"}
        assert sorted(planned["roles_created"]) == sorted([f"{namespace}_owner", f"{namespace}_readers", f"{namespace} alice"])
        assert not rows(fresh_cluster, f"SELECT 1 FROM pg_roles WHERE rolname LIKE '{namespace}%'"), "check mode created roles"

        restored = run_module("postgresql_restore", image=sealed["image"], identity=identity, jobs=2, verify_counts=True, **conn(fresh_cluster))
        assert not restored.failed, restored
        assert all(d["counts_verified"] for d in restored["databases"])
        assert not [p for p in Path(sealed["image"]).parent.iterdir() if p.name.startswith(".lifeboat-restore-")], "scratch left behind"

        assert roles_of(fresh_cluster, namespace) == roles_of(postgres_server, namespace)
        for name in databases:
            source, target = fingerprint(postgres_server, name), fingerprint(fresh_cluster, name)
            if name == databases[0]:
                assert source["content"].pop("app.audit_log").startswith("300:")
                assert target["content"].pop("app.audit_log") == "0:"  # table kept, rows left out
            assert target == source, name
        assert fresh_cluster.psql("SELECT app.total(100)", dbname=databases[0]) == postgres_server.psql("SELECT app.total(100)", dbname=databases[0])
        assert fresh_cluster.psql("SELECT nextval('app.invoice_no')", dbname=databases[0]) == "1005"
    finally:
        drop_all(postgres_server, namespace, databases)


def test_restore_streamed_renamed_refusing_a_non_empty_target(pg_database, age_key, tmp_path):
    server, source = pg_database.server, pg_database.name
    identity, recipient = age_key
    pg_database.psql(
        "CREATE TABLE orders AS SELECT i AS id, 'order ' || i AS label FROM generate_series(1, 5000) i;"
        "CREATE TABLE audit_trail AS SELECT i AS id FROM generate_series(1, 40) i;"
    )
    copy = f"{source} copy"
    backup = Backup(tmp_path, recipient, selection="custom")
    dumped = run_module(
        "postgresql_dump",
        session=backup.work_dir,
        databases=[source],
        globals=False,
        audit_tables=["audit_trail"],
        include_audit=True,
        row_counts=True,
        verify="full",
        **conn(server),
    )
    assert not dumped.failed, dumped
    assert dumped["databases"][0]["format"] == "custom"
    image = backup.seal()["image"]
    try:
        common = dict(image=image, identity=identity, databases=[source], rename={source: copy}, globals="none", verify_counts=True, **conn(server))
        planned = run_module("postgresql_restore", check=True, **common)
        assert planned["changed"] and planned["databases"][0]["action"] == "create"
        assert not rows(server, f"SELECT 1 FROM pg_database WHERE datname = '{copy}'")

        restored = run_module("postgresql_restore", **common)
        assert not restored.failed, restored
        assert restored["databases"][0]["counts_verified"]
        assert server.psql("SELECT count(*) FROM audit_trail", dbname=copy) == "40"  # custom selection asked for it

        server.psql("INSERT INTO orders VALUES (0, 'added after the restore')", dbname=copy)
        again = run_module("postgresql_restore", **common)
        assert again.failed and f"target database {copy} is not empty" in again["msg"] and "clean=true" in again["msg"]
        assert server.psql("SELECT count(*) FROM orders", dbname=copy) == "5001", "a refused restore must not touch the target"

        planned = run_module("postgresql_restore", check=True, clean=True, **common)
        assert planned["databases"][0]["action"] == "replace"
        # jobs=2 on a custom-format member: decrypted into a scratch file for pg_restore -j.
        replaced = run_module("postgresql_restore", clean=True, jobs=2, **common)
        assert not replaced.failed, replaced
        assert server.psql("SELECT count(*) FROM orders", dbname=copy) == "5000"
        assert not [p for p in Path(image).parent.iterdir() if p.name.startswith(".lifeboat-restore-")], "scratch left behind"

        # The recorded counts are what verify_counts compares with: alter one, and it tells.
        tampered = tmp_path / "tampered.zip"
        rewrite_manifest(image, tampered, lambda m: _bump_count(m, "orders"))
        tampered_args = {**common, "image": str(tampered), "clean": True}
        checked = run_module("postgresql_restore", **tampered_args)
        assert checked.failed and "row counts differ" in checked["msg"] and "public.orders: 5001 rows dumped, 5000 restored" in checked["msg"]
        assert checked["count_mismatches"] == [{"database": copy, "table": "public.orders", "dumped": 5001, "restored": 5000}]
    finally:
        server.psql(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')


@pytest.mark.fault("corrupt member", "postgresql_restore clean=true of a damaged dump member, then with a key that does not fit", item="18.2")
def test_a_clean_restore_authenticates_the_image_before_dropping_anything(pg_database, age_key, tmp_path, fault):
    """#18.2: a damaged member or a key that does not fit is found before DROP DATABASE; a
    failure after it (authenticate=false) names the database dropped and how to go on."""
    server, source = pg_database.server, pg_database.name
    identity, recipient = age_key
    pg_database.psql("CREATE TABLE orders AS SELECT i AS id, 'order ' || i AS label FROM generate_series(1, 20000) i")
    backup = Backup(tmp_path, recipient, selection="custom")
    dumped = run_module("postgresql_dump", session=backup.work_dir, databases=[source], globals=False, **conn(server))
    assert not dumped.failed, dumped
    image = backup.seal()["image"]
    target = f"{source} live"
    common = dict(databases=[source], rename={source: target}, globals="none", clean=True, **conn(server))
    try:
        restored = run_module("postgresql_restore", image=image, identity=identity, **common)
        assert not restored.failed, restored
        assert restored["authenticated"] > 0
        member = member_of(image, "postgresql", ".dump.zst.age")
        damaged = flip_byte(image, member, tmp_path / "damaged.zip", where=0.9)

        refused = run_module("postgresql_restore", image=str(damaged), identity=identity, **common)
        fault.observe(false_success=not refused.failed, data_lost=server.psql("SELECT count(*) FROM orders", dbname=target) != "20000")
        assert refused.failed and member in refused["msg"] and "damaged" in refused["msg"] and "Nothing was changed" in refused["msg"], refused
        assert not refused["changed"] and "done" not in refused
        assert server.psql("SELECT count(*) FROM orders", dbname=target) == "20000", "the target was touched before the image was authenticated"

        other_identity, _recipient = _age.generate_identity()
        wrong_key = run_module("postgresql_restore", image=image, identity=other_identity, **common)
        fault.observe(false_success=not wrong_key.failed, data_lost=server.psql("SELECT count(*) FROM orders", dbname=target) != "20000")
        fault.scan([identity, other_identity, server.password], refused, wrong_key)
        assert wrong_key.failed and "no identity matches" in wrong_key["msg"] and "damaged" not in wrong_key["msg"], wrong_key
        assert server.psql("SELECT count(*) FROM orders", dbname=target) == "20000"

        # Without the check, the damage is found by pg_restore after the DROP: the message says so.
        unchecked = run_module("postgresql_restore", image=str(damaged), identity=identity, authenticate=False, **common)
        assert unchecked.failed and unchecked["changed"], unchecked
        assert any(line.startswith(f"dropped database {target}") for line in unchecked["done"]), unchecked["done"]
        assert "Already changed before the failure: dropped database " + target in unchecked["msg"], unchecked["msg"]
        assert "run again with clean=true" in unchecked["msg"]
    finally:
        server.psql(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')


def _bump_count(manifest, table):
    for database in manifest["components"]["postgresql"]["details"]["databases"]:
        for entry in database["row_counts"]:
            if entry[1] == table:
                entry[2] += 1


def test_dumpall_round_trip(postgres_server, fresh_cluster, pg_database, age_key, tmp_path):
    identity, recipient = age_key
    pg_database.psql("CREATE TABLE notes (id int, body text); INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 300) i;")
    others = rows(postgres_server, f"SELECT datname FROM pg_database WHERE datname <> '{pg_database.name}' AND NOT datistemplate")
    backup = Backup(tmp_path, recipient)
    dumped = run_module("postgresql_dump", session=backup.work_dir, mode="dumpall", exclude_databases=others, **conn(postgres_server))
    assert not dumped.failed, dumped
    assert dumped["members"] == ["postgresql/cluster.sql.zst.age"]
    image = backup.seal()["image"]
    try:
        restored = run_module("postgresql_restore", image=image, identity=identity, **conn(fresh_cluster))
        assert not restored.failed, restored
        assert fingerprint(fresh_cluster, pg_database.name) == fingerprint(postgres_server, pg_database.name)
        again = run_module("postgresql_restore", image=image, identity=identity, **conn(fresh_cluster))
        assert again.failed and "exists" in again["msg"] and "clean=true" in again["msg"]
    finally:
        fresh_cluster.psql(f'DROP DATABASE IF EXISTS "{pg_database.name}" WITH (FORCE)')


def test_basebackup_restores_into_a_new_data_directory(pg_database, age_key, tmp_path):
    server = pg_database.server
    identity, recipient = age_key
    pg_database.psql("CREATE TABLE marker AS SELECT 'before the base backup'::text AS note, 42 AS answer")
    backup = Backup(tmp_path, recipient)
    taken = run_module("postgresql_basebackup", session=backup.work_dir, **conn(server))
    assert not taken.failed, taken
    assert taken["wal_segments"] >= 1 and taken["start_lsn"] and taken["end_lsn"]
    # Written after the backup: must not be in the restored cluster.
    pg_database.psql("INSERT INTO marker VALUES ('after the base backup', 0)")
    sealed = backup.seal()
    assert sealed["verdict"] == "success", sealed
    assert manifest(sealed["image"])["consistency"]["basebackup"]["start_lsn"] == taken["start_lsn"]

    # The documented procedure, literally: docs/postgresql.md "Restoring a base backup".
    key = tmp_path / "key.txt"
    key.write_text(identity + "\n")
    key.chmod(0o600)
    account = service_account("postgres")
    root = Path(tempfile.mkdtemp(prefix="lifeboat-pgrestore-"))
    root.chmod(0o755)
    (root / "run").mkdir()
    chown_tree(root / "run", account.pw_uid, account.pw_gid)
    port = free_port()
    blocks = doc_section_blocks("### Restoring a base backup")
    assert len(blocks) == 5, "the page's restore procedure changed shape"
    values = {"IMAGE": sealed["image"], "KEY": key, "NEWDATA": root / "data", "PGBIN": BIN, "PORT": port, "SOCKETS": root / "run"}
    variables = blocks[0]
    for name, value in values.items():
        variables, count = re.subn(r"^%s=\S+" % name, "%s=%s" % (name, value), variables, flags=re.M)
        assert count == 1, name
    *steps, stop = blocks[1:]
    try:
        # The harness cluster asks for a password on its socket too (Debian's default is peer).
        env = dict(os.environ, PGPASSWORD=server.password)
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", "\n".join([variables, *steps])], capture_output=True, text=True, timeout=300, env=env, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip().splitlines()[-1] == "f"
        dsn = f"host=127.0.0.1 port={port} user={server.user} password={server.password} dbname={pg_database.name}"
        with psycopg.connect(dsn) as restored:
            assert restored.execute("SELECT note, answer FROM marker").fetchall() == [("before the base backup", 42)]
        stopped = subprocess.run(["bash", "-e", "-c", "\n".join([variables, stop])], capture_output=True, text=True, timeout=120, check=False)
        assert stopped.returncode == 0, stopped.stderr
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(BIN / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"], capture_output=True, check=False
        )
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_parallel_dump_of_one_big_table_keeps_no_plaintext_in_scratch(postgres_server, fresh_cluster, pg_database, age_key, tmp_path):
    """#15.3: jobs=2 on a database where one table holds about 95 % of the data. The big table
    is split into block ranges, one rows member each; while the dump runs, the scratch area is
    sampled and never holds a row's marker in the clear (it does hold the encrypted spools);
    a restore with jobs=2 reproduces the database."""
    identity, recipient = age_key
    marker = "lifeboat-plaintext-marker"
    pg_database.psql(
        f"CREATE TABLE big (id int PRIMARY KEY, body text); INSERT INTO big SELECT i, '{marker} ' || md5(i::text) FROM generate_series(1, 160000) i;"
        f"CREATE TABLE side (id int PRIMARY KEY, note text); INSERT INTO side SELECT i, '{marker} ' || i FROM generate_series(1, 4000) i;"
    )
    backup = Backup(tmp_path, recipient)
    scratch = Path(backup.work_dir) / "scratch"
    seen, leaks, stop = set(), [], threading.Event()

    def watch():
        while not stop.is_set():
            for path in scratch.rglob("*"):
                with contextlib.suppress(OSError):
                    data = path.read_bytes()
                    seen.add(path.name)
                    if marker.encode() in data:
                        leaks.append(path.name)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        dumped = run_module(
            "postgresql_dump", session=backup.work_dir, databases=[pg_database.name], jobs=2, globals=False, row_counts=True, **conn(postgres_server)
        )
    finally:
        stop.set()
        watcher.join()
    assert not dumped.failed, dumped
    assert not leaks, "table rows in plaintext in the scratch area: %s" % sorted(set(leaks))
    assert any(name.endswith(".spool") for name in seen), "the watcher never saw the streams being spooled: %s" % sorted(seen)
    assert not os.listdir(scratch)
    sealed = backup.seal()
    details = manifest(sealed["image"])["components"]["postgresql"]["details"]["databases"][0]
    rows_members = details["members"]["rows"]
    big = [r["range"] for r in rows_members if r["table"] == "big"]
    assert len(big) >= 2 and big[0][0] is None and big[-1][1] is None, big
    assert [r["table"] for r in rows_members].count("side") == 1
    source = fingerprint(postgres_server, pg_database.name)
    try:
        restored = run_module("postgresql_restore", image=sealed["image"], identity=identity, jobs=2, verify_counts=True, **conn(fresh_cluster))
        assert not restored.failed, restored
        assert restored["databases"][0]["counts_verified"]
        assert fingerprint(fresh_cluster, pg_database.name) == source
        assert not [p for p in Path(sealed["image"]).parent.iterdir() if p.name.startswith(".lifeboat-restore-")], "scratch left behind"
    finally:
        fresh_cluster.psql(f'DROP DATABASE IF EXISTS "{pg_database.name}" WITH (FORCE)')


def old_directory_image(root, server, database, recipient):
    """An image as postgresql_dump wrote it with jobs > 1 before #15.3: pg_dump's directory
    archive as a tar in one member (format directory). Images taken then must still restore."""
    assert _image.safe_name(database) == database
    backup = Backup(root, recipient)
    directory = Path(root) / "directory"
    subprocess.run(
        [str(BIN / "pg_dump"), "--format=directory", "--jobs=2", "--compress=0", f"--file={directory}"],
        env=dict(os.environ, **server.env(database)),
        check=True,
    )
    component = _session.Session(backup.work_dir).component("postgresql", "postgresql")
    extra = {"database": database, "format": "directory"}
    with (
        component.appender() as appender,
        component.member(appender, f"db-{database}.dir.tar", "application/vnd.postgresql.directory-archive+tar", extra=extra) as out,
    ):
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(os.listdir(directory), key=lambda n: (n == "toc.dat", n)):
                tar.add(directory / name, arcname=name)
    component.add_member_record(out.record)
    component.succeed(
        {"mode": "per_database", "databases": [{"name": database, "member": out.record["name"], "format": "directory"}], "client": {"version_num": 150018}}
    )
    shutil.rmtree(directory)
    return backup.seal()["image"]


def test_logical_members_restore_by_hand_as_the_page_says(postgres_server, fresh_cluster, pg_database, age_key, tmp_path):
    """#18.16: docs/postgresql.md "By hand, with stock tools", literally: the postgres
    database's member restores without --create, host, port and user come from the page's
    variables; a custom-format member, a parallel dump (#15.3: streams) and a directory-format
    member of an older image restore with --create. The older image restores with the module too."""
    identity, recipient = age_key
    marker = f"{pg_database.name}_marker"
    pg_database.psql(
        "CREATE TABLE notes AS SELECT i AS id, 'note ' || i AS body FROM generate_series(1, 5000) i; ALTER TABLE notes ADD PRIMARY KEY (id);"
        "CREATE TABLE tags (id int PRIMARY KEY, note int REFERENCES notes (id), tag text); INSERT INTO tags SELECT i, i, 't' || i FROM generate_series(1, 50) i"
    )
    postgres_server.psql(f"CREATE TABLE {marker} AS SELECT 'in the postgres database'::text AS note")
    images, wanted = {}, ["postgres", pg_database.name]
    try:
        for jobs in (1, 2):
            (tmp_path / f"jobs{jobs}").mkdir()
            backup = Backup(tmp_path / f"jobs{jobs}", recipient)
            dumped = run_module("postgresql_dump", session=backup.work_dir, databases=wanted[jobs - 1 :], jobs=jobs, **conn(postgres_server))
            assert not dumped.failed, dumped
            images[jobs] = backup.seal()["image"]
    finally:
        postgres_server.psql(f"DROP TABLE IF EXISTS {marker}")
    assert dumped["databases"][0]["format"] == "streams"
    (tmp_path / "old").mkdir()
    images["directory"] = old_directory_image(tmp_path / "old", postgres_server, pg_database.name, recipient)
    key = tmp_path / "key.txt"
    key.write_text(identity + "\n")
    key.chmod(0o600)
    blocks = doc_section_blocks("### By hand, with stock tools")
    assert len(blocks) == 6, "the page's procedure changed shape"

    def run(image, *steps):
        variables = blocks[0]
        values = {"IMAGE": image, "KEY": key, "DB": pg_database.name}
        for name, value in values.items():
            variables, count = re.subn(r"^%s=\S+" % name, "%s=%s" % (name, value), variables, flags=re.M)
            assert count == 1, name
        variables, count = re.subn(r"PGPORT=\d+", f"PGPORT={fresh_cluster.port}", variables)
        assert count == 1 and f"PGHOST={fresh_cluster.host} " in variables and f"PGUSER={fresh_cluster.user} " in variables, variables
        env = dict(os.environ, PGPASSWORD=fresh_cluster.password)
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", "\n".join([variables, *steps])],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    source = fingerprint(postgres_server, pg_database.name)
    drop = f'DROP DATABASE "{pg_database.name}" WITH (FORCE)'
    try:
        run(images[1], blocks[1], blocks[2], blocks[3])
        assert fingerprint(fresh_cluster, pg_database.name) == source
        assert fresh_cluster.psql(f"SELECT note FROM {marker}") == "in the postgres database"
        fresh_cluster.psql(drop)
        run(images[2], blocks[4])
        assert fingerprint(fresh_cluster, pg_database.name) == source
        assert not list(tmp_path.glob("*.dump")), "the post-data file is left"
        fresh_cluster.psql(drop)
        # the module with jobs=1: the same members one after the other, post-data streamed
        restored = run_module("postgresql_restore", image=images[2], identity=identity, databases=[pg_database.name], jobs=1, **conn(fresh_cluster))
        assert not restored.failed, restored
        assert fingerprint(fresh_cluster, pg_database.name) == source
        fresh_cluster.psql(drop)
        run(images["directory"], blocks[5])
        assert fingerprint(fresh_cluster, pg_database.name) == source
        assert not (tmp_path / f"{pg_database.name}.dir").exists(), "the plaintext directory is left"
        fresh_cluster.psql(drop)
        restored = run_module("postgresql_restore", image=images["directory"], identity=identity, jobs=2, **conn(fresh_cluster))
        assert not restored.failed, restored
        assert restored["databases"][0]["format"] == "directory"
        assert fingerprint(fresh_cluster, pg_database.name) == source
    finally:
        fresh_cluster.psql(f'DROP DATABASE IF EXISTS "{pg_database.name}" WITH (FORCE)')
        fresh_cluster.psql(f"DROP TABLE IF EXISTS {marker}")


def doc_section_blocks(heading):
    """The ```sh blocks of one section of docs/postgresql.md, in order."""
    text = DOC.read_text()
    section = text[text.index(heading) + len(heading) :]
    section = section[: section.index("\n## ")]
    return re.findall(r"^```sh\n(.*?)^```$", section, flags=re.S | re.M)


# ---- failure paths ------------------------------------------------------------------------------------


@pytest.mark.fault("server down", "PostgreSQL not listening, postgresql_info and postgresql_dump")
def test_server_down_fails_clearly_and_publishes_nothing(age_key, tmp_path, fault):
    _identity, recipient = age_key
    backup = Backup(tmp_path, recipient, components=["postgresql"])
    down = {"login_host": "127.0.0.1", "port": free_port(), "login_password": "irrelevant-pw", "connect_timeout": 3}
    info = run_module("postgresql_info", **down)
    assert info.failed and "cannot connect to PostgreSQL at 127.0.0.1" in info["msg"] and "is the server running" in info["msg"]
    dumped = run_module("postgresql_dump", session=backup.work_dir, **down)
    assert dumped.failed and "Connection refused" in dumped["msg"]
    sealed = backup.seal()
    fault.observe(false_success=not (info.failed and dumped.failed and sealed.failed) or backup.images() != [])
    fault.scan([down["login_password"]], info, dumped, sealed)
    assert sealed.failed and sealed["verdict"] == "failed" and sealed["image"] is None
    assert "cannot connect" in sealed["failures"]["postgresql"]
    assert backup.images() == []


@pytest.mark.fault("wrong key", "postgresql_dump with a wrong password, in a playbook at -vvv")
def test_wrong_password_is_reported_and_no_password_is_logged(postgres_server, age_key, tmp_path, fault):
    _identity, recipient = age_key
    wrong = "Wr0ng-pw-" + os.urandom(6).hex()
    playbook = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Info with the right password
      lifeboat.backup.postgresql_info:
        login_host: "{{ pg_host }}"
        port: "{{ pg_port }}"
        login_password: "{{ pg_password }}"
    - name: Session
      lifeboat.backup.backup_session:
        state: started
        destination: "{{ dest }}"
        state_dir: "{{ state }}"
        recipients: ["{{ recipient }}"]
      register: backup
    - name: Dump with a wrong password
      lifeboat.backup.postgresql_dump:
        session: "{{ backup.session.work_dir }}"
        login_host: "{{ pg_host }}"
        port: "{{ pg_port }}"
        login_password: "{{ wrong_password }}"
      ignore_errors: true
      register: dumped
    - name: Seal
      lifeboat.backup.backup_session:
        state: sealed
        session: "{{ backup.session.work_dir }}"
      ignore_errors: true
    - name: The failure names the cause
      ansible.builtin.assert:
        that:
          - dumped is failed
          - "'password authentication failed' in dumped.msg"
          - "'check login_user and login_password' in dumped.msg"
"""
    (tmp_path / "dest").mkdir()
    result = run_playbook(
        playbook,
        tmp_path,
        verbosity=3,
        extra_vars={
            "pg_host": postgres_server.host,
            "pg_port": postgres_server.port,
            "pg_password": postgres_server.password,
            "wrong_password": wrong,
            "dest": str(tmp_path / "dest"),
            "state": str(tmp_path / "state"),
            "recipient": recipient,
        },
    )
    # The playbook's own assert task fails (failed=1) if the dump did not fail.
    fault.observe(false_success="failed=0" not in result.stdout.split("PLAY RECAP")[-1] or "All assertions passed" not in result.stdout)
    fault.scan([wrong, postgres_server.password], result.stdout)
    assert "failed=0" in result.stdout.split("PLAY RECAP")[-1], result.stdout[-3000:]
    assert "password authentication failed" in result.stdout
    assert wrong not in result.stdout
    assert postgres_server.password not in result.stdout
    assert "All assertions passed" in result.stdout


@pytest.mark.fault("killed process", "pg_dump (jobs=1) or a psql COPY stream (jobs=2) killed (SIGKILL) once it has written")
@pytest.mark.parametrize(("jobs", "program", "reason"), [(1, "pg_dump", "pg_dump was killed by signal 9"), (2, "psql", "psql was killed by signal 9")])
def test_pg_dump_killed_mid_stream_fails_the_component(pg_database, age_key, tmp_path, fault, jobs, program, reason):
    """A killed stream fails the database; with jobs=2 (#15.3) the other streams' spools are
    dropped too: nothing is appended and the scratch area is empty."""
    server, name = pg_database.server, pg_database.name
    _identity, recipient = age_key
    pg_database.psql("CREATE TABLE bulk AS SELECT i, md5(random()::text) || md5(random()::text) AS v FROM generate_series(1, 400000) i")
    backup = Backup(tmp_path, recipient)
    killed = {}

    def kill_pg_dump_once_it_writes():
        deadline = time.time() + 60
        pids = []
        while time.time() < deadline and not pids:
            pids = list(_pg_dumps_of(name, program))
            time.sleep(0.005)
        while pids and time.time() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[0], signal.SIGSTOP)  # hold it while we look
                wrote = _bytes_written(pids[0])
                if wrote:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.update(pid=pids[0], wrote=wrote)
                    return
                os.kill(pids[0], signal.SIGCONT)
                time.sleep(0.0005)
                continue
            return  # it is gone: it finished before we saw it write

    watcher = threading.Thread(target=kill_pg_dump_once_it_writes)
    watcher.start()
    dumped = run_module("postgresql_dump", session=backup.work_dir, databases=[name], globals=False, jobs=jobs, **conn(server))
    watcher.join()
    assert killed, "%s finished before it could be killed mid-stream" % program
    assert not os.listdir(Path(backup.work_dir) / "scratch")
    sealed = backup.seal()
    fault.observe(false_success=not dumped.failed or sealed.get("verdict") != "failed" or backup.images() != [])
    fault.scan([server.password], dumped, sealed)
    assert dumped.failed and reason in dumped["msg"], dumped
    assert sealed["verdict"] == "failed" and sealed["image"] is None
    assert "killed by signal 9" in sealed["failures"]["postgresql"]
    assert backup.images() == []


def _pg_dumps_of(database, program="pg_dump"):
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if (proc / "comm").read_text().strip() != program:
                continue
            environ = (proc / "environ").read_bytes().split(b"\0")
            if f"PGDATABASE={database}".encode() in environ:
                yield int(proc.name)


def _bytes_written(pid):
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def test_client_tools_older_than_the_server_are_refused(postgres_server, age_key, tmp_path):
    _identity, recipient = age_key
    fake = tmp_path / "pg14"
    fake.mkdir()
    for tool in ("pg_dump", "pg_restore", "pg_dumpall", "psql", "pg_basebackup"):
        (fake / tool).write_text(f'#!/bin/sh\necho "{tool} (PostgreSQL) 14.11"\n')  # a unit-level fake of the binary; the server is real
        (fake / tool).chmod(0o755)
    backup = Backup(tmp_path, recipient, components=["postgresql"])
    dumped = run_module("postgresql_dump", session=backup.work_dir, client_bin_dir=str(fake), **conn(postgres_server))
    assert dumped.failed
    assert "older than the server" in dumped["msg"] and "14.11" in dumped["msg"] and "15." in dumped["msg"]
    assert "postgresql-client-15" in dumped["msg"]
    based = run_module("postgresql_basebackup", check=True, session=backup.work_dir, client_bin_dir=str(fake), **conn(postgres_server))
    assert based.failed and "older than the server" in based["msg"]
    sealed = backup.seal()
    assert sealed["verdict"] == "failed" and "older than the server" in sealed["failures"]["postgresql"]


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("", "pg_dump exited 0 but wrote nothing"),
        ("SELECT 1;", "not a custom-format archive"),
        ("PGDMP-this-is-no-archive", "pg_restore could not read the archive back"),
    ],
)
@pytest.mark.fault("bad output", "pg_dump exits 0 with empty or garbage output (a fake pg_dump)")
def test_a_dump_that_does_not_read_back_is_a_failure(postgres_server, age_key, tmp_path, output, reason, fault):
    """pg_dump exits 0 but its output is empty or garbage (a fake pg_dump beside the real
    pg_restore; the server is real): the component fails, nothing is published."""
    _identity, recipient = age_key
    tools = tmp_path / "bin"
    tools.mkdir()
    for real in ("pg_restore", "pg_dumpall"):
        (tools / real).symlink_to(BIN / real)
    fake = tools / "pg_dump"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && exec %s --version\nprintf "%%s" "%s"\n' % (BIN / "pg_dump", output))
    fake.chmod(0o755)
    backup = Backup(tmp_path, recipient)
    dumped = run_module("postgresql_dump", session=backup.work_dir, databases=["postgres"], globals=False, client_bin_dir=str(tools), **conn(postgres_server))
    sealed = backup.seal()
    fault.observe(false_success=not dumped.failed or sealed.get("verdict") != "failed" or backup.images() != [])
    assert dumped.failed and reason in dumped["msg"], dumped
    assert sealed["verdict"] == "failed" and backup.images() == []


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.fault("disk full", "a 2 MiB destination: refused up front, then (guard off) full mid-dump")
def test_insufficient_space_is_refused_up_front_and_caught_mid_dump(pg_database, small_tmpfs, age_key, tmp_path, fault):
    server, name = pg_database.server, pg_database.name
    _identity, recipient = age_key
    pg_database.psql("CREATE TABLE filler AS SELECT i, md5(random()::text) || md5(random()::text) AS v FROM generate_series(1, 200000) i")
    backup = Backup(small_tmpfs, recipient)
    refused = run_module("postgresql_dump", session=backup.work_dir, databases=[name], **conn(server))
    fault.observe(false_success=not refused.failed)
    assert refused.failed and "not enough free space for the PostgreSQL dump" in refused["msg"], refused
    assert "MiB free on" in refused["msg"] and "needed" in refused["msg"] and name in refused["msg"]
    assert refused["needed_bytes"] > refused["free_bytes"]
    assert backup.seal()["verdict"] == "failed"

    # With the guard off the disk fills up during the dump: a failed component, nothing published.
    backup = Backup(small_tmpfs, recipient)
    full = run_module("postgresql_dump", session=backup.work_dir, databases=[name], space_factor=0, **conn(server))
    sealed = backup.seal()
    fault.observe(false_success=not full.failed or sealed.get("verdict") != "failed" or backup.images() != [])
    fault.scan([server.password], refused, full, sealed)
    assert full.failed and "No space left on device" in full["msg"], full
    assert sealed["verdict"] == "failed" and sealed["image"] is None
    assert backup.images() == []


def test_info_reports_a_busy_session(postgres_server, namespace):
    # A password that never expires is stored as 'infinity', which no Python datetime holds.
    postgres_server.psql(f"CREATE ROLE {namespace}_forever LOGIN PASSWORD 'x-{namespace}' VALID UNTIL 'infinity'")
    with psycopg.connect(postgres_server.dsn(), autocommit=True, application_name="lifeboat-test-busy") as busy:
        pid = busy.info.backend_pid
        worker = threading.Thread(target=_sleep_until_cancelled, args=(busy,))
        worker.start()
        try:
            for _attempt in range(50):
                info = run_module("postgresql_info", include_queries=True, **conn(postgres_server))
                mine = [s for s in info["sessions"] if s["pid"] == pid]
                if mine and mine[0]["state"] == "active":
                    break
                time.sleep(0.1)
            assert not info.failed and not info["changed"]
            assert mine and mine[0]["application"] == "lifeboat-test-busy" and "pg_sleep" in mine[0]["query"], info["sessions"]
            assert info["activity"]["busy"] >= 1 and info["server"]["major"] == "15" and info["server"]["current_lsn"]
            assert all(s["application"] != "lifeboat.backup" for s in info["sessions"]), "its own session is not reported"
            assert info["client_tools"]["dir"] == str(BIN)
            assert {"name": f"{namespace}_forever", "valid_until": "infinity"}.items() <= next(
                r for r in info["roles"] if r["name"] == f"{namespace}_forever"
            ).items()
            quiet = run_module("postgresql_info", **conn(postgres_server))
            assert "query" not in next(s for s in quiet["sessions"] if s["pid"] == pid)
        finally:
            postgres_server.psql(f"SELECT pg_cancel_backend({pid}); DROP ROLE {namespace}_forever")
            worker.join()


def _sleep_until_cancelled(connection):
    with contextlib.suppress(psycopg.errors.QueryCanceled):
        connection.execute("SELECT pg_sleep(60)")


@pytest.mark.fault("timeout", "a table held ACCESS EXCLUSIVE by another session; pg_dump lock_wait_timeout=2")
def test_a_table_locked_by_another_session_fails_after_lock_wait_timeout(pg_database, age_key, tmp_path, fault):
    """A migration holding ACCESS EXCLUSIVE: pg_dump gives up after lock_wait_timeout, and the
    message says it was a lock (pg_dump itself only reports a "statement timeout")."""
    server, name = pg_database.server, pg_database.name
    _identity, recipient = age_key
    pg_database.psql("CREATE TABLE migrating (id int)")
    backup = Backup(tmp_path, recipient)
    with psycopg.connect(server.dsn(dbname=name)) as migration:
        migration.execute("LOCK TABLE migrating IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        dumped = run_module("postgresql_dump", session=backup.work_dir, databases=[name], globals=False, lock_wait_timeout=2, **conn(server))
        waited = time.monotonic() - started
        migration.rollback()
    fault.observe(false_success=not dumped.failed)
    fault.scan([server.password], dumped)
    assert dumped.failed, dumped
    assert "canceling statement due to statement timeout" in dumped["msg"], dumped["msg"]
    assert "pg_dump waited lock_wait_timeout=2 s for a table lock" in dumped["msg"], dumped["msg"]
    assert 2 <= waited < 30
    sealed = backup.seal()
    fault.observe(false_success=sealed.get("verdict") != "failed" or backup.images() != [])
    assert sealed["verdict"] == "failed" and backup.images() == []
