# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""table_archive_verify: chains in their locations, checked with ``_table_segment``,
and what only the database can tell (docs/table-archive.md, "Verification"):

- the head the database recorded is the archive's head (entries removed from the end of
  a chain leave no hole in it, but the database still names the last one);
- live rows continue the chain after its last archived key ("orphan" rows, as the
  transaction manager's verifier calls them), and none sit inside archived ranges;
- each checkpoint's count and digest still add up: the segments archived since, plus the
  live rows in its range (rows deleted, altered or inserted below it are found here);
- heads recorded in backup images (the ``archive`` component) are still in the chain.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_chain as chains
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_db as db
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_segment as fmt

TITLE = "Lifeboat table archive verification"


def plaintext_opener(params, spool_dir):
    """``open_plaintext`` for ChainCheck: the payload is downloaded (encrypted) to the spool
    directory, then decrypted and decompressed as it is read; the copy is removed on close."""
    identities = {}

    def opener(store, name, entry):
        location = store.location
        if store.chain not in identities:
            identities[store.chain] = chains.decryption_identities(params, store.chain, location)
        path = location.download(store.chain, name, spool_dir)
        try:
            return _Removing(chains.PayloadReader(path, entry.get("payload") or {}, identities[store.chain]), path)
        except BaseException:
            os.unlink(path)
            raise

    return opener


class _Removing:
    def __init__(self, reader, path):
        self.reader = reader
        self.path = path

    def read(self, size=-1):
        return self.reader.read(size)

    def close(self):
        try:
            self.reader.close()
        finally:
            os.unlink(self.path)


def check_chain(location, chain_name, trusted, level, opener, spool_dir):
    store = chains.LocationStore(location, chain_name, spool_dir)
    check = fmt.ChainCheck(store, chain_name, trusted, level, opener)
    report = check.run()
    # Every entry, not only segments: an image records the chain's head, which is a
    # checkpoint (or expiry, rotation) entry when one was added after the last segment.
    report["_entries"] = {seq: item["hash"] for seq, item in check.entries.items()}
    return report


# ---- the live table --------------------------------------------------------------------------------


def live_checks(conn, table, report, recorded, checkpoints_mode):
    """Facts about the live table, and its problems (``problems``), for a chain whose
    archive was checked."""
    problems = []
    facts = {"table": table.label, "chain": table.chain, "recorded_head": db.head_summary(recorded) if recorded else None}

    def problem(kind, message):
        problems.append({"kind": kind, "chain": table.chain, "location": None, "seq": None, "file": None, "message": message})

    compare_heads(report, recorded, problem)
    # What the database committed decides where the archive ends: an entry written by an
    # interrupted run is not part of it (its rows are still in the table).
    if recorded is not None:
        report = dict(report, segments=[s for s in report["segments"] if s["seq"] <= recorded["seq"]], through=recorded["through"])
        report["checkpoints"] = [c for c in report["checkpoints"] if c["seq"] <= recorded["seq"]]
    through = report["through"]
    orphans = db.batch_stats(conn, table, db.KeyRange(table, through, None))
    facts["orphans"] = dict(orphans, after=through)
    if through is not None:
        inside = int(_postgresql.scalar(conn, "SELECT count(*) FROM %s p WHERE %s <= %s" % (table.sql, table.key_sql("p"), table.key_value(through))))
        facts["rows_in_archived_range"] = inside
        if inside:
            problem(
                "rows_in_archived_range",
                "%s live rows of %s have keys at or below %s, the end of the archived range (restored, re-inserted, or archived and still there)"
                % ("{:,}".format(inside), table.label, fmt.key_text(through)),
            )
    facts["checkpoints"] = check_checkpoints(conn, table, report, checkpoints_mode, problem)
    facts["problems"] = problems
    return facts


def compare_heads(report, recorded, problem):
    head = report["head"]
    if recorded is None:
        if head is not None:
            problem("head_missing", "the database has no record of chain %s, which the archive holds up to entry %d" % (report["chain"], head["seq"]))
        return
    if head is None or head["seq"] < recorded["seq"]:
        problem(
            "head_missing",
            "the database records entry %d (%s…) as the head of chain %s, but the archive in %s ends at %s: entries were removed from its end"
            % (recorded["seq"], recorded["entry_hash"][:12], report["chain"], report["location"], "nothing" if head is None else "entry %d" % head["seq"]),
        )
    elif head["seq"] == recorded["seq"] + 1:
        problem(
            "uncommitted_entry",
            "entry %d of chain %s in %s was written by a run that did not commit (interrupted); the next table_archive run removes it"
            % (head["seq"], report["chain"], report["location"]),
        )
    elif head["seq"] > recorded["seq"] + 1 or (head["seq"] == recorded["seq"] and head["hash"] != recorded["entry_hash"]):
        problem(
            "head_mismatch",
            "the database records entry %d (%s…) as the head of chain %s; the archive in %s has entry %d (%s…)"
            % (recorded["seq"], recorded["entry_hash"][:12], report["chain"], report["location"], head["seq"], head["hash"][:12]),
        )


def check_checkpoints(conn, table, report, mode, problem):
    """Each checkpoint: its rows now = rows archived since (segments inside its range) +
    live rows in its range. Once the archive has passed its end, the entries alone tell."""
    results = []
    checkpoints = report["checkpoints"]
    positions = segment_positions(conn, table, report)
    for index, checkpoint in enumerate(checkpoints):
        archived = _archived_since(report["segments"], checkpoint, positions)
        if archived is None:
            problem("checkpoint_mismatch", "checkpoint %d of %s cannot be checked: a segment after it straddles its end" % (checkpoint["seq"], table.label))
            continue
        passed = report["through"] is not None and not db.key_less(conn, table, report["through"], checkpoint["through"])
        if not (passed or mode == "all" or index == len(checkpoints) - 1):
            results.append({"seq": checkpoint["seq"], "checked": False})
            continue
        key_range = db.KeyRange(table, checkpoint["after"], checkpoint["through"])
        live = fmt.RowDigest() if passed else db.live_digest(conn, table, key_range, checkpoint["columns"])
        result = _compare_checkpoint(checkpoint, archived, live)
        results.append(result)
        if not result["matches"]:
            problem("checkpoint_mismatch", _checkpoint_message(table, checkpoint, result))
    return results


def segment_positions(conn, table, report):
    """{(segment seq, checkpoint seq): inside | outside | straddles} for the segments written
    after each checkpoint, keys compared by the server's rules."""
    positions = {}
    for checkpoint in report["checkpoints"]:
        end = checkpoint["through"]
        for segment in report["segments"]:
            if segment["seq"] < checkpoint["seq"]:
                continue
            if not db.key_less(conn, table, end, segment["through"]):
                positions[segment["seq"], checkpoint["seq"]] = "inside"
            elif db.key_less(conn, table, segment["after"], end):
                positions[segment["seq"], checkpoint["seq"]] = "straddles"
            else:
                positions[segment["seq"], checkpoint["seq"]] = "outside"
    return positions


def _archived_since(segments, checkpoint, positions):
    rows, digests = 0, []
    for segment in segments:
        where = positions.get((segment["seq"], checkpoint["seq"]))
        if where == "straddles":
            return None
        if where != "inside":
            continue
        for section in segment["sections"]:
            if section.get("role") == "table":
                rows += section["rows"]
                digests.append(section["digest"])
    return {"rows": rows, "digest": fmt.add_digests(*digests) if digests else fmt.EMPTY_DIGEST}


def _compare_checkpoint(checkpoint, archived, live):
    rows = archived["rows"] + live.rows
    digest = fmt.add_digests(archived["digest"], live.digest)
    return {
        "seq": checkpoint["seq"],
        "checked": True,
        "rows_recorded": checkpoint["rows"],
        "rows_archived_since": archived["rows"],
        "rows_live": live.rows,
        "matches": rows == checkpoint["rows"] and digest == checkpoint["digest"],
    }


def _checkpoint_message(table, checkpoint, result):
    now = result["rows_archived_since"] + result["rows_live"]
    if now < checkpoint["rows"]:
        what = "%s rows deleted" % "{:,}".format(checkpoint["rows"] - now)
    elif now > checkpoint["rows"]:
        what = "%s rows inserted" % "{:,}".format(now - checkpoint["rows"])
    else:
        what = "rows altered (same count, different content)"
    return "checkpoint %d of %s (keys after %s through %s, %s rows when recorded): now %s archived since + %s live: %s below the checkpoint" % (
        checkpoint["seq"],
        table.label,
        fmt.key_text(checkpoint["after"]),
        fmt.key_text(checkpoint["through"]),
        "{:,}".format(checkpoint["rows"]),
        "{:,}".format(result["rows_archived_since"]),
        "{:,}".format(result["rows_live"]),
        what,
    )


# ---- heads recorded in images ------------------------------------------------------------------------


def image_heads(paths):
    """Chain heads recorded by the backup role's ``archive`` component in each image's
    manifest (plaintext: no key needed). [(image, chain, seq, hash)]."""
    found = []
    for path in paths:
        try:
            with zipfile.ZipFile(path) as image:
                manifest = json.loads(image.read("manifest.json"))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise chains.ArchiveError("images: %s is not a readable lifeboat image: %s" % (path, exc)) from None
        for component in (manifest.get("components") or {}).values():
            if component.get("kind") != "archive":
                continue
            for head in (component.get("details") or {}).get("heads") or []:
                found.append({"image": os.path.basename(path), "chain": head["chain"], "seq": head["seq"], "hash": head["hash"]})
    return found


def compare_image_heads(heads, reports):
    problems = []
    by_chain = {}
    for report in reports:
        by_chain.setdefault(report["chain"], []).append(report)
    for head in heads:
        for report in by_chain.get(head["chain"], []):
            entry = report["_entries"].get(head["seq"])
            if entry is None:
                kind, what = "head_missing", "is not in the archive"
            elif entry != head["hash"]:
                kind, what = "head_mismatch", "differs in the archive (%s…)" % entry[:12]
            else:
                continue
            problems.append(
                {
                    "kind": kind,
                    "chain": head["chain"],
                    "location": report["location"],
                    "seq": head["seq"],
                    "file": fmt.entry_name(head["seq"]),
                    "message": "image %s recorded entry %d (%s…) of chain %s, which %s" % (head["image"], head["seq"], head["hash"][:12], head["chain"], what),
                }
            )
    return problems


# ---- report ------------------------------------------------------------------------------------------


def orphan_lines(live):
    """The live part of a table, in the words of the transaction manager's verifier."""
    lines = []
    orphans = live["orphans"]
    if orphans["rows"]:
        valid = not live.get("problems")
        lines.append(
            "Orphan chain from table %s, startpoint %s, endpoint %s is %s (%s live records continue the chain after its endpoint %s%s)"
            % (
                live["table"],
                fmt.key_text(orphans["first_key"]),
                fmt.key_text(orphans["last_key"]),
                "valid" if valid else "NOT valid",
                "{:,}".format(orphans["rows"]),
                fmt.key_text(orphans["after"]),
                ", from %s to %s" % (fmt.time_text(orphans["time_range"]["from"]), fmt.time_text(orphans["time_range"]["to"])) if orphans["time_range"] else "",
            )
        )
    else:
        lines.append("No live records of %s after the chain's endpoint %s" % (live["table"], fmt.key_text(orphans["after"])))
    for checkpoint in live["checkpoints"]:
        if checkpoint.get("checked"):
            lines.append(
                "  Checkpoint %d: %s records when recorded; now %s archived since and %s live: %s"
                % (
                    checkpoint["seq"],
                    "{:,}".format(checkpoint["rows_recorded"]),
                    "{:,}".format(checkpoint["rows_archived_since"]),
                    "{:,}".format(checkpoint["rows_live"]),
                    "matches" if checkpoint["matches"] else "DOES NOT MATCH",
                )
            )
    return lines


def total_line(live, chain_report):
    archived = chain_report["rows"]
    rows = archived + live["orphans"]["rows"]
    spans = [s for s in (chain_report["time_range"], live["orphans"]["time_range"]) if s]
    started = min(s["from"] for s in spans) if spans else None
    ended = max(s["to"] for s in spans) if spans else None
    return "Checked table %s with total %s records (%s archived in %d segments, %s live).%s" % (
        live["table"],
        "{:,}".format(rows),
        "{:,}".format(archived),
        len(chain_report["segments"]),
        "{:,}".format(live["orphans"]["rows"]),
        " Started at %s Ended at %s" % (fmt.time_text(started), fmt.time_text(ended)) if spans else "",
    )


def render(chain_reports, lives, problems, sources):
    count = len({r["chain"] for r in chain_reports})
    lines = [TITLE, "Checking %d chain%s in %s" % (count, "" if count == 1 else "s", sources)]
    for report in chain_reports:
        lines += fmt.render_chain(report)
    for live, report in lives:
        lines += orphan_lines(live)
        lines.append(total_line(live, report))
    lines += fmt.render_problems(problems)
    lines.append(fmt.verdict_line(problems))
    return lines


def public_report(report):
    """A chain report without the private bookkeeping keys."""
    clean = {k: v for k, v in report.items() if not k.startswith("_")}
    clean["segments"] = [{k: v for k, v in s.items() if not k.startswith("_")} for s in report["segments"]]
    return clean


def verify(conn, params, locations, tables, chain_names):
    """The whole verification: returns the module's result (without changed)."""
    reports, lives = check_all(conn, params, locations, [(t.chain, t) for t in tables] + [(c, None) for c in chain_names])
    problems = [p for r in reports for p in r["problems"]] + [p for live, _r in lives for p in live["problems"]]
    heads = image_heads(params.get("images") or [])
    problems += compare_image_heads(heads, reports)
    return {
        "valid": not problems,
        "report": render(reports, lives, problems, _sources(locations, params)),
        "chains": [public_report(r) for r in reports],
        "tables": [live for live, _report in lives],
        "problems": problems,
        "image_heads": heads,
        "level": params["level"],
    }


def check_all(conn, params, locations, wanted):
    """Each chain in each location; the live checks once per table, beside its first location."""
    trusted = [fmt.normalise_public_key(k) for k in params.get("public_keys") or []] or None
    spool_dir = params.get("spool_dir") or tempfile.gettempdir()
    opener = plaintext_opener(params, spool_dir) if params["level"] == "full" else None
    state = db.State(conn, params["state_schema"]) if conn is not None else None
    reports, lives = [], []
    for name, table in wanted:
        for location in locations:
            report = check_chain(location, name, trusted, params["level"], opener, spool_dir)
            reports.append(report)
            if table is not None and location is locations[0]:
                lives.append((live_checks(conn, table, report, state.read(name), params["checkpoints"]), report))
    return reports, lives


def _sources(locations, params):
    images = params.get("images") or []
    return ", ".join(loc.label for loc in locations) + ("; %d image%s" % (len(images), "" if len(images) == 1 else "s") if images else "")
