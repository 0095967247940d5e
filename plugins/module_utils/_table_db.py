# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""The database side of table archiving (docs/table-archive.md), shared by the four
table-archive modules: the ``tables`` option and its checks against the catalog, the
session settings that make a row's text the same for every reader, the chains' heads
recorded in ``<state_schema>.table_archive_chains``, key ranges, and digests of live rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json

from ansible_collections.lifeboat.backup.plugins.module_utils import _image, _postgresql, _retention
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_chain as chains
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_segment as fmt
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._postgresql import PgError, execute, quote_ident, quote_literal
from ansible_collections.lifeboat.backup.plugins.module_utils._table_chain import ArchiveError

CHILD_OPTIONS = dict(
    name=dict(type="str", required=True),
    link=dict(type="list", elements="str", required=True),
    parent_link=dict(type="list", elements="str"),
)
TABLE_OPTIONS = dict(
    name=dict(type="str", required=True),
    key=dict(type="list", elements="str", no_log=False),
    time_column=dict(type="str"),
    time_unit=dict(type="str", choices=["timestamp", "epoch_s", "epoch_ms"], default="timestamp"),
    cutoff_column=dict(type="str"),
    older_than=dict(type="str"),
    before=dict(type="str"),
    children=dict(type="list", elements="dict", default=[], options=CHILD_OPTIONS),
    chain=dict(type="str"),
    batch_rows=dict(type="int", default=100000),
    targets=dict(type="list", elements="str"),
    expire_after=dict(type="str"),
)
TABLES_SPEC = dict(tables=dict(type="list", elements="dict", default=[], options=TABLE_OPTIONS))

LOCK_CLASS = 0x1BEB  # advisory lock class id of table-archive chains
TIME_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")
NUMBER_TYPES = ("smallint", "integer", "bigint", "numeric", "real", "double precision")
STATE_TABLE = "table_archive_chains"


# ---- the tables option ----------------------------------------------------------------------------


def validate_tables(params, option="tables", archiving=True):
    """Checks that need no database; OptionError names ``tables[i].<option>``."""
    if not params:
        raise OptionError(option, "%s must name at least one table" % option)
    chains_seen = {}
    for index, spec in enumerate(params):
        where = "%s[%d]" % (option, index)
        _validate_table(spec, where, archiving)
        name = spec.get("chain")
        if name and name in chains_seen:
            raise OptionError(where + ".chain", "%s and %s both use chain %s" % (chains_seen[name], where, name))
        chains_seen[name] = where
    return params


def _validate_table(spec, where, archiving):
    if archiving and bool(spec.get("older_than")) == bool(spec.get("before")):
        raise OptionError(
            where + ".older_than", "%s needs exactly one cut-off: older_than (an interval, like '90 days') or before (a value of its cutoff column)" % where
        )
    if spec.get("expire_after"):
        try:
            _retention.parse_duration(spec["expire_after"])
        except ValueError as exc:
            raise OptionError(where + ".expire_after", "%s.expire_after: %s" % (where, exc)) from None
    if spec.get("batch_rows") is not None and spec["batch_rows"] < 1:
        raise OptionError(where + ".batch_rows", "%s.batch_rows must be at least 1" % where)
    if spec.get("key") is not None and (not spec["key"] or len(set(spec["key"])) != len(spec["key"])):
        raise OptionError(where + ".key", "%s.key must list distinct columns" % where)
    for cindex, child in enumerate(spec.get("children") or []):
        if child.get("parent_link") and len(child["parent_link"]) != len(child["link"]):
            raise OptionError(
                "%s.children[%d].parent_link" % (where, cindex), "%s.children[%d]: link and parent_link must have as many columns" % (where, cindex)
            )


class Relation:
    """A table as the archive sees it: its columns (generated ones are neither archived nor
    restored), types, and quoting."""

    def __init__(self, oid, schema, name, columns):
        self.oid = oid
        self.schema = schema
        self.name = name
        self.columns = columns  # [{"name", "type", "not_null", "generated"}]

    @property
    def label(self):
        return fmt.table_label(self.schema, self.name)

    @property
    def sql(self):
        return fmt.qualified(self.schema, self.name)

    @property
    def copy_columns(self):
        return [c["name"] for c in self.columns if not c["generated"]]

    def column(self, name, option):
        for column in self.columns:
            if column["name"] == name:
                return column
        raise OptionError(option, "%s: table %s has no column %s" % (option, self.label, name))

    def describe(self):
        return {"label": self.label, "schema": self.schema, "name": self.name, "columns": self.columns}


COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, %s
FROM pg_attribute a WHERE a.attrelid = %%s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""


def find_relation(conn, name, option):
    rows = execute(
        conn,
        "SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
        (name,),
    )
    if not rows:
        raise OptionError(option, "%s: table %s does not exist in database %s (give it as schema.table)" % (option, name, current_database(conn)))
    oid, schema, relname, kind = rows[0]
    if kind not in ("r", "p"):
        raise OptionError(option, "%s: %s is not a table (relkind %s)" % (option, name, kind))
    generated = "a.attgenerated <> ''" if server_num(conn) >= 120000 else "false"
    columns = [{"name": r[0], "type": r[1], "not_null": bool(r[2]), "generated": bool(r[3])} for r in execute(conn, COLUMNS_SQL % generated, (oid,))]
    return Relation(oid, schema, relname, columns)


def current_database(conn):
    return _postgresql.scalar(conn, "SELECT current_database()")


def server_num(conn):
    return int(_postgresql.scalar(conn, "SELECT current_setting('server_version_num')"))


class Table(Relation):
    """A table of the ``tables`` option, described against the database."""

    def __init__(self, relation, spec, index, dbname):
        super().__init__(relation.oid, relation.schema, relation.name, relation.columns)
        self.spec = spec
        self.where = "tables[%d]" % index
        self.chain = spec.get("chain") or _image.safe_name("%s.%s.%s" % (dbname, relation.schema, relation.name))
        self.key = []
        self.key_types = []
        self.time_column = spec.get("time_column")
        self.time_unit = spec.get("time_unit") or "timestamp"
        self.cutoff_column = spec.get("cutoff_column") or self.time_column
        self.children = []
        self.batch_rows = spec.get("batch_rows") or 100000

    def key_sql(self, alias):
        return "(%s)" % ", ".join("%s.%s" % (alias, quote_ident(k)) for k in self.key)

    def key_text_sql(self, alias):
        return ", ".join("%s.%s::text" % (alias, quote_ident(k)) for k in self.key)

    def key_value(self, values):
        """A key (list of text values) as a SQL row literal of the key's types."""
        return "(%s)" % ", ".join("%s::%s" % (quote_literal(v), t) for v, t in zip(values, self.key_types))

    def time_sql(self, expression):
        return time_expression(self.time_unit, expression)

    def genesis(self):
        described = self.describe()
        described.update(key=self.key, key_types=self.key_types, time_column=self.time_column, time_unit=self.time_unit)
        return described


def time_expression(unit, expression):
    """``expression`` (a time column) as a timestamptz, whatever its unit."""
    if unit == "epoch_ms":
        return "to_timestamp((%s)::double precision / 1000)" % expression
    if unit == "epoch_s":
        return "to_timestamp((%s)::double precision)" % expression
    return "(%s)::timestamptz" % expression


class Child(Relation):
    def __init__(self, relation, link, parent_link):
        super().__init__(relation.oid, relation.schema, relation.name, relation.columns)
        self.link = link
        self.parent_link = parent_link

    def genesis(self):
        described = self.describe()
        described.update(link=self.link, parent_link=self.parent_link)
        return described


def describe_table(conn, spec, index, archiving=True):
    """A Table for one item of ``tables``, checked against the database: key unique, columns
    present, cut-off usable, no foreign key that a delete would trip or cascade."""
    where = "tables[%d]" % index
    table = Table(find_relation(conn, spec["name"], where + ".name"), spec, index, current_database(conn))
    table.key = spec.get("key") or primary_key(conn, table.oid)
    if not table.key:
        raise OptionError(
            where + ".key", "%s: table %s has no primary key: name the columns that order and identify its rows in %s.key" % (where, table.label, where)
        )
    table.key_types = [table.column(k, where + ".key")["type"] for k in table.key]
    check_unique(conn, table)
    if table.time_column:
        check_time_column(table, table.time_column, where + ".time_column")
    if archiving:
        table.cutoff_column = table.cutoff_column or table.key[0]
        table.column(table.cutoff_column, where + ".cutoff_column")
    for cindex, child in enumerate(spec.get("children") or []):
        option = "%s.children[%d]" % (where, cindex)
        relation = find_relation(conn, child["name"], option + ".name")
        parent_link = child.get("parent_link") or child["link"]
        for column in child["link"]:
            relation.column(column, option + ".link")
        for column in parent_link:
            table.column(column, option + ".parent_link")
        table.children.append(Child(relation, child["link"], parent_link))
    check_foreign_keys(conn, table)
    return table


def primary_key(conn, oid):
    rows = execute(
        conn,
        "SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord",
        (oid,),
    )
    return [r[0] for r in rows]


def check_unique(conn, table):
    rows = execute(
        conn,
        "SELECT array_agg(a.attname::text) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL GROUP BY i.indexrelid",
        (table.oid,),
    )
    if not any(set(r[0]) <= set(table.key) for r in rows):
        raise OptionError(
            table.where + ".key",
            "%s: key (%s) of %s is not unique (no primary key or unique index on these columns): batches could split rows with equal keys. "
            "Give a key with a unique index" % (table.where, ", ".join(table.key), table.label),
        )


def check_time_column(table, name, option):
    column = table.column(name, option)
    wanted = TIME_TYPES if table.time_unit == "timestamp" else NUMBER_TYPES
    if not column["type"].startswith(wanted):
        raise OptionError(
            option,
            "%s: column %s of %s is %s; with time_unit %s it must be a %s" % (option, name, table.label, column["type"], table.time_unit, " or ".join(wanted)),
        )


def check_foreign_keys(conn, table):
    """Refuse when a table outside the batch references the table or a child: its rows
    would block the delete, or be deleted or changed with it (ON DELETE CASCADE)."""
    inside = [table.oid] + [c.oid for c in table.children]
    rows = execute(
        conn,
        "SELECT conrelid::regclass::text, confrelid::regclass::text, conname, confdeltype FROM pg_constraint "
        "WHERE contype = 'f' AND confrelid = ANY(%s::oid[]) AND NOT conrelid = ANY(%s::oid[])",
        (inside, inside),
    )
    if rows:
        source, target, name, action = rows[0]
        effect = {"c": "deleted with them (ON DELETE CASCADE)", "n": "changed (ON DELETE SET NULL)", "d": "changed (ON DELETE SET DEFAULT)"}.get(
            action, "in the way of the delete"
        )
        raise OptionError(
            table.where + ".children",
            "%s: table %s references %s (foreign key %s): its rows would be %s without being archived. Archive it together: add it to %s.children"
            % (table.where, source, target, name, effect, table.where),
        )


# ---- the session that reads rows -----------------------------------------------------------------------


@contextlib.contextmanager
def opened(params, targets=True, database=True):
    """(connection, archive locations) of a module run - either may be left out - closed
    afterwards whatever happens. The connection has the fixed export settings."""
    locations = chains.open_locations(params["targets"]) if targets else []
    try:
        conn = _postgresql.connect(params) if database else None
        try:
            if conn is not None:
                prepare_session(conn)
            yield conn, locations
        finally:
            if conn is not None:
                conn.close()
    finally:
        chains.close_locations(locations)


def prepare_session(conn):
    """Fixed output settings, so a row's text (and digest) is the same for every reader."""
    encoding = _postgresql.scalar(conn, "SELECT current_setting('server_encoding')")
    execute(conn, "SET client_encoding = %s" % quote_literal(encoding))
    for name, value in fmt.EXPORT_SETTINGS:
        execute(conn, "SET %s = %s" % (name, quote_literal(value)))
    return encoding


def database_facts(conn, encoding):
    facts = {"name": current_database(conn), "encoding": encoding, "server_version": _postgresql.server_version(conn)[1]}
    try:
        facts["system_identifier"] = str(_postgresql.scalar(conn, "SELECT system_identifier FROM pg_control_system()"))
    except PgError:
        facts["system_identifier"] = None  # not allowed for this role: only recorded, never required
    return facts


class ChainLock:
    """A session advisory lock per chain: two runs never extend one chain at once."""

    def __init__(self, conn, chain):
        self.conn = conn
        self.chain = chain

    def __enter__(self):
        if not _postgresql.scalar(self.conn, "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_CLASS, self.chain)):
            raise ArchiveError("chain %s is being extended by another run (advisory lock held); try again when it has finished" % self.chain)
        return self

    def __exit__(self, *exc):
        try:
            execute(self.conn, "SELECT pg_advisory_unlock(%s, hashtext(%s))", (LOCK_CLASS, self.chain))
        except PgError:
            pass  # the connection is gone: so is the lock
        return False


# ---- the chain heads recorded in the database ------------------------------------------------------------


STATE_DDL = """
CREATE TABLE IF NOT EXISTS %s.%s (
    chain text PRIMARY KEY,
    chain_id text NOT NULL,
    table_name text NOT NULL,
    seq bigint NOT NULL,
    entry_hash text NOT NULL,
    through text[],
    rows bigint NOT NULL DEFAULT 0,
    signer text NOT NULL,
    checkpoints jsonb NOT NULL DEFAULT '[]',
    updated timestamptz NOT NULL DEFAULT now()
)"""


class State:
    """``<schema>.table_archive_chains``: one row per chain, its head as committed."""

    def __init__(self, conn, schema):
        self.conn = conn
        self.schema = schema
        self.table = "%s.%s" % (quote_ident(schema), quote_ident(STATE_TABLE))

    def exists(self):
        return bool(_postgresql.scalar(self.conn, "SELECT to_regclass(%s) IS NOT NULL", (self.table,)))

    def ensure(self):
        if self.exists():
            return
        try:
            execute(self.conn, "CREATE SCHEMA IF NOT EXISTS %s" % quote_ident(self.schema))
            execute(self.conn, STATE_DDL % (quote_ident(self.schema), quote_ident(STATE_TABLE)))
        except PgError as exc:
            raise ArchiveError(
                "cannot create %s, where the chains' heads are recorded: %s. Create it once as a role allowed to (docs/table-archive.md, "
                "'Privileges'), or set state_schema to a schema this role may create tables in" % (self.table, exc.msg)
            ) from None

    def read(self, chain):
        if not self.exists():
            return None
        rows = execute(
            self.conn, "SELECT chain_id, table_name, seq, entry_hash, through, rows, signer, checkpoints FROM %s WHERE chain = %%s" % self.table, (chain,)
        )
        if not rows:
            return None
        row = rows[0]
        return {
            "chain": chain,
            "chain_id": row[0],
            "table": row[1],
            "seq": int(row[2]),
            "entry_hash": row[3],
            "through": list(row[4]) if row[4] is not None else None,
            "rows": int(row[5]),
            "signer": row[6],
            "checkpoints": _json(row[7]),
        }

    def insert(self, chain, chain_id, table, entry_hash, signer):
        execute(
            self.conn,
            "INSERT INTO %s (chain, chain_id, table_name, seq, entry_hash, signer) VALUES (%%s, %%s, %%s, 0, %%s, %%s)" % self.table,
            (chain, chain_id, table, entry_hash, signer),
        )

    def advance(self, recorded, seq, entry_hash, signer, through=None, rows=0, checkpoints=None):
        """Move the head from ``recorded`` to ``seq``; fails unless the head is still the one read."""
        updated = execute(
            self.conn,
            "UPDATE %s SET seq = %%s, entry_hash = %%s, signer = %%s, through = coalesce(%%s::text[], through), rows = rows + %%s, "
            "checkpoints = %%s::jsonb, updated = now() WHERE chain = %%s AND seq = %%s AND entry_hash = %%s RETURNING seq" % self.table,
            (
                seq,
                entry_hash,
                signer,
                through,
                rows,
                json.dumps(checkpoints if checkpoints is not None else recorded["checkpoints"]),
                recorded["chain"],
                recorded["seq"],
                recorded["entry_hash"],
            ),
        )
        if not updated:
            raise ArchiveError(
                "chain %s: its head changed in the database while this run extended it (another run?); nothing was committed" % recorded["chain"]
            )
        new = dict(recorded, seq=seq, entry_hash=entry_hash, signer=signer, rows=recorded["rows"] + rows)
        if through is not None:
            new["through"] = through
        if checkpoints is not None:
            new["checkpoints"] = checkpoints
        return new


def _json(value):
    if isinstance(value, str):
        return json.loads(value)
    return value if value is not None else []


# ---- transactions, key ranges, digests ------------------------------------------------------------------


def rollback(conn):
    try:
        execute(conn, "ROLLBACK")
    except PgError:
        pass  # the connection is gone, and with it the transaction


def order_by(table, alias, descending=False):
    return ", ".join("%s.%s%s" % (alias, quote_ident(k), " DESC" if descending else "") for k in table.key)


class KeyRange:
    """Rows of ``table`` with a key in (after, through]; None: no bound on that side."""

    def __init__(self, table, after, through):
        self.table = table
        self.after = after
        self.through = through

    def conditions(self, alias):
        table = self.table
        parts = []
        if self.after is not None:
            parts.append("%s > %s" % (table.key_sql(alias), table.key_value(self.after)))
        if self.through is not None:
            parts.append("%s <= %s" % (table.key_sql(alias), table.key_value(self.through)))
        return parts

    def predicate(self, alias):
        return " AND ".join(self.conditions(alias)) or "true"


def key_less(conn, table, left, right):
    """left < right for keys of ``table`` (None is before every key), by the server's rules."""
    if left is None:
        return True
    return bool(_postgresql.scalar(conn, "SELECT %s < %s" % (table.key_value(left), table.key_value(right))))


def batch_stats(conn, table, batch):
    time_sql = ""
    if table.time_column:
        column = "p.%s" % quote_ident(table.time_column)
        time_sql = ", %s::text, %s::text" % (table.time_sql("min(%s)" % column), table.time_sql("max(%s)" % column))
    row = execute(conn, "SELECT count(*)%s FROM %s p WHERE %s" % (time_sql, table.sql, batch.predicate("p")))[0]
    first = execute(conn, "SELECT %s FROM %s p WHERE %s ORDER BY %s LIMIT 1" % (table.key_text_sql("p"), table.sql, batch.predicate("p"), order_by(table, "p")))
    last = execute(
        conn, "SELECT %s FROM %s p WHERE %s ORDER BY %s LIMIT 1" % (table.key_text_sql("p"), table.sql, batch.predicate("p"), order_by(table, "p", True))
    )
    return {
        "rows": int(row[0]),
        "first_key": list(first[0]) if first else None,
        "last_key": list(last[0]) if last else None,
        "time_range": {"from": row[1], "to": row[2]} if table.time_column and row[1] is not None else None,
    }


def head_summary(recorded):
    return {"seq": recorded["seq"], "hash": recorded["entry_hash"], "through": recorded["through"], "rows": recorded["rows"], "signer": recorded["signer"]}


def live_digest(conn, relation, key_range, columns=None):
    """RowDigest of the live rows in ``key_range`` (COPY text of ``columns``, as archived)."""
    digest = fmt.RowDigest()
    columns = columns or relation.copy_columns
    sql = "COPY (SELECT %s FROM %s p WHERE %s) TO STDOUT" % (", ".join("p.%s" % quote_ident(c) for c in columns), relation.sql, key_range.predicate("p"))
    _postgresql.copy_out(conn, sql, digest.add_rows)
    return digest


def table_digests(conn, specs):
    """Count and digest of every row of each table (no key needed: the digest does not depend
    on the order), and one digest over them all: what ``when_changed`` compares."""
    found = []
    for index, spec in enumerate(specs):
        relation = find_relation(conn, spec["name"], "tables[%d].name" % index)
        execute(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            digest = live_digest(conn, relation, KeyRange(relation, None, None))
        finally:
            rollback(conn)
        found.append({"table": relation.label, "columns": relation.copy_columns, "rows": digest.rows, "digest": digest.digest})
    combined = hashlib.sha256(fmt.canonical(found)).hexdigest()
    return found, combined
