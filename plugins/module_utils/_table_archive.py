# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Archiving rows of fast-growing PostgreSQL tables into signed, chained segments
(docs/table-archive.md), and checkpoints of the rows still live.

One batch is one transaction (REPEATABLE READ): the batch's bounds and statistics are
read, then ``COPY (DELETE ... RETURNING ...) TO STDOUT`` removes the rows and streams
exactly those rows, child tables first, into a spool file (compressed, encrypted: no
plaintext on disk). The segment is signed and put into every archive location, each copy
synced and read back; the chain's head is updated in the same transaction; only then
COMMIT. A failure or a kill before COMMIT leaves every row in the table (the server rolls
back) and at most one uncommitted entry in the locations, which the next run removes
(``_table_chain.Chain.reconcile``). The rows deleted are the rows archived: the same
statement produced both, and their count is checked against the statistics taken in the
same snapshot.
"""

from __future__ import annotations

import os
import tempfile
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _image, _postgresql, _version
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_chain as chains
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_segment as fmt
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._postgresql import PgError, execute, quote_ident, quote_literal

ArchiveError = chains.ArchiveError

# The ``tables`` option of the table-archive modules (doc fragment lifeboat.backup._table_archive.tables).
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
    locations=dict(type="list", elements="str"),
)
TABLES_SPEC = dict(tables=dict(type="list", elements="dict", required=True, options=TABLE_OPTIONS))

LOCK_CLASS = 0x1BEB  # advisory lock class id of table-archive chains
TIME_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")
NUMBER_TYPES = ("smallint", "integer", "bigint", "numeric", "real", "double precision")
STATE_TABLE = "table_archive_chains"


def tool():
    return {"name": _version.COLLECTION, "version": _version.COLLECTION_VERSION}


# ---- the tables option ----------------------------------------------------------------------------


def validate_tables(params, option="tables", archiving=True):
    """Checks that need no database; OptionError names ``tables[i].<option>``."""
    if not params:
        raise OptionError(option, "%s must name at least one table" % option)
    chains_seen = {}
    for index, spec in enumerate(params):
        where = "%s[%d]" % (option, index)
        if archiving and bool(spec.get("older_than")) == bool(spec.get("before")):
            raise OptionError(
                where + ".older_than", "%s needs exactly one cut-off: older_than (an interval, like '90 days') or before (a value of its cutoff column)" % where
            )
        if spec.get("batch_rows") is not None and spec["batch_rows"] < 1:
            raise OptionError(where + ".batch_rows", "%s.batch_rows must be at least 1" % where)
        if spec.get("key") is not None and (not spec["key"] or len(set(spec["key"])) != len(spec["key"])):
            raise OptionError(where + ".key", "%s.key must list distinct columns" % where)
        for cindex, child in enumerate(spec.get("children") or []):
            if child.get("parent_link") and len(child["parent_link"]) != len(child["link"]):
                raise OptionError(
                    "%s.children[%d].parent_link" % (where, cindex), "%s.children[%d]: link and parent_link must have as many columns" % (where, cindex)
                )
        name = spec.get("chain")
        if name:
            if name in chains_seen:
                raise OptionError(where + ".chain", "%s and %s both use chain %s" % (chains_seen[name], where, name))
            chains_seen[name] = where
    return params


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


# ---- the session that reads rows ----------------------------------------------------------------------


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
        import json

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
    import json

    if isinstance(value, str):
        return json.loads(value)
    return value if value is not None else []


# ---- test-only fault injection ------------------------------------------------------------------------------


def hold(point):
    """Pause at ``point`` while the file named by LIFEBOAT_TEST_HOLD='<point>:<file>' exists
    (the integration tests kill the module there). Unset in production: one lookup."""
    spec = os.environ.get("LIFEBOAT_TEST_HOLD")
    if not spec or spec.partition(":")[0] != point:
        return
    path = spec.partition(":")[2]
    with open(path, "w") as handle:
        handle.write(str(os.getpid()))
    deadline = time.time() + 300
    while os.path.exists(path) and time.time() < deadline:
        time.sleep(0.05)


# ---- creating and extending a chain --------------------------------------------------------------------------


class Context:
    """What a run of table_archive or table_checkpoint shares across its tables."""

    def __init__(self, conn, params, locations, signing_key, previous_key, state, encoding, check_mode=False):
        self.conn = conn
        self.params = params
        self.locations = locations
        self.signing_key = signing_key
        self.previous_key = previous_key
        self.signer = fmt.public_key_text(signing_key) if signing_key else None
        self.state = state
        self.encoding = encoding
        self.check_mode = check_mode
        self.spool_dir = params.get("spool_dir") or tempfile.gettempdir()

    def locations_for(self, table):
        wanted = table.spec.get("locations")
        if not wanted:
            return list(self.locations)
        found = [loc for loc in self.locations if loc.name in wanted]
        unknown = sorted(set(wanted) - {loc.name for loc in found})
        if unknown:
            raise OptionError(
                table.where + ".locations",
                "%s.locations names %s, which is not the name of any of locations (%s)"
                % (table.where, ", ".join(unknown), ", ".join(loc.name for loc in self.locations)),
            )
        return found


def base_entry(kind, chain_name, chain_id, seq, prev, signer):
    return {
        "format": fmt.FORMAT,
        "format_version": fmt.FORMAT_VERSION,
        "kind": kind,
        "chain": {"id": chain_id, "name": chain_name},
        "seq": seq,
        "prev": prev,
        "created": chains.utc_now(),
        "signer": signer,
        "tool": tool(),
    }


def create_chain(ctx, table, chain):
    """Write the genesis entry everywhere, then record the chain in the database."""
    ctx.state.ensure()
    chain_id = chains.new_chain_id()
    entry = base_entry("genesis", table.chain, chain_id, 0, None, ctx.signer)
    entry.update(table=table.genesis(), children=[c.genesis() for c in table.children], database=database_facts(ctx.conn, ctx.encoding))
    chain.publish(0, fmt.sign(entry, ctx.signing_key))
    ctx.state.insert(table.chain, chain_id, table.label, fmt.entry_hash(entry), ctx.signer)
    return ctx.state.read(table.chain)


def open_chain(ctx, table, chain):
    """Reconcile the locations with the recorded head, create the chain if new, load it,
    and check it archives this table. Returns (recorded head, repair actions)."""
    recorded = ctx.state.read(table.chain)
    actions = chain.reconcile(recorded)
    if recorded is None:
        recorded = create_chain(ctx, table, chain)
    chain.load(recorded)
    recorded_table = chain.genesis.get("table") or {}
    if recorded_table.get("label") != table.label or recorded_table.get("key") != table.key:
        raise OptionError(
            table.where + ".chain",
            "%s: chain %s archives table %s keyed by (%s), not %s keyed by (%s): give this table its own chain name"
            % (table.where, table.chain, recorded_table.get("label"), ", ".join(recorded_table.get("key") or []), table.label, ", ".join(table.key)),
        )
    return rotate_if_needed(ctx, chain, recorded), actions


def rotate_if_needed(ctx, chain, recorded):
    """A new signing key takes over only through a rotation entry signed by the old one."""
    if recorded["signer"] == ctx.signer:
        return recorded
    if ctx.previous_key is None or fmt.public_key_text(ctx.previous_key) != recorded["signer"]:
        raise OptionError(
            "signing_key",
            "chain %s is signed with %s, and signing_key is %s: to move to the new key, pass the old one as previous_signing_key "
            "(a rotation entry signed by it hands the chain over); otherwise use the chain's key" % (chain.name, recorded["signer"], ctx.signer),
        )
    seq = recorded["seq"] + 1
    entry = base_entry("rotation", chain.name, recorded["chain_id"], seq, recorded["entry_hash"], recorded["signer"])
    entry["next_signer"] = ctx.signer
    execute(ctx.conn, "BEGIN")
    return commit_entry(ctx, chain, recorded, fmt.sign(entry, ctx.previous_key))


def commit_entry(ctx, chain, recorded, document, payload=None, through=None, rows=0, checkpoints=None, before_commit=None):
    """Publish an entry in every location and move the head in the transaction the caller
    began; undo the publication when the transaction certainly did not commit (a COMMIT
    that failed may still have committed: the next run's reconcile decides)."""
    entry = document["entry"]
    seq = entry["seq"]
    published = commit_sent = False
    try:
        chain.publish(seq, document, payload and payload["path"], payload and payload["name"])
        published = True
        new = ctx.state.advance(
            recorded, seq, fmt.entry_hash(entry), entry["signer"] if entry["kind"] != "rotation" else entry["next_signer"], through, rows, checkpoints
        )
        if before_commit:
            before_commit()
        commit_sent = True
        execute(ctx.conn, "COMMIT")
    except BaseException:
        if not commit_sent:
            _rollback(ctx.conn)
            if published:
                chain.unpublish(seq, payload and payload["name"])
        raise
    chain.head = {"seq": seq, "hash": new["entry_hash"], "entry": entry}
    return new


def _rollback(conn):
    try:
        execute(conn, "ROLLBACK")
    except PgError:
        pass  # the connection is gone, and with it the transaction


# ---- archiving -------------------------------------------------------------------------------------


class Cut:
    """Where archiving stops for a table in this run: the cut-off value (rows whose cutoff
    column is below it are old) and the first key that is not old (the archive is always a
    prefix of the table in key order)."""

    def __init__(self, column, column_type, before, stop):
        self.column = column
        self.column_type = column_type
        self.before = before
        self.stop = stop

    def condition(self, alias):
        return "%s.%s < %s::%s" % (alias, quote_ident(self.column), quote_literal(self.before), self.column_type)

    def describe(self):
        return {"column": self.column, "before": self.before, "stop_key": self.stop}


def cut_for(conn, table):
    column = table.column(table.cutoff_column, table.where + ".cutoff_column")
    spec = table.spec
    try:
        if spec.get("older_than"):
            before = older_than_bound(conn, table, column, spec["older_than"])
        else:
            before = _postgresql.scalar(conn, "SELECT %s::%s::text" % (quote_literal(spec["before"]), column["type"]))
    except PgError as exc:
        option = "older_than" if spec.get("older_than") else "before"
        raise OptionError("%s.%s" % (table.where, option), "%s.%s: %s" % (table.where, option, exc.msg)) from None
    cut = Cut(table.cutoff_column, column["type"], before, None)
    rows = execute(
        conn,
        "SELECT %s FROM %s p WHERE NOT coalesce(%s, false) ORDER BY %s LIMIT 1" % (table.key_text_sql("p"), table.sql, cut.condition("p"), _order(table, "p")),
    )
    cut.stop = list(rows[0]) if rows else None
    return cut


def older_than_bound(conn, table, column, interval):
    unit = table.time_unit if table.cutoff_column == table.time_column else "timestamp"
    if unit == "timestamp":
        if not column["type"].startswith(TIME_TYPES):
            raise OptionError(
                table.where + ".older_than",
                "%s.older_than needs a time cutoff column; %s is %s: use before, or time_unit epoch_s/epoch_ms for numbers"
                % (table.where, table.cutoff_column, column["type"]),
            )
        return _postgresql.scalar(conn, "SELECT (now() - %s::interval)::%s::text" % (quote_literal(interval), column["type"]))
    scale = 1000 if unit == "epoch_ms" else 1
    return _postgresql.scalar(conn, "SELECT floor(extract(epoch FROM now() - %s::interval) * %d)::%s::text" % (quote_literal(interval), scale, column["type"]))


def _order(table, alias, descending=False):
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


class Batch(KeyRange):
    """The rows of one segment: key in (after, through] and old."""

    def __init__(self, table, cut, after, through):
        super().__init__(table, after, through)
        self.cut = cut

    def predicate(self, alias):
        return " AND ".join(self.conditions(alias) + [self.cut.condition(alias)])

    def child_predicate(self, child):
        parent = self.table
        links = "(%s)" % ", ".join("c.%s" % quote_ident(c) for c in child.link)
        parent_links = lambda alias: "(%s)" % ", ".join("%s.%s" % (alias, quote_ident(c)) for c in child.parent_link)  # noqa: E731
        return "%s IN (SELECT %s FROM %s p WHERE %s) AND NOT EXISTS (SELECT 1 FROM %s q WHERE %s = %s AND NOT coalesce(%s, false))" % (
            links,
            parent_links("p")[1:-1],
            parent.sql,
            self.predicate("p"),
            parent.sql,
            parent_links("q"),
            links,
            self.predicate("q"),
        )


def next_through(conn, table, after, cut, limit):
    """The last key of the next batch (at most ``limit`` old rows after ``after``), or None."""
    conditions = [cut.condition("p")]
    if after is not None:
        conditions.append("%s > %s" % (table.key_sql("p"), table.key_value(after)))
    if cut.stop is not None:
        conditions.append("%s < %s" % (table.key_sql("p"), table.key_value(cut.stop)))
    where = " AND ".join(conditions)
    base = "SELECT %s FROM %s p WHERE %s ORDER BY " % (table.key_text_sql("p"), table.sql, where)
    rows = execute(conn, base + "%s OFFSET %d LIMIT 1" % (_order(table, "p"), limit - 1))
    if not rows:
        rows = execute(conn, base + "%s LIMIT 1" % _order(table, "p", descending=True))
    return list(rows[0]) if rows else None


def key_less(conn, table, left, right):
    """left < right for keys of ``table`` (None is before every key), by the server's rules."""
    if left is None:
        return True
    return bool(_postgresql.scalar(conn, "SELECT %s < %s" % (table.key_value(left), table.key_value(right))))


def clip_at_checkpoints(conn, table, after, through, checkpoints):
    """Segments never straddle the end of a checkpoint, so that their digests add up to it."""
    for pending in checkpoints or []:
        if key_less(conn, table, after, pending["through"]) and key_less(conn, table, pending["through"], through):
            through = pending["through"]
    return through


def batch_stats(conn, table, batch):
    time_sql = ""
    if table.time_column:
        column = "p.%s" % quote_ident(table.time_column)
        time_sql = ", %s::text, %s::text" % (table.time_sql("min(%s)" % column), table.time_sql("max(%s)" % column))
    row = execute(conn, "SELECT count(*)%s FROM %s p WHERE %s" % (time_sql, table.sql, batch.predicate("p")))[0]
    first = execute(conn, "SELECT %s FROM %s p WHERE %s ORDER BY %s LIMIT 1" % (table.key_text_sql("p"), table.sql, batch.predicate("p"), _order(table, "p")))
    last = execute(
        conn, "SELECT %s FROM %s p WHERE %s ORDER BY %s LIMIT 1" % (table.key_text_sql("p"), table.sql, batch.predicate("p"), _order(table, "p", True))
    )
    return {
        "rows": int(row[0]),
        "first_key": list(first[0]) if first else None,
        "last_key": list(last[0]) if last else None,
        "time_range": {"from": row[1], "to": row[2]} if table.time_column and row[1] is not None else None,
    }


class Spool:
    """The payload of one segment in a private spool file, written as it streams:
    plaintext -> compressor -> age -> file (``_image.MemberWriter``), with the plaintext's
    and the stored bytes' SHA-256."""

    def __init__(self, directory, chain, compression, recipients):
        fd, self.path = tempfile.mkstemp(prefix=spool_prefix(chain), dir=directory)
        self._fp = os.fdopen(fd, "wb")
        self.record = None
        # zstd works in its own threads (it releases the GIL) while this one hashes rows.
        threads = 2 if compression == "zstd" else 0
        self.member = _image.MemberWriter(_SpoolAppender(self._fp), "payload", "table-archive", "application/sql", compression, recipients, threads)

    def write(self, data):
        self.member.write(data)

    def close(self):
        self.record = self.member.close()
        self._fp.flush()
        os.fsync(self._fp.fileno())
        self._fp.close()
        return self.record

    def discard(self):
        try:
            self._fp.close()
        finally:
            if os.path.exists(self.path):
                os.unlink(self.path)


def spool_prefix(chain):
    return "lifeboat-spool-%s-" % chain


def remove_stale_spools(directory, chain):
    """Spool files of this chain left by a killed run (the chain's lock is held: no run of
    the chain is using them). They are encrypted; removed all the same."""
    removed = []
    prefix = spool_prefix(chain)
    for name in os.listdir(directory):
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append({"action": "removed", "file": os.path.join(directory, name)})
            except OSError:
                pass
    return removed


class _SpoolAppender:
    """What MemberWriter needs of an image appender, for a plain file."""

    def __init__(self, fp):
        self.fp = fp

    def begin_member(self, name):
        return 0, 0, time.time()

    def end_member(self, member, record):
        pass

    def discard_member(self, offset):
        pass


def stream_section(conn, spool, relation, predicate_sql, alias, may_hold=False):
    """``COPY (DELETE ... RETURNING ...)`` of one table into the spool; returns the section."""
    columns = relation.copy_columns
    digest = fmt.RowDigest()
    add = digest.add_rows
    write = spool.write

    def on_rows(rows):
        add(rows)
        write(b"".join(rows))

    spool.write(fmt.copy_header(relation.schema, relation.name, columns))
    sql = "COPY (DELETE FROM %s AS %s WHERE %s RETURNING %s) TO STDOUT" % (
        relation.sql,
        alias,
        predicate_sql,
        ", ".join("%s.%s" % (alias, quote_ident(c)) for c in columns),
    )
    _postgresql.copy_out(conn, sql, _hold_mid_copy(on_rows) if may_hold else on_rows)
    spool.write(fmt.SECTION_END)
    return {"table": relation.label, "columns": columns, "rows": digest.rows, "digest": digest.digest}


def _hold_mid_copy(on_rows):
    """Test-only: pause after the first rows of the table's section (see ``hold``)."""
    if not (os.environ.get("LIFEBOAT_TEST_HOLD") or "").startswith("mid_copy:"):
        return on_rows
    held_once = []

    def held(rows):
        on_rows(rows)
        if not held_once:
            held_once.append(True)
            hold("mid_copy")

    return held


def archive_batch(ctx, table, chain, recorded, batch, keys):
    """One segment: read, delete and stream the batch, sign, publish, commit. Returns the
    new head and the segment's summary."""
    conn = ctx.conn
    stats = batch_stats(conn, table, batch)
    seq = recorded["seq"] + 1
    spool = Spool(ctx.spool_dir, table.chain, keys["compression"], keys["recipients"])
    try:
        sections = [dict(stream_section(conn, spool, child, batch.child_predicate(child), "c"), role="child") for child in table.children]
        sections.append(dict(stream_section(conn, spool, table, batch.predicate("p"), "p", may_hold=True), role="table"))
        record = spool.close()
        if sections[-1]["rows"] != stats["rows"]:
            raise ArchiveError(
                "chain %s: the delete returned %d rows of %s but %d were counted in the same snapshot; nothing was committed"
                % (table.chain, sections[-1]["rows"], table.label, stats["rows"])
            )
        entry = segment_entry(ctx, table, recorded, seq, batch, stats, sections, record, keys)
        payload = {"path": spool.path, "name": entry["payload"]["name"]}
        pending = [c for c in recorded["checkpoints"] if key_less(conn, table, batch.through, c["through"])]
        new = commit_entry(
            ctx, chain, recorded, fmt.sign(entry, ctx.signing_key), payload, batch.through, stats["rows"], pending, lambda: hold("before_commit")
        )
    finally:
        spool.discard()
    return new, segment_summary(entry)


def segment_entry(ctx, table, recorded, seq, batch, stats, sections, record, keys):
    entry = base_entry("segment", table.chain, recorded["chain_id"], seq, recorded["entry_hash"], ctx.signer)
    entry.update(
        table=table.label,
        range={"after": batch.after, "through": batch.through},
        cutoff={"column": batch.cut.column, "before": batch.cut.before},
        first_key=stats["first_key"],
        last_key=stats["last_key"],
        rows=stats["rows"],
        time_range=stats["time_range"],
        sections=sections,
        payload={
            "name": fmt.payload_name(seq, keys["compression"], bool(keys["recipients"])),
            "size": record["stored_size"],
            "sha256": record["stored_sha256"],
            "plaintext_size": record["plaintext_size"],
            "plaintext_sha256": record["plaintext_sha256"],
            "compression": keys["compression"],
            "encryption": "age" if keys["recipients"] else "none",
            "recipients": keys["recipients"],
            "identity": keys["identity"],
            "encoding": ctx.encoding,
        },
    )
    return entry


def segment_summary(entry):
    return {
        "seq": entry["seq"],
        "rows": entry["rows"],
        "first_key": entry["first_key"],
        "last_key": entry["last_key"],
        "time_range": entry["time_range"],
        "child_rows": {s["table"]: s["rows"] for s in entry["sections"] if s["role"] == "child"},
        "stored_bytes": entry["payload"]["size"],
        "plaintext_bytes": entry["payload"]["plaintext_size"],
        "payload": entry["payload"]["name"],
    }


def payload_keys(ctx, chain):
    """Recipients, identity record and compression of this run's payloads."""
    recipients, identity, blob = chains.payload_recipients(ctx.params, chain)
    if blob:
        chain.put_identity(blob)
    return {"recipients": recipients, "identity": identity, "compression": _image.resolve_compression(ctx.params["compression"])}


def archive_table(ctx, table):
    """Archive one table's old rows, a batch per segment. Returns its result."""
    chain = chains.Chain(table.chain, ctx.locations_for(table))
    result = {"table": table.label, "chain": table.chain, "locations": [loc.name for loc in chain.locations], "segments": [], "rows": 0, "child_rows": {}}
    with ChainLock(ctx.conn, table.chain):
        if ctx.check_mode:
            result.update(plan_table(ctx, table))
            return result
        recorded, result["recovered"] = open_chain(ctx, table, chain)
        result["recovered"] += remove_stale_spools(ctx.spool_dir, table.chain)
        keys = payload_keys(ctx, chain)
        cut = cut_for(ctx.conn, table)
        result["cutoff"] = cut.describe()
        try:
            recorded = archive_batches(ctx, table, chain, recorded, cut, keys, result)
        except LifeboatError as exc:
            if result["segments"]:
                raise exc.with_done(
                    "%s: %d rows in %d segments committed (chain %s up to entry %d)"
                    % (table.label, result["rows"], len(result["segments"]), table.chain, result["segments"][-1]["seq"])
                ) from None
            raise
        result.update(chain_id=recorded["chain_id"], head=head_summary(recorded), notes=chain.notes)
    return result


def archive_batches(ctx, table, chain, recorded, cut, keys, result):
    limit = ctx.params.get("max_batches") or 0
    while not limit or len(result["segments"]) < limit:
        recorded, summary = next_segment(ctx, table, chain, recorded, cut, keys)
        if summary is None:
            break
        result["segments"].append(summary)
        result["rows"] += summary["rows"]
        for name, rows in summary["child_rows"].items():
            result["child_rows"][name] = result["child_rows"].get(name, 0) + rows
    return recorded


def next_segment(ctx, table, chain, recorded, cut, keys):
    """(new head, segment summary) of the next batch, or (head, None) when nothing is left."""
    conn = ctx.conn
    execute(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        after = recorded["through"]
        through = next_through(conn, table, after, cut, table.batch_rows)
        if through is None:
            _rollback(conn)
            return recorded, None
        through = clip_at_checkpoints(conn, table, after, through, recorded["checkpoints"])
        return archive_batch(ctx, table, chain, recorded, Batch(table, cut, after, through), keys)
    except BaseException:
        _rollback(conn)
        raise


def head_summary(recorded):
    return {"seq": recorded["seq"], "hash": recorded["entry_hash"], "through": recorded["through"], "rows": recorded["rows"], "signer": recorded["signer"]}


def plan_table(ctx, table):
    """Check mode: what would move (rows, key range, estimated bytes, child rows), touching nothing."""
    recorded = ctx.state.read(table.chain)
    cut = cut_for(ctx.conn, table)
    after = recorded["through"] if recorded else None
    conditions = [cut.condition("p")] + KeyRange(table, after, None).conditions("p")
    if cut.stop is not None:
        conditions.append("%s < %s" % (table.key_sql("p"), table.key_value(cut.stop)))
    where = " AND ".join(conditions)
    row = execute(ctx.conn, "SELECT count(*), coalesce(sum(pg_column_size(p.*)), 0) FROM %s p WHERE %s" % (table.sql, where))[0]
    plan = {"cutoff": cut.describe(), "head": head_summary(recorded) if recorded else None, "would_move": {"rows": int(row[0]), "bytes_estimate": int(row[1])}}
    if row[0]:
        last = execute(ctx.conn, "SELECT %s FROM %s p WHERE %s ORDER BY %s LIMIT 1" % (table.key_text_sql("p"), table.sql, where, _order(table, "p", True)))[0]
        stats = batch_stats(ctx.conn, table, Batch(table, cut, after, list(last)))
        batch = Batch(table, cut, after, list(last))
        children = {}
        for child in table.children:
            children[child.label] = int(_postgresql.scalar(ctx.conn, "SELECT count(*) FROM %s c WHERE %s" % (child.sql, batch.child_predicate(child))))
        plan["would_move"].update(
            first_key=stats["first_key"],
            last_key=stats["last_key"],
            time_range=stats["time_range"],
            child_rows=children,
            segments=-(-int(row[0]) // table.batch_rows),
        )
    return plan


# ---- checkpoints ------------------------------------------------------------------------------------


def default_through(conn, table, settle):
    """The newest key, leaving out rows younger than ``settle`` seconds when the table has a
    time column: a row whose transaction commits later with a lower key would otherwise look
    like a row inserted below the checkpoint."""
    where = "true"
    if table.time_column and settle:
        where = "%s < now() - %s::interval" % (table.time_sql("p.%s" % quote_ident(table.time_column)), quote_literal("%d seconds" % settle))
    rows = execute(conn, "SELECT %s FROM %s p WHERE %s ORDER BY %s LIMIT 1" % (table.key_text_sql("p"), table.sql, where, _order(table, "p", True)))
    return list(rows[0]) if rows else None


def live_digest(conn, relation, key_range, columns=None):
    """RowDigest of the live rows in ``key_range`` (COPY text of ``columns``, as archived)."""
    digest = fmt.RowDigest()
    columns = columns or relation.copy_columns
    sql = "COPY (SELECT %s FROM %s p WHERE %s) TO STDOUT" % (", ".join("p.%s" % quote_ident(c) for c in columns), relation.sql, key_range.predicate("p"))
    _postgresql.copy_out(conn, sql, digest.add_rows)
    return digest


def checkpoint_table(ctx, table, through=None, settle=60):
    """Record a signed digest of the live rows after the archive's end, up to ``through``."""
    chain = chains.Chain(table.chain, ctx.locations_for(table))
    result = {"table": table.label, "chain": table.chain, "locations": [loc.name for loc in chain.locations]}
    with ChainLock(ctx.conn, table.chain):
        recorded = ctx.state.read(table.chain)
        if not ctx.check_mode:
            recorded, result["recovered"] = open_chain(ctx, table, chain)
        execute(ctx.conn, "BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            result.update(_checkpoint_in_transaction(ctx, table, chain, recorded, through, settle))
        except BaseException:
            _rollback(ctx.conn)
            raise
    return result


def _checkpoint_in_transaction(ctx, table, chain, recorded, through, settle):
    conn = ctx.conn
    after = recorded["through"] if recorded else None
    end = list(through) if through else default_through(conn, table, settle)
    if end is None or not key_less(conn, table, after, end):
        _rollback(conn)
        return {"changed": False, "skipped": "no live rows after the archive's end (%s) to checkpoint" % fmt.key_text(after)}
    key_range = KeyRange(table, after, end)
    stats = batch_stats(conn, table, key_range)
    digest = live_digest(conn, table, key_range)
    summary = {
        "after": after,
        "through": end,
        "rows": digest.rows,
        "digest": digest.digest,
        "first_key": stats["first_key"],
        "last_key": stats["last_key"],
        "time_range": stats["time_range"],
    }
    if ctx.check_mode:
        _rollback(conn)
        return {"changed": False, "checkpoint": summary}
    seq = recorded["seq"] + 1
    entry = base_entry("checkpoint", table.chain, recorded["chain_id"], seq, recorded["entry_hash"], ctx.signer)
    entry.update(
        table=table.label,
        range={"after": after, "through": end},
        columns=table.copy_columns,
        **{k: summary[k] for k in ("rows", "digest", "first_key", "last_key", "time_range")},
    )
    pending = [c for c in recorded["checkpoints"] if key_less(conn, table, end, c["through"])] + [{"seq": seq, "through": end}]
    new = commit_entry(ctx, chain, recorded, fmt.sign(entry, ctx.signing_key), checkpoints=pending)
    summary["seq"] = seq
    return {"changed": True, "checkpoint": summary, "head": head_summary(new), "chain_id": new["chain_id"]}


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
            _rollback(conn)
        found.append({"table": relation.label, "columns": relation.copy_columns, "rows": digest.rows, "digest": digest.digest})
    import hashlib

    combined = hashlib.sha256(fmt.canonical(found)).hexdigest()
    return found, combined
