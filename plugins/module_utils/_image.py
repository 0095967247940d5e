# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""The backup image: a zip of stored members, each compressed then age-encrypted.

Specified in docs/image-format.md (format version 1). Writing goes through a work
area (see _session.py): members are appended to ``image.partial`` and recorded in
``journal.jsonl`` only once complete, so a writer killed mid-member leaves a torn tail
that the next writer cuts off. The zip central directory and ``manifest.json`` are
written when the session is sealed.

Everything streams: plaintext -> SHA-256 -> compressor -> age -> SHA-256/CRC -> file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import queue
import re
import struct
import threading
import time
import traceback
import zipfile
import zlib

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _progress
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._version import COLLECTION

ZSTANDARD_IMPORT_ERROR = None
try:
    import zstandard

    HAS_ZSTANDARD = True
except ImportError:
    HAS_ZSTANDARD = False
    ZSTANDARD_IMPORT_ERROR = traceback.format_exc()

FORMAT_NAME = "lifeboat-image"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
IDENTITY_MEMBER = "lifeboat/identity.age"
COPY_BUFFER = 1024 * 1024
BLOCK_SIZE = 1024 * 1024
COMPRESSIONS = ("zstd", "gzip", "none")
SUFFIX = {"zstd": ".zst", "gzip": ".gz", "none": ""}

# Options of every restore module, documented in doc fragment lifeboat.backup._restore.
RESTORE_SPEC = dict(authenticate=dict(type="bool", default=True))

_ZIP64_LIMIT = 0xFFFFFFFF
_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
_CENTRAL_HEADER = struct.Struct("<IHHHHHHIIIHHHHHII")
_FLAG_UTF8 = 0x0800


class ImageError(LifeboatError):
    """A problem with an image or a member; the message names it."""


class ImageKeyError(ImageError):
    """The key given does not open the image (or none was given). The image is not
    damaged: a message must never invite the operator to give it up."""


def _age_error(prefix, exc):
    """ImageError (ImageKeyError for a key that does not fit) from an AgeError."""
    cls = ImageKeyError if isinstance(exc, _age.KeyMismatch) else ImageError
    return cls("%s%s" % (prefix, exc))


# ---- names -------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text, fallback="x"):
    """A file-name-safe rendering of ``text`` (node names, component names)."""
    cleaned = _UNSAFE.sub("-", text).strip("-.")
    return cleaned or fallback


def image_name(node, when=None, prefix=""):
    """``[prefix-]YYYYMMDDTHHMMSSZ-node.zip``: sorts by time for one prefix."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when if when is not None else time.time()))
    parts = [safe_name(prefix)] if prefix else []
    parts += [stamp, safe_name(node, "node")]
    return "-".join(parts) + ".zip"


def member_name(component, name, compression, encrypted):
    return "%s/%s%s%s" % (safe_name(component), name, SUFFIX[compression], ".age" if encrypted else "")


def resolve_compression(requested):
    """'auto' means zstd when the zstandard library is present, else gzip."""
    if requested == "auto":
        return "zstd" if HAS_ZSTANDARD else "gzip"
    if requested == "zstd" and not HAS_ZSTANDARD:
        raise ImageError("compression=zstd needs the Python 'zstandard' library on this host; install it or use compression=gzip")
    return requested


# ---- compression -------------------------------------------------------------------


class _Passthrough:
    def compress(self, data):
        return data

    def flush(self):
        return b""


def compressor(kind, level=None, threads=0):
    if kind == "zstd":
        params = {"level": 3 if level is None else level}
        if threads:
            params["threads"] = threads
        return zstandard.ZstdCompressor(**params).compressobj()
    if kind == "gzip":
        return zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)
    return _Passthrough()


_DECOMPRESS_ERRORS = (zlib.error, zstandard.ZstdError) if HAS_ZSTANDARD else (zlib.error,)
# Compressed bytes asked of the source at a time. Output is bounded separately: a
# megabyte of zstd can expand to gigabytes (a sparse file, a table of blank filler).
_INPUT_SIZE = 64 * 1024


class _Decompressor:
    """Push-style decompressor that refuses trailing garbage and truncated input (for
    callers that hold small objects whole: WAL segments, table-archive payloads). Its
    output per call is not bounded: a member is read through ``decompressing_reader``."""

    def __init__(self, kind):
        self.kind = kind
        if kind == "zstd":
            if not HAS_ZSTANDARD:
                raise ImageError("this member is zstd-compressed; the Python 'zstandard' library is needed on this host")
            self._obj = zstandard.ZstdDecompressor().decompressobj()
        elif kind == "gzip":
            self._obj = zlib.decompressobj(31)
        else:
            self._obj = None

    def decompress(self, data):
        if self._obj is None:
            return data
        try:
            return self._obj.decompress(data)
        except _DECOMPRESS_ERRORS as exc:
            raise ImageError("%s data is corrupt: %s" % (self.kind, exc)) from None

    def finish(self):
        if self.kind == "gzip" and not self._obj.eof:
            raise ImageError("gzip data is truncated")
        if self.kind == "gzip" and self._obj.unused_data:
            raise ImageError("unexpected data after the end of the gzip stream")
        if self.kind == "zstd" and not self._obj.eof:
            raise ImageError("zstd data is truncated")


class _GzipReader:
    """Pull-style gzip decompression whose output per read is bounded by the size asked."""

    def __init__(self, source):
        self._source = source
        self._obj = zlib.decompressobj(31)
        self._tail = b""

    def read(self, size):
        while True:
            data = self._tail or self._source.read(_INPUT_SIZE)
            if not data:
                return b""
            if self._obj.eof:
                raise ImageError("unexpected data after the end of the gzip stream")
            out = self._obj.decompress(data, size)
            self._tail = self._obj.unconsumed_tail
            if self._obj.unused_data:
                raise ImageError("unexpected data after the end of the gzip stream")
            if out:
                return out

    def finish(self):
        if not self._obj.eof:
            raise ImageError("gzip data is truncated")


class _Plain:
    def __init__(self, source):
        self.read = source.read

    def finish(self):
        pass


class _ZstdReader:
    """Pull-style zstd decompression (python-zstandard's stream reader: at most the size
    asked per read). A truncated frame reads as a short stream; MemberReader's size check
    names it."""

    def __init__(self, source):
        if not HAS_ZSTANDARD:
            raise ImageError("this member is zstd-compressed; the Python 'zstandard' library is needed on this host")
        self.read = zstandard.ZstdDecompressor().stream_reader(source, read_size=_INPUT_SIZE).read

    def finish(self):
        pass


def decompressing_reader(kind, source):
    """A reader of ``source`` decompressed (``kind``: zstd, gzip, none) with ``read(size)``
    returning at most ``size`` bytes and b"" at the end; ``finish()`` checks the end."""
    return {"zstd": _ZstdReader, "gzip": _GzipReader}.get(kind, _Plain)(source)


# ---- writing -----------------------------------------------------------------------


def _dos_time(when):
    t = time.gmtime(max(when, 315532800))  # DOS dates start in 1980
    return ((t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)), (((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday)


class _Sink:
    """Writes stored bytes to the image file, keeping CRC-32, SHA-256 and size."""

    def __init__(self, fp):
        self.fp = fp
        self.crc = 0
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data):
        if data:
            self.crc = zlib.crc32(data, self.crc)
            self.sha256.update(data)
            self.size += len(data)
            self.fp.write(data)
        return len(data)


class _Worker:
    """Runs ``process`` on each block, in order, in a thread of its own, so the thread that
    reads the data (a pipe from pg_dump, the files of a tree) is never held up by hashing,
    compression, encryption and the write. At most ``depth`` blocks wait (bounded memory);
    an error in the worker is raised in the caller at its next ``put`` or at ``close``."""

    def __init__(self, process, depth=4):
        self._process = process
        self._queue = queue.Queue(depth)
        self._error = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="lifeboat-member", daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            block = self._queue.get()
            if block is None:
                return
            if self._error is None and not self._stopped:
                try:
                    self._process(block)
                except BaseException as exc:  # raised again in the caller's thread
                    self._error = exc

    def put(self, block):
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def close(self):
        """Wait until every block is processed; raise the worker's error, if any."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self):
        """Drop what waits and stop the thread (the member is being discarded)."""
        self._stopped = True
        self._queue.put(None)
        self._thread.join()


class MemberWriter:
    """A writable stream that becomes one image member. Use as a context manager;
    an exception inside the ``with`` discards the member (nothing is journaled).

    With ``threads`` (zstd worker threads, for large members) the plaintext digest,
    compression, encryption, stored digests and the write run in a worker thread, and
    ``write`` only gathers blocks: the caller keeps reading while the cores compress."""

    def __init__(self, appender, name, component, media_type, compression, recipients, threads=0, extra=None):
        self._appender = appender
        self.name = name
        self.component = component
        self.media_type = media_type
        self.compression = compression
        self.encrypted = bool(recipients)
        self.extra = extra or {}
        self.plain_sha256 = hashlib.sha256()
        self.plain_size = 0
        self.offset, self._header_len, self._when = appender.begin_member(name)
        self._sink = _Sink(appender.fp)
        self._encryptor = _age.AgeWriter(self._sink, recipients=recipients) if recipients else self._sink
        self._compressor = compressor(compression, threads=threads)
        self._pending = bytearray()
        self._worker = _Worker(self._process) if threads else None
        self._journaling = False
        self.record = None
        self._progress = _progress.reporter()
        self._progress.phase("writing", item=name)

    def write(self, data):
        # Small writes (tar headers, small files) are gathered into blocks: hashing and
        # compressing cost per call, and a tree of configuration files is mostly small writes.
        size = len(data)
        self._progress.advance(size)
        if size >= BLOCK_SIZE and not self._pending:
            # The block is handed on: a view of the caller's buffer is copied first.
            self._submit(data if isinstance(data, bytes) or self._worker is None else bytes(data))
        elif size:
            self._pending += data
            if len(self._pending) >= BLOCK_SIZE:
                self._submit(self._pending)
                self._pending = bytearray()
        return size

    def _submit(self, block):
        if self._worker is not None:
            self._worker.put(block)
        else:
            self._process(block)

    def _process(self, data):
        self.plain_sha256.update(data)
        self.plain_size += len(data)
        out = self._compressor.compress(data)
        if out:
            self._encryptor.write(out)

    def write_from(self, source, buffer_size=COPY_BUFFER):
        """Copy a readable binary stream (a file, a pipe) into the member."""
        while True:
            chunk = source.read(buffer_size)
            if not chunk:
                return
            self.write(chunk)

    def close(self):
        if self._pending:
            self._submit(self._pending)
            self._pending = bytearray()
        if self._worker is not None:
            worker, self._worker = self._worker, None
            worker.close()
        tail = self._compressor.flush()
        if tail:
            self._encryptor.write(tail)
        if self.encrypted:
            self._encryptor.close()
        self.record = {
            "name": self.name,
            "component": self.component,
            "media_type": self.media_type,
            "compression": self.compression,
            "encryption": "age" if self.encrypted else "none",
            "stored_size": self._sink.size,
            "stored_sha256": self._sink.sha256.hexdigest(),
            "plaintext_size": self.plain_size,
            "plaintext_sha256": self.plain_sha256.hexdigest(),
            "crc32": self._sink.crc,
        }
        if self.extra:
            self.record["extra"] = self.extra
        self._journaling = True  # from here on the journal decides what the member is
        self._appender.end_member(self, self.record)
        return self.record

    def discard(self):
        """Drop the member: stop the worker first (it may be writing), then cut the file."""
        if self._worker is not None:
            worker, self._worker = self._worker, None
            worker.abort()
        self._appender.discard_member(self.offset)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                # e.g. the disk filled up while the last blocks were written: give the space
                # back (unless the journal was being written: the next writer sorts that out)
                if not self._journaling:
                    self.discard()
                raise
        else:
            self.discard()
        return False


class SpoolFile:
    """Stands in for the ImageAppender while a member is written to a scratch file, so that
    several members can be produced at once (the image is appended one member at a time).
    Only what the MemberWriter's sink writes lands here: compressed and encrypted bytes,
    never plaintext. ``ImageAppender.append_spooled`` copies it into the image."""

    def __init__(self, path):
        self.path = path
        # O_EXCL: a scratch name that exists already is somebody else's, never reused.
        self.fp = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), "r+b", buffering=0)
        self.record = None
        self.when = None

    def begin_member(self, name):
        return 0, 0, time.time()

    def end_member(self, member, record):
        self.record = record
        self.when = member._when

    def discard_member(self, offset):
        self.fp.truncate(offset)
        self.fp.seek(offset)

    def add_member(self, name, component, media_type, compression, recipients, threads=0, extra=None):
        return MemberWriter(self, name, component, media_type, compression, recipients, threads, extra)

    def remove(self):
        if self.fp:
            self.fp.close()
            self.fp = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _SpooledMember:
    """What ImageAppender.end_member needs of a member copied from a spool file."""

    def __init__(self, name, offset, when):
        self.name = name
        self.offset = offset
        self._when = when


class ImageAppender:
    """Appends members to ``<work_dir>/image.partial`` under an exclusive lock.

    ``journal.jsonl`` holds one line per complete member (zip bookkeeping plus the
    manifest record). Opening cuts the file back to the end of the last journaled
    member, dropping whatever a killed writer left behind.
    """

    def __init__(self, work_dir, lock_timeout=600):
        self.work_dir = work_dir
        self.path = os.path.join(work_dir, "image.partial")
        self.journal_path = os.path.join(work_dir, "journal.jsonl")
        # 0600: members are encrypted, but names and sizes are nobody else's business.
        # Unbuffered: discarding a failed member must not flush its buffered tail first
        # (on a full disk that flush fails again and the space is never given back).
        self.fp = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), "r+b", buffering=0)
        deadline = time.time() + lock_timeout
        while True:
            try:
                fcntl.flock(self.fp.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    self.fp.close()
                    raise ImageError("another writer holds %s for more than %d s" % (self.path, lock_timeout)) from None
                time.sleep(0.2)
        self.entries, valid = read_journal(self.journal_path, with_length=True)
        if os.path.exists(self.journal_path) and os.path.getsize(self.journal_path) != valid:
            # A writer died while journaling: drop its half line before anyone appends.
            os.truncate(self.journal_path, valid)
        end = self.entries[-1]["zip"]["end"] if self.entries else 0
        self.fp.truncate(end)
        self.fp.seek(end)
        self._names = {e["name"] for e in self.entries}

    def begin_member(self, name):
        if name in self._names:
            raise ImageError("member %s is already in this image" % name)
        encoded = name.encode("utf-8")
        when = time.time()
        dtime, ddate = _dos_time(when)
        offset = self.fp.tell()
        header = _LOCAL_HEADER.pack(0x04034B50, 45, _FLAG_UTF8, 0, dtime, ddate, 0, _ZIP64_LIMIT, _ZIP64_LIMIT, len(encoded), 20)
        self.fp.write(header + encoded + struct.pack("<HHQQ", 0x0001, 16, 0, 0))
        return offset, len(header) + len(encoded) + 20, when

    def end_member(self, member, record):
        size = record["stored_size"]
        end = self.fp.tell()
        name_len = len(member.name.encode("utf-8"))
        self.fp.seek(member.offset + 14)
        self.fp.write(struct.pack("<I", record["crc32"]))
        self.fp.seek(member.offset + 30 + name_len + 4)
        self.fp.write(struct.pack("<QQ", size, size))
        self.fp.seek(end)
        self.fp.flush()
        os.fsync(self.fp.fileno())
        entry = dict(record)
        entry["zip"] = {"offset": member.offset, "end": end, "time": member._when}
        with open(self.journal_path, "a") as journal:
            journal.write(json.dumps(entry, sort_keys=True) + "\n")
            journal.flush()
            os.fsync(journal.fileno())
        self.entries.append(entry)
        self._names.add(member.name)

    def discard_member(self, offset):
        self.fp.truncate(offset)
        self.fp.seek(offset)

    def add_member(self, name, component, media_type, compression, recipients, threads=0, extra=None):
        return MemberWriter(self, name, component, media_type, compression, recipients, threads, extra)

    def append_spooled(self, spool):
        """Copy a member written to a SpoolFile into the image. The stored bytes are hashed
        again on the way and must match what was hashed when they were spooled (a scratch
        file damaged in between is refused, not published); the spool file is removed."""
        record = spool.record
        if record is None:
            raise ImageError("spooled member %s was not completed" % spool.path)
        offset, _header, _when = self.begin_member(record["name"])
        sink = _Sink(self.fp)
        try:
            spool.fp.seek(0)
            while True:
                chunk = spool.fp.read(COPY_BUFFER)
                if not chunk:
                    break
                sink.write(chunk)
            if (sink.size, sink.sha256.hexdigest(), sink.crc) != (record["stored_size"], record["stored_sha256"], record["crc32"]):
                raise ImageError("spooled member %s changed in the scratch area before it was appended" % record["name"])
        except BaseException:
            self.discard_member(offset)
            raise
        self.end_member(_SpooledMember(record["name"], offset, spool.when), record)
        spool.remove()
        return record

    def add_bytes(self, name, component, media_type, data, compression="none", recipients=None):
        with self.add_member(name, component, media_type, compression, recipients) as member:
            member.write(data)
        return member.record

    def finish(self):
        """Write the central directory; the file is then a complete zip."""
        start = self.fp.tell()
        central = bytearray()
        for entry in self.entries:
            central += _central_record(entry)
        self.fp.write(central)
        _write_end_records(self.fp, len(self.entries), start, len(central))
        self.fp.flush()
        os.fsync(self.fp.fileno())

    def close(self):
        if self.fp:
            fcntl.flock(self.fp.fileno(), fcntl.LOCK_UN)
            self.fp.close()
            self.fp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def read_journal(path, with_length=False):
    """Complete journal lines; a torn last line (writer killed) is not a member."""
    entries = []
    valid = 0
    if os.path.exists(path):
        with open(path, "rb") as journal:
            for line in journal:
                if not line.endswith(b"\n"):
                    break
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    break
                valid += len(line)
    return (entries, valid) if with_length else entries


def _central_record(entry):
    name = entry["name"].encode("utf-8")
    size = entry["stored_size"]
    offset = entry["zip"]["offset"]
    extra = b""
    size32 = size
    offset32 = offset
    if size >= _ZIP64_LIMIT:
        extra += struct.pack("<QQ", size, size)
        size32 = _ZIP64_LIMIT
    if offset >= _ZIP64_LIMIT:
        extra += struct.pack("<Q", offset)
        offset32 = _ZIP64_LIMIT
    if extra:
        extra = struct.pack("<HH", 0x0001, len(extra)) + extra
    dtime, ddate = _dos_time(entry["zip"]["time"])
    header = _CENTRAL_HEADER.pack(
        0x02014B50, (3 << 8) | 45, 45, _FLAG_UTF8, 0, dtime, ddate, entry["crc32"], size32, size32, len(name), len(extra), 0, 0, 0, (0o100640 << 16), offset32
    )
    return header + name + extra


def _write_end_records(fp, count, cd_offset, cd_size):
    if count >= 0xFFFF or cd_offset >= _ZIP64_LIMIT or cd_size >= _ZIP64_LIMIT:
        zip64_offset = fp.tell()
        fp.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, (3 << 8) | 45, 45, 0, 0, count, count, cd_size, cd_offset))
        fp.write(struct.pack("<IIQI", 0x07064B50, 0, zip64_offset, 1))
        fp.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, _ZIP64_LIMIT, _ZIP64_LIMIT, 0))
    else:
        fp.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, cd_size, cd_offset, 0))


# ---- reading -----------------------------------------------------------------------


# The keys that open an image, defined once beside their doc fragment
# (plugins/doc_fragments/_decryption.py); modules pass it in LifeboatModule(specs=[...]).
DECRYPTION_SPEC = dict(
    passphrase=dict(type="str", no_log=True),
    identity=dict(type="str", no_log=True),
    identity_file=dict(type="path"),
)


def image_option():
    """The ``image`` option of image_info and image_verify (the restore modules' name); their
    0.1.0 name ``path`` stays as a deprecated alias until 0.3.0."""
    return dict(
        type="path",
        required=True,
        aliases=["path"],
        deprecated_aliases=[dict(name="path", version="0.3.0", collection_name=COLLECTION)],
    )


# The image a restore module reads; image_info and image_verify use image_option().
IMAGE_SPEC = dict(image=dict(type="path", required=True))


def restorable_component(image, name, kind, label):
    """The manifest record of component ``name``: it must be of ``kind`` and captured
    successfully (``label`` names the kind in messages)."""
    components = image.manifest.get("components", {})
    component = components.get(name)
    if not component or component.get("kind") != kind:
        available = sorted(n for n, c in components.items() if c.get("kind") == kind)
        raise OptionError("component", "image has no %s component %r; it has: %s" % (label, name, ", ".join(available) or "none"))
    if component.get("status") != "success":
        raise ImageError("component %s was not captured successfully (%s): %s; choose another image" % (name, component.get("status"), component.get("error")))
    return component


def has_key(params):
    """Whether the decryption options give any key."""
    return bool(params.get("passphrase") or params.get("identity") or params.get("identity_file"))


def open_image(path, params):
    """The image at ``path``, opened with the keys of the DECRYPTION_SPEC options in ``params``."""
    identities = load_identities(identity=params.get("identity"), identity_file=params.get("identity_file"))
    return Image(path, passphrase=params.get("passphrase"), identities=identities)


def load_identities(passphrase=None, identity=None, identity_file=None):
    """Collect X25519 identities from ``identity`` text and an ``identity_file``."""
    keys = []
    if identity:
        keys += _age.parse_identities(identity)
    if identity_file:
        try:
            with open(identity_file) as handle:
                keys += _age.parse_identities(handle.read())
        except OSError as exc:
            raise ImageError("cannot read identity_file %s: %s" % (identity_file, exc.strerror)) from None
    return keys


def _zip_error(exc):
    text = str(exc)
    if "Bad CRC-32" in text:
        return "CRC-32 of the stored bytes does not match: the member is corrupt"
    return text


class MemberReader:
    """Readable plaintext of one member. Stored and plaintext SHA-256 are checked against
    the manifest when the end is reached; any mismatch raises ImageError naming the member.
    Memory is bounded: each read decrypts and decompresses only what it returns."""

    def __init__(self, image, record):
        self.name = record["name"]
        self._record = record
        self._stored = image.zip.open(self.name)
        self._stored_sha = hashlib.sha256()
        self._plain_sha = hashlib.sha256()
        self._plain_size = 0
        self._eof = False
        source = HashingReader(self._stored, self._stored_sha)
        if record["encryption"] == "age":
            try:
                source = _age.AgeReader(source, identities=image.identities())
            except _age.AgeError as exc:
                raise _age_error("member %s: " % self.name, exc) from None
            except (zipfile.BadZipFile, OSError) as exc:
                # A small member is read whole with its header: a CRC error shows up here.
                raise ImageError("member %s: %s" % (self.name, _zip_error(exc))) from None
        self._plain = decompressing_reader(record["compression"], source)
        self._progress = _progress.reporter()
        self._progress.phase("reading", item=self.name, total=record.get("plaintext_size"))

    def _read_plain(self, size):
        try:
            return self._plain.read(size)
        except _age.AgeError as exc:
            raise ImageError("member %s: %s" % (self.name, exc)) from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise ImageError("member %s: %s" % (self.name, _zip_error(exc))) from None
        except ImageError as exc:
            raise ImageError("member %s: %s" % (self.name, exc)) from None
        except _DECOMPRESS_ERRORS as exc:
            raise ImageError("member %s: %s data is corrupt: %s" % (self.name, self._record["compression"], exc)) from None

    def _finish(self):
        self._eof = True
        try:
            self._plain.finish()
        except ImageError as exc:
            raise ImageError("member %s: %s" % (self.name, exc)) from None
        if self._stored_sha.hexdigest() != self._record["stored_sha256"]:
            raise ImageError("member %s: SHA-256 of the stored bytes does not match the manifest" % self.name)
        expected = self._record["plaintext_size"]
        if self._plain_size < expected and self._record["compression"] != "none":
            raise ImageError("member %s: %s data is truncated (%d of %d bytes)" % (self.name, self._record["compression"], self._plain_size, expected))
        if self._plain_size != expected or self._plain_sha.hexdigest() != self._record["plaintext_sha256"]:
            raise ImageError("member %s: the decrypted content does not match the manifest (size or SHA-256)" % self.name)

    def read(self, size=-1):
        if size is None or size < 0:
            parts = []
            while True:
                part = self.read(COPY_BUFFER)
                if not part:
                    return b"".join(parts)
                parts.append(part)
        if self._eof or size == 0:
            return b""
        data = self._read_plain(size)
        if not data:
            self._finish()
            return b""
        self._plain_sha.update(data)
        self._plain_size += len(data)
        self._progress.advance(len(data))
        return data

    def readable(self):
        return True

    def close(self):
        self._stored.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class HashingReader:
    """A readable stream that feeds what passes through it into ``sha`` (a new SHA-256 by default)."""

    def __init__(self, source, sha=None):
        self.source = source
        self.sha = sha if sha is not None else hashlib.sha256()

    def read(self, size=-1):
        data = self.source.read(size)
        self.sha.update(data)
        return data


class Image:
    """A published (or sealed) image, opened for reading."""

    def __init__(self, path, passphrase=None, identities=None):
        self.path = path
        self._passphrase = passphrase
        self._identities = list(identities or [])
        self._identity_unlocked = False
        try:
            self.zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise ImageError("image %s does not exist" % path) from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise ImageError("%s is not a readable image (zip): %s" % (path, exc)) from None
        try:
            raw = self.zip.read(MANIFEST_NAME)
        except KeyError:
            raise ImageError("%s has no %s: not a lifeboat image, or an unfinished one" % (path, MANIFEST_NAME)) from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise ImageError("%s: %s is unreadable: %s" % (path, MANIFEST_NAME, exc)) from None
        try:
            self.manifest = json.loads(raw)
        except ValueError as exc:
            raise ImageError("%s: %s is not valid JSON: %s" % (path, MANIFEST_NAME, exc)) from None
        if self.manifest.get("format") != FORMAT_NAME:
            raise ImageError("%s is not a lifeboat image (manifest format %r)" % (path, self.manifest.get("format")))
        if self.manifest.get("format_version", 0) > FORMAT_VERSION:
            raise ImageError(
                "%s uses image format version %s; this collection reads up to version %d: upgrade lifeboat.backup"
                % (path, self.manifest.get("format_version"), FORMAT_VERSION)
            )
        self.members = {m["name"]: m for m in self.manifest.get("members", [])}

    def identities(self):
        """X25519 identities able to read the members, unlocking the image identity with the passphrase."""
        if not self._identity_unlocked:
            self._identity_unlocked = True
            stored = self.manifest.get("encryption", {}).get("identity_member")
            if stored and self._passphrase is not None:
                try:
                    with self.zip.open(stored) as handle:
                        text = _age.AgeReader(handle, passphrase=self._passphrase).read().decode("ascii")
                except _age.AgeError as exc:
                    raise _age_error("%s: " % stored, exc) from None
                except (zipfile.BadZipFile, OSError) as exc:
                    raise ImageError("%s: %s" % (stored, _zip_error(exc))) from None
                self._identities += _age.parse_identities(text)
            elif self._passphrase is not None and not stored and not self._identities:
                raise ImageKeyError("this image is not passphrase-protected (it was encrypted to recipients); give identity or identity_file")
        if not self._identities:
            raise ImageKeyError("the image is encrypted: give passphrase, identity or identity_file")
        return self._identities

    @property
    def encrypted(self):
        return self.manifest.get("encryption", {}).get("scheme") == "age"

    def check_key(self, names=None):
        """Raise ImageKeyError unless the key given opens the image: the identities are
        unlocked and the header of one encrypted member (of ``names`` if given) opened.
        Cheap (one header); a member's content is not read."""
        if not self.encrypted:
            return
        self.identities()
        for record in self.manifest.get("members", []):
            if record.get("encryption") != "age" or (names is not None and record["name"] not in names):
                continue
            if record["name"] not in self.zip.NameToInfo:
                return  # missing members are found, and named, by authenticate()/verify_image()
            try:
                with self.zip.open(record["name"]) as stored:
                    _age.AgeReader(stored, identities=self.identities())
            except _age.AgeError as exc:
                raise _age_error("image %s, member %s: " % (os.path.basename(self.path), record["name"]), exc) from None
            except (zipfile.BadZipFile, OSError):
                pass  # damage, not a key problem: named by authenticate()/verify_image()
            return

    def component_members(self, component):
        return [m for m in self.manifest.get("members", []) if m.get("component") == component]

    def open_member(self, name):
        if name not in self.members:
            raise ImageError("member %s is not in image %s" % (name, os.path.basename(self.path)))
        return MemberReader(self, self.members[name])

    def read_json_member(self, name):
        with self.open_member(name) as member:
            data = member.read()
        return json.loads(data)

    def close(self):
        self.zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ---- verification ------------------------------------------------------------------------


class _Discard:
    def write(self, data):
        return len(data)


class StreamDigests:
    """The SHA-256 of each member's stored bytes, computed as an image goes by in one
    sequential stream (a download), so that checking the members needs no second read.

    It follows the local headers from offset 0: an image written by ImageAppender has its
    members back to back, each local header carrying its real sizes (zip64 extra). Any
    other layout stops it (``stopped`` says why) and the members are read again instead.
    ``digests`` maps a member name to (header offset, stored size, SHA-256 hex)."""

    def __init__(self):
        self.digests = {}
        self.stopped = None
        self.ended = False  # the central directory was reached
        self._pos = 0  # stream offset of the start of self._head
        self._head = b""  # bytes of the header being parsed
        self._member = None  # [name, offset, size, sha, left] while hashing data

    def write(self, data):
        view = memoryview(data)
        while view and self.stopped is None and not self.ended:
            if self._member is not None:
                take = min(len(view), self._member[4])
                self._member[3].update(view[:take])
                self._member[4] -= take
                self._pos += take
                view = view[take:]
                if not self._member[4]:
                    name, offset, size, sha, _left = self._member
                    self.digests[name] = (offset, size, sha.hexdigest())
                    self._member = None
            else:
                view = self._header(view)
        return len(data)

    def _header(self, view):
        need = 30 if len(self._head) < 30 else 30 + sum(struct.unpack("<HH", self._head[26:30]))
        take = min(len(view), need - len(self._head))
        self._head += bytes(view[:take])
        if len(self._head) < need:
            return view[take:]
        if need == 30:
            if self._head[:4] == b"PK\x01\x02":
                self.ended = True
            elif self._head[:4] != b"PK\x03\x04":
                self.stopped = "not a local header at offset %d" % self._pos
            if self.ended or self.stopped:
                return view[:0]
            return view[take:]
        self._start_member(self._head)
        return view[take:]

    def _start_member(self, head):
        fields = _LOCAL_HEADER.unpack(head[:30])
        flags, method, size = fields[2], fields[3], fields[8]
        name_len, extra_len = fields[9], fields[10]
        name = head[30 : 30 + name_len].decode("utf-8" if flags & _FLAG_UTF8 else "cp437")
        extra = head[30 + name_len : 30 + name_len + extra_len]
        if flags & 0x08 or method != 0:
            self.stopped = "member %s has a data descriptor or is compressed by zip" % name
            return
        if size == _ZIP64_LIMIT:
            size = _zip64_size(extra)
            if size is None:
                self.stopped = "member %s has no zip64 size" % name
                return
        offset = self._pos
        self._pos += len(head)
        self._head = b""
        self._member = [name, offset, size, hashlib.sha256(), size]
        if not size:
            self.digests[name] = (offset, 0, self._member[3].hexdigest())
            self._member = None


def _zip64_size(extra):
    while len(extra) >= 4:
        tag, length = struct.unpack("<HH", extra[:4])
        if tag == 0x0001 and length >= 16:
            return struct.unpack("<Q", extra[12:20])[0]  # uncompressed then compressed size
        extra = extra[4 + length :]
    return None


def _read_through(source):
    """Read ``source`` to its end, counting the bytes in the progress."""
    reporter = _progress.reporter()
    while True:
        data = source.read(COPY_BUFFER)
        if not data:
            return
        reporter.advance(len(data))


def _stored_sha256(image, record, digests):
    """The SHA-256 of a member's stored bytes: from ``digests`` (computed while the image
    was streamed) when they describe the very bytes the zip locates, else read again."""
    info = image.zip.getinfo(record["name"])
    known = (digests or {}).get(record["name"])
    if known is not None and known[0] == info.header_offset and known[1] == info.compress_size:
        if record["encryption"] == "age":
            with image.zip.open(record["name"]) as stored:
                try:
                    _age._parse_header(stored)
                except _age.AgeError as exc:
                    raise ImageError(str(exc)) from None
        return known[2]
    sha = hashlib.sha256()
    with image.zip.open(record["name"]) as stored:
        source = HashingReader(stored, sha)
        if record["encryption"] == "age":
            try:
                _age._parse_header(source)
            except _age.AgeError as exc:
                raise ImageError(str(exc)) from None
        _read_through(source)
    return sha.hexdigest()


def _verify_stored(image, record, digests=None):
    """Size and SHA-256 of the stored bytes (and CRC-32 when they are read again); for age
    members, a well-formed header."""
    info = image.zip.getinfo(record["name"])
    if info.file_size != record["stored_size"]:
        raise ImageError("stored size %d differs from the manifest's %d" % (info.file_size, record["stored_size"]))
    if _stored_sha256(image, record, digests) != record["stored_sha256"]:
        raise ImageError("SHA-256 of the stored bytes does not match the manifest")


def _verify_decrypt(image, record):
    """Authenticate every age chunk (header MAC and each chunk's tag); SHA-256 of the stored bytes."""
    sha = hashlib.sha256()
    with image.zip.open(record["name"]) as stored:
        source = HashingReader(stored, sha)
        try:
            reader = _age.AgeReader(source, identities=image.identities())
            _read_through(reader)
        except _age.AgeError as exc:
            raise _age_error("", exc) from None
    if sha.hexdigest() != record["stored_sha256"]:
        raise ImageError("SHA-256 of the stored bytes does not match the manifest")


def _verify_full(image, record):
    with image.open_member(record["name"]) as reader:
        while reader.read(COPY_BUFFER):
            pass


def verify_image(image, level, names=None, digests=None):
    """Check the members of an open Image. ``level``: 'checksum' (no key needed),
    'authenticate' (decrypt every chunk) or 'full' (also decompress and compare the
    plaintext SHA-256). ``digests``: StreamDigests.digests of this file, computed while
    it was written, which spare the checksum level a second read. Returns (results,
    first_error); results is one dict per member."""
    results = _unlisted_members(image)
    for record in image.manifest.get("members", []):
        if names and record["name"] not in names:
            continue
        results.append(_verify_member(image, record, level, digests))
    first = next((r for r in results if not r["ok"]), None)
    first_error = None if first is None else {"member": first["name"], "error": first["error"], "damaged": first["damaged"]}
    return results, first_error


def _unlisted_members(image):
    """A failed result for each member of the zip that the manifest does not list."""
    listed = {m["name"] for m in image.manifest.get("members", [])}
    return [
        {"name": name, "ok": False, "error": "member %s is in the zip but not in the manifest" % name, "level": "checksum", "damaged": True}
        for name in image.zip.namelist()
        if name != MANIFEST_NAME and name not in listed
    ]


def _verify_member(image, record, level, digests):
    """The result of checking one member listed in the manifest at ``level``."""
    outcome = {"name": record["name"], "component": record.get("component"), "ok": True, "error": None, "level": level}
    try:
        if record["name"] not in image.zip.NameToInfo:
            raise ImageError("listed in the manifest but missing from the zip")
        member_level = level if record["encryption"] == "age" or level != "authenticate" else "checksum"
        if member_level != "full":
            _progress.reporter().phase("verifying", item=record["name"], total=record.get("stored_size"))
        if member_level == "checksum":
            _verify_stored(image, record, digests)
        elif member_level == "authenticate":
            _verify_decrypt(image, record)
        else:
            _verify_full(image, record)
    except (ImageError, zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        text = _zip_error(exc)
        prefix = "member %s: " % record["name"]
        text = text[len(prefix) :] if text.startswith(prefix) else text
        # A key that does not fit says nothing about the member: not damage.
        outcome.update(ok=False, error=text, damaged=not isinstance(exc, ImageKeyError))
    return outcome


def authenticate(image, names):
    """Before a restore changes anything: read each member of ``names`` to its end -
    decrypt and authenticate every chunk, decompress, compare both SHA-256 digests and the
    size with the manifest. Raises ImageKeyError (the key does not fit) or ImageError (the
    member is damaged), naming the member. Returns the number of bytes read."""
    results, first_error = verify_image(image, "full", set(names))
    if first_error is None:
        missing = sorted(set(names) - {r["name"] for r in results})
        if missing:
            raise ImageError("member %s is not in image %s" % (missing[0], os.path.basename(image.path)))
        return sum(image.members[n].get("stored_size", 0) for n in names)
    where = "image %s, member %s" % (os.path.basename(image.path), first_error["member"])
    if not first_error["damaged"]:
        raise ImageKeyError("%s: %s; the image itself may be intact: give the right passphrase or identity" % (where, first_error["error"]))
    raise ImageError("%s is damaged: %s" % (where, first_error["error"]))
