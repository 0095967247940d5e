#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postgresql_dump
short_description: Logical PostgreSQL backup streamed into the backup image
version_added: 0.1.0
description:
  - With O(mode=per_database) (the default), writes the cluster's globals (roles with their
    passwords and memberships, tablespaces; C(pg_dumpall --globals-only)) and then each
    selected database as a C(pg_dump) custom-format archive, each into its own image member.
  - The dump output is streamed through compression and encryption into the image; no
    plaintext copy is written to disk. With O(jobs) above 1 a database is dumped as parallel
    streams from one exported snapshot - schema before the data, the rows of the larger tables
    (split into block ranges on PostgreSQL 14 and later) as C(COPY) streams, the rest of the
    data, schema after the data - each its own member (C(docs/postgresql.md), "Parallel dump
    format"). The streams wait, compressed and encrypted, in the session's private scratch
    area until all of them succeeded, and are then appended to the image.
  - Each database is dumped from a snapshot exported by this module, so the optional row
    counts (O(row_counts)) are taken in exactly the state the dump holds. The WAL position at
    the start (marker C(lsn)) and per database, the database sizes and properties are recorded
    in the manifest.
  - A database counts as dumped only when C(pg_dump) exited 0, wrote no error, wrote a
    non-empty archive, and C(pg_restore --list) read the archive back - fed the very bytes
    that go into the image as they pass, nothing on disk (see O(verify)). Anything else fails
    the component and discards the member.
  - With O(mode=dumpall), a single C(pg_dumpall) SQL script of the whole cluster is written
    instead (one member). It cannot exclude tables, and restoring it needs C(psql).
  - Picks the client tools of the server's major version (or the nearest newer one) and
    refuses to run with older ones.
  - Before starting, compares the free space at the destination with an estimate from the
    database sizes (O(space_factor)) and refuses when it is clearly insufficient.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._session
  - lifeboat.backup._postgresql
  - lifeboat.backup._progress
attributes:
  check_mode:
    support: full
    details: Connects, selects the databases, finds the client tools and checks the free space; reports what would be dumped and writes nothing.
  diff_mode:
    support: none
options:
  name:
    default: postgresql
  mode:
    description:
      - C(per_database) dumps globals plus one custom-format archive per database (restorable
        one by one, in parallel, under another name). C(dumpall) writes one SQL script of the
        whole cluster with C(pg_dumpall).
    type: str
    choices: [per_database, dumpall]
    default: per_database
  databases:
    description:
      - Databases to dump. Default is every database that accepts connections and is not a
        template (C(postgres) included).
      - A listed database that does not exist fails the module before anything is written.
    type: list
    elements: str
    default: []
  exclude_databases:
    description:
      - Databases to leave out (names; with O(mode=dumpall), C(pg_dumpall --exclude-database) patterns).
    type: list
    elements: str
    default: []
  globals:
    description:
      - With O(mode=per_database), also dump roles and tablespaces (C(pg_dumpall --globals-only)).
    type: bool
    default: true
  role_passwords:
    description:
      - Include the role password hashes in the globals. Reading them needs a superuser; when
        O(login_user) is not one, the passwords are left out and a warning says so.
    type: bool
    default: true
  exclude_tables:
    description:
      - C(pg_dump --exclude-table) patterns (for example C(public.tmp_*)); neither definition nor
        data of matching tables is dumped. Applied to every dumped database.
    type: list
    elements: str
    default: []
  exclude_table_data:
    description:
      - C(pg_dump --exclude-table-data) patterns; the table definitions are kept, their rows are not.
    type: list
    elements: str
    default: []
  audit_tables:
    description:
      - Patterns (as for O(exclude_table_data)) naming the platform's audit tables (audit,
        error and raw message logs that grow fast).
      - Their rows are left out unless O(include_audit) is set; their definitions are always
        dumped, so the application still finds them after a restore.
    type: list
    elements: str
    default: []
  include_audit:
    description:
      - Include the rows of O(audit_tables). A I(standard) backup excludes audits by design, so
        this needs a session started with C(selection=custom).
    type: bool
    default: false
  jobs:
    description:
      - Parallel streams per database (see the description). 1 streams one custom-format
        archive directly.
      - Each stream holds a connection to the server, and the module holds one more with the
        exported snapshot.
    type: int
    default: 1
  row_counts:
    description:
      - Count the rows of every dumped table (in the dump's snapshot) and record them in the
        manifest, for O(lifeboat.backup.postgresql_restore#module:verify_counts). Costs one
        C(count(*)) per table.
      - Any O(fingerprint) other than C(none) records the row counts too.
    type: bool
    default: false
  fingerprint:
    description:
      - What a restore must reproduce, recorded for the restore drill and
        M(lifeboat.backup.postgresql_fingerprint) (C(docs/drills.md)).
      - C(full) - per table with rows in the dump, its row count and a digest of its rows' text
        (one pass over the table in the dump's snapshot, no sort); the values of the dumped
        sequences, read before the dump; the number of large objects. C(counts) - row counts only.
        C(none) - nothing.
      - The row counts go into the manifest; digests and sequence values into the encrypted
        member C(fingerprint.json) of the component (a digest of a short table could be
        guessed).
      - Costs one more sequential read of every dumped table inside the server (an md5 per row,
        no sort, nothing sent but three numbers per table); O(fingerprint_max_bytes) bounds it for
        large tables and C(counts) reduces it to a C(count(*)) (C(docs/drills.md)).
    type: str
    choices: [full, counts, none]
    default: full
    version_added: 0.2.0
  fingerprint_max_bytes:
    description:
      - Tables larger than this (C(pg_table_size)) get a digest of a fixed sample of their rows
        (those whose primary key's md5 starts with C(00), about 1 in 256), or only their row
        count when they have no primary key. 0 digests every table whole.
    type: int
    default: 1073741824
    version_added: 0.2.0
  verify:
    description:
      - How a custom-format archive is read back while it streams into the image. C(toc) feeds it
        to C(pg_restore --list), which reads the header and the table of contents. C(full) also
        feeds it to C(pg_restore --file=/dev/null), which reads every data block to the end, at
        the cost of more CPU (10 to 60 % longer dumps on two busy cores).
      - With O(jobs) > 1 the three custom-format parts are checked with C(pg_restore --list)
        and a rows member counts only when C(psql) exited 0 without an error.
    type: str
    choices: [toc, full]
    default: toc
  lock_wait_timeout:
    description:
      - Seconds C(pg_dump) waits for the shared table locks it needs before failing (instead of
        waiting forever behind, for example, a schema migration).
    type: int
  space_factor:
    description:
      - The dump is refused when the free space at the session's destination is below
        O(space_factor) times the summed size of the selected databases (plus, with O(jobs) > 1,
        O(space_factor) times the largest database once more, for its compressed and encrypted
        streams, which wait in the scratch area until all of them succeeded).
      - A compressed dump is usually 5 to 30 % of the database size, so the default 0.1 only
        catches a clearly insufficient destination. 0 disables the check.
    type: float
    default: 0.1
  halt:
    description:
      - Stop at the first database that fails instead of dumping the others. Defaults to the
        session's halt setting.
    type: bool
requirements:
  - cryptography (Python library, on the managed node) when the session encrypts.
  - zstandard (Python library, on the managed node) when the session compresses with zstd.
notes:
  - The dump runs with C(--compress=0); the session's compression (zstd by default) compresses
    it once, faster than C(pg_dump)'s own gzip.
  - Database-level properties (owner, encoding, locale, privileges, settings, comment) are in
    each archive and also recorded in the manifest, so a database restored under another name
    gets them too.
seealso:
  - module: lifeboat.backup.postgresql_restore
  - module: lifeboat.backup.postgresql_info
  - module: lifeboat.backup.postgresql_basebackup
  - module: lifeboat.backup.backup_session
"""

EXAMPLES = r"""
- name: Dump globals and every database (threat-intel platform profile, audit rows left out)
  lifeboat.backup.postgresql_dump:
    session: "{{ backup.session.work_dir }}"
    login_host: 127.0.0.1
    login_password: "{{ vault_postgres_password }}"
    audit_tables: [public.audit_log, public.raw_message_log]

- name: One big database with four pg_dump workers, row counts for the restore check
  lifeboat.backup.postgresql_dump:
    session: "{{ backup.session.work_dir }}"
    login_unix_socket: /var/run/postgresql
    databases: [platform]
    jobs: 4
    row_counts: true
  become: true
  become_user: postgres

- name: What would be dumped, and is there room for it?
  lifeboat.backup.postgresql_dump:
    session: "{{ backup.session.work_dir }}"
    login_password: "{{ vault_postgres_password }}"
  check_mode: true
  register: plan
"""

RETURN = r"""
component:
  description: Component name in the image.
  returned: always
  type: str
  sample: postgresql
mode:
  description: The mode used.
  returned: always
  type: str
  sample: per_database
databases:
  description:
    - One entry per selected database. After a dump, with the member written, the archive
      format, the bytes dumped and stored, the number of tables with data, the seconds taken,
      and the error for a database that failed.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: app, size: 81234567, member: postgresql/db-app.dump.zst.age, format: custom, dump_bytes: 52345678,
       stored_bytes: 9123456, table_data: 42, duration: 3.2}
members:
  description: Image members written.
  returned: success and not check mode
  type: list
  elements: str
  sample: [postgresql/globals.sql.zst.age, postgresql/db-app.dump.zst.age]
lsn:
  description: WAL position when the dump started (replay position on a standby).
  returned: always
  type: str
  sample: 0/5000028
estimated_bytes:
  description: Summed size of the selected databases.
  returned: always
  type: int
  sample: 81234567
needed_bytes:
  description: Free space required by the preflight check (see O(space_factor)).
  returned: always
  type: int
  sample: 8123456
free_bytes:
  description: Free space at the destination when the module started.
  returned: always
  type: int
  sample: 1073741824
client_tools:
  description: Directory and version of the client tools used.
  returned: always
  type: dict
  sample: {dir: /usr/lib/postgresql/15/bin, version: pg_dump (PostgreSQL) 15.18, version_num: 150018}
stored_bytes:
  description: Bytes the component takes in the image.
  returned: success and not check mode
  type: int
  sample: 9123456
duration:
  description: Seconds spent dumping.
  returned: success and not check mode
  type: float
  sample: 4.1
failed:
  description: Databases (or C(globals)) that could not be dumped, with the reason.
  returned: failure
  type: list
  elements: dict
  sample: [{name: app, error: "pg_dump was killed by signal 9"}]
warnings_detail:
  description: Warnings recorded in the manifest for this component.
  returned: always
  type: list
  elements: str
  sample: []
lifeboat_succeeded:
  description:
    - C(true) in every successful result of a lifeboat.backup module, absent from every failure.
    - The roles run modules with C(failed_when) false and count every result without it (a failure, a crash,
      a timeout) as failed; see docs/architecture.md, section Module result contract.
  returned: success
  type: bool
  sample: true
  version_added: 0.2.0
"""

import errno
import functools
import hashlib
import io
import os
import threading
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _fingerprint, _image, _proc, _session
from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql as pg
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule
from ansible_collections.lifeboat.backup.plugins.module_utils._progress import PROGRESS_SPEC

CUSTOM_MEDIA = "application/vnd.postgresql.custom-archive"
STREAMS_FORMAT = "streams"
STREAM_MIN_BYTES = 64 * 1024  # smaller tables go with pg_dump's rest of the data section
STREAM_MAX_TABLES = 1000
RANGE_MIN_BYTES = 4 * 1024 * 1024  # no block range smaller than this
RANGES_PER_JOB = 4
MAX_RANGES = 64
SQL_MEDIA = pg.SQL_MEDIA
CLUSTER_TRAILER = b"PostgreSQL database cluster dump complete"
LARGE_OBJECT_DESCS = ("BLOB", "BLOBS", "BLOB METADATA", "LARGE OBJECT", "LARGE OBJECTS")


class DumpError(LifeboatError):
    """One database (or the globals) could not be dumped; the message says why."""


def member_stem(database):
    """A file-name-safe stem for a database; a hash keeps two similar names apart."""
    safe = _image.safe_name(database, "db")
    if safe != database:
        safe += "-" + hashlib.sha256(database.encode("utf-8")).hexdigest()[:8]
    return "db-" + safe


def select_databases(available, wanted, excluded):
    """(selected names, unknown names). ``available``: dicts from list_databases."""
    dumpable = [d["name"] for d in available if d["allow_connections"] and not d["is_template"]]
    names = {d["name"] for d in available}
    unknown = [w for w in wanted if w not in names]
    chosen = list(wanted) if wanted else dumpable
    return [n for n in chosen if n not in set(excluded)], unknown


def list_databases(conn):
    rows = pg.execute(
        conn,
        "SELECT datname, datallowconn, datistemplate, CASE WHEN has_database_privilege(datname, 'CONNECT') THEN pg_database_size(datname) ELSE 0 END "
        "FROM pg_database ORDER BY datname",
    )
    return [{"name": r[0], "allow_connections": r[1], "is_template": r[2], "size": int(r[3])} for r in rows]


def exclusion_args(params, audit_included):
    args = ["--exclude-table=%s" % p for p in params["exclude_tables"]]
    args += ["--exclude-table-data=%s" % p for p in params["exclude_table_data"]]
    if not audit_included:
        args += ["--exclude-table-data=%s" % p for p in params["audit_tables"]]
    if params["lock_wait_timeout"]:
        args.append("--lock-wait-timeout=%ds" % params["lock_wait_timeout"])
    return args


def check_stderr(tool, stderr):
    errors = pg.error_lines(stderr)
    if errors:
        raise DumpError("%s reported errors: %s" % (tool, "; ".join(errors[:5])))


class Snapshot:
    """A REPEATABLE READ transaction whose snapshot pg_dump imports (--snapshot), so
    row counts taken here see exactly what the dump holds."""

    def __init__(self, params, database):
        self.conn = pg.connect(params, database)
        self.id = None
        self.lsn = None
        try:
            pg.execute(self.conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self.id = pg.scalar(self.conn, "SELECT pg_export_snapshot()")
        except pg.PgError:
            pg.execute(self.conn, "ROLLBACK")  # e.g. not allowed here: pg_dump takes its own
        self.lsn, _recovery = pg.current_lsn(self.conn)
        # Sequences are not transactional: read before pg_dump reads them, a restored value
        # can only be the same or higher.
        self.sequences = _fingerprint.pg_sequences(pg, self.conn) if params["fingerprint"] == "full" else {}

    def fingerprint(self, params, entries):
        """(manifest summary, member data) of the dumped tables, in the dump's snapshot."""
        started = time.time()
        _fingerprint.pg_prepare(pg, self.conn)
        oids = [e["oid"] for e in entries if e["desc"] == "TABLE DATA"]
        tables = _fingerprint.pg_database(pg, self.conn, oids, params["fingerprint"], params["fingerprint_max_bytes"])
        data = {"tables": tables}
        if params["fingerprint"] == "full":
            data.update(self.full_fingerprint(entries))
        summary = {
            "tables": len(tables),
            "rows": sum(t["rows"] for t in tables.values()),
            "sampled": sorted(n for n, t in tables.items() if t["method"] == "sample"),
            "counts_only": sorted(n for n, t in tables.items() if t["method"] == "counts") if params["fingerprint"] == "full" else [],
            "seconds": round(time.time() - started, 3),
        }
        return summary, data

    def full_fingerprint(self, entries):
        """The sequences and the large objects of the dump, for fingerprint=full."""
        # SEQUENCE SET items carry no OID: the SEQUENCE items name the sequences, and when
        # some have no value in the dump (a schema-only part) none is fingerprinted.
        dumped = {e["oid"] for e in entries if e["desc"] == "SEQUENCE"}
        if len(dumped) != sum(1 for e in entries if e["desc"] == "SEQUENCE SET"):
            dumped = set()
        data = {"sequences": {name: value for oid, (name, value) in sorted(self.sequences.items()) if oid in dumped}}
        if any(e["desc"] in LARGE_OBJECT_DESCS for e in entries):
            data["large_objects"] = _fingerprint.pg_large_objects(pg, self.conn)
        return data

    def row_counts(self, oids):
        """[[schema, table, rows]] for the tables with these OIDs, in the dump's snapshot."""
        if not oids:
            return []
        names = pg.execute(
            self.conn,
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY(%s) ORDER BY 1, 2",
            (sorted(oids),),
        )
        counts = []
        for schema, table in names:
            rows = pg.scalar(self.conn, "SELECT count(*) FROM ONLY %s.%s" % (pg.quote_ident(schema), pg.quote_ident(table)))
            counts.append([schema, table, int(rows)])
        return counts

    def lock(self, tables, timeout=None):
        """ACCESS SHARE locks on the streamed tables, held until the end as pg_dump's leader
        holds them for its workers: no TRUNCATE or DROP can empty a table under the snapshot."""
        if not tables:
            return
        if timeout:
            pg.execute(self.conn, "SET LOCAL lock_timeout = %d" % (timeout * 1000))
        names = ", ".join("%s.%s" % (pg.quote_ident(schema), pg.quote_ident(table)) for schema, table in sorted(set(tables)))
        pg.execute(self.conn, "LOCK TABLE %s IN ACCESS SHARE MODE" % names)

    def close(self):
        try:
            pg.execute(self.conn, "COMMIT")
        except pg.PgError:
            pass
        self.conn.close()


def explain_dump_error(text, lock_wait_timeout):
    """pg_dump enforces --lock-wait-timeout with statement_timeout on its LOCK TABLE, so a
    table locked by someone else reads as a "statement timeout": say what it means."""
    if lock_wait_timeout and "canceling statement due to statement timeout" in text:
        return (
            "%s (pg_dump waited lock_wait_timeout=%d s for a table lock: another session holds a conflicting "
            "lock, such as a migration or a long transaction - see pg_locks and pg_stat_activity)" % (text, lock_wait_timeout)
        )
    return text


def dump_custom(component, appender, tools, env, database, argv_extra, verify, part=None, threads=-1):
    """pg_dump -Fc streamed into a member; pg_restore reads the same bytes back as they pass:
    ``--list`` (header and table of contents), and with verify=full ``--file=/dev/null``
    (every data block, to the end). ``part``: a section of a parallel dump (its member name)."""
    argv = [tools.path("pg_dump"), "--format=custom", "--compress=0", "--no-password"] + argv_extra
    extra = {"database": database, "format": "custom"}
    name = member_stem(database) + ".dump"
    if part:
        extra["part"] = part
        name = "%s.%s.dump" % (member_stem(database), part)
    with component.member(appender, name, CUSTOM_MEDIA, threads=threads, extra=extra) as out:
        feeds = [_proc.Feed([tools.path("pg_restore"), "--list"], env=env)]
        if verify == "full":
            feeds.append(_proc.Feed([tools.path("pg_restore"), "--file=/dev/null"], env=env))
        finished = False
        try:
            tee = _proc.Tee(out, feeds)
            copied, stderr = _proc.stream_from(argv, tee, env=env)
            if not copied:
                raise DumpError("pg_dump exited 0 but wrote nothing")
            if not tee.head.startswith(b"PGDMP"):
                raise DumpError("pg_dump's output is not a custom-format archive")
            check_stderr("pg_dump", stderr)
            try:
                listing, _err = feeds[0].finish()
                for feed in feeds[1:]:
                    feed.finish()
            except _proc.CommandError as exc:
                raise DumpError("pg_restore could not read the archive back: %s" % exc) from None
            finished = True
        finally:
            if not finished:
                for feed in feeds:
                    feed.abort()
        if "Format: CUSTOM" not in listing:
            raise DumpError("pg_restore --list did not recognise the archive")
    return out.record, pg.parse_toc(listing), copied


# ---- parallel dump as streams (jobs > 1) --------------------------------------------------------


def pattern_matched_tables(tools, env, snapshot_id, patterns, exclude_tables):
    """OIDs of the tables pg_dump itself matches with ``patterns`` (its own pattern rules:
    a schema-only dump restricted to them, read back with pg_restore --list)."""
    if not patterns:
        return set()
    argv = [tools.path("pg_dump"), "--format=custom", "--schema-only", "--no-password", "--snapshot=%s" % snapshot_id]
    argv += ["--table=%s" % p for p in patterns] + ["--exclude-table=%s" % p for p in exclude_tables]
    archive = io.BytesIO()
    try:
        _proc.stream_from(argv, archive, env=env)
    except _proc.CommandError as exc:
        if "no matching tables were found" in (exc.stderr or str(exc)):
            return set()
        raise
    feed = _proc.Feed([tools.path("pg_restore"), "--list"], env=env)
    feed.write(archive.getvalue())
    listing, _err = feed.finish()
    return {e["oid"] for e in pg.parse_toc(listing) if e["desc"] == "TABLE"}


def stream_tables(conn, oids, server_num):
    """The tables among ``oids`` whose rows go into streams of their own: ordinary, permanent
    (unlogged ones are pg_dump's to judge, a standby cannot read them), with columns, at least
    STREAM_MIN_BYTES; the STREAM_MAX_TABLES largest, largest first."""
    if not oids:
        return []
    generated = "AND a.attgenerated = ''" if server_num >= 120000 else ""
    rows = pg.execute(
        conn,
        "SELECT c.oid, n.nspname, c.relname, pg_relation_size(c.oid), "
        "array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped %s ORDER BY a.attnum) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = ANY(%%s) AND c.relkind = 'r' AND c.relpersistence = 'p' AND pg_relation_size(c.oid) >= %%s ORDER BY 4 DESC, 2, 3 LIMIT %%s" % generated,
        (sorted(oids), STREAM_MIN_BYTES, STREAM_MAX_TABLES),
    )
    return [{"oid": int(r[0]), "schema": r[1], "table": r[2], "size": int(r[3]), "columns": list(r[4])} for r in rows if r[4]]


def plan_streams(tables, jobs, server_num, block_size):
    """One stream per table; with PostgreSQL 14+ (TID range scans) a table larger than its
    share splits into block ranges, so one big table does not serialise the dump."""
    total = sum(t["size"] for t in tables)
    share = max(RANGE_MIN_BYTES, total // (jobs * RANGES_PER_JOB))
    streams = []
    for table in tables:
        blocks = table["size"] // block_size
        parts = 1
        if server_num >= 140000 and table["size"] > share:
            parts = max(1, min(MAX_RANGES, blocks, -(-table["size"] // share)))
        for part in range(parts):
            low = blocks * part // parts if part else None
            high = blocks * (part + 1) // parts if part < parts - 1 else None
            streams.append(dict(table, range=[low, high], size=table["size"] // parts))
    streams.sort(key=lambda s: -s["size"])  # largest first: the last to finish is a small one
    for number, stream in enumerate(streams, 1):
        stream["number"] = number
    return streams


def copy_out_sql(stream):
    """COPY of one stream: the whole table, or its rows in a block range (a TID range scan)."""
    columns = ", ".join(pg.quote_ident(c) for c in stream["columns"])
    relation = "%s.%s" % (pg.quote_ident(stream["schema"]), pg.quote_ident(stream["table"]))
    low, high = stream["range"]
    bounds = (["ctid >= '(%d,0)'::tid" % low] if low is not None else []) + (["ctid < '(%d,0)'::tid" % high] if high is not None else [])
    if not bounds:
        return "COPY %s (%s) TO STDOUT" % (relation, columns)
    return "COPY (SELECT %s FROM ONLY %s WHERE %s) TO STDOUT" % (columns, relation, " AND ".join(bounds))


def stream_env(env, encoding):
    """pg_dump's session settings for a COPY stream: rows exactly as pg_dump writes them."""
    env = dict(env)
    env["PGCLIENTENCODING"] = encoding
    env["PGOPTIONS"] = "-c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3 -c row_security=off -c statement_timeout=0 -c lock_timeout=0"
    return env


class StreamDump:
    """A database dumped as parallel streams from one exported snapshot (docs/postgresql.md,
    "Parallel dump format"): pre-data, the rows of the larger tables as COPY streams (split
    into block ranges), pg_dump's rest of the data section, post-data. Each stream is
    compressed and encrypted into a spool file in the scratch area as it runs (never
    plaintext), and the spooled members are appended in plan order once all succeeded, so
    a failed database leaves nothing in the image."""

    def __init__(self, component, appender, tools, env, database, argv_extra, params, snapshot, scratch):
        self.component = component
        self.appender = appender
        self.tools = tools
        self.env = env
        self.database = database
        self.argv_extra = argv_extra
        self.params = params
        self.snapshot = snapshot
        self.scratch = scratch
        self.stem = member_stem(database)
        self.spools = {}
        self._spools_lock = threading.Lock()

    def run(self, server_num):
        try:
            return self._run(server_num)
        finally:
            self._drop_spools()

    def _run(self, server_num):
        pre, pre_entries, dumped = dump_custom(
            self.component, self._spool(0, "pre-data"), self.tools, self.env, self.database, self.argv_extra + ["--section=pre-data"], "toc", part="pre-data"
        )
        tables = {e["oid"] for e in pre_entries if e["desc"] == "TABLE"}
        patterns = list(self.params["exclude_table_data"]) + ([] if self.params["include_audit"] else list(self.params["audit_tables"]))
        tables -= pattern_matched_tables(self.tools, self.env, self.snapshot.id, patterns, self.params["exclude_tables"])
        conn = self.snapshot.conn
        encoding = self.encoding = pg.scalar(conn, "SELECT current_setting('server_encoding')")
        block_size = int(pg.scalar(conn, "SELECT current_setting('block_size')"))
        streams = plan_streams(stream_tables(conn, tables, server_num), self.params["jobs"], server_num, block_size)
        self.snapshot.lock([(s["schema"], s["table"]) for s in streams], self.params["lock_wait_timeout"])
        rest_extra = ["--exclude-table-data=%s.%s" % (pattern_quote(s["schema"]), pattern_quote(s["table"])) for s in streams if s["range"][0] is None]
        tasks = [("post-data", self.argv_extra + ["--section=post-data"]), ("data", self.argv_extra + ["--section=data"] + rest_extra)]
        tasks += [("rows", s) for s in streams]
        copy_env = stream_env(self.env, encoding)
        calls = [functools.partial(self._one, index, task, copy_env) for index, task in enumerate(tasks, 1)]
        results = _proc.run_parallel(calls, self.params["jobs"], "lifeboat-dump")
        # Plan order: pre-data, the rows (largest first), pg_dump's rest of the data, post-data.
        order = [0] + list(range(3, len(tasks) + 1)) + [2, 1]
        for index in order:
            self.appender.append_spooled(self.spools.pop(index))
        entries = list(pre_entries)
        members = {"pre-data": pre["name"]}
        stream_records = []
        for kind, value in results:
            if kind == "custom":
                record, part_entries, size = value
                members[record["extra"]["part"]] = record["name"]
                entries += part_entries
                dumped += size
            else:
                record, stream = value
                stream_records.append(stream_record(record, stream))
                dumped += record["plaintext_size"]
        entries += [{"id": None, "tableoid": 1259, "oid": s["oid"], "desc": "TABLE DATA"} for s in streams if s["range"][0] is None]
        members["rows"] = sorted(stream_records, key=lambda s: s["number"])
        stored = sum(m.get("stored_size", 0) for m in self.appender.entries if m["name"] in set(self.member_names(members)))
        return members, entries, dumped, stored, encoding

    @staticmethod
    def member_names(members):
        return [members["pre-data"]] + [s["member"] for s in members["rows"]] + [members["data"], members["post-data"]]

    def _spool(self, index, label):
        spool = _image.SpoolFile(os.path.join(self.scratch, "%s-%d-%s.spool" % (self.stem, os.getpid(), label)))
        with self._spools_lock:
            self.spools[index] = spool
        return spool

    def _one(self, index, task, copy_env):
        # threads=0: each stream compresses and encrypts in its own worker thread; the streams
        # are the parallelism. A helper thread and zstd workers per member would add threads
        # (and glibc malloc arenas) with every stream: peak RSS grew with the number of streams.
        kind, value = task
        if kind != "rows":
            return "custom", dump_custom(self.component, self._spool(index, kind), self.tools, self.env, self.database, value, "toc", part=kind, threads=0)
        spool = self._spool(index, "rows-%d" % value["number"])
        return "rows", (copy_stream(self.component, spool, self.tools, copy_env, self.database, self.snapshot.id, value, self.encoding), value)

    def _drop_spools(self):
        with self._spools_lock:
            for spool in self.spools.values():
                spool.remove()
            self.spools = {}


def pattern_quote(name):
    """A pg_dump pattern matching exactly ``name`` (quoted: no wildcard, no case folding)."""
    return '"%s"' % name.replace('"', '""')


def copy_stream(component, spool, tools, env, database, snapshot_id, stream, encoding):
    """The rows of one table (or block range), read with psql in the exported snapshot, as a
    psql script - ``COPY ... FROM stdin;``, the rows, ``\\.`` as pg_dump writes it in plain
    format - compressed and encrypted into ``spool``. NOWAIT: with the snapshot's holder
    owning a lock on the table, waiting behind someone's exclusive lock request would never end."""
    relation = "%s.%s" % (pg.quote_ident(stream["schema"]), pg.quote_ident(stream["table"]))
    columns = ", ".join(pg.quote_ident(c) for c in stream["columns"])
    argv = [tools.path("psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1"]
    argv += ["-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "-c", "SET TRANSACTION SNAPSHOT %s" % pg.quote_literal(snapshot_id)]
    argv += ["-c", "LOCK TABLE %s IN ACCESS SHARE MODE NOWAIT" % relation, "-c", copy_out_sql(stream)]
    extra = {"database": database, "format": "copy", "schema": stream["schema"], "table": stream["table"], "range": stream["range"]}
    name = "%s.rows-%04d.sql" % (member_stem(database), stream["number"])
    with component.member(spool, name, pg.SQL_MEDIA, threads=0, extra=extra) as out:
        out.write(("SET client_encoding = %s;\nCOPY %s (%s) FROM stdin;\n" % (pg.quote_literal(encoding), relation, columns)).encode("utf-8"))
        try:
            _copied, stderr = _proc.stream_from(argv, out, env=env)
        except _proc.CommandError as exc:
            raise DumpError("COPY of %s failed: %s" % (relation, exc)) from None
        check_stderr("psql", stderr)
        out.write(b"\\.\n")
    return out.record


def stream_record(record, stream):
    """What the manifest says of one rows member (the restore needs table, columns, range)."""
    return {
        "member": record["name"],
        "number": stream["number"],
        "schema": stream["schema"],
        "table": stream["table"],
        "columns": stream["columns"],
        "range": stream["range"],
        "bytes": record["plaintext_size"],
    }


def dump_sql(component, appender, tools, env, argv, member, what):
    """pg_dumpall (globals or whole cluster) into a member; complete only with its trailer."""
    with component.member(appender, member, SQL_MEDIA, threads=-1, extra={"format": "sql", "content": what}) as out:
        tee = _proc.Tee(out)
        copied, stderr = _proc.stream_from(argv, tee, env=env)
        if not copied:
            raise DumpError("pg_dumpall exited 0 but wrote nothing")
        check_stderr("pg_dumpall", stderr)
        if CLUSTER_TRAILER not in tee.tail:
            raise DumpError("pg_dumpall's output ends without its completion line: it is incomplete")
    return out.record


def dump_one(component, appender, tools, env_for, params, database, audit_included, scratch, server_num):
    """Dump one database; returns its manifest details."""
    started = time.time()
    snapshot = Snapshot(params, database)
    try:
        argv_extra = exclusion_args(params, audit_included)
        if snapshot.id:
            argv_extra.append("--snapshot=%s" % snapshot.id)
        env = env_for(database)
        parallel = params["jobs"] > 1 and bool(snapshot.id)
        if params["jobs"] > 1 and not snapshot.id:
            component.warn("%s: no snapshot could be exported, so the streams could not share one; dumped with a single pg_dump (jobs=1)" % database)
        if parallel:
            members, entries, dumped, stored, encoding = StreamDump(component, appender, tools, env, database, argv_extra, params, snapshot, scratch).run(
                server_num
            )
            details = {"member": members["pre-data"], "format": STREAMS_FORMAT, "members": members, "encoding": encoding, "read_back": "toc"}
        else:
            record, entries, dumped = dump_custom(component, appender, tools, env, database, argv_extra, params["verify"])
            stored = record["stored_size"]
            details = {"member": record["name"], "format": "custom", "read_back": "toc+data" if params["verify"] == "full" else "toc"}
        table_oids = sorted({e["oid"] for e in entries if e["desc"] == "TABLE DATA"})
        details.update(
            name=database,
            dump_bytes=dumped,
            stored_bytes=stored,
            toc=pg.toc_summary(entries),
            table_data=len(table_oids),
            snapshot_lsn=snapshot.lsn,
            snapshot=bool(snapshot.id),
        )
        if (params["row_counts"] or params["fingerprint"] != "none") and not snapshot.id:
            component.warn("%s: row counts taken outside the dump's snapshot (it could not be exported); they may differ from the dump" % database)
        if params["fingerprint"] != "none":
            details["fingerprint"], details["fingerprint_data"] = snapshot.fingerprint(params, entries)
            tables = details["fingerprint_data"]["tables"]
            details["row_counts"] = [[t["schema"], t["table"], t["rows"]] for t in tables.values()]
        elif params["row_counts"]:
            details["row_counts"] = snapshot.row_counts(table_oids)
    finally:
        snapshot.close()
    details["duration"] = round(time.time() - started, 3)
    return details


class Survey:
    """What would be dumped: the server read, the databases selected, the client tools found
    and the free space checked. ``result`` is what the module returns (check mode: all)."""

    def __init__(self, params, session):
        self.params = params
        self.session = session
        self.dumpall = params["mode"] == "dumpall"
        self._read_server()
        self._check_selection()
        needed = ["pg_dump", "pg_restore", "pg_dumpall"] + (["psql"] if params["jobs"] > 1 else [])  # psql: the COPY streams
        self.tools = pg.find_tools(self.server_num, needed, params["client_bin_dir"], purpose="a dump of this server")
        self.sizes = {d["name"]: d["size"] for d in self.available}
        self.estimated = sum(self.sizes[d] for d in self.selected)
        self.scratch_needed = self._scratch_needed()
        needed = int(self.estimated * params["space_factor"])
        self.result = dict(
            changed=False,
            component=_image.safe_name(params["name"]),
            mode=params["mode"],
            databases=[{"name": d, "size": self.sizes[d]} for d in self.selected],
            lsn=self.lsn,
            estimated_bytes=self.estimated,
            needed_bytes=needed + self.scratch_needed,
            free_bytes=pg.free_bytes(session.work_dir),
            client_tools=self.tools.describe(),
            warnings_detail=[],
        )

    def _read_server(self):
        params = self.params
        conn = pg.connect(params)
        try:
            self.server_num, self.server_text = pg.server_version(conn)
            self.superuser = bool(pg.scalar(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
            self.available = list_databases(conn)
            self.lsn, self.in_recovery = pg.current_lsn(conn)
            wanted = [] if self.dumpall else params["databases"]
            self.selected, self.unknown = select_databases(self.available, wanted, params["exclude_databases"])
            self.props = {} if self.dumpall else {d: pg.database_props(conn, self.server_num, d) for d in self.selected}
        except pg.PgError as exc:
            raise pg.PgError("reading the database list from %s failed: %s" % (pg.where(params), exc)) from None
        finally:
            conn.close()

    def _check_selection(self):
        if self.unknown:
            names = ", ".join(d["name"] for d in self.available if not d["is_template"])
            raise OptionError("databases", "databases: %s not found on the server; it has: %s" % (", ".join(self.unknown), names))
        if not self.selected and not (self.params["globals"] and not self.dumpall):
            raise OptionError("databases", "nothing to dump: no database selected (check databases and exclude_databases)")

    def _scratch_needed(self):
        """With jobs > 1 a database's streams wait, compressed and encrypted, in the scratch
        area (on the destination) until all of them succeeded: its share once more."""
        params = self.params
        if params["jobs"] <= 1 or params["space_factor"] <= 0:
            return 0
        return int(max([self.sizes[d] for d in self.selected] or [0]) * params["space_factor"])

    def check_space(self):
        """Raise when the destination clearly cannot hold the dump (space_factor 0: no check)."""
        params = self.params
        if params["space_factor"] <= 0:
            return
        problem = pg.space_problem(self.session.work_dir, self.result["needed_bytes"], "the PostgreSQL dump")
        if not problem:
            return
        scratch = ""
        if self.scratch_needed:
            scratch = "; plus %s for the largest database's compressed streams in the scratch area (jobs=%d)" % (
                pg.format_size(self.scratch_needed),
                params["jobs"],
            )
        problem += " (estimate: space_factor %s x %s, the size of %s%s)" % (
            params["space_factor"],
            pg.format_size(self.estimated),
            ", ".join(self.selected) or "the globals",
            scratch,
        )
        raise LifeboatError(problem, **self.result)


def validate(params, session):
    """Options that cannot work together; raises OptionError naming them."""
    dumpall = params["mode"] == "dumpall"
    if params["jobs"] < 1:
        raise OptionError("jobs", "jobs must be 1 or more")
    if params["space_factor"] < 0:
        raise OptionError("space_factor", "space_factor must be 0 (no check) or more")
    if dumpall and (params["databases"] or params["exclude_tables"] or params["exclude_table_data"] or params["jobs"] > 1):
        raise OptionError(
            "mode", "mode=dumpall dumps the whole cluster as one SQL script: databases, exclude_tables, exclude_table_data and jobs need mode=per_database"
        )
    if dumpall and params["audit_tables"] and not params["include_audit"]:
        raise OptionError("mode", "mode=dumpall cannot leave out the rows of audit_tables; use mode=per_database (or include_audit with a custom selection)")
    if params["include_audit"] and (session.data.get("selection") or "standard") != "custom":
        raise OptionError(
            "include_audit",
            "include_audit=true needs a session started with selection=custom: a standard backup excludes audit tables by design. "
            "Start the session with selection=custom, or drop include_audit",
        )


class Dump:
    """Runs a surveyed dump into the component: globals (or the whole cluster), then each
    database. Failures are collected per database; with ``halt`` the first one stops it."""

    def __init__(self, survey, component, halt):
        self.survey = survey
        self.params = survey.params
        self.component = component
        self.halt = halt
        self.members = []
        self.failed = []
        self.fingerprints = {}
        self.role_passwords = self._role_passwords()
        self.details = self._details()

    def _role_passwords(self):
        if self.params["role_passwords"] and not self.survey.superuser:
            self.component.warn(
                "%s is not a superuser: role passwords were not dumped (pg_authid is unreadable); set them again after a restore" % self.params["login_user"]
            )
            return False
        return self.params["role_passwords"]

    def _details(self):
        params, survey = self.params, self.survey
        return {
            "mode": params["mode"],
            "server_version": survey.server_text,
            "server_version_num": survey.server_num,
            "in_recovery": survey.in_recovery,
            "client": survey.tools.describe(),
            "role_passwords": self.role_passwords,
            "exclude_tables": params["exclude_tables"],
            "exclude_table_data": params["exclude_table_data"],
            "audit": {"tables": params["audit_tables"], "included": bool(params["include_audit"])},
            "selection": survey.session.data.get("selection") or "standard",
            "databases": [],
            "globals_member": None,
            "estimated_bytes": survey.estimated,
        }

    def run(self):
        session = self.survey.session
        try:
            with session.heartbeat(), pg.password_file(self.params["login_password"], session.work_dir) as passfile, self.component.appender() as appender:
                self.appender = appender
                self.passfile = passfile
                if self.survey.dumpall or self.params["globals"]:
                    self.dump_globals()
                if not self.survey.dumpall and not (self.failed and self.halt):
                    self.dump_databases()
                if self.fingerprints:
                    self.write_fingerprint()
        except (OSError, LifeboatError) as exc:
            reason = "PostgreSQL dump failed: %s" % (getattr(exc, "strerror", None) or exc)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                reason += " (the destination is full: free space or choose another destination)"
            self.failed.append({"name": "postgresql", "error": reason})

    def env_for(self, database=None):
        return pg.client_env(self.params, database, self.passfile, application="lifeboat.backup pg_dump")

    def dump_globals(self):
        params, tools = self.params, self.survey.tools
        argv = [tools.path("pg_dumpall"), "--no-password"]
        if not self.role_passwords:
            argv.append("--no-role-passwords")
        if self.survey.dumpall:
            argv += ["--exclude-database=%s" % p for p in params["exclude_databases"]]
            member, what, key = "cluster.sql", "cluster", "cluster_member"
        else:
            argv.append("--globals-only")
            member, what, key = "globals.sql", "globals", "globals_member"
        argv.append("--database=%s" % params["login_db"])
        try:
            record = dump_sql(self.component, self.appender, tools, self.env_for(params["login_db"]), argv, member, what)
        except (DumpError, _proc.CommandError) as exc:
            self.failed.append({"name": what, "error": str(exc)})
            return
        self.members.append(record["name"])
        self.component.add_member_record(record)
        self.details[key] = record["name"]
        if self.survey.dumpall:
            self.details["databases"] = [{"name": d, "size": self.survey.sizes[d]} for d in self.survey.selected]

    def dump_databases(self):
        survey, params = self.survey, self.params
        audit_included = bool(params["include_audit"])
        for database in survey.selected:
            try:
                info = dump_one(
                    self.component, self.appender, survey.tools, self.env_for, params, database, audit_included, survey.session.scratch, survey.server_num
                )
            except (DumpError, _proc.CommandError, pg.PgError) as exc:
                self.failed.append({"name": database, "error": explain_dump_error(str(exc), params["lock_wait_timeout"])})
                if self.halt:
                    break
                continue
            fingerprint = info.pop("fingerprint_data", None)
            if fingerprint is not None:
                self.fingerprints[database] = fingerprint
            info["size"] = survey.sizes[database]
            info["properties"] = survey.props.get(database)
            self.details["databases"].append(info)
            for name in StreamDump.member_names(info["members"]) if "members" in info else [info["member"]]:
                self.members.append(name)
                self.component.add_member_record({"name": name})
            for entry in survey.result["databases"]:
                if entry["name"] == database:
                    entry.update({k: info[k] for k in ("member", "format", "dump_bytes", "stored_bytes", "table_data", "duration")})

    def write_fingerprint(self):
        """The digests and sequence values of every dumped database, as one encrypted member."""
        data = _fingerprint.document("postgresql", {"level": self.params["fingerprint"], "databases": self.fingerprints})
        with self.component.member(self.appender, _fingerprint.MEMBER, _fingerprint.MEDIA_TYPE) as out:
            out.write(data)
        self.members.append(out.record["name"])
        self.component.add_member_record(out.record)
        self.details["fingerprint"] = {"member": out.record["name"], "level": self.params["fingerprint"], "databases": sorted(self.fingerprints)}

    def report(self, started):
        """The module's result; raises LifeboatError when a database (or the globals) failed."""
        result = self.survey.result
        result["warnings_detail"] = self.component.record["warnings"]
        for entry in self.failed:
            for db in result["databases"]:
                if db["name"] == entry["name"]:
                    db["error"] = entry["error"]
        if self.failed:
            reason = "; ".join("%s: %s" % (f["name"], f["error"]) for f in self.failed)
            self.component.fail(reason, self.details)
            raise LifeboatError("PostgreSQL dump failed: %s" % reason, failed=self.failed, **result)
        self.component.succeed(self.details)
        stored = sum(e.get("stored_size", 0) for e in self.appender.entries if e["name"] in self.members)
        return dict(result, changed=True, members=self.members, stored_bytes=stored, duration=round(time.time() - started, 3))


def dump(module):
    params = module.params
    session = module.open_session(params["session"])
    module.require("psycopg (or psycopg2)", pg.HAS_PSYCOPG, pg.PSYCOPG_IMPORT_ERROR)
    component = None if module.check_mode else module.start_component(session, params["name"], "postgresql")
    validate(params, session)
    survey = Survey(params, session)
    if module.check_mode:
        survey.check_space()
        return dict(survey.result, changed=True)
    survey.check_space()
    started = time.time()
    component.marker("lsn", survey.lsn)
    run = Dump(survey, component, session.halt if params["halt"] is None else params["halt"])
    run.run()
    result = run.report(started)
    for text in component.record["warnings"]:
        module.warn(text)
    return result


def main():
    module = LifeboatModule(
        argument_spec=dict(
            mode=dict(type="str", choices=["per_database", "dumpall"], default="per_database"),
            databases=dict(type="list", elements="str", default=[]),
            exclude_databases=dict(type="list", elements="str", default=[]),
            globals=dict(type="bool", default=True),
            role_passwords=dict(type="bool", default=True, no_log=False),
            exclude_tables=dict(type="list", elements="str", default=[]),
            exclude_table_data=dict(type="list", elements="str", default=[]),
            audit_tables=dict(type="list", elements="str", default=[]),
            include_audit=dict(type="bool", default=False),
            jobs=dict(type="int", default=1),
            row_counts=dict(type="bool", default=False),
            fingerprint=dict(type="str", choices=list(_fingerprint.LEVELS), default="full"),
            fingerprint_max_bytes=dict(type="int", default=1024 * 1024 * 1024),
            verify=dict(type="str", choices=["toc", "full"], default="toc"),
            lock_wait_timeout=dict(type="int"),
            space_factor=dict(type="float", default=0.1),
            halt=dict(type="bool"),
        ),
        specs=[pg.CONNECTION_SPEC, _session.component_spec("postgresql"), PROGRESS_SPEC],
        mutually_exclusive=pg.CONNECTION_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    module.run(dump)


if __name__ == "__main__":
    main()
