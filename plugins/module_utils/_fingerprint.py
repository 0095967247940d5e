# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Content fingerprints: what a restore must reproduce, taken when the data is captured and
compared after a restore (the restore drill, docs/drills.md).

- **PostgreSQL**: per table (those whose rows are in the dump) the row count and an
  order-independent digest of the rows' text, taken in the dump's own snapshot; sequence
  values read before the dump started; the number of large objects.
- **Elasticsearch / OpenSearch**: per index the document count, the aliases and a digest
  of every document's id and source - or, above a size limit, the ids and source digests
  of a fixed sample that a restore must give back with ``_mget``.
- **Neo4j**: node and relationship counts of each database, read from the store files
  of a stopped Neo4j (record formats ``standard`` and ``aligned``, Neo4j 4 and 5).

A digest is a sum of per-row (per-document) hashes: one pass, no sort, no memory that
grows with the data, and the same value whatever order a restored table returns its
rows in. It detects accidental change (a lost, added or altered row), not a forger.

Digests can reveal a short, guessable row to a brute-force search (a one-row settings
table), so they are written into the image as an encrypted member (``fingerprint.json``
of the component); the plaintext manifest holds only the counts.
"""

from __future__ import annotations

import hashlib
import json
import os
from urllib.parse import quote

from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError

FORMAT = "lifeboat-fingerprint"
FORMAT_VERSION = 1
MEMBER = "fingerprint.json"
MEDIA_TYPE = "application/vnd.lifeboat.fingerprint+json"
LEVELS = ("full", "counts", "none")
# Above the size limit, a table's digest covers the rows whose primary key hashes into one
# bucket of SAMPLE_BUCKETS (md5 of the key starts with "00"): about 1 row in 256.
SAMPLE_PREFIX = "00"
SAMPLE_BUCKETS = 256
MASK64 = (1 << 64) - 1


class FingerprintError(LifeboatError):
    """A fingerprint could not be taken or read; the message says why."""


def multiset_digest(count, first, second):
    """The digest of a multiset from its size and the two sums of its members' hashes."""
    return hashlib.sha256(("%d:%s:%s" % (count, first, second)).encode("ascii")).hexdigest()[:32]


class MultisetHash:
    """Order-independent digest of a stream of byte strings (two 64-bit sums of SHA-256s)."""

    def __init__(self):
        self.count = 0
        self.first = 0
        self.second = 0

    def add(self, data):
        digest = hashlib.sha256(data).digest()
        self.count += 1
        self.first = (self.first + int.from_bytes(digest[:8], "big")) & MASK64
        self.second = (self.second + int.from_bytes(digest[8:16], "big")) & MASK64

    def hexdigest(self):
        return multiset_digest(self.count, self.first, self.second)


def document(fingerprint_kind, body):
    """The JSON member written into the image."""
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": fingerprint_kind}
    data.update(body)
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")


def read_document(image, component, kind):
    """The fingerprint member of ``component`` in an open image, or None when it has none."""
    details = (image.manifest.get("components", {}).get(component) or {}).get("details") or {}
    member = (details.get("fingerprint") or {}).get("member")
    if not member:
        return None
    data = image.read_json_member(member)
    if data.get("format") != FORMAT or data.get("kind") != kind:
        raise FingerprintError("member %s is not a %s fingerprint" % (member, kind))
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise FingerprintError("member %s has fingerprint format %s; upgrade lifeboat.backup to compare it" % (member, data.get("format_version")))
    return data


# ---- PostgreSQL ------------------------------------------------------------------------------

# The text form of a row depends on these settings: fixed, so a restored server (same major
# version, the version rule) prints the same text whatever its configuration says.
PG_SETTINGS = (
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
)
_SUMS = (
    "count(h), coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0)::text, "
    "coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)::text"
)


def pg_prepare(pg, conn):
    """Fix the settings a row's text depends on, for this connection."""
    for name, value in PG_SETTINGS:
        pg.execute(conn, "SET %s = %s" % (name, pg.quote_literal(value)))


def pg_tables(pg, conn, oids):
    """{oid: (schema, table, size in bytes, primary key columns)} for these table OIDs."""
    if not oids:
        return {}
    rows = pg.execute(
        conn,
        "SELECT c.oid, n.nspname, c.relname, pg_table_size(c.oid), "
        "coalesce((SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_index i "
        "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = c.oid AND i.indisprimary), '{}') "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY(%s)",
        (sorted(oids),),
    )
    return {int(r[0]): (r[1], r[2], int(r[3] or 0), list(r[4] or [])) for r in rows}


def pg_table_sql(pg, schema, table, method, key):
    """The one-pass query: (rows, hashed rows, sum1, sum2) of a table, by method."""
    relation = "%s.%s" % (pg.quote_ident(schema), pg.quote_ident(table))
    if method == "counts":
        return "SELECT count(*), 0, '0', '0' FROM ONLY %s" % relation
    if method == "full":
        row_hash = "md5(t::text)"
    else:
        picked = "ROW(%s)::text" % ", ".join("t.%s" % pg.quote_ident(c) for c in key)
        row_hash = "CASE WHEN left(md5(%s), %d) = %s THEN md5(t::text) END" % (picked, len(SAMPLE_PREFIX), pg.quote_literal(SAMPLE_PREFIX))
    return "SELECT count(*), %s FROM (SELECT %s AS h FROM ONLY %s AS t) AS q" % (_SUMS, row_hash, relation)


def pg_table(pg, conn, schema, table, method, key=None):
    """The fingerprint of one table: rows, method and (unless counts) digest and hashed rows."""
    rows, hashed, first, second = pg.execute(conn, pg_table_sql(pg, schema, table, method, key or []))[0]
    entry = {"rows": int(rows), "method": method}
    if method != "counts":
        entry["digest"] = multiset_digest(int(hashed), first, second)
        if method == "sample":
            entry["key"] = list(key)
            entry["sampled_rows"] = int(hashed)
    return entry


def pg_method(level, size, key, max_bytes):
    """How a table is fingerprinted: full digest, a sample by primary key, or its count."""
    if level == "counts":
        return "counts"
    if not max_bytes or size <= max_bytes:
        return "full"
    return "sample" if key else "counts"


def pg_database(pg, conn, oids, level, max_bytes):
    """{"schema.table": entry} for the tables with these OIDs, in the connection's snapshot."""
    tables = {}
    for _oid, (schema, table, size, key) in sorted(pg_tables(pg, conn, oids).items(), key=lambda i: (i[1][0], i[1][1])):
        entry = pg_table(pg, conn, schema, table, pg_method(level, size, key, max_bytes), key)
        tables["%s.%s" % (schema, table)] = dict(entry, schema=schema, table=table)
    return tables


def pg_sequences(pg, conn):
    """{oid: ("schema.sequence", last value or None)} of every sequence the user can read."""
    rows = pg.execute(
        conn,
        "SELECT c.oid, s.schemaname || '.' || s.sequencename, s.last_value FROM pg_sequences s "
        "JOIN pg_namespace n ON n.nspname = s.schemaname JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.sequencename "
        "WHERE has_sequence_privilege(c.oid, 'SELECT')",
    )
    return {int(r[0]): (r[1], None if r[2] is None else int(r[2])) for r in rows}


def pg_large_objects(pg, conn):
    return int(pg.scalar(conn, "SELECT count(*) FROM pg_largeobject_metadata"))


def pg_live(pg, conn, recorded):
    """The fingerprint of a restored database, taken the way ``recorded`` was."""
    pg_prepare(pg, conn)
    tables = {}
    for name, entry in sorted((recorded.get("tables") or {}).items()):
        schema, table = entry["schema"], entry["table"]
        if not pg.scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", ("%s.%s" % (pg.quote_ident(schema), pg.quote_ident(table)),)):
            tables[name] = None
            continue
        tables[name] = pg_table(pg, conn, schema, table, entry["method"], entry.get("key"))
    live_sequences = dict(pg_sequences(pg, conn).values())
    sequences = {name: live_sequences.get(name, "missing") for name in recorded.get("sequences") or {}}
    return {"tables": tables, "sequences": sequences, "large_objects": pg_large_objects(pg, conn)}


def _pg_table_problem(name, expected, found):
    """What is wrong with one restored table (``found``, None when missing), or None."""
    if found is None:
        return "table %s is missing" % name
    if found["rows"] != expected["rows"]:
        return "table %s has %d rows, %d at backup time" % (name, found["rows"], expected["rows"])
    if expected.get("digest") and found.get("digest") != expected["digest"]:
        scope = "sampled rows differ" if expected["method"] == "sample" else "row contents differ"
        return "table %s: %s from the backup (same row count %d)" % (name, scope, found["rows"])
    return None


def _pg_sequence_problem(name, expected, found):
    """What is wrong with one restored sequence (its last value, "missing", or None), or None."""
    if found == "missing":
        return "sequence %s is missing" % name
    if expected is not None and (found is None or found < expected):
        return "sequence %s is at %s, below %d recorded before the dump" % (name, found, expected)
    return None


def pg_compare(database, target, recorded, live):
    """Differences between a database's recorded fingerprint and its restored copy ``target``."""
    where = database if database == target else "%s (restored as %s)" % (database, target)
    problems = [_pg_table_problem(name, expected, live["tables"].get(name)) for name, expected in sorted((recorded.get("tables") or {}).items())]
    problems += [_pg_sequence_problem(name, expected, live["sequences"].get(name)) for name, expected in sorted((recorded.get("sequences") or {}).items())]
    if recorded.get("large_objects") is not None and live["large_objects"] != recorded["large_objects"]:
        problems.append("%d large objects, %d at backup time" % (live["large_objects"], recorded["large_objects"]))
    return ["%s: %s" % (where, problem) for problem in problems if problem]


# ---- Elasticsearch / OpenSearch ---------------------------------------------------------------


def canonical(source):
    return json.dumps(source, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def doc_hash(doc_id, source):
    return hashlib.sha256(doc_id.encode("utf-8") + b"\0" + canonical(source)).hexdigest()[:32]


def _path(index):
    return quote(index, safe="")


def _scroll(client, index, size, limit=None, timeout="2m"):
    """Yield (id, source) of the documents of ``index`` (at most ``limit``), in index order."""
    body = {"size": size, "sort": ["_doc"], "_source": True}
    reply = client.request("POST", "/%s/_search" % _path(index), params={"scroll": timeout}, body=body, idempotent=True).data
    scroll_id = reply.get("_scroll_id")
    seen = 0
    try:
        while True:
            hits = reply.get("hits", {}).get("hits", [])
            if not hits:
                return
            for hit in hits:
                yield hit["_id"], hit.get("_source")
                seen += 1
                if limit is not None and seen >= limit:
                    return
            reply = client.request("POST", "/_search/scroll", body={"scroll": timeout, "scroll_id": scroll_id}, idempotent=True).data
            scroll_id = reply.get("_scroll_id", scroll_id)
    finally:
        if scroll_id:
            client.request("DELETE", "/_search/scroll", body={"scroll_id": scroll_id}, ok=(404,), idempotent=True)


def es_count(client, index):
    return int(client.request("GET", "/%s/_count" % _path(index)).data["count"])


def es_aliases(client, index):
    data = client.request("GET", "/%s/_alias" % _path(index)).data
    return sorted(((data.get(index) or next(iter(data.values()), {})) or {}).get("aliases", {}))


def es_index(client, index, level, max_docs, sample_size, page=1000):
    """The fingerprint of one index: documents, aliases and (unless counts) a digest of every
    document or, above ``max_docs``, a fixed sample of ids with the digests of their sources."""
    client.request("POST", "/%s/_refresh" % _path(index), ok=(403,), idempotent=True)
    entry = {"docs": es_count(client, index), "aliases": es_aliases(client, index), "method": "counts"}
    if level == "counts":
        return entry
    if not max_docs or entry["docs"] <= max_docs:
        digest = MultisetHash()
        for doc_id, source in _scroll(client, index, page):
            digest.add(doc_id.encode("utf-8") + b"\0" + canonical(source))
        if digest.count != entry["docs"]:
            raise FingerprintError("index %s: _count says %d documents, a scroll read %d; is it being written to?" % (index, entry["docs"], digest.count))
        entry.update(method="full", digest=digest.hexdigest())
        return entry
    sample = [[doc_id, doc_hash(doc_id, source)] for doc_id, source in _scroll(client, index, min(page, sample_size), limit=sample_size)]
    entry.update(method="sample", sample=sample)
    return entry


def es_live(client, index, recorded):
    """The restored index's fingerprint, the way ``recorded`` was taken."""
    client.request("POST", "/%s/_refresh" % _path(index), ok=(403, 404), idempotent=True)
    if client.request("HEAD", "/%s" % _path(index), ok=(404,)).status == 404:
        return None
    entry = {"docs": es_count(client, index), "aliases": es_aliases(client, index), "method": recorded["method"]}
    if recorded["method"] == "full":
        digest = MultisetHash()
        for doc_id, source in _scroll(client, index, 1000):
            digest.add(doc_id.encode("utf-8") + b"\0" + canonical(source))
        entry["digest"] = digest.hexdigest()
    elif recorded["method"] == "sample":
        ids = [doc_id for doc_id, _digest in recorded["sample"]]
        found = {}
        for start in range(0, len(ids), 500):
            docs = client.request("POST", "/%s/_mget" % _path(index), body={"ids": ids[start : start + 500]}, idempotent=True).data.get("docs", [])
            found.update({d["_id"]: doc_hash(d["_id"], d.get("_source")) for d in docs if d.get("found")})
        entry["sample"] = [[doc_id, found.get(doc_id)] for doc_id in ids]
    return entry


def _es_contents_problem(recorded, live):
    """What is wrong with the restored documents' contents (digest or sample), or None."""
    if recorded["method"] == "full" and live["docs"] == recorded["docs"] and live.get("digest") != recorded.get("digest"):
        return "document contents differ from the backup (same count %d)" % live["docs"]
    if recorded["method"] == "sample":
        wrong = [doc_id for (doc_id, want), (_same, got) in zip(recorded["sample"], live.get("sample", [])) if want != got]
        if wrong:
            return "%d of %d sampled documents differ or are missing (first: %s)" % (len(wrong), len(recorded["sample"]), wrong[0])
    return None


def es_compare(index, target, recorded, live, aliases=None):
    """Differences between an index's recorded fingerprint and its restored copy ``target``;
    ``aliases`` maps recorded alias names to the names expected after a rename."""
    where = index if index == target else "%s (restored as %s)" % (index, target)
    if live is None:
        return ["index %s is missing" % where]
    problems = []
    if live["docs"] != recorded["docs"]:
        problems.append("index %s has %d documents, %d at backup time" % (where, live["docs"], recorded["docs"]))
    expected_aliases = sorted((aliases or {}).get(a, a) for a in recorded.get("aliases", []))
    if live["aliases"] != expected_aliases:
        problems.append("index %s has aliases %s, %s at backup time" % (where, live["aliases"] or "none", expected_aliases or "none"))
    contents = _es_contents_problem(recorded, live)
    if contents:
        problems.append("index %s: %s" % (where, contents))
    return problems


# ---- Neo4j -------------------------------------------------------------------------------------

NEO4J_PAGE = 8192
NEO4J_STORES = {"nodes": ("neostore.nodestore.db", 15), "relationships": ("neostore.relationshipstore.db", 34)}
_IN_USE = bytes(b & 1 for b in range(256))


def count_records(path, record_size, page_size=NEO4J_PAGE, chunk_pages=1024):
    """Records in use in a Neo4j record store: fixed-size records, never split across a
    page, the in-use flag in the lowest bit of each record's first byte."""
    per_page = page_size // record_size
    span = per_page * record_size
    used = 0
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(page_size * chunk_pages)
            if not chunk:
                return used
            for start in range(0, len(chunk), page_size):
                page = chunk[start : start + span]
                used += page[0 : len(page) - len(page) % record_size : record_size].translate(_IN_USE).count(1)


def neo4j_counts(database_dir):
    """{"nodes": n, "relationships": m} of a stopped database, or None when its store is
    not in a record format this reads (block format, another layout)."""
    counts = {}
    for what, (name, size) in NEO4J_STORES.items():
        path = os.path.join(database_dir, name)
        if not os.path.isfile(path):
            return None
        try:
            counts[what] = count_records(path, size)
        except OSError as exc:
            raise FingerprintError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    return counts


def neo4j_all(data_dir, databases):
    """{database: counts or None} for the databases of a data directory."""
    return {name: neo4j_counts(os.path.join(data_dir, "databases", name)) for name in databases}


def neo4j_compare(recorded, live):
    """Differences between recorded and restored graph counts, per database."""
    problems = []
    for name, expected in sorted((recorded or {}).items()):
        if expected is None:
            continue
        found = (live or {}).get(name)
        if found is None:
            problems.append("graph %s: no store files to count after the restore" % name)
            continue
        for what in ("nodes", "relationships"):
            if found[what] != expected[what]:
                problems.append("graph %s: %d %s, %d at backup time" % (name, found[what], what, expected[what]))
    return problems
