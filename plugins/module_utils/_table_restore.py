# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""table_archive_restore: archived rows back into a table (docs/table-archive.md, "Restore").

Nothing reaches the target before it is authenticated: the chain is verified first
(signatures, links, payload SHA-256), then, in one transaction, each selected segment's
rows are loaded into private staging tables (``ON COMMIT DROP``) while their counts and
digests are recomputed and compared with the signed entry. Only when every segment
matches are the rows inserted into the targets (the table first, then its child tables),
and the transaction committed.
"""

from __future__ import annotations

import os
import tempfile

from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_chain as chains
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_db as db
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_segment as fmt
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._postgresql import PgError, execute, quote_ident, quote_literal

ArchiveError = chains.ArchiveError
FLUSH_BYTES = 1024 * 1024


def verified_source(locations, chain_name, trusted):
    """(location, chain report, genesis) of the first location where the chain verifies
    with no problem; ArchiveError listing every location's problems otherwise."""
    failures = []
    for location in locations:
        report = fmt.ChainCheck(chains.LocationStore(location, chain_name), chain_name, trusted, "checksum").run()
        if not report["entries"]:
            failures.append("%s: no chain %s there" % (location.label, chain_name))
            continue
        if report["problems"]:
            failures.append("%s: %s" % (location.label, "; ".join("[%s] %s" % (p["kind"], p["message"]) for p in report["problems"][:5])))
            continue
        genesis, _signature = fmt.decode(location.read(chain_name, fmt.entry_name(0)))
        return location, report, genesis
    raise ArchiveError(
        "chain %s was not restored: it does not verify in any location (%s). Run table_archive_verify for the whole report" % (chain_name, " | ".join(failures))
    )


def select_segments(conn, genesis, report, params):
    """The segments the options ask for: by number, by key range, by time range; never an
    expired one (its rows were removed on purpose)."""
    segments = _by_number(report, params.get("segments"))
    key = KeyOps(conn, genesis["table"])
    tests = {
        "from_key": lambda s, v: s["rows"] and not key.less(s["last_key"], v),
        "to_key": lambda s, v: s["rows"] and not key.less(v, s["first_key"]),
        "from_time": lambda s, v: s["time_range"] and _time_le(conn, v, s["time_range"]["to"]),
        "to_time": lambda s, v: s["time_range"] and _time_le(conn, s["time_range"]["from"], v),
    }
    for option, keep in tests.items():
        if params.get(option):
            segments = [s for s in segments if keep(s, params[option])]
    return segments


def _expired(segment):
    return (segment["payload_status"] or "").startswith("expired")


def _by_number(report, wanted):
    segments = report["segments"]
    if not wanted:
        return [s for s in segments if not _expired(s)]
    unknown = sorted(set(wanted) - {s["seq"] for s in segments})
    if unknown:
        raise OptionError("segments", "segments %s are not segments of chain %s" % (", ".join(map(str, unknown)), report["chain"]))
    chosen = [s for s in segments if s["seq"] in set(wanted)]
    expired = [s["seq"] for s in chosen if _expired(s)]
    if expired:
        raise OptionError(
            "segments",
            "segments %s of chain %s have expired: their rows were removed on purpose (see the chain's expiry entries)"
            % (", ".join(map(str, expired)), report["chain"]),
        )
    return chosen


def _time_le(conn, left, right):
    try:
        return bool(_postgresql.scalar(conn, "SELECT %s::timestamptz <= %s::timestamptz" % (quote_literal(left), quote_literal(right))))
    except PgError as exc:
        raise OptionError("from_time", "from_time/to_time: %s" % exc.msg) from None


class KeyOps:
    """Key comparisons for a chain's table, typed as its genesis recorded them."""

    def __init__(self, conn, table):
        self.conn = conn
        self.key = table["key"]
        self.types = table["key_types"]

    def value(self, values):
        if len(values) != len(self.key):
            raise OptionError("from_key", "a key of this chain has %d column(s) (%s); got %r" % (len(self.key), ", ".join(self.key), values))
        return "(%s)" % ", ".join("%s::%s" % (quote_literal(str(v)), t) for v, t in zip(values, self.types))

    def less(self, left, right):
        try:
            return bool(_postgresql.scalar(self.conn, "SELECT %s < %s" % (self.value(left), self.value(right))))
        except PgError as exc:
            raise OptionError("from_key", "from_key/to_key: %s" % exc.msg) from None


# ---- targets -----------------------------------------------------------------------------------------


class Target:
    """Where one archived table's rows go: the relation (existing or created), the columns
    the selected segments hold, and a private staging table."""

    def __init__(self, source, name, recorded, staging, columns):
        self.source = source  # label of the archived table
        self.name = name  # target as given (schema.table)
        self.recorded = recorded  # the table as the genesis recorded it
        self.staging = staging
        self.columns = columns  # union of the sections' columns, in order of appearance
        self.relation = None
        self.loaded = 0
        self.inserted = 0


def section_columns(segments, label):
    columns = []
    for segment in segments:
        for section in segment["sections"]:
            if section["table"] == label:
                columns += [c for c in section["columns"] if c not in columns]
    return columns


def plan_targets(genesis, segments, params):
    table = genesis["table"]
    target = params.get("target") or table["label"]
    targets = [Target(table["label"], target, table, "lifeboat_restore_0", section_columns(segments, table["label"]))]
    mapping = params.get("child_targets") or {}
    if params.get("children", True):
        for index, child in enumerate(genesis.get("children") or []):
            name = mapping.get(child["label"])
            if name is None and target != table["label"]:
                raise OptionError(
                    "child_targets",
                    "the rows of %s go to %s, not to %s: name where the rows of its child table %s go in child_targets, or set children: false"
                    % (table["label"], target, table["label"], child["label"]),
                )
            targets.append(
                Target(child["label"], name or child["label"], child, "lifeboat_restore_%d" % (index + 1), section_columns(segments, child["label"]))
            )
    return targets


def prepare_target(conn, target, create, is_parent):
    exists = _postgresql.scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (target.name,))
    if not exists:
        if not create:
            raise OptionError(
                "create_target", "table %s does not exist: create it, or set create_target: true to create it from the columns the chain recorded" % target.name
            )
        create_table(conn, target, is_parent)
    target.relation = db.find_relation(conn, target.name, "target")
    present = {c["name"] for c in target.relation.columns if not c["generated"]}
    missing = [c for c in target.columns if c not in present]
    if missing:
        raise OptionError(
            "target",
            "table %s has no column %s, which the archived rows of %s have: add it, or restore into a new table (create_target)"
            % (target.name, ", ".join(missing), target.source),
        )
    columns = ", ".join("%s text" % quote_ident(c) for c in target.columns) or "lifeboat_none text"
    execute(conn, "CREATE TEMP TABLE %s (%s) ON COMMIT DROP" % (quote_ident(target.staging), columns))


def create_table(conn, target, is_parent):
    recorded = {c["name"]: c for c in target.recorded["columns"]}
    columns = []
    for name in target.columns:
        column = recorded.get(name, {"type": "text", "not_null": False})
        columns.append("%s %s%s" % (quote_ident(name), column["type"], " NOT NULL" if column["not_null"] else ""))
    if is_parent:
        columns.append("PRIMARY KEY (%s)" % ", ".join(quote_ident(k) for k in target.recorded["key"]))
    schema, _dot, name = target.name.rpartition(".")
    qualified = "%s.%s" % (quote_ident(schema), quote_ident(name)) if schema else quote_ident(name)
    try:
        if schema:
            execute(conn, "CREATE SCHEMA IF NOT EXISTS %s" % quote_ident(schema))
        execute(conn, "CREATE TABLE %s (%s)" % (qualified, ", ".join(columns)))
    except PgError as exc:
        raise ArchiveError("cannot create table %s to restore into: %s" % (target.name, exc.msg)) from None


# ---- loading ------------------------------------------------------------------------------------------


class SegmentLoader:
    """Feeds one payload's sections into the staging tables while recounting them."""

    def __init__(self, conn, targets, entry):
        self.conn = conn
        self.by_source = {t.source: t for t in targets}
        self.entry = entry
        self.copy = None
        self.buffer = []
        self.size = 0
        self.parser = fmt.PayloadParser(self._line, self._end)

    def _line(self, table, line):
        target = self.by_source.get(table)
        if target is None:
            return  # a child table left out (children: false)
        if self.copy is None:
            columns = next(s["columns"] for s in self.entry["sections"] if s["table"] == table)
            self.copy = _postgresql.CopyIn(self.conn, "COPY %s (%s) FROM STDIN" % (quote_ident(target.staging), ", ".join(quote_ident(c) for c in columns)))
        self.buffer.append(line)
        self.size += len(line)
        target.loaded += 1
        if self.size >= FLUSH_BYTES:
            self._flush()

    def _flush(self):
        if self.buffer:
            self.copy.write(b"".join(self.buffer))
            self.buffer, self.size = [], 0

    def _end(self, _table):
        if self.copy is not None:
            self._flush()
            self.copy.close()
            self.copy = None

    def load(self, stream):
        try:
            while True:
                chunk = stream.read(fmt.READ_BLOCK)
                if not chunk:
                    break
                self.parser.feed(chunk)
        finally:
            stream.close()
        found = [(s["table"], s["rows"], s["digest"]) for s in self.parser.finish()]
        signed = [(s["table"], s["rows"], s["digest"]) for s in self.entry["sections"]]
        if found != signed:
            raise ArchiveError(
                "segment %d: the rows in its payload do not match the signed counts and digests (%s); nothing was restored"
                % (self.entry["seq"], fmt.sections_text(found))
            )


def load_segments(conn, location, chain_name, segments, targets, identities, spool_dir):
    for segment in segments:
        entry, _signature = fmt.decode(location.read(chain_name, segment["file"]))
        path = location.download(chain_name, entry["payload"]["name"], spool_dir)
        try:
            got = fmt.DirectoryStore(os.path.dirname(path)).digest(os.path.basename(path))
            if got != (entry["payload"]["size"], entry["payload"]["sha256"]):
                raise ArchiveError("segment %d: the payload fetched from %s is not the one signed; nothing was restored" % (entry["seq"], location.label))
            SegmentLoader(conn, targets, entry).load(chains.PayloadReader(path, entry["payload"], identities))
        finally:
            os.unlink(path)


def insert_rows(conn, targets, genesis, params):
    """Staged rows into the targets, the table first, with the key and time filters."""
    parent = targets[0]
    for index, target in enumerate(targets):
        types = {c["name"]: c["type"] for c in target.relation.columns}
        select = ", ".join("s.%s::%s" % (quote_ident(c), types[c]) for c in target.columns)
        where = " AND ".join(row_filters(genesis["table"], params, "s")) if index == 0 else child_filter(target, genesis, parent, params)
        sql = "WITH ins AS (INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s s WHERE %s%s RETURNING 1) SELECT count(*) FROM ins" % (
            target.relation.sql,
            ", ".join(quote_ident(c) for c in target.columns),
            select,
            quote_ident(target.staging),
            where or "true",
            " ON CONFLICT DO NOTHING" if params.get("on_conflict") == "skip" else "",
        )
        try:
            target.inserted = int(_postgresql.scalar(conn, sql))
        except PgError as exc:
            raise ArchiveError(
                "inserting the archived rows of %s into %s failed: %s; nothing was restored%s" % (target.source, target.name, exc.msg, _hint(exc.msg))
            ) from None


def _hint(text):
    if "duplicate key" in text:
        return " (some rows are there already: set on_conflict: skip to keep those and add the others)"
    return ""


def row_filters(table, params, alias):
    """SQL conditions on staged rows of the table for from_key/to_key/from_time/to_time."""
    key = "(%s)" % ", ".join("%s.%s::%s" % (alias, quote_ident(k), t) for k, t in zip(table["key"], table["key_types"]))
    ops = KeyOps(None, table)
    filters = []
    if params.get("from_key"):
        filters.append("%s >= %s" % (key, ops.value(params["from_key"])))
    if params.get("to_key"):
        filters.append("%s <= %s" % (key, ops.value(params["to_key"])))
    if table.get("time_column") and (params.get("from_time") or params.get("to_time")):
        column = next(c for c in table["columns"] if c["name"] == table["time_column"])
        moment = db.time_expression(table.get("time_unit"), "%s.%s::%s" % (alias, quote_ident(table["time_column"]), column["type"]))
        if params.get("from_time"):
            filters.append("%s >= %s::timestamptz" % (moment, quote_literal(params["from_time"])))
        if params.get("to_time"):
            filters.append("%s <= %s::timestamptz" % (moment, quote_literal(params["to_time"])))
    return filters


def child_filter(target, genesis, parent, params):
    """Child rows go with the parent rows the filters kept."""
    filters = row_filters(genesis["table"], params, "p")
    if not filters:
        return "true"
    child = next(c for c in genesis["children"] if c["label"] == target.source)
    types = {c["name"]: c["type"] for c in genesis["table"]["columns"]}
    link = "(%s)" % ", ".join("s.%s::%s" % (quote_ident(c), types[p]) for c, p in zip(child["link"], child["parent_link"]))
    parent_link = ", ".join("p.%s::%s" % (quote_ident(c), types[c]) for c in child["parent_link"])
    return "%s IN (SELECT %s FROM %s p WHERE %s)" % (link, parent_link, quote_ident(parent.staging), " AND ".join(filters))


def _encrypted(segment):
    return segment["payload"].endswith(".age")


def restore(conn, params, locations, check_mode=False):
    """Verify, stage, check, insert. Returns the module's result."""
    trusted = [fmt.normalise_public_key(k) for k in params.get("public_keys") or []] or None
    location, report, genesis = verified_source(locations, params["chain"], trusted)
    segments = select_segments(conn, genesis, report, params)
    targets = plan_targets(genesis, segments, params)
    result = {
        "chain": params["chain"],
        "location": location.name,
        "segments": [s["seq"] for s in segments],
        "verified": {"entries": report["entries"], "signers": report["signers"], "trust": report["trust"]},
        "rows_archived": sum(s["rows"] for s in segments),
        "changed": False,
        "tables": [{"source": t.source, "target": t.name} for t in targets],
    }
    if check_mode or not segments:
        return result
    identities = chains.decryption_identities(params, params["chain"], location)
    if not identities and any(_encrypted(s) for s in segments):
        raise OptionError("identity", "the payloads of chain %s are encrypted: give passphrase, identity or identity_file" % params["chain"])
    load_and_insert(conn, params, location, genesis, segments, targets, identities)
    result.update(
        changed=any(t.inserted for t in targets),
        tables=[
            {"source": t.source, "target": t.name, "rows_in_segments": t.loaded, "rows_restored": t.inserted, "rows_skipped": t.loaded - t.inserted}
            for t in targets
        ],
    )
    return result


def load_and_insert(conn, params, location, genesis, segments, targets, identities):
    """One transaction: targets ready, segments staged and recounted, rows inserted."""
    execute(conn, "BEGIN")
    try:
        for index, target in enumerate(targets):
            prepare_target(conn, target, params.get("create_target"), index == 0)
        load_segments(conn, location, params["chain"], segments, targets, identities, params.get("spool_dir") or tempfile.gettempdir())
        insert_rows(conn, targets, genesis, params)
        execute(conn, "COMMIT")
    except BaseException:
        db.rollback(conn)
        raise
