#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postgresql_info
short_description: Report what a PostgreSQL backup needs to know, before taking one
version_added: 0.1.0
description:
  - Reads the server version, data directory, recovery state, current WAL position,
    databases with their sizes, roles, tablespaces, WAL and archiving settings and
    replication slots, and the sessions that are doing something right now (active or
    idle in a transaction), other than this module's own.
  - Also reports which client tools (C(pg_dump), C(pg_restore)) would be used for this
    server, or why none fit.
  - Read-only; never reports a change. Use it to preflight a backup or to check that the
    platform is quiet (RV(activity)) before a consistent cut.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._attributes.info_module
  - lifeboat.backup._postgresql
options:
  include_queries:
    description:
      - Include the text of the current query of each busy session in RV(sessions), cut at
        O(query_length) characters.
      - Off by default because queries can carry secrets (for example C(ALTER ROLE ... PASSWORD)).
    type: bool
    default: false
  query_length:
    description:
      - Characters of each query kept when O(include_queries) is set.
    type: int
    default: 200
seealso:
  - module: lifeboat.backup.postgresql_dump
  - module: lifeboat.backup.postgresql_basebackup
"""

EXAMPLES = r"""
- name: Preflight the database server
  lifeboat.backup.postgresql_info:
    login_host: 127.0.0.1
    login_password: "{{ vault_postgres_password }}"
  register: pg

- name: Refuse to continue while the platform is still working
  ansible.builtin.assert:
    that: pg.activity.busy == 0
    fail_msg: "{{ pg.activity.busy }} sessions are still busy: {{ pg.sessions | map(attribute='application') | list }}"

- name: Same, through the unix socket as the postgres account (peer authentication)
  lifeboat.backup.postgresql_info:
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres
"""

RETURN = r"""
server:
  description: Server facts.
  returned: always
  type: dict
  contains:
    version:
      description: Version string of the server.
      type: str
      sample: 15.18 (Debian 15.18-0+deb12u1)
    version_num:
      description: C(server_version_num).
      type: int
      sample: 150018
    major:
      description: Major version.
      type: str
      sample: "15"
    data_directory:
      description: Data directory, or null when the role may not read it (needs superuser or C(pg_read_all_settings)).
      type: str
      sample: /var/lib/postgresql/15/main
    in_recovery:
      description: Whether the server is a standby (or recovering).
      type: bool
      sample: false
    current_lsn:
      description: Current WAL insert position (replay position on a standby).
      type: str
      sample: 0/3000148
    superuser:
      description: Whether O(login_user) is a superuser.
      type: bool
      sample: true
databases:
  description: Databases, with their size in bytes (null when the role may not connect).
  returned: always
  type: list
  elements: dict
  sample:
    - {name: app, size: 8123456, owner: app, encoding: UTF8, is_template: false, allow_connections: true, connection_limit: -1}
total_size:
  description: Sum of the sizes of the databases that accept connections and are not templates.
  returned: always
  type: int
  sample: 8123456
roles:
  description: Roles (without the built-in C(pg_*) ones) with their attributes and memberships.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: app, superuser: false, login: true, replication: false, createdb: false, createrole: false, bypassrls: false, member_of: [readers]}
tablespaces:
  description: Tablespaces with location (empty for the built-in ones) and size.
  returned: always
  type: list
  elements: dict
  sample: [{name: pg_default, location: "", size: 41234567}]
sessions:
  description:
    - Sessions other than this module's own that are not idle (active, idle in transaction,
      waiting), with what they do. The query text only with O(include_queries).
  returned: always
  type: list
  elements: dict
  sample:
    - {pid: 4242, user: app, database: app, application: celery, client_addr: 10.0.0.5, state: active,
       seconds: 12.5, wait_event_type: null, wait_event: null, backend_type: client backend}
activity:
  description: Counts of client sessions by state, other than this module's own; C(busy) is the number of non-idle ones.
  returned: always
  type: dict
  sample: {busy: 1, active: 1, idle: 3, idle_in_transaction: 0, total: 4}
wal:
  description: WAL and archiving settings, and the archiver's last results.
  returned: always
  type: dict
  sample:
    wal_level: replica
    archive_mode: "off"
    archive_command: "(disabled)"
    max_wal_senders: "10"
    wal_keep_size: "0"
    archiver: {archived_count: 0, last_archived_wal: null, failed_count: 0, last_failed_wal: null}
replication_slots:
  description: Replication slots.
  returned: always
  type: list
  elements: dict
  sample: [{name: standby1, type: physical, active: true, restart_lsn: 0/3000148}]
client_tools:
  description: The client tools the dump and restore modules would use for this server, or C(error) saying why none fit.
  returned: always
  type: dict
  sample: {dir: /usr/lib/postgresql/15/bin, version: pg_dump (PostgreSQL) 15.18, version_num: 150018}
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

from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql as pg
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule

WAL_SETTINGS = (
    "wal_level",
    "archive_mode",
    "archive_command",
    "archive_library",
    "archive_timeout",
    "max_wal_senders",
    "max_replication_slots",
    "wal_keep_size",
    "max_wal_size",
    "hot_standby",
    "synchronous_commit",
)


def _iso(value):
    return value.isoformat() if value is not None else None


def server_facts(conn):
    num, text = pg.server_version(conn)
    lsn, in_recovery = pg.current_lsn(conn)
    try:
        data_directory = pg.scalar(conn, "SELECT current_setting('data_directory')")
    except pg.PgError:
        data_directory = None  # needs superuser or pg_read_all_settings
    superuser = pg.scalar(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    return {
        "version": text,
        "version_num": num,
        "major": pg.major_text(num),
        "data_directory": data_directory,
        "in_recovery": in_recovery,
        "current_lsn": lsn,
        "superuser": bool(superuser),
    }


def databases(conn):
    rows = pg.execute(
        conn,
        "SELECT d.datname, CASE WHEN has_database_privilege(d.datname, 'CONNECT') THEN pg_database_size(d.datname) END, "
        "pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datistemplate, d.datallowconn, d.datconnlimit "
        "FROM pg_database d ORDER BY d.datname",
    )
    keys = ("name", "size", "owner", "encoding", "is_template", "allow_connections", "connection_limit")
    return [dict(zip(keys, row)) for row in rows]


def roles(conn):
    rows = pg.execute(
        conn,
        "SELECT r.rolname, r.rolsuper, r.rolcanlogin, r.rolreplication, r.rolcreatedb, r.rolcreaterole, r.rolbypassrls, r.rolvaliduntil::text, "
        "coalesce((SELECT array_agg(g.rolname ORDER BY g.rolname) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid), '{}') "
        "FROM pg_roles r WHERE r.rolname !~ '^pg_' ORDER BY r.rolname",
    )
    keys = ("name", "superuser", "login", "replication", "createdb", "createrole", "bypassrls", "valid_until", "member_of")
    out = []
    for row in rows:
        record = dict(zip(keys, row))
        record["member_of"] = list(record["member_of"] or [])
        out.append(record)
    return out


def tablespaces(conn):
    rows = pg.execute(
        conn,
        "SELECT spcname, pg_tablespace_location(oid), CASE WHEN has_tablespace_privilege(oid, 'CREATE') OR spcname = 'pg_default' "
        "OR pg_has_role('pg_read_all_stats', 'MEMBER') THEN pg_tablespace_size(oid) END FROM pg_tablespace ORDER BY spcname",
    )
    return [{"name": r[0], "location": r[1], "size": r[2]} for r in rows]


def sessions(conn, include_queries, query_length):
    rows = pg.execute(
        conn,
        "SELECT pid, usename, datname, application_name, client_addr::text, state, backend_type, "
        "extract(epoch FROM now() - coalesce(query_start, backend_start))::float8, wait_event_type, wait_event, "
        "backend_start, xact_start, query_start, query "
        "FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' ORDER BY pid",
    )
    counts = {"active": 0, "idle": 0, "idle_in_transaction": 0, "other": 0}
    busy = []
    for row in rows:
        state = row[5]
        if state == "idle":
            counts["idle"] += 1
            continue
        if state == "active":
            counts["active"] += 1
        elif state and state.startswith("idle in transaction"):
            counts["idle_in_transaction"] += 1
        else:
            counts["other"] += 1  # disabled, fastpath, or not visible to this role (null)
        record = {
            "pid": row[0],
            "user": row[1],
            "database": row[2],
            "application": row[3],
            "client_addr": row[4],
            "state": state,
            "backend_type": row[6],
            "seconds": round(row[7], 3) if row[7] is not None else None,
            "wait_event_type": row[8],
            "wait_event": row[9],
            "backend_start": _iso(row[10]),
            "xact_start": _iso(row[11]),
            "query_start": _iso(row[12]),
        }
        if include_queries:
            record["query"] = (row[13] or "")[:query_length]
        busy.append(record)
    counts["busy"] = len(busy)
    counts["total"] = len(rows)
    return busy, counts


def wal(conn):
    rows = pg.execute(conn, "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(WAL_SETTINGS),))
    facts = dict(rows)
    archiver = pg.execute(
        conn, "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time FROM pg_stat_archiver"
    )
    if archiver:
        row = archiver[0]
        facts["archiver"] = {
            "archived_count": row[0],
            "last_archived_wal": row[1],
            "last_archived_time": _iso(row[2]),
            "failed_count": row[3],
            "last_failed_wal": row[4],
            "last_failed_time": _iso(row[5]),
        }
    return facts


def slots(conn):
    rows = pg.execute(conn, "SELECT slot_name, slot_type, active, restart_lsn::text, database FROM pg_replication_slots ORDER BY slot_name")
    return [{"name": r[0], "type": r[1], "active": r[2], "restart_lsn": r[3], "database": r[4]} for r in rows]


def client_tools(params, version_num):
    try:
        tools = pg.find_tools(version_num, ["pg_dump", "pg_restore", "pg_dumpall"], params["client_bin_dir"], purpose="a backup of this server")
    except pg.ToolError as exc:
        return {"error": str(exc)}
    return tools.describe()


def describe(module):
    params = module.params
    module.require("psycopg (or psycopg2)", pg.HAS_PSYCOPG, pg.PSYCOPG_IMPORT_ERROR)
    conn = pg.connect(params)
    try:
        server = server_facts(conn)
        dbs = databases(conn)
        busy, counts = sessions(conn, params["include_queries"], params["query_length"])
        result = dict(
            changed=False,
            server=server,
            databases=dbs,
            total_size=sum(d["size"] or 0 for d in dbs if d["allow_connections"] and not d["is_template"]),
            roles=roles(conn),
            tablespaces=tablespaces(conn),
            sessions=busy,
            activity=counts,
            wal=wal(conn),
            replication_slots=slots(conn),
        )
    except pg.PgError as exc:
        raise pg.PgError("reading server information from %s failed: %s" % (pg.where(params), exc)) from None
    finally:
        conn.close()
    result["client_tools"] = client_tools(params, result["server"]["version_num"])
    return result


def main():
    module = LifeboatModule(
        argument_spec=dict(
            include_queries=dict(type="bool", default=False),
            query_length=dict(type="int", default=200),
        ),
        specs=[pg.CONNECTION_SPEC],
        mutually_exclusive=pg.CONNECTION_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    module.run(describe)


if __name__ == "__main__":
    main()
