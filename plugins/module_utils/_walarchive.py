# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""A WAL archive on a storage target (layout in docs/pitr.md, "Archive format").

::

    <prefix>archive.json                                   descriptor (plaintext)
    <prefix>index/<TTTTTTTTLLLLLLLL>                        one empty marker per segment folder
    <prefix>wal/<TTTTTTTTLLLLLLLL>/<segment>-<sha256>.zst.age
    <prefix>wal/<TTTTTTTTLLLLLLLL>/<segment>.partial-<sha256>.zst.age
    <prefix>history/<TTTTTTTT>.history-<sha256>.zst.age
    <prefix>history/<segment>.<offset>.backup-<sha256>.zst.age
    <prefix>meta/<TTTTTTTT>.history.json                   plaintext summary (parents, switch points)
    <prefix>meta/<segment>.<offset>.backup.json            plaintext summary (LSNs, times, label)

Every WAL file is compressed (zstd or gzip, ``_image``'s compressors) and encrypted with
age to public keys only (``_age``): the database server can write its archive but not read
it. The SHA-256 of the plaintext is part of the object name, so a file pushed again is
recognised (same content: success; other content: a loud refusal) without any key, and a
fetched file is checked against it. The ``meta`` summaries let ``postgresql_wal_info``
compute timelines and recoverable windows without a key; they hold positions, times and
labels, never data.

The storage backend (``_storage.open_target``) is passed in: this file does no connection
of its own, and the archive program, the modules and the unit tests share it.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import json
import os
import posixpath
import re
import tempfile
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image, _wal
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError

FORMAT = "lifeboat-wal-archive"
FORMAT_VERSION = 1
DESCRIPTOR = "archive.json"
COMPRESSIONS = ("zstd", "gzip")
# The fastest levels: WAL compresses well even so (zstd 1 writes about 13 % more than zstd 3
# at less than half the CPU), and the archive has to keep up with a busy server.
DEFAULT_LEVEL = {"zstd": 1, "gzip": 1}
BLOCK = 1024 * 1024
SPOOL_MEMORY = 64 * 1024 * 1024  # an encoded file bigger than this goes to a temporary file
_OBJECT_RE = re.compile(
    r"^(?P<file>[0-9A-F]{8}(?:[0-9A-F]{16}(?:\.partial|\.[0-9A-F]{8}\.backup)?|\.history))"
    r"-(?P<sha>[0-9a-f]{64})(?:-(?P<done>\d{1,12}))?(?P<comp>\.zst|\.gz)?\.age$"
)
_SUFFIX_COMPRESSION = {".zst": "zstd", ".gz": "gzip", None: "none"}


class ArchiveError(LifeboatError):
    """The archive cannot do what was asked; the message says what and what to do."""


class ConflictError(ArchiveError):
    """A WAL file is already archived with other content: never overwritten."""


class DamagedError(ArchiveError):
    """An archived file does not decrypt, decompress or check out."""


# ---- names ------------------------------------------------------------------------------


def folder_of(filename, seg_size=_wal.DEFAULT_SEGMENT_SIZE):
    """Folder (relative to the prefix) of a WAL file's objects."""
    kind, _tli, segment = _wal.classify(filename) or (None, None, None)
    if kind in (_wal.SEGMENT, _wal.PARTIAL):
        return "wal/" + segment[:16]
    if kind in (_wal.HISTORY, _wal.BACKUP):
        return "history"
    raise ArchiveError("%s is not a WAL file name PostgreSQL archives (segment, .partial, .backup or .history)" % filename)


def object_basename(filename, sha256, compression, completed=None):
    """``<file>-<sha256>[-<completed>].zst.age``: ``completed`` is when PostgreSQL finished
    the file (its modification time, in epoch seconds) - no record in it is later, whatever
    the archiving delay, so it bounds the time a restore can reach with it."""
    done = "-%d" % int(completed) if completed is not None else ""
    return "%s-%s%s%s.age" % (filename, sha256, done, _image.SUFFIX[compression])


def parse_object(basename):
    """(WAL file name, plaintext SHA-256, compression, completed or None) of an archived
    object, or None."""
    match = _OBJECT_RE.match(basename)
    if not match:
        return None
    done = match.group("done")
    return match.group("file"), match.group("sha"), _SUFFIX_COMPRESSION[match.group("comp")], int(done) if done else None


def meta_name(filename):
    return "meta/%s.json" % filename


# ---- times ------------------------------------------------------------------------------

_PG_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(?:\.\d+)? ?(UTC|GMT|Z|[+-]\d{2}(?::?\d{2})?)?$")


def pg_time_epoch(text):
    """Epoch of a time PostgreSQL wrote in a backup history file, or None when its zone is an
    abbreviation other than UTC/GMT (then the caller uses the time the file was archived)."""
    match = _PG_TIME.match((text or "").strip())
    if not match or not match.group(3):
        return None
    base = calendar.timegm(time.strptime("%s %s" % (match.group(1), match.group(2)), "%Y-%m-%d %H:%M:%S"))
    zone = match.group(3)
    if zone in ("UTC", "GMT", "Z"):
        return float(base)
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    offset = int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60
    return float(base - sign * offset)


def iso(epoch):
    return None if epoch is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# ---- encoding -----------------------------------------------------------------------------


def encode(source, recipients, compression="zstd", level=None, scratch_dir=None):
    """Compress and encrypt ``source`` (a readable binary stream) into a seekable temporary.

    Returns (temporary file positioned at 0, plaintext SHA-256 hex, plaintext size, first
    bytes of the plaintext). Memory stays bounded: beyond SPOOL_MEMORY the temporary is a
    file in ``scratch_dir`` (ciphertext only)."""
    if not recipients:
        raise ArchiveError("no age recipient: WAL is archived encrypted to public keys only")
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY, dir=scratch_dir)  # noqa: SIM115 - returned to the caller
    try:
        writer = _age.AgeWriter(out, recipients=recipients)
        packer = _image.compressor(compression, level=DEFAULT_LEVEL.get(compression) if level is None else level)
        sha = hashlib.sha256()
        size, head = 0, b""
        while True:
            chunk = source.read(BLOCK)
            if not chunk:
                break
            if len(head) < _wal.HEADER_SIZE:
                head += chunk[: _wal.HEADER_SIZE - len(head)]
            sha.update(chunk)
            size += len(chunk)
            writer.write(packer.compress(chunk))
        writer.write(packer.flush())
        writer.close()
        out.seek(0)
    except BaseException:
        out.close()
        raise
    return out, sha.hexdigest(), size, head


def decode(blob, identities, compression, filename, sha256, sink):
    """Write the plaintext of an archived object (``blob``: its bytes) into ``sink`` as it is
    decrypted, and check it against the SHA-256 in its name. Returns (size, first bytes).
    Raises DamagedError naming the file and what is wrong (the sink then holds garbage)."""
    digest = hashlib.sha256()
    size, head = 0, b""
    try:
        reader = _age.AgeReader(io.BytesIO(blob), identities=identities)
        unpacker = _image._Decompressor(compression)  # noqa: SLF001 - _image's decompressor, shared on purpose
        while True:
            chunk = reader.read(BLOCK)
            if not chunk:
                break
            plain = unpacker.decompress(chunk)
            if len(head) < _wal.HEADER_SIZE:
                head += plain[: _wal.HEADER_SIZE - len(head)]
            digest.update(plain)
            size += len(plain)
            sink.write(plain)
        unpacker.finish()
    except _age.KeyMismatch:
        raise ArchiveError(
            "the key given does not open archived %s: the archive is encrypted to other recipients "
            "(give the identity whose public key postgresql_wal_archive was given)" % filename
        ) from None
    except (_age.AgeError, _image.ImageError) as exc:
        raise DamagedError("archived %s cannot be read back: %s" % (filename, exc), file=filename) from None
    if digest.hexdigest() != sha256:
        raise DamagedError("archived %s decrypts to content whose SHA-256 differs from the one recorded in its name: it is damaged" % filename, file=filename)
    return size, head


class _Discard:
    def write(self, data):
        return len(data)


# ---- the archive --------------------------------------------------------------------------


class Entry:
    """One archived WAL file: its object and what its name says. ``mtime`` is when it was
    archived, ``completed`` when PostgreSQL finished it (None: not recorded)."""

    __slots__ = ("object", "file", "sha256", "compression", "size", "mtime", "completed")

    def __init__(self, item, parsed):
        self.object, self.size, self.mtime = item["name"], item["size"], item.get("mtime")
        self.file, self.sha256, self.compression, self.completed = parsed

    @property
    def written_by(self):
        """The latest time of any record in the file, as well as the archive can tell."""
        return self.completed if self.completed is not None else self.mtime

    def describe(self):
        return {"file": self.file, "object": self.object, "stored_bytes": self.size, "archived": iso(self.mtime), "completed": iso(self.completed)}


class Archive:
    """A WAL archive under ``prefix`` on an open storage backend."""

    def __init__(self, backend, prefix="", segment_size=_wal.DEFAULT_SEGMENT_SIZE, system_identifier=None):
        self.backend = backend
        self.prefix = normalise_prefix(prefix)
        self.segment_size = segment_size
        self.system_identifier = str(system_identifier) if system_identifier else None

    def path(self, relative):
        return self.prefix + relative

    @property
    def location(self):
        return "%s%s" % (getattr(self.backend, "location", "the target"), "/" + self.prefix.rstrip("/") if self.prefix else "")

    # ---- descriptor ----

    def descriptor(self):
        """The archive's descriptor, or None when the archive does not exist yet."""
        if self.backend.stat(self.path(DESCRIPTOR)) is None:
            return None
        try:
            data = json.loads(self._read(self.path(DESCRIPTOR)).decode("utf-8"))
        except ValueError as exc:
            raise ArchiveError("%s in %s is not valid JSON (%s): it is not a lifeboat WAL archive" % (DESCRIPTOR, self.location, exc)) from None
        if data.get("format") != FORMAT:
            raise ArchiveError("%s holds no lifeboat WAL archive (%s says format %r)" % (self.location, DESCRIPTOR, data.get("format")))
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise ArchiveError(
                "the WAL archive in %s has format version %s; this collection reads up to %d: upgrade it"
                % (self.location, data["format_version"], FORMAT_VERSION)
            )
        return data

    def open(self):
        """Read the descriptor and adopt its system and segment size. Raises when absent."""
        data = self.descriptor()
        if data is None:
            self.backend.probe(write=False)  # a target that is lost says so, rather than "no archive"
            raise ArchiveError(
                "there is no WAL archive in %s (no %s): check the target and archive_prefix, or set archiving up with postgresql_wal_archive"
                % (self.location, DESCRIPTOR)
            )
        self.system_identifier = str(data["system_identifier"])
        self.segment_size = int(data["segment_size"])
        return data

    def create_or_check(self, system_identifier, segment_size, server_version_num, node):
        """Write the descriptor of a new archive, or check that an existing one belongs to this
        database system. Returns (descriptor, created)."""
        existing = self.descriptor()
        if existing is not None:
            if str(existing.get("system_identifier")) != str(system_identifier):
                raise ArchiveError(
                    "the WAL archive in %s belongs to database system %s, this server is %s: give each cluster its own archive_prefix"
                    % (self.location, existing.get("system_identifier"), system_identifier)
                )
            if int(existing.get("segment_size", 0)) != int(segment_size):
                raise ArchiveError(
                    "the WAL archive in %s holds %s-byte segments, this server writes %s-byte ones"
                    % (self.location, existing.get("segment_size"), segment_size)
                )
            return existing, False
        data = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "system_identifier": str(system_identifier),
            "segment_size": int(segment_size),
            "server_version_num": int(server_version_num),
            "created": iso(time.time()),
            "node": node,
        }
        self._put_bytes(self.path(DESCRIPTOR), json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")
        return data, True

    # ---- pushing ----

    def existing(self, filename):
        """Entries already archived for ``filename`` (normally zero or one)."""
        folder = folder_of(filename, self.segment_size)
        found = []
        for item in self.backend.list(self.path("%s/%s-" % (folder, filename))):
            parsed = parse_object(posixpath.basename(item["name"]))
            if parsed and parsed[0] == filename:
                found.append(Entry(item, parsed))
        return found

    def push(self, path, recipients, compression="zstd", level=None, scratch_dir=None):
        """Archive the WAL file at ``path`` durably under its final name. Returns a dict with
        ``duplicate`` true when the same content was already there. Raises ConflictError when
        other content is, ArchiveError/WalError on a file that is not what its name says, and
        the backend's StorageError when the target fails."""
        filename = posixpath.basename(path)
        kind = (_wal.classify(filename) or (None,))[0]
        folder = folder_of(filename, self.segment_size)
        with open(path, "rb") as source:
            completed = os.fstat(source.fileno()).st_mtime
            encoded, sha256, size, head = encode(source, recipients, compression, level, scratch_dir)
        try:
            if kind in (_wal.SEGMENT, _wal.PARTIAL):
                _wal.check_segment(head, filename, size, self.segment_size, self.system_identifier)
            meta = self._meta_of(path, filename, kind)
            same = self._check_existing(filename, sha256)
            if same is not None:
                return {"file": filename, "object": same.object, "sha256": sha256, "size": size, "stored_bytes": same.size, "duplicate": True}
            if kind in (_wal.SEGMENT, _wal.PARTIAL):
                self._ensure_marker(folder)
            name = self.path("%s/%s" % (folder, object_basename(filename, sha256, compression, completed)))
            stored = encoded.seek(0, io.SEEK_END)
            encoded.seek(0)
            try:
                self.backend.put(name, encoded, size=stored)
            except LifeboatError as exc:
                if getattr(exc, "kind", None) != "exists":
                    raise
                # Someone stored the same name (same content) meanwhile: that is success.
            if meta is not None:
                self._put_meta(filename, meta)
            return {"file": filename, "object": name, "sha256": sha256, "size": size, "stored_bytes": stored, "duplicate": False}
        finally:
            encoded.close()

    def _check_existing(self, filename, sha256):
        found = self.existing(filename)
        same = [e for e in found if e.sha256 == sha256]
        other = [e for e in found if e.sha256 != sha256]
        if other:
            raise ConflictError(
                "%s is already archived in %s with other content (%s); it is never overwritten. Either two servers write to one archive "
                "(give each its own archive_prefix), or this server is not the one whose WAL the archive holds"
                % (filename, self.location, posixpath.basename(other[0].object)),
                file=filename,
            )
        return same[0] if same else None

    def _meta_of(self, path, filename, kind):
        """Plaintext summary of a history or backup history file; None for segments."""
        if kind not in (_wal.HISTORY, _wal.BACKUP):
            return None
        with open(path, "rb") as handle:
            text = handle.read(1024 * 1024).decode("utf-8", "replace")
        if kind == _wal.HISTORY:
            tli = int(filename[:8], 16)
            parents = _wal.parse_timeline_history(text, tli)
            return {"file": filename, "timeline": tli, "parents": [[p, _wal.format_lsn(lsn)] for p, lsn, _reason in parents], "archived": time.time()}
        record = _wal.parse_backup_history(text)
        record.update(
            file=filename, archived=time.time(), stop_epoch=pg_time_epoch(record.get("stop_time")), start_epoch=pg_time_epoch(record.get("start_time"))
        )
        return record

    def _put_meta(self, filename, meta):
        name = self.path(meta_name(filename))
        try:
            self._put_bytes(name, json.dumps(meta, sort_keys=True).encode() + b"\n")
        except LifeboatError as exc:
            if getattr(exc, "kind", None) != "exists":
                raise

    def _ensure_marker(self, folder):
        name = self.path("index/" + posixpath.basename(folder))
        if self.backend.stat(name) is not None:
            return
        try:
            self._put_bytes(name, b"")
        except LifeboatError as exc:
            if getattr(exc, "kind", None) != "exists":
                raise

    def _put_bytes(self, name, data):
        self.backend.put(name, io.BytesIO(data), size=len(data))

    def _read(self, name):
        sink = io.BytesIO()
        self.backend.get(name, sink)
        return sink.getvalue()

    # ---- reading back ----

    def fetch(self, entry, identities, sink=None):
        """Write the plaintext of an archived entry into ``sink`` (None: only check it), checked
        on the way (age authentication, SHA-256, and for a segment its page header against its
        name and the archive's system). Memory holds the compressed object, not the plaintext.
        Returns the plaintext size."""
        try:
            blob = self._read(entry.object)
        except LifeboatError as exc:
            if getattr(exc, "kind", None) == "not_found":
                raise DamagedError("archived %s vanished from %s while it was being read" % (entry.file, self.location), file=entry.file) from None
            raise
        size, head = decode(blob, identities, entry.compression, entry.file, entry.sha256, sink or _Discard())
        kind = _wal.classify(entry.file)[0]
        if kind in (_wal.SEGMENT, _wal.PARTIAL):
            try:
                _wal.check_segment(head, entry.file, size, self.segment_size, self.system_identifier)
            except _wal.WalError as exc:
                raise DamagedError("archived %s: %s" % (entry.file, exc), file=entry.file) from None
        return size

    def index(self):
        """Everything the archive holds, from listings and the plaintext summaries."""
        index = Index(self.segment_size)
        for marker in self.backend.list(self.path("index/")):
            folder = "wal/" + posixpath.basename(marker["name"])
            for item in self.backend.list(self.path(folder + "/")):
                index.add(item)
        for item in self.backend.list(self.path("history/")):
            index.add(item)
        for item in self.backend.list(self.path("meta/")):
            try:
                index.add_meta(json.loads(self._read(item["name"]).decode("utf-8")))
            except ValueError:
                index.problems.append("%s is not valid JSON; ignored" % item["name"])
        return index

    def delete(self, entries):
        """Delete entries (and the summaries of history files among them). Returns the count."""
        count = 0
        for entry in entries:
            if self.backend.delete(entry.object):
                count += 1
            if _wal.classify(entry.file)[0] == _wal.BACKUP:
                self.backend.delete(self.path(meta_name(entry.file)))
        return count


def normalise_prefix(prefix):
    prefix = (prefix or "").strip("/")
    return prefix + "/" if prefix else ""


# ---- the index: continuity, gaps, windows ----------------------------------------------------


class Index:
    """What an archive holds, keyed the way recovery asks for it."""

    def __init__(self, segment_size):
        self.segment_size = segment_size
        self.segments = {}  # (tli, segno) -> Entry
        self.others = {}  # file name -> Entry (.history, .backup, .partial)
        self.conflicts = {}  # file name -> [Entry, ...] when one file has two contents
        self.parents = {}  # tli -> [(parent, switch lsn, "")]
        self.backups = []  # backup history summaries
        self.problems = []

    def add(self, item):
        parsed = parse_object(posixpath.basename(item["name"]))
        if not parsed:
            return
        entry = Entry(item, parsed)
        kind, tli, segment = _wal.classify(entry.file)
        if kind == _wal.SEGMENT:
            key = (tli, _wal.parse_segment(segment, self.segment_size)[1])
            self._keep(self.segments, key, entry)
        else:
            self._keep(self.others, entry.file, entry)

    def _keep(self, table, key, entry):
        if key in table and table[key].sha256 != entry.sha256:
            self.conflicts.setdefault(entry.file, [table[key]]).append(entry)
            return
        table[key] = entry

    def add_meta(self, meta):
        name = meta.get("file", "")
        if name.endswith(".history"):
            self.parents[int(meta["timeline"])] = [(int(p), _wal.parse_lsn(lsn), "") for p, lsn in meta.get("parents", [])]
        elif name.endswith(".backup"):
            self.backups.append(meta)

    def find(self, filename):
        """Entry for a WAL file name recovery asks for, or None."""
        kind, tli, segment = _wal.classify(filename) or (None, None, None)
        if kind == _wal.SEGMENT:
            return self.segments.get((tli, _wal.parse_segment(segment, self.segment_size)[1]))
        return self.others.get(filename)

    @property
    def present(self):
        return set(self.segments) - {self._key(name) for name in self.conflicts if _wal.classify(name)[0] == _wal.SEGMENT}

    def _key(self, name):
        return _wal.parse_segment(name, self.segment_size)

    def timelines(self):
        if not self.segments and not self.parents:
            return []
        return sorted({tli for tli, _segno in self.segments} | set(self.parents) | {1})

    def newest_timeline(self):
        known = self.timelines()
        return known[-1] if known else None

    def path(self, tli):
        return _wal.timeline_path(tli, self.parents)

    def last_archived(self):
        """The newest segment in the archive - the furthest WAL position, on the newest
        timeline - or None. Not the one stored last: the pusher stores in parallel, so an
        older segment can land a moment after a newer one."""
        keys = [key for key, e in self.segments.items() if e.mtime is not None]
        return self.segments[max(keys)] if keys else None

    def gaps(self, missing=()):
        """Holes per timeline as lists of {first, last, count} segment names; ``missing``
        are (tli, segno) known damaged, counted as holes."""
        present = self.present - set(missing)
        holes = _wal.gaps(present)
        result = {}
        for tli, ranges in sorted(holes.items()):
            result[tli] = [
                {"first": _wal.segment_name(tli, a, self.segment_size), "last": _wal.segment_name(tli, b, self.segment_size), "count": b - a + 1}
                for a, b in ranges
            ]
        return result

    def window(self, backup, tli, missing=()):
        """Recoverable window of ``backup`` (a dict: start_lsn, stop_lsn, timeline as ints,
        stop_epoch) on timeline ``tli``, or None when the backup is not on that timeline's path."""
        try:
            path = self.path(tli)
        except _wal.WalError:
            return None
        if not _wal.on_path(path, backup["timeline"], backup["stop_lsn"]):
            return None
        seg = self.segment_size
        present = self.present - set(missing)
        last, first_missing, later = _wal.walk(path, present, _wal.segno_of(backup["start_lsn"], seg), seg, _wal.segno_of(backup["stop_lsn"], seg))
        owner = _wal.owner(path, last, seg)
        end_entry = self.segments.get((owner, last))
        end_epoch = end_entry.written_by if end_entry is not None and end_entry.written_by else backup.get("stop_epoch")
        return {
            "timeline": tli,
            "start_lsn": _wal.format_lsn(backup["stop_lsn"]),
            "start_time": iso(backup.get("stop_epoch")),
            "start_epoch": backup.get("stop_epoch"),
            "end_lsn": _wal.format_lsn((last + 1) * seg),
            "end_segment": _wal.segment_name(owner, last, seg),
            "end_time": iso(end_epoch),
            "end_epoch": end_epoch,
            "ends_at": "gap" if later else "end of archive",
            "first_missing": _wal.segment_name(first_missing[0], first_missing[1], seg),
            "path": [[step.tli, _wal.format_lsn(step.begin), None if step.end is None else _wal.format_lsn(step.end)] for step in path],
        }

    def chain(self, backup, tli, end_lsn=None):
        """The files recovery of ``backup`` on ``tli`` reads from the archive, in order, up to
        the segment holding ``end_lsn`` (None: as far as the archive is continuous)."""
        path = self.path(tli)
        seg = self.segment_size
        segno = _wal.segno_of(backup["start_lsn"], seg)
        stop = None if end_lsn is None else _wal.segno_of(end_lsn, seg)
        files = []
        while stop is None or segno <= stop:
            owner = _wal.owner(path, segno, seg)
            entry = self.segments.get((owner, segno))
            if entry is None:
                if segno <= _wal.segno_of(backup["stop_lsn"], seg):
                    segno += 1
                    continue  # carried by the base backup itself
                break
            files.append(entry)
            segno += 1
        return files


def backup_record(start_lsn, stop_lsn, timeline, stop_epoch=None, **extra):
    """The dict ``Index.window`` and ``Index.chain`` take, from text LSNs."""
    record = dict(extra)
    record.update(start_lsn=_wal.parse_lsn(start_lsn), stop_lsn=_wal.parse_lsn(stop_lsn), timeline=int(timeline), stop_epoch=stop_epoch)
    return record


def prune_plan(index, keep_backups):
    """Entries older than what the oldest of ``keep_backups`` needs: segments, .partial and
    backup history files below its start segment. Timeline history files always stay
    (they are tiny, and recovery needs them to choose a new timeline)."""
    if not keep_backups:
        raise ArchiveError("no retained base backup: pruning would leave the archive without a starting point; nothing removed")
    seg = index.segment_size
    floor = min(_wal.segno_of(b["start_lsn"], seg) for b in keep_backups)
    doomed = [e for (tli, segno), e in sorted(index.segments.items()) if segno < floor]
    for name, entry in sorted(index.others.items()):
        kind, _tli, segment = _wal.classify(name)
        if kind in (_wal.PARTIAL, _wal.BACKUP) and _wal.parse_segment(segment, seg)[1] < floor:
            doomed.append(entry)
    return floor, doomed


# The archive's place on its storage target, beside TARGET_SPEC (doc fragment lifeboat.backup._wal_archive).
ARCHIVE_SPEC = dict(archive_prefix=dict(type="str", default=""))


# ---- base backups: from the archive's backup history, from images ------------------------------

BASEBACKUP_KIND = "postgresql-basebackup"


def parse_iso(text):
    """Epoch of '2026-11-22T19:47:03Z' (the manifests' times), or None."""
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def image_paths(paths):
    """Image files named by ``paths`` (files, or folders whose *.zip are taken), sorted."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            found += [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith(".zip") and not n.startswith(".")]
        else:
            found.append(path)
    return found


def image_backups(paths):
    """Base backups recorded in images' manifests (no key needed). Returns (records, problems)."""
    records, problems = [], []
    for path in image_paths(paths):
        try:
            with _image.Image(path) as image:
                manifest = image.manifest
        except LifeboatError as exc:
            problems.append(str(exc))
            continue
        for name, component in sorted((manifest.get("components") or {}).items()):
            if component.get("kind") != BASEBACKUP_KIND:
                continue
            markers = component.get("markers") or {}
            details = component.get("details") or {}
            if component.get("status") != "success" or not markers.get("start_lsn") or not markers.get("end_lsn"):
                problems.append("%s: base backup %s is not usable (status %s)" % (path, name, component.get("status")))
                continue
            records.append(
                {
                    "image": path,
                    "component": name,
                    "backup_id": manifest.get("backup_id"),
                    "label": markers.get("label") or details.get("label"),
                    "start_lsn": markers["start_lsn"],
                    "stop_lsn": markers["end_lsn"],
                    "timeline": int(markers.get("timeline") or 1),
                    "finished_epoch": parse_iso(component.get("finished")),
                    "member": details.get("member"),
                    "tar_bytes": details.get("tar_bytes"),
                    "server_version_num": details.get("server_version_num"),
                }
            )
    return records, problems


def base_backups(index, images=None):
    """Base backups as ``Index.window`` takes them, oldest first: those the archive's backup
    history knows, joined with the images that hold them. With ``images`` (records of
    ``image_backups``) only the ones with an image are returned: only those can be restored."""
    by_key = {}
    for meta in index.backups:
        key = (meta["start_lsn"], int(meta.get("stop_timeline") or meta.get("start_timeline") or 1))
        stop_epoch = meta.get("stop_epoch") or meta.get("archived")
        by_key[key] = backup_record(meta["start_lsn"], meta["stop_lsn"], key[1], stop_epoch, label=meta.get("label"), history=meta.get("file"), image=None)
    if images is not None:
        joined = {}
        for record in images:
            key = (record["start_lsn"], record["timeline"])
            known = by_key.get(key)
            stop_epoch = known["stop_epoch"] if known else record["finished_epoch"]
            extra = {k: v for k, v in record.items() if k not in ("start_lsn", "stop_lsn", "timeline")}
            extra.setdefault("label", known and known.get("label"))
            extra["history"] = known and known.get("history")
            joined[key] = backup_record(record["start_lsn"], record["stop_lsn"], record["timeline"], stop_epoch, **extra)
        by_key = joined
    return sorted(by_key.values(), key=lambda b: (b["stop_lsn"], b["timeline"]))


def describe_backup(backup):
    """A base backup for a module's result."""
    keys = ("label", "image", "component", "backup_id", "history")
    out = {k: backup.get(k) for k in keys if backup.get(k) is not None}
    out.update(
        start_lsn=_wal.format_lsn(backup["start_lsn"]),
        stop_lsn=_wal.format_lsn(backup["stop_lsn"]),
        timeline=backup["timeline"],
        stop_time=iso(backup.get("stop_epoch")),
    )
    return out
