#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postgresql_restore
short_description: Restore PostgreSQL globals and databases from a backup image
version_added: 0.1.0
description:
  - Restores what M(lifeboat.backup.postgresql_dump) captured, in order - globals (roles,
    memberships, tablespaces) first, then each database.
  - A database is restored into an empty target. A target that does not exist is created
    with the dumped database's properties (owner, encoding, locale, privileges, settings,
    comment). An existing empty database is restored into as it is. A target that holds
    anything is refused unless O(clean) is set, which drops and recreates it.
  - Custom-format archives are streamed from the image into C(pg_restore) with O(jobs=1);
    nothing is written to disk. C(pg_restore --jobs) needs a seekable file, so with O(jobs)
    above 1 the archive is first decrypted into a private scratch directory (O(scratch_dir),
    mode 0700), and directory-format archives (dumped with C(jobs) above 1 before 0.2.0) are
    always unpacked there; the scratch files are removed afterwards whatever happens.
  - A parallel dump (format C(streams), dumped with C(jobs) above 1) is restored schema first,
    then its rows members and the rest of its data on O(jobs) threads, streamed from the image,
    then its post-data part (indexes, constraints; no table rows) with C(pg_restore --jobs)
    from a scratch file.
  - O(verify_counts) compares the row count of every table with the count recorded in the
    dump's snapshot (the dump must have been taken with C(row_counts=true)).
  - An image written with C(mode=dumpall) is replayed with C(psql) into a cluster that does
    not have its databases yet (or with O(clean), after dropping them).
  - Before anything is changed, every member the restore uses is read and authenticated
    (O(authenticate)); a damaged image or a key that does not open it changes nothing.
  - Stops at the first error (C(pg_restore --exit-on-error)); a database that failed half-way
    is named in the error and left as it is for inspection, and C(done) lists every database
    dropped, created or restored before the failure.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._decryption
  - lifeboat.backup._decryption.image
  - lifeboat.backup._postgresql
  - lifeboat.backup._restore
  - lifeboat.backup._progress
attributes:
  check_mode:
    support: full
    details:
      - Reads the manifest and the globals and inspects the target; reports which roles and databases would be
        created or replaced, and refuses what a real run would refuse.
  diff_mode:
    support: none
options:
  component:
    description:
      - Name of the PostgreSQL component in the image.
    type: str
    default: postgresql
  databases:
    description:
      - Databases of the image to restore (their names at dump time). Default is all of them.
    type: list
    elements: str
    default: []
  rename:
    description:
      - Restore a database under another name - keys are names in the image, values the new
        names. The new database gets the dumped properties too.
    type: dict
    default: {}
  globals:
    description:
      - C(missing) creates the roles and tablespaces that do not exist on the target (with
        their attributes, passwords and settings) and leaves existing ones untouched.
      - C(all) also resets the attributes, passwords and settings of existing roles to those of
        the image - except the role this module logs in as, which is never altered.
      - C(none) restores no globals. Memberships are added in C(missing) and C(all).
    type: str
    choices: [missing, all, none]
    default: missing
  clean:
    description:
      - Drop and recreate target databases that are not empty. Without it, a non-empty target is
        refused. A target with connected sessions cannot be dropped; stop the applications first.
    type: bool
    default: false
  jobs:
    description:
      - Parallel C(pg_restore) workers per database. Above 1, custom-format archives are
        decrypted into O(scratch_dir) first (see the description); a parallel dump's rows
        are loaded on this many threads, streamed.
    type: int
    default: 1
  scratch_dir:
    description:
      - Where archives are unpacked when C(pg_restore) needs a file (O(jobs) above 1, or an archive
        dumped in directory format). A private 0700 directory is created in it and removed
        afterwards. Default is the directory of O(image).
      - Its free space is checked against the archive's size before anything is restored.
    type: path
  verify_counts:
    description:
      - After each database, compare the row count of every table with the count recorded at
        dump time; any difference fails the module, naming the tables.
    type: bool
    default: false
  analyze:
    description:
      - Run C(ANALYZE) on each restored database, so the planner has statistics when the
        application comes back.
    type: bool
    default: true
notes:
  - Large objects, sequences (with their current values), materialized views (refreshed),
    functions, privileges and default privileges are part of the archives and restored by
    C(pg_restore).
seealso:
  - module: lifeboat.backup.postgresql_dump
  - module: lifeboat.backup.image_verify
"""

EXAMPLES = r"""
- name: What would be restored? (nothing is changed)
  lifeboat.backup.postgresql_restore:
    image: /var/backups/lifeboat/20261122T194512Z-db1.zip
    passphrase: "{{ vault_backup_passphrase }}"
    login_host: 127.0.0.1
    login_password: "{{ vault_postgres_password }}"
  check_mode: true
  register: plan

- name: Restore everything into a fresh cluster, four workers, checking row counts
  lifeboat.backup.postgresql_restore:
    image: /var/backups/lifeboat/20261122T194512Z-db1.zip
    passphrase: "{{ vault_backup_passphrase }}"
    login_host: 127.0.0.1
    login_password: "{{ vault_postgres_password }}"
    jobs: 4
    verify_counts: true

- name: Restore one database beside the live one, for inspection
  lifeboat.backup.postgresql_restore:
    image: /var/backups/lifeboat/20261122T194512Z-db1.zip
    identity_file: /root/backup-key.txt
    login_unix_socket: /var/run/postgresql
    databases: [platform]
    rename: {platform: platform_restored}
    globals: none
  become: true
  become_user: postgres
"""

RETURN = r"""
databases:
  description:
    - One entry per database - its name in the image, the target name, the action
      (C(create), C(restore_into_empty), C(replace)), the member read, the archive format, and
      after a real run the seconds taken and whether the row counts matched.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: app, target: app, action: create, member: postgresql/db-app.dump.zst.age, format: custom, duration: 12.5, counts_verified: true}
roles_created:
  description: Roles that were (or would be) created.
  returned: always
  type: list
  elements: str
  sample: [app, readers]
roles_kept:
  description: Roles of the image that already existed on the target and were left as they are (with O(globals=missing)) or updated (O(globals=all)).
  returned: always
  type: list
  elements: str
  sample: [postgres]
tablespaces_created:
  description: Tablespaces that were (or would be) created.
  returned: always
  type: list
  elements: str
  sample: []
count_mismatches:
  description: With O(verify_counts), the tables whose row count differs (database, table, dumped, restored).
  returned: failure
  type: list
  elements: dict
  sample: [{database: app, table: public.orders, dumped: 1200, restored: 1199}]
done:
  description:
    - On a failure after the first change - what had been changed, one line each (globals
      created, databases dropped, created, restored), so the operator knows where things stand.
  returned: failure after a change
  type: list
  elements: str
  sample: ["dropped database app (it is restored from the image next)", "created database app"]
authenticated:
  description: Bytes of image members read and authenticated before the first change (0 without O(authenticate)).
  returned: success
  type: int
  sample: 1048576
client_tools:
  description: Directory and version of the client tools used.
  returned: always
  type: dict
  sample: {dir: /usr/lib/postgresql/15/bin, version: pg_restore (PostgreSQL) 15.18, version_num: 150018}
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

import contextlib
import os
import shutil
import tarfile
import tempfile
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image, _proc, _session, _tree
from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql as pg
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule
from ansible_collections.lifeboat.backup.plugins.module_utils._progress import PROGRESS_SPEC

SYSTEM_DATABASES = ("postgres", "template1")
SCRATCH_PREFIX = ".lifeboat-restore-"


class RestoreError(LifeboatError):
    """The restore cannot go on; the message says why and what to do."""


# ---- scratch area ------------------------------------------------------------------------------


def _remove_stale_scratch(base):
    """Scratch directories left by a restore that was killed (its pid is gone)."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for entry in names:
        if not entry.startswith(SCRATCH_PREFIX):
            continue
        pid = entry[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _session.pid_alive(int(pid)):
            shutil.rmtree(os.path.join(base, entry), ignore_errors=True)


@contextlib.contextmanager
def scratch_area(base):
    _remove_stale_scratch(base)
    path = tempfile.mkdtemp(prefix="%s%d-" % (SCRATCH_PREFIX, os.getpid()), dir=base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def decrypt_to_file(image, member, path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle, image.open_member(member) as source:
        while True:
            chunk = source.read(_image.COPY_BUFFER)
            if not chunk:
                break
            handle.write(chunk)


def unpack_directory(image, member, path):
    """Unpack a directory-format archive (a tar member) for pg_restore. Only the file names
    pg_dump writes are accepted, so nothing can land outside ``path``; no fsync: scratch."""
    os.mkdir(path, 0o700)
    with image.open_member(member) as source, tarfile.open(fileobj=source, mode="r|") as tar:
        for info in _tree.read_entries(tar):
            if not info.isreg() or not pg.DIRECTORY_FILE.match(info.name):
                raise RestoreError("member %s holds %s, which is not part of a pg_dump directory archive" % (member, info.name))
            data = tar.extractfile(info)
            fd = os.open(os.path.join(path, info.name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                while True:
                    chunk = data.read(_image.COPY_BUFFER)
                    if not chunk:
                        break
                    handle.write(chunk)
        source.read()  # to the end: the member checks its SHA-256


# ---- parallel dump format (streams) -------------------------------------------------------------


def restore_streams(image, tools, env, argv, item, jobs, scratch, target):
    """A parallel dump (format ``streams``): pre-data streamed into pg_restore (with --create
    when ``argv`` says so), then the rows members (psql scripts: COPY ... FROM stdin) and pg_dump's rest of the data
    (pg_restore) on ``jobs`` threads, then post-data - indexes, constraints, triggers - with
    pg_restore --jobs from a scratch file (it holds no table data)."""
    members = item["members"]
    with image.open_member(members["pre-data"]) as source:
        _proc.stream_into(argv, source, env=env)
    into = dict(env, PGDATABASE=target)
    restore_argv = [tools.path("pg_restore"), "--exit-on-error", "--no-password", "--dbname=%s" % pg.conninfo_dbname(target)]
    # a rows member is a psql script: client_encoding, COPY ... FROM stdin, the rows, \.
    psql_argv = [tools.path("psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "-f", "-"]

    def load(name, command, command_env):
        def run():
            with image.open_member(name) as source:
                _proc.stream_into(command, source, env=command_env)

        return run

    tasks = [load(row["member"], psql_argv, into) for row in members["rows"]]
    tasks.append(load(members["data"], restore_argv, into))
    _proc.run_parallel(tasks, jobs, "lifeboat-restore")
    if jobs > 1:
        path = os.path.join(scratch, "post-data.dump")
        try:
            decrypt_to_file(image, members["post-data"], path)
            _proc.stream_into(restore_argv + ["--jobs=%d" % jobs, path], _Empty(), env=into)
        finally:
            if os.path.exists(path):
                os.unlink(path)
    else:
        with image.open_member(members["post-data"]) as source:
            _proc.stream_into(restore_argv, source, env=into)


# ---- globals -------------------------------------------------------------------------------------


def split_prefix(source, marker, limit):
    """Read ``source`` up to the line starting with ``marker``; (head, what was read past it)."""
    data = b""
    while True:
        index = data.find(marker)
        if index >= 0:
            return data[: index + 1], data[index + 1 :]
        chunk = source.read(_image.COPY_BUFFER)
        if not chunk:
            return data, b""
        data += chunk
        if len(data) > limit:
            raise RestoreError("the globals part of the pg_dumpall script is larger than %d bytes; cannot filter it" % limit)


class PrefixFilter:
    """Serves ``source`` with its leading part (up to the first ``\\connect`` of a
    pg_dumpall script: the globals) rewritten by ``transform``."""

    MARKER = b"\n\\connect "

    def __init__(self, source, transform, limit=64 * 1024 * 1024):
        self._source = source
        self._transform = transform
        self._limit = limit
        self._buffer = None

    def _prime(self):
        head, rest = split_prefix(self._source, self.MARKER, self._limit)
        self._buffer = self._transform(head.decode("utf-8")).encode("utf-8") + rest

    def read(self, size=-1):
        if self._buffer is None:
            self._prime()
        if self._buffer:
            if size is None or size < 0:
                out, self._buffer = self._buffer + self._source.read(), b""
                return out
            out, self._buffer = self._buffer[:size], self._buffer[size:]
            return out
        return self._source.read(size)


def existing_globals(conn):
    roles = [r[0] for r in pg.execute(conn, "SELECT rolname FROM pg_roles")]
    spaces = [r[0] for r in pg.execute(conn, "SELECT spcname FROM pg_tablespace")]
    return roles, spaces


def run_globals(conn, plan, done):
    applied = 0
    for kind, name, statement in plan["statements"]:
        try:
            pg.execute(conn, statement)
        except pg.PgError as exc:
            if applied:
                done.append("applied %d of %d globals statements (roles, memberships, tablespaces)" % (applied, len(plan["statements"])))
            # The statement itself is not quoted: it can hold a password hash.
            what = kind.replace("_", " ") + (" %s" % name if name else "")
            raise RestoreError("restoring globals failed at %s: %s" % (what, exc)) from None
        applied += 1
    if applied:
        created = plan["created_roles"] + plan["created_tablespaces"]
        done.append("restored globals (%d statements%s)" % (applied, "; created %s" % ", ".join(created) if created else ""))


# ---- databases -----------------------------------------------------------------------------------


def other_sessions(conn, database, wait=5.0):
    """Sessions connected to ``database``. A backend whose client just closed (our own
    inspection, a finished module) lingers for a moment; like DROP DATABASE, give such
    sessions ``wait`` seconds to go before reporting them."""
    deadline = time.time() + wait
    while True:
        rows = pg.execute(
            conn,
            "SELECT pid, usename, application_name FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
        if not rows or time.time() >= deadline:
            return ["pid %s (%s%s)" % (r[0], r[1], ", %s" % r[2] if r[2] else "") for r in rows]
        time.sleep(0.2)


def inspect_target(params, conn, target):
    """(exists, user object counts or {} when empty)."""
    if not pg.scalar(conn, "SELECT count(*) FROM pg_database WHERE datname = %s", (target,)):
        return False, {}
    target_conn = pg.connect(params, target)
    try:
        return True, pg.user_objects(target_conn)
    finally:
        target_conn.close()


def plan_database(params, conn, entry, target, clean):
    exists, objects = inspect_target(params, conn, target)
    if not exists:
        return "create", None
    if not objects:
        return "restore_into_empty", None
    summary = ", ".join("%d %s" % (v, k.replace("_", " ")) for k, v in sorted(objects.items()))
    if not clean:
        return None, "target database %s is not empty (%s); restore into an empty or new database (rename), or set clean=true to drop and recreate it" % (
            target,
            summary,
        )
    if target in SYSTEM_DATABASES:
        return None, "target database %s is not empty (%s) and clean cannot drop it (a system database); empty it by hand or restore under another name" % (
            target,
            summary,
        )
    sessions = other_sessions(conn, target)
    if sessions:
        return None, "target database %s cannot be replaced: %d sessions are connected to it (%s); stop the applications first" % (
            target,
            len(sessions),
            "; ".join(sessions[:5]),
        )
    return "replace", None


def count_rows(params, target, counts):
    conn = pg.connect(params, target)
    mismatches = []
    try:
        for schema, table, dumped in counts:
            try:
                restored = int(pg.scalar(conn, "SELECT count(*) FROM ONLY %s.%s" % (pg.quote_ident(schema), pg.quote_ident(table))))
            except pg.PgError as exc:
                mismatches.append({"database": target, "table": "%s.%s" % (schema, table), "dumped": dumped, "restored": None, "error": str(exc)})
                continue
            if restored != dumped:
                mismatches.append({"database": target, "table": "%s.%s" % (schema, table), "dumped": dumped, "restored": restored})
    finally:
        conn.close()
    return mismatches


def prepare_target(module, params, conn, item, use_create, server_num, done):
    """Drop the database being replaced, and create the target when pg_restore will not."""
    target = item["target"]
    if item["action"] == "replace":
        try:
            pg.execute(conn, "DROP DATABASE %s" % pg.quote_ident(target))
        except pg.PgError as exc:
            raise RestoreError("cannot drop database %s to replace it: %s" % (target, exc)) from None
        done.append("dropped database %s (to replace it with %s from the image)" % (target, item["name"]))
    if item["action"] not in ("create", "replace") or use_create:
        return
    props = item["properties"] or {}
    owner_exists = bool(props.get("owner")) and bool(pg.scalar(conn, "SELECT count(*) FROM pg_roles WHERE rolname = %s", (props["owner"],)))
    if props.get("owner") and not owner_exists:
        module.warn("database %s: owner role %s does not exist on the target; created with owner %s" % (target, props["owner"], params["login_user"]))
    try:
        pg.execute(conn, pg.create_database_sql(target, props, server_num, owner_exists))
        done.append("created database %s (empty)" % target)
        for statement in pg.database_properties_sql(target, props):
            pg.execute(conn, statement)
    except pg.PgError as exc:
        raise RestoreError("cannot create database %s: %s" % (target, exc)) from None


def run_pg_restore(image, argv, item, jobs, scratch, env, tools):
    """pg_restore fed the member: streamed, or from scratch for --jobs and directory archives;
    a parallel dump (streams) by restore_streams."""
    member = item["member"]
    try:
        if item["format"] == "streams":
            restore_streams(image, tools, env, argv, item, jobs, scratch, item["target"])
        elif item["format"] == "directory":
            path = os.path.join(scratch, "archive")
            unpack_directory(image, member, path)
            _proc.stream_into(argv + ["--jobs=%d" % jobs, path], _Empty(), env=env)
        elif jobs > 1:
            path = os.path.join(scratch, "archive.dump")
            decrypt_to_file(image, member, path)
            _proc.stream_into(argv + ["--jobs=%d" % jobs, path], _Empty(), env=env)
        else:
            with image.open_member(member) as source:
                _proc.stream_into(argv, source, env=env)
    finally:
        for leftover in ("archive", "archive.dump") if scratch else ():
            path = os.path.join(scratch, leftover)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.unlink(path)


def restore_database(module, image, tools, env, params, conn, item, scratch, server_num, done):
    """Restore one database as planned in ``item``; each change is appended to ``done``."""
    target = item["target"]
    use_create = item["action"] in ("create", "replace") and target == item["name"]
    prepare_target(module, params, conn, item, use_create, server_num, done)
    argv = [tools.path("pg_restore"), "--exit-on-error", "--no-password"]
    if use_create:
        argv += ["--create", "--dbname=%s" % pg.conninfo_dbname(params["login_db"])]
    else:
        argv += ["--dbname=%s" % pg.conninfo_dbname(target)]
    try:
        run_pg_restore(image, argv, item, params["jobs"], scratch, env, tools)
    except RestoreError:
        raise
    except (LifeboatError, tarfile.TarError, OSError) as exc:
        if use_create:
            done.append("pg_restore --create started database %s" % target)
        reason = getattr(exc, "strerror", None) or exc
        raise RestoreError(
            "pg_restore of %s into %s failed: %s. Database %s is partly restored; once the cause is fixed, run again with clean=true "
            "(it replaces the partial database), or drop it by hand" % (item["name"], target, reason, target)
        ) from None
    done.append("restored database %s from %s" % (target, item["name"]))


class _Empty:
    def read(self, size=-1):
        return b""


def restore_dumpall(image, tools, env, params, member, plan, done):
    """Replay a pg_dumpall script with psql, its globals filtered as for a per-database restore."""

    def transform(text):
        return pg.render_sql([("meta", t) if k == "meta" else ("sql", t) for k, _n, t in _with_meta(text, plan)])

    argv = [tools.path("psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "--dbname=%s" % pg.conninfo_dbname(params["login_db"]), "-f", "-"]
    try:
        with image.open_member(member) as source:
            _proc.stream_into(argv, PrefixFilter(source, transform), env=env)
    except _proc.CommandError as exc:
        done.append("psql replayed part of %s (globals and databases up to the failure)" % member)
        raise RestoreError(
            "psql stopped replaying %s: %s. The cluster is partly restored; drop the databases it created (or run again with clean=true) "
            "once the cause is fixed" % (member, exc)
        ) from None
    done.append("replayed %s" % member)


def _with_meta(text, plan):
    """The globals items to keep: the planned statements plus psql meta-commands, in order."""
    keep = {statement for _kind, _name, statement in plan["statements"]}
    for kind, statement in pg.split_sql(text):
        if kind == "meta":
            yield "meta", None, statement
        elif statement in keep:
            yield "sql", None, statement


# ---- main ------------------------------------------------------------------------------------------


def used_members(details, params, items, dumpall):
    """The image members this restore reads (authenticated before the first change)."""
    names = []
    if dumpall:
        names.append(details["cluster_member"])
    else:
        if params["globals"] != "none" and details.get("globals_member"):
            names.append(details["globals_member"])
        for item in items:
            members = item.get("members")
            names += [members["pre-data"]] + [r["member"] for r in members["rows"]] + [members["data"], members["post-data"]] if members else [item["member"]]
    return names


def failure(msg, done, result):
    """A LifeboatError for a failure during the restore, carrying what was already changed."""
    extra = {k: v for k, v in result.items() if k != "changed"}
    return LifeboatError(msg, changed=bool(done), done=done, **extra)


def validate(params, recorded, dumpall):
    """The databases to restore and their targets; raises OptionError naming the option."""
    if dumpall:
        if params["databases"] or params["rename"] or params["verify_counts"]:
            raise OptionError("databases", "this image holds a pg_dumpall script (mode=dumpall): databases, rename and verify_counts need a per-database dump")
        return [], []
    wanted = params["databases"] or list(recorded)
    unknown = [d for d in wanted if d not in recorded]
    if unknown:
        raise OptionError("databases", "databases: %s not in the image; it has: %s" % (", ".join(unknown), ", ".join(recorded) or "none"))
    lacking = [d for d in wanted if "row_counts" not in recorded[d]] if params["verify_counts"] else []
    if lacking:
        raise OptionError(
            "verify_counts",
            "verify_counts: the dump of %s has no row counts; it must be taken with row_counts=true (or drop verify_counts)" % ", ".join(lacking),
        )
    return wanted, rename_targets(params["rename"], wanted)


def rename_targets(rename, wanted):
    stray = [k for k in rename if k not in wanted]
    if stray:
        raise OptionError("rename", "rename: %s not among the databases being restored (%s)" % (", ".join(stray), ", ".join(wanted)))
    targets = [rename.get(d, d) for d in wanted]
    if len(set(targets)) != len(targets):
        raise OptionError("rename", "rename: two databases would be restored into the same target")
    return targets


def restore_tools(params, server_num, details):
    """pg_restore and psql for this server, refused when older than the pg_dump that wrote the archives."""
    tools = pg.find_tools(server_num, ["pg_restore", "psql"], params["client_bin_dir"], purpose="a restore into this server")
    dumped_by = (details.get("client") or {}).get("version_num") or 0
    if dumped_by and pg.major_key(tools.version) < pg.major_key(dumped_by):
        raise pg.ToolError(
            "pg_restore %s (%s) is older than the pg_dump %s that wrote the archives and cannot read them; "
            "install the PostgreSQL %s client tools or set client_bin_dir"
            % (pg.version_text(tools.version), tools.dir, pg.version_text(dumped_by), pg.major_text(dumped_by))
        )
    return tools


def plan_restore_globals(params, conn, image, details, dumpall):
    """The globals statements to run, planned against the target (the globals are small)."""
    plan = {"statements": [], "created_roles": [], "kept_roles": [], "created_tablespaces": [], "kept_tablespaces": []}
    globals_member = details.get("globals_member")
    if params["globals"] == "none" or not (globals_member or dumpall):
        return plan
    roles, spaces = existing_globals(conn)
    try:
        if dumpall:
            with image.open_member(details["cluster_member"]) as source:
                text = split_prefix(source, PrefixFilter.MARKER, 64 * 1024 * 1024)[0].decode("utf-8")
        else:
            with image.open_member(globals_member) as source:
                text = source.read().decode("utf-8")
    except (LifeboatError, UnicodeDecodeError) as exc:
        raise _image.ImageError("cannot read the globals from the image: %s" % exc) from None
    return pg.plan_globals(pg.split_sql(text), roles, spaces, params["login_user"], params["globals"])


def plan_dumpall(params, conn, details, refusals):
    """What happens to each database of a pg_dumpall script; refusals are appended."""
    items = []
    for entry in details.get("databases", []):
        name = entry["name"]
        exists, objects = inspect_target(params, conn, name)
        action = "create"
        if name in SYSTEM_DATABASES:
            action = "restore_into_empty"
            if objects:
                refusals.append("target database %s is not empty; a pg_dumpall script restores only into empty system databases" % name)
        elif exists and not params["clean"]:
            refusals.append("target database %s exists; a pg_dumpall script creates its databases itself: drop it, or set clean=true" % name)
        elif exists:
            action = "replace"
            sessions = other_sessions(conn, name)
            if sessions:
                refusals.append(
                    "target database %s cannot be replaced: %d sessions are connected to it (%s); stop the applications first"
                    % (name, len(sessions), "; ".join(sessions[:5]))
                )
        items.append({"name": name, "target": name, "action": action, "member": details["cluster_member"], "format": "sql"})
    return items


def plan_databases(params, conn, recorded, wanted, targets, refusals):
    """What happens to each target database; refusals are appended."""
    items = []
    for name, target in zip(wanted, targets):
        entry = recorded[name]
        action, refusal = plan_database(params, conn, entry, target, params["clean"])
        if refusal:
            refusals.append(refusal)
        items.append(
            {
                "name": name,
                "target": target,
                "action": action,
                "member": entry["member"],
                "format": entry.get("format", "custom"),
                "properties": entry.get("properties"),
                "members": entry.get("members"),
                "encoding": entry.get("encoding"),
            }
        )
    return items


def scratch_for(params, image, items):
    """(directory for unpacked archives, or None when nothing needs one); checks its free space."""
    needs_scratch = [i for i in items if i["format"] in ("directory", "streams") or (i["format"] == "custom" and params["jobs"] > 1)]
    if not needs_scratch or (params["jobs"] <= 1 and all(i["format"] == "streams" for i in needs_scratch)):
        return None
    base = params["scratch_dir"] or os.path.dirname(os.path.abspath(params["image"]))
    if not os.path.isdir(base):
        raise OptionError("scratch_dir", "scratch_dir %s does not exist or is not a directory" % base)
    sizes = {m["name"]: m.get("plaintext_size", 0) for m in image.manifest.get("members", [])}
    # a parallel dump's post-data (schema only) is the one file it puts there
    largest = max(sizes.get(i["members"]["post-data"] if i["format"] == "streams" else i["member"], 0) for i in needs_scratch)
    problem = pg.space_problem(base, largest, "unpacking the archive for pg_restore (largest: %s)" % pg.format_size(largest))
    if problem:
        raise LifeboatError(problem + "; or set scratch_dir elsewhere, or use jobs=1 for custom-format archives (streamed, no scratch)")
    return base


class Restore:
    """A planned restore into one server: globals, then each database (or a pg_dumpall script
    replayed), ANALYZE, row counts. Every change is appended to ``done``."""

    def __init__(self, module, image, conn, details, tools, server_num, result):
        self.module = module
        self.params = module.params
        self.image = image
        self.conn = conn
        self.details = details
        self.tools = tools
        self.server_num = server_num
        self.result = result
        self.recorded = {d["name"]: d for d in details.get("databases", [])}
        self.dumpall = details.get("mode") == "dumpall"
        self.done = []
        self.mismatches = []

    def plan(self, wanted, targets):
        """Globals plan, database items and scratch base; raises with the refusals."""
        self.globals_plan = plan_restore_globals(self.params, self.conn, self.image, self.details, self.dumpall)
        self.result.update(
            roles_created=self.globals_plan["created_roles"],
            roles_kept=self.globals_plan["kept_roles"],
            tablespaces_created=self.globals_plan["created_tablespaces"],
        )
        refusals = []
        if self.dumpall:
            self.items = plan_dumpall(self.params, self.conn, self.details, refusals)
        else:
            self.items = plan_databases(self.params, self.conn, self.recorded, wanted, targets, refusals)
        self.result["databases"] = [{k: v for k, v in i.items() if k not in ("properties", "members", "encoding")} for i in self.items]
        if refusals:
            raise RestoreError("; ".join(refusals))
        self.scratch_base = scratch_for(self.params, self.image, self.items)
        self.result["changed"] = bool(self.globals_plan["statements"] or self.items)

    def authenticate(self):
        self.result["authenticated"] = 0
        if not self.params["authenticate"]:
            return
        try:
            self.result["authenticated"] = _image.authenticate(self.image, used_members(self.details, self.params, self.items, self.dumpall))
        except _image.ImageError as exc:
            raise type(exc)("%s. Nothing was changed" % exc, **dict(self.result, changed=False)) from None

    def run(self):
        with pg.password_file(self.params["login_password"]) as passfile:
            env = pg.client_env(self.params, self.params["login_db"], passfile, application="lifeboat.backup pg_restore")
            try:
                if self.dumpall:
                    self.replay(env)
                else:
                    self.restore_each(env)
                self.analyze()
            except (LifeboatError, tarfile.TarError) as exc:
                raise failure(str(exc), self.done, self.result) from None
            except OSError as exc:
                raise failure("restore failed: %s" % (exc.strerror or exc), self.done, self.result) from None
        if self.mismatches:
            first = self.mismatches[0]
            error = failure(
                "row counts differ after the restore in %d tables, first: %s.%s: %s rows dumped, %s restored"
                % (len(self.mismatches), first["database"], first["table"], first["dumped"], first["restored"]),
                self.done,
                self.result,
            )
            error.result["count_mismatches"] = self.mismatches
            raise error
        return self.result

    def replay(self, env):
        for item in self.items:
            if item["action"] == "replace":
                try:
                    pg.execute(self.conn, "DROP DATABASE %s" % pg.quote_ident(item["target"]))
                except pg.PgError as exc:
                    raise RestoreError("cannot drop database %s to replace it: %s" % (item["target"], exc)) from None
                self.done.append("dropped database %s (the image's script recreates it)" % item["target"])
        restore_dumpall(self.image, self.tools, env, self.params, self.details["cluster_member"], self.globals_plan, self.done)

    def restore_each(self, env):
        run_globals(self.conn, self.globals_plan, self.done)
        with scratch_area(self.scratch_base) if self.scratch_base else _no_scratch() as scratch:
            for index, item in enumerate(self.items):
                started = time.time()
                restore_database(self.module, self.image, self.tools, env, self.params, self.conn, item, scratch, self.server_num, self.done)
                if self.params["verify_counts"]:
                    found = count_rows(self.params, item["target"], self.recorded[item["name"]]["row_counts"])
                    self.mismatches += found
                    self.result["databases"][index]["counts_verified"] = not found
                self.result["databases"][index]["duration"] = round(time.time() - started, 3)

    def analyze(self):
        if not self.params["analyze"]:
            return
        for item in self.items:
            target_conn = pg.connect(self.params, item["target"])
            try:
                pg.execute(target_conn, "ANALYZE")
            finally:
                target_conn.close()


def restore_from(module, image):
    params = module.params
    details = _image.restorable_component(image, params["component"], "postgresql", "PostgreSQL").get("details") or {}
    if any(m.get("compression") == "zstd" for m in image.component_members(params["component"])):
        module.require("zstandard", _image.HAS_ZSTANDARD, _image.ZSTANDARD_IMPORT_ERROR)
    targets = validate(params, {d["name"]: d for d in details.get("databases", [])}, details.get("mode") == "dumpall")
    conn = pg.connect(params)
    try:
        server_num, _text = pg.server_version(conn)
        tools = restore_tools(params, server_num, details)
        result = module.keep(dict(changed=False, databases=[], roles_created=[], roles_kept=[], tablespaces_created=[], client_tools=tools.describe()))
        restore = Restore(module, image, conn, details, tools, server_num, result)
        restore.plan(*targets)
        if module.check_mode:
            return result
        restore.authenticate()
        return restore.run()
    finally:
        conn.close()


def restore(module):
    params = module.params
    module.require("cryptography", _age.HAS_CRYPTOGRAPHY, _age.CRYPTOGRAPHY_IMPORT_ERROR)
    module.require("psycopg (or psycopg2)", pg.HAS_PSYCOPG, pg.PSYCOPG_IMPORT_ERROR)
    if params["jobs"] < 1:
        raise OptionError("jobs", "jobs must be 1 or more")
    with _image.open_image(params["image"], params) as image:
        image.check_key({m["name"] for m in image.component_members(params["component"])})
        return restore_from(module, image)


@contextlib.contextmanager
def _no_scratch():
    yield None


def main():
    module = LifeboatModule(
        argument_spec=dict(
            component=dict(type="str", default="postgresql"),
            databases=dict(type="list", elements="str", default=[]),
            rename=dict(type="dict", default={}),
            globals=dict(type="str", choices=["missing", "all", "none"], default="missing"),
            clean=dict(type="bool", default=False),
            jobs=dict(type="int", default=1),
            scratch_dir=dict(type="path"),
            verify_counts=dict(type="bool", default=False),
            analyze=dict(type="bool", default=True),
        ),
        specs=[pg.CONNECTION_SPEC, _image.IMAGE_SPEC, _image.DECRYPTION_SPEC, _image.RESTORE_SPEC, PROGRESS_SPEC],
        mutually_exclusive=pg.CONNECTION_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    module.run(restore)


if __name__ == "__main__":
    main()
