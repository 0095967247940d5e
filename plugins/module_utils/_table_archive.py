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

import contextlib
import os
import tempfile
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _image, _postgresql, _retention, _version
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_chain as chains
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_segment as fmt
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._postgresql import PgError, execute, quote_ident, quote_literal
from ansible_collections.lifeboat.backup.plugins.module_utils._table_db import (
    TIME_TYPES,
    ChainLock,
    KeyRange,
    State,
    batch_stats,
    database_facts,
    describe_table,
    head_summary,
    key_less,
    live_digest,
    opened,
    order_by,
    rollback,
)

ArchiveError = chains.ArchiveError


def tool():
    return {"name": _version.COLLECTION, "version": _version.COLLECTION_VERSION}


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
    """What a run of table_archive or table_checkpoint shares across its tables: the
    connection, the locations, the keys, the tables described against the catalog."""

    def __init__(self, conn, params, locations, signing_key, previous_key, check_mode=False):
        self.conn = conn
        self.params = params
        self.locations = locations
        self.signing_key = signing_key
        self.previous_key = previous_key
        self.signer = fmt.public_key_text(signing_key) if signing_key else None
        self.state = State(conn, params["state_schema"])
        self.encoding = _postgresql.scalar(conn, "SELECT current_setting('client_encoding')")
        self.check_mode = check_mode
        self.spool_dir = params.get("spool_dir") or tempfile.gettempdir()
        self.tables = []

    def locations_for(self, table):
        wanted = table.spec.get("targets")
        if not wanted:
            return list(self.locations)
        found = [loc for loc in self.locations if loc.name in wanted]
        unknown = sorted(set(wanted) - {loc.name for loc in found})
        if unknown:
            raise OptionError(
                table.where + ".targets",
                "%s.targets names %s, which is not the name of any of targets (%s)"
                % (table.where, ", ".join(unknown), ", ".join(loc.name for loc in self.locations)),
            )
        return found


@contextlib.contextmanager
def writing(params, check_mode, archiving=True):
    """The Context of a run that extends chains, its tables described; everything closed
    afterwards whatever happens."""
    signing_key, previous_key = chains.signing_keys(params)
    with opened(params) as (conn, locations):
        ctx = Context(conn, params, locations, signing_key, previous_key, check_mode)
        ctx.tables = [describe_table(conn, spec, index, archiving) for index, spec in enumerate(params["tables"])]
        yield ctx


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
            rollback(ctx.conn)
            if published:
                chain.unpublish(seq, payload and payload["name"])
        raise
    chain.head = {"seq": seq, "hash": new["entry_hash"], "entry": entry}
    return new


# ---- archiving -------------------------------------------------------------------------------------


class Cut:
    """Where archiving stops for a table in this run: the cut-off value (rows whose cutoff
    column is below it are old) and the first key that is not old (the archive is always a
    prefix of the table in key order) - or, when every row is old, the last key there was
    (rows inserted during the run wait for the next one)."""

    def __init__(self, column, column_type, before, stop, last=None):
        self.column = column
        self.column_type = column_type
        self.before = before
        self.stop = stop
        self.last = last

    def condition(self, alias):
        return "%s.%s < %s::%s" % (alias, quote_ident(self.column), quote_literal(self.before), self.column_type)

    def describe(self):
        return {"column": self.column, "before": self.before, "stop_key": self.stop, "last_key": self.last}


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
        "SELECT %s FROM %s p WHERE NOT coalesce(%s, false) ORDER BY %s LIMIT 1"
        % (table.key_text_sql("p"), table.sql, cut.condition("p"), order_by(table, "p")),
    )
    cut.stop = list(rows[0]) if rows else None
    if cut.stop is None:
        rows = execute(conn, "SELECT %s FROM %s p ORDER BY %s LIMIT 1" % (table.key_text_sql("p"), table.sql, order_by(table, "p", descending=True)))
        cut.last = list(rows[0]) if rows else None
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


class Batch(KeyRange):
    """The rows of one segment: key in (after, through] and old."""

    def __init__(self, table, cut, after, through):
        super().__init__(table, after, through)
        self.cut = cut

    def predicate(self, alias):
        return " AND ".join(self.conditions(alias) + [self.cut.condition(alias)])

    def child_predicate(self, child):
        """Rows of ``child`` linked to rows of this batch and to no row that stays: a child row
        moves with the last of the table's rows it belongs to."""
        parent = self.table

        def columns(alias, names):
            return ", ".join("%s.%s" % (alias, quote_ident(c)) for c in names)

        links = "(%s)" % columns("c", child.link)
        return "%s IN (SELECT %s FROM %s p WHERE %s) AND NOT EXISTS (SELECT 1 FROM %s q WHERE (%s) = %s AND NOT coalesce(%s, false))" % (
            links,
            columns("p", child.parent_link),
            parent.sql,
            self.predicate("p"),
            parent.sql,
            columns("q", child.parent_link),
            links,
            self.predicate("q"),
        )


def _in_reach(table, after, cut):
    """Keys this run may archive after ``after``: before the first young row (every row
    there was old when the run began), or up to the last key there was. Only the key: the
    batch's bounds come from the key's index alone; the delete itself checks the cut-off."""
    conditions = []
    if after is not None:
        conditions.append("%s > %s" % (table.key_sql("p"), table.key_value(after)))
    if cut.stop is not None:
        conditions.append("%s < %s" % (table.key_sql("p"), table.key_value(cut.stop)))
    elif cut.last is not None:
        conditions.append("%s <= %s" % (table.key_sql("p"), table.key_value(cut.last)))
    else:
        conditions.append("false")  # an empty table
    return " AND ".join(conditions)


def next_through(conn, table, after, cut, limit):
    """The last key of the next batch (at most ``limit`` rows after ``after``), or None."""
    base = "SELECT %s FROM %s p WHERE %s ORDER BY " % (table.key_text_sql("p"), table.sql, _in_reach(table, after, cut))
    rows = execute(conn, base + "%s OFFSET %d LIMIT 1" % (order_by(table, "p"), limit - 1))
    if not rows:
        rows = execute(conn, base + "%s LIMIT 1" % order_by(table, "p", descending=True))
    return list(rows[0]) if rows else None


def end_keys(conn, table, batch):
    """First and last key of the batch's rows: two probes of the key's index."""
    found = []
    for descending in (False, True):
        rows = execute(
            conn,
            "SELECT %s FROM %s p WHERE %s ORDER BY %s LIMIT 1" % (table.key_text_sql("p"), table.sql, batch.predicate("p"), order_by(table, "p", descending)),
        )
        found.append(list(rows[0]) if rows else None)
    return found


def clip_at_checkpoints(conn, table, after, through, checkpoints):
    """Segments never straddle the end of a checkpoint, so that their digests add up to it."""
    for pending in checkpoints or []:
        if key_less(conn, table, after, pending["through"]) and key_less(conn, table, pending["through"], through):
            through = pending["through"]
    return through


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
    returning = ", ".join("%s.%s" % (alias, quote_ident(c)) for c in columns)
    sql = "COPY (DELETE FROM %s AS %s WHERE %s RETURNING %s) TO STDOUT" % (relation.sql, alias, predicate_sql, returning)
    _postgresql.copy_out(conn, sql, _hold_mid_copy(on_rows) if may_hold else on_rows)
    spool.write(fmt.SECTION_END)
    return {"table": relation.label, "columns": columns, "rows": digest.rows, "digest": digest.digest}


def tally(conn, relation, predicate_sql, alias, moment):
    """Count and time range of the rows the batch's delete will take, read in the batch's
    REPEATABLE READ snapshot just before it: the delete sees the same rows (a row changed
    by another transaction since makes it fail), and the count is checked against the rows
    that reached the segment. A separate aggregate, not a CTE over the delete: the CTE,
    read twice, made the server materialize the whole batch (to temporary files past
    work_mem), about a third of the server's time per batch."""
    sql = "SELECT count(*), min(%s)::text, max(%s)::text FROM %s AS %s WHERE %s" % (moment, moment, relation.sql, alias, predicate_sql)
    row = execute(conn, sql)[0]
    return {"rows": int(row[0]), "time_range": {"from": row[1], "to": row[2]} if row[1] is not None else None}


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


def archive_batch(ctx, table, chain, recorded, batch, stats, keys):
    """One segment: delete and stream the batch, sign, publish, commit. Returns the new head
    and the segment's summary. ``stats`` hold the first and last keys, read in the same
    snapshot; the count and time range come from the delete itself."""
    conn = ctx.conn
    seq = recorded["seq"] + 1
    spool = Spool(ctx.spool_dir, table.chain, keys["compression"], keys["recipients"])
    try:
        moment = table.time_sql("p.%s" % quote_ident(table.time_column)) if table.time_column else "NULL::timestamptz"
        stats.update(tally(conn, table, batch.predicate("p"), "p", moment))
        sections = [dict(stream_section(conn, spool, child, batch.child_predicate(child), "c"), role="child") for child in table.children]
        sections.append(dict(stream_section(conn, spool, table, batch.predicate("p"), "p", may_hold=True), role="table"))
        record = spool.close()
        if sections[-1]["rows"] != stats["rows"]:
            raise ArchiveError(
                "chain %s: the batch held %d rows of %s but %d reached the segment; nothing was committed"
                % (table.chain, stats["rows"], table.label, sections[-1]["rows"])
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
    result = {"table": table.label, "chain": table.chain, "targets": [loc.name for loc in chain.locations], "segments": [], "rows": 0, "child_rows": {}}
    with ChainLock(ctx.conn, table.chain):
        if ctx.check_mode:
            result.update(plan_table(ctx, table))
            recorded = ctx.state.read(table.chain)
            if table.spec.get("expire_after") and recorded:
                result["would_expire"] = expired_summary(expiry_plan(table, chain.load(recorded))[0])
            return result
        cut = cut_for(ctx.conn, table)  # first: a cut-off that cannot work touches nothing
        result["cutoff"] = cut.describe()
        recorded, result["recovered"] = open_chain(ctx, table, chain)
        result["recovered"] += remove_stale_spools(ctx.spool_dir, table.chain)
        keys = payload_keys(ctx, chain)
        try:
            recorded = archive_batches(ctx, table, chain, recorded, cut, keys, result)
            recorded, result["expired"] = expire_segments(ctx, table, chain, recorded)
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
            rollback(conn)
            return recorded, None
        batch = Batch(table, cut, after, clip_at_checkpoints(conn, table, after, through, recorded["checkpoints"]))
        first, last = end_keys(conn, table, batch)
        return archive_batch(ctx, table, chain, recorded, batch, {"first_key": first, "last_key": last}, keys)
    except BaseException:
        rollback(conn)
        raise


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
        last = execute(ctx.conn, "SELECT %s FROM %s p WHERE %s ORDER BY %s LIMIT 1" % (table.key_text_sql("p"), table.sql, where, order_by(table, "p", True)))[
            0
        ]
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
    rows = execute(conn, "SELECT %s FROM %s p WHERE %s ORDER BY %s LIMIT 1" % (table.key_text_sql("p"), table.sql, where, order_by(table, "p", True)))
    return list(rows[0]) if rows else None


def checkpoint_table(ctx, table, through=None, settle=60):
    """Record a signed digest of the live rows after the archive's end, up to ``through``."""
    chain = chains.Chain(table.chain, ctx.locations_for(table))
    result = {"table": table.label, "chain": table.chain, "targets": [loc.name for loc in chain.locations]}
    with ChainLock(ctx.conn, table.chain):
        recorded = ctx.state.read(table.chain)
        if not ctx.check_mode:
            recorded, result["recovered"] = open_chain(ctx, table, chain)
        execute(ctx.conn, "BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            result.update(_checkpoint_in_transaction(ctx, table, chain, recorded, through, settle))
        except BaseException:
            rollback(ctx.conn)
            raise
    return result


def _checkpoint_in_transaction(ctx, table, chain, recorded, through, settle):
    conn = ctx.conn
    after = recorded["through"] if recorded else None
    end = list(through) if through else default_through(conn, table, settle)
    if end is None or not key_less(conn, table, after, end):
        rollback(conn)
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
        rollback(conn)
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


def component_details(signer, results):
    """What the backup image's manifest records of a run (plaintext, no secret): each
    chain's head, for table_archive_verify's ``images``, and the public key."""
    return {
        "public_key": signer,
        "heads": [
            {
                "chain": r["chain"],
                "chain_id": r.get("chain_id"),
                "table": r["table"],
                "seq": r["head"]["seq"],
                "hash": r["head"]["hash"],
                "through": r["head"]["through"],
            }
            for r in results
            if r.get("head")
        ],
        "tables": [{"table": r["table"], "chain": r["chain"], "rows": r["rows"], "segments": len(r["segments"]), "targets": r["targets"]} for r in results],
    }


# ---- expiry ---------------------------------------------------------------------------------------


def expiry_plan(table, chain):
    """(segments to expire, payloads an earlier expiry left behind) - from the chain's entries."""
    entries = chain.entries()
    gone = {e["seq"] for x in entries if x["kind"] == "expiry" for e in x.get("expired") or []}
    segments = [x for x in entries if x["kind"] == "segment" and x.get("payload")]
    leftovers = [x["payload"]["name"] for x in segments if x["seq"] in gone]
    items = [{"name": x["payload"]["name"], "time": _newest(x), "verdict": "success", "entry": x} for x in segments if x["seq"] not in gone]
    decisions = _retention.plan(items, {"max_age": table.spec["expire_after"]}, time.time())
    return sorted((d.item["entry"] for d in decisions if d.action == "remove"), key=lambda e: e["seq"]), leftovers


def _newest(segment):
    """When a segment's newest row was written (its time range), else when it was archived."""
    return (segment.get("time_range") or {}).get("to") or segment["created"]


def expired_summary(entries):
    return [
        {
            "seq": x["seq"],
            "payload": x["payload"]["name"],
            "sha256": x["payload"]["sha256"],
            "rows": x["rows"],
            "newest_row": (x.get("time_range") or {}).get("to"),
        }
        for x in entries
    ]


def expire_segments(ctx, table, chain, recorded):
    """With ``expire_after``, remove the payloads of segments whose newest row is older: first
    a signed expiry entry naming them and the rule is committed, then the files go from every
    location. The entries stay, so the chain stays whole and verifiable. Payloads an earlier
    run expired but could not remove (killed) are removed now. Returns (head, what was done)."""
    limit = table.spec.get("expire_after")
    if not limit:
        return recorded, []
    expired, leftovers = expiry_plan(table, chain)
    done = chain.remove_payloads(leftovers)
    if not expired:
        return recorded, done
    entry = base_entry("expiry", table.chain, recorded["chain_id"], recorded["seq"] + 1, recorded["entry_hash"], ctx.signer)
    entry.update(
        table=table.label,
        rule="expire_after %s: newest row older than %s" % (limit, _retention.format_duration(_retention.parse_duration(limit))),
        expired=expired_summary(expired),
    )
    execute(ctx.conn, "BEGIN")
    new = commit_entry(ctx, chain, recorded, fmt.sign(entry, ctx.signing_key))
    done += chain.remove_payloads([x["payload"]["name"] for x in expired])
    return new, done
