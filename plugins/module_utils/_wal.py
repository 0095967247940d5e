# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""PostgreSQL WAL arithmetic and the continuity of a WAL archive.

Pure functions, no I/O and no Ansible import: the modules and the archive program
(``_walarchive``) share them.

- LSNs (``0/2000028``) and segment names (``000000010000000000000002``), the file kinds
  the archiver hands over (segments, ``.partial`` segments, ``.backup`` and ``.history``
  files);
- the long page header that starts every segment (checked before a segment is archived
  and after one is fetched back);
- timeline history files (which timeline branched from which, where) and backup history
  files (a base backup's start and stop positions and times);
- an archive's **continuity**: for a base backup and a timeline, the segments recovery
  will ask for, in order, the last one present without a hole, and so the recoverable
  window; gaps per timeline.

Recovery reads segment ``s`` from the newest timeline of the target's history that had
begun by ``s`` (PostgreSQL's XLogFileReadAnyTLI); the continuity here follows the same rule.
"""

from __future__ import annotations

import re
import struct

from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
PAGE_MAGIC_HIGH = 0xD100  # every release since 9.x: 0xD1xx (15 = 0xD110)
XLP_LONG_HEADER = 0x0002
_LONG_HEADER = struct.Struct("<HHIQI4xQII")  # magic, info, tli, pageaddr, rem_len, (pad), sysid, seg_size, blcksz

SEGMENT = "segment"
PARTIAL = "partial"
BACKUP = "backup"
HISTORY = "history"

_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_PARTIAL_RE = re.compile(r"^([0-9A-F]{24})\.partial$")
_BACKUP_RE = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$")
_HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


class WalError(LifeboatError):
    """A WAL name, position or file that is not what it should be."""


# ---- positions and names ----------------------------------------------------------------


def parse_lsn(text):
    """'0/2000028' -> 33554472. Raises WalError."""
    match = _LSN_RE.match(str(text).strip())
    if not match:
        raise WalError("%r is not a WAL position (LSN): write it as PostgreSQL prints it, e.g. 0/16B3748" % (text,))
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value):
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


def check_segment_size(seg_size):
    if seg_size < 1024 * 1024 or seg_size > 1024**3 or seg_size & (seg_size - 1):
        raise WalError("WAL segment size %d is not a power of two between 1 MB and 1 GB" % seg_size)
    return seg_size


def segments_per_id(seg_size):
    return 0x100000000 // seg_size


def segment_name(tli, segno, seg_size=DEFAULT_SEGMENT_SIZE):
    per = segments_per_id(seg_size)
    return "%08X%08X%08X" % (tli, segno // per, segno % per)


def parse_segment(name, seg_size=DEFAULT_SEGMENT_SIZE):
    """'000000010000000000000002' -> (1, 2). Raises WalError."""
    match = _SEGMENT_RE.match(name)
    if not match:
        raise WalError("%r is not a WAL segment name" % (name,))
    per = segments_per_id(seg_size)
    log, seg = int(match.group(2), 16), int(match.group(3), 16)
    if seg >= per:
        raise WalError("%r is not a WAL segment name for %d-byte segments" % (name, seg_size))
    return int(match.group(1), 16), log * per + seg


def segno_of(lsn, seg_size=DEFAULT_SEGMENT_SIZE):
    return lsn // seg_size


def history_name(tli):
    return "%08X.history" % tli


def classify(name):
    """(kind, tli, segment name or None) of a file the archiver hands over, or None."""
    if _SEGMENT_RE.match(name):
        return SEGMENT, int(name[:8], 16), name
    match = _PARTIAL_RE.match(name)
    if match:
        return PARTIAL, int(name[:8], 16), match.group(1)
    match = _BACKUP_RE.match(name)
    if match:
        return BACKUP, int(name[:8], 16), match.group(1)
    match = _HISTORY_RE.match(name)
    if match:
        return HISTORY, int(match.group(1), 16), None
    return None


def archive_order(name):
    """Sort key of the archiver: timeline history files first, then by name (PostgreSQL 15)."""
    return (0 if name.endswith(".history") else 1, name)


# ---- segment content ----------------------------------------------------------------------


def check_segment(head, name, size, seg_size=None, system_identifier=None):
    """Check the long page header that starts a segment (or a .partial one), given its first
    bytes ``head`` and its total ``size``, against its name, the archive's segment size and
    database system. Returns the header fields."""
    if len(head) < _LONG_HEADER.size:
        raise WalError("%s is %d bytes long: not a WAL segment" % (name, size))
    magic, info, tli, pageaddr, _rem, sysid, header_size, _blcksz = _LONG_HEADER.unpack_from(head)
    if magic & 0xFF00 != PAGE_MAGIC_HIGH or not info & XLP_LONG_HEADER:
        raise WalError("%s does not start with a WAL page header (magic %04X): it is not a WAL segment or it is damaged" % (name, magic))
    if seg_size and header_size != seg_size:
        raise WalError("%s was written with %d-byte segments, the archive holds %d-byte segments" % (name, header_size, seg_size))
    expect_tli, segno = parse_segment(name.split(".")[0], check_segment_size(header_size))
    if size != header_size and not name.endswith(".partial"):
        raise WalError("%s is %d bytes long, a segment is %d bytes: it is truncated or damaged" % (name, size, header_size))
    # The first segment of a new timeline starts with the parent's pages (copied up to the
    # switch point), so its first page may carry an older timeline, never a newer one.
    if tli > expect_tli or tli == 0 or pageaddr != segno * header_size:
        raise WalError(
            "%s holds WAL of timeline %d at %s, its name says timeline %d at %s: the file is misnamed or damaged"
            % (name, tli, format_lsn(pageaddr), expect_tli, format_lsn(segno * header_size))
        )
    if system_identifier and str(sysid) != str(system_identifier):
        raise WalError(
            "%s belongs to database system %s, the archive to %s: two different clusters must not share one archive" % (name, sysid, system_identifier)
        )
    return {"magic": magic, "timeline": tli, "system_identifier": str(sysid), "segment_size": header_size}


HEADER_SIZE = _LONG_HEADER.size


# ---- history files --------------------------------------------------------------------------


def parse_timeline_history(text, tli):
    """A timeline history file -> [(parent tli, switch lsn, reason)], oldest first.

    Each line names an ancestor of ``tli`` and the position where the next timeline
    branched off it."""
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        try:
            parent = int(parts[0])
            switch = parse_lsn(parts[1])
        except (ValueError, IndexError, WalError):
            raise WalError("line %d of the history file of timeline %d is not 'timeline<TAB>position<TAB>reason'" % (lineno, tli)) from None
        if entries and (parent <= entries[-1][0] or switch < entries[-1][1]):
            raise WalError("the history file of timeline %d is out of order at line %d" % (tli, lineno))
        entries.append((parent, switch, parts[2].strip() if len(parts) > 2 else ""))
    if entries and entries[-1][0] >= tli:
        raise WalError("the history file of timeline %d names a parent timeline %d that is not older" % (tli, entries[-1][0]))
    return entries


_BACKUP_FIELDS = {
    "START WAL LOCATION": "start_lsn",
    "STOP WAL LOCATION": "stop_lsn",
    "CHECKPOINT LOCATION": "checkpoint_lsn",
    "BACKUP METHOD": "method",
    "BACKUP FROM": "backup_from",
    "START TIME": "start_time",
    "LABEL": "label",
    "START TIMELINE": "start_timeline",
    "STOP TIME": "stop_time",
    "STOP TIMELINE": "stop_timeline",
}


def parse_backup_history(text):
    """A backup history file (``<segment>.<offset>.backup``) -> dict of its fields; LSNs
    as text, timelines as numbers, times as PostgreSQL wrote them."""
    record = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in _BACKUP_FIELDS:
            record[_BACKUP_FIELDS[key]] = value.strip()
    for key in ("start_lsn", "stop_lsn", "checkpoint_lsn"):
        if key in record:
            record[key] = record[key].split(" ")[0]
    for key in ("start_timeline", "stop_timeline"):
        if key in record:
            try:
                record[key] = int(record[key])
            except ValueError:
                raise WalError("backup history file: %s is not a timeline number" % key) from None
    missing = [k for k in ("start_lsn", "stop_lsn", "stop_time") if k not in record]
    if missing:
        raise WalError("backup history file lacks %s" % ", ".join(missing))
    return record


# ---- continuity -----------------------------------------------------------------------------


class Timeline:
    """One step of a timeline's path: ``tli`` from ``begin`` (LSN) to ``end`` (None: open)."""

    __slots__ = ("tli", "begin", "end")

    def __init__(self, tli, begin, end):
        self.tli, self.begin, self.end = tli, begin, end

    def __repr__(self):
        return "Timeline(%d, %s, %s)" % (self.tli, format_lsn(self.begin), None if self.end is None else format_lsn(self.end))


def timeline_path(tli, histories):
    """The path recovery follows to reach ``tli``: its ancestors then itself.

    ``histories`` maps a timeline to its parsed history (``parse_timeline_history``).
    Raises WalError when a timeline above 1 has no history file in the archive."""
    if tli == 1:
        return [Timeline(1, 0, None)]
    if tli not in histories:
        raise WalError("timeline %d has no history file (%s) in the archive: recovery cannot follow it" % (tli, history_name(tli)))
    path, begin = [], 0
    for parent, switch, _reason in histories[tli]:
        path.append(Timeline(parent, begin, switch))
        begin = switch
    path.append(Timeline(tli, begin, None))
    return path


def owner(path, segno, seg_size):
    """Timeline whose file recovery reads for segment ``segno`` on ``path``."""
    for step in reversed(path):
        if segno_of(step.begin, seg_size) <= segno:
            return step.tli
    return path[0].tli


def on_path(path, tli, lsn):
    """True if position ``lsn`` of timeline ``tli`` lies on ``path``."""
    return any(step.tli == tli and step.begin <= lsn and (step.end is None or lsn <= step.end) for step in path)


def walk(path, present, start_segno, seg_size, included_until=None):
    """Follow ``path`` from ``start_segno`` while segments are present.

    ``present`` is a set of (tli, segno); segments up to ``included_until`` count as present
    (a base backup carries them). Returns (last continuous segno or None, first missing
    (tli, segno), whether anything exists beyond the first missing one on the path)."""
    segno, last = start_segno, None
    while True:
        tli = owner(path, segno, seg_size)
        if (tli, segno) in present or (included_until is not None and segno <= included_until):
            last, segno = segno, segno + 1
            continue
        later = any(t == owner(path, s, seg_size) and s > segno for t, s in present)
        return last, (tli, segno), later


def gaps(present):
    """Holes in each timeline's own sequence: {tli: [(first missing segno, last missing segno)]}."""
    by_tli = {}
    for tli, segno in present:
        by_tli.setdefault(tli, []).append(segno)
    holes = {}
    for tli, segnos in by_tli.items():
        segnos.sort()
        for before, after in zip(segnos, segnos[1:]):
            if after > before + 1:
                holes.setdefault(tli, []).append((before + 1, after - 1))
    return holes
