# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""The table-archive chain format (docs/table-archive.md) and its offline verifier.

This one file is also the standalone verifier an auditor runs with no Ansible and no
database: it needs only the Python standard library and ``cryptography``::

    python3 _table_segment.py [--public-key KEY]... [--identity FILE] [--json] DIR...

DIR is an archive location (a directory holding one directory per chain) or one chain's
directory. With ``--identity`` (an age identity file) it also decrypts each payload
with the stock ``age`` and ``zstd``/``gzip`` programs and recounts its rows.

So it imports nothing from the collection except, when available, the collection's error
base class. What lives here:

- canonical JSON, entry hashes, Ed25519 signing and checking, key parsing;
- the row digest (sum of per-line SHA-256 values, so digests of parts add up);
- the payload grammar (COPY sections) and a parser that recounts rows and digests;
- the chain walk that names every problem, and the report renderer shared with
  ``table_archive_verify`` (its text reads like the transaction manager's verifier).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import traceback
from itertools import repeat
from operator import methodcaller

try:
    from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError
    from ansible_collections.lifeboat.backup.plugins.module_utils._proc import popen
except ImportError:  # run standalone: the verifier needs nothing from the collection

    class LifeboatError(Exception):
        def __init__(self, msg, **_kwargs):
            super().__init__(msg)
            self.msg = str(msg)

    def popen(argv, **kwargs):
        # The verifier copied alone to an auditor's machine has no _proc (the collection's
        # one place that starts processes) to import: it starts age and zstd itself.
        return subprocess.Popen(argv, **kwargs)  # pylint: disable=ansible-bad-function


CRYPTOGRAPHY_IMPORT_ERROR = None
try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - reported by the modules with missing_required_lib
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

FORMAT = "lifeboat-table-archive"
FORMAT_VERSION = 1
KINDS = ("genesis", "segment", "checkpoint", "rotation", "expiry")
ENTRY_RE = re.compile(r"^(\d{8})\.json$")
PAYLOAD_RE = re.compile(r"^(\d{8})\.sql(\.zst|\.gz)?(\.age)?$")
IDENTITY_FILE = "identity.age"
KEY_PREFIX = "ed25519:"
DIGEST_MODULUS = 1 << 256
_DIGEST_OF = methodcaller("digest")
EMPTY_DIGEST = "0" * 64
READ_BLOCK = 1024 * 1024

# Settings of every session that exports or digests rows: the text of a row must not
# depend on who looks at it (docs/table-archive.md, "Rows").
EXPORT_SETTINGS = (
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("standard_conforming_strings", "on"),
)

# Problems the verifier names (docs/table-archive.md, "Verification").
PROBLEMS = {
    "entry_unreadable": "an entry file is not a readable entry (altered or truncated)",
    "unsupported_format": "an entry of a format this verifier does not know",
    "signature_invalid": "an entry's signature does not match its content (altered)",
    "unknown_signing_key": "an entry signed with a key that is not trusted",
    "foreign_entry": "an entry of another chain placed in this one",
    "duplicate_entry": "two entries claim the same place in the chain",
    "out_of_order": "an entry file named for another place in the chain (renamed or swapped)",
    "genesis_missing": "the chain's first entry is missing",
    "segment_missing": "entries missing from the chain",
    "chain_broken": "an entry does not link to the one before it",
    "range_gap": "a segment does not start where the previous one ended",
    "payload_missing": "a segment's payload file is missing",
    "payload_altered": "a segment's payload differs from the one signed",
    "payload_unreadable": "a segment's payload cannot be decrypted or decompressed",
    "content_mismatch": "a segment's rows differ from the counts and digests signed",
    "unexpected_file": "a file in a chain directory that belongs to no entry",
    "head_missing": "entries recorded elsewhere (database, image) are missing from the archive",
    "head_mismatch": "an entry recorded elsewhere differs from the archive's",
    "uncommitted_entry": "an entry written by a run that did not commit (interrupted)",
    "rows_in_archived_range": "live rows with keys inside ranges already archived",
    "rows_missing": "rows missing between the archive's end and the live table",
    "checkpoint_mismatch": "rows deleted, altered or inserted below a checkpoint",
}


class SegmentError(LifeboatError):
    """A chain entry or payload that cannot be read or written; the message says why."""


# ---- canonical JSON, hashes ----------------------------------------------------------------


def canonical(obj):
    """The bytes that are hashed and signed: sorted keys, no blanks, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def entry_hash(entry):
    return hashlib.sha256(canonical(entry)).hexdigest()


def entry_name(seq):
    return "%08d.json" % seq


def payload_name(seq, compression, encrypted):
    suffix = {"zstd": ".zst", "gzip": ".gz", "none": ""}[compression]
    return "%08d.sql%s%s" % (seq, suffix, ".age" if encrypted else "")


# ---- keys and signatures ---------------------------------------------------------------------


def _require_crypto():
    if not HAS_CRYPTOGRAPHY:
        raise SegmentError("the Python 'cryptography' library is needed to sign and check table-archive entries")


def public_key_text(key):
    """'ed25519:<base64 of the raw 32-byte public key>' for a private or public key."""
    if hasattr(key, "public_key"):
        key = key.public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def load_private_key(text, option="signing_key"):
    """An Ed25519 private key from PEM (PKCS#8, as ``openssl genpkey -algorithm ed25519``
    writes it), an unencrypted OpenSSH key (``ssh-keygen -t ed25519``), or
    'ed25519-private:<base64 of the 32-byte seed>'."""
    _require_crypto()
    data = (text or "").strip()
    try:
        if data.startswith("ed25519-private:"):
            return Ed25519PrivateKey.from_private_bytes(base64.b64decode(data.split(":", 1)[1], validate=True))
        if "OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data.encode("ascii"), password=None)
        else:
            key = serialization.load_pem_private_key(data.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise SegmentError(
            "%s is not an unencrypted Ed25519 private key (%s). Make one with: openssl genpkey -algorithm ed25519 -out signing.pem" % (option, _first_line(exc))
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SegmentError("%s is a %s key; table archives are signed with Ed25519 keys (openssl genpkey -algorithm ed25519)" % (option, type(key).__name__))
    return key


def parse_public_key(text, option="public_keys"):
    """An Ed25519 public key from 'ed25519:<base64>', a PEM public key, or an OpenSSH
    'ssh-ed25519 AAAA...' line."""
    _require_crypto()
    data = (text or "").strip()
    try:
        if data.startswith(KEY_PREFIX):
            raw = base64.b64decode(data[len(KEY_PREFIX) :], validate=True)
            return Ed25519PublicKey.from_public_bytes(raw)
        if data.startswith("ssh-ed25519 "):
            key = serialization.load_ssh_public_key(data.encode("ascii"))
        else:
            key = serialization.load_pem_public_key(data.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise SegmentError(
            "%s: %r is not an Ed25519 public key (%s); expected 'ed25519:<base64>' or a PEM public key" % (option, _short(data), _first_line(exc))
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise SegmentError("%s: %r is not an Ed25519 public key" % (option, _short(data)))
    return key


def normalise_public_key(text, option="public_keys"):
    return public_key_text(parse_public_key(text, option))


def _first_line(exc):
    return (str(exc) or type(exc).__name__).splitlines()[0]


def _short(text):
    return text if len(text) <= 24 else text[:20] + "..."


def sign(entry, private_key):
    """The entry file's document: the entry and its detached signature."""
    _require_crypto()
    signer = public_key_text(private_key)
    if entry.get("signer") != signer:
        raise SegmentError("entry %s names signer %s but is being signed with %s" % (entry.get("seq"), entry.get("signer"), signer))
    value = private_key.sign(canonical(entry))
    return {"entry": entry, "signature": {"algorithm": "ed25519", "key": signer, "value": base64.b64encode(value).decode("ascii")}}


def encode(document):
    """Entry file bytes (indented for people; the signature covers the canonical form)."""
    return (json.dumps(document, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode("ascii")


def decode(data, name="entry"):
    """(entry, signature) from entry file bytes; SegmentError when malformed."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SegmentError("%s is not valid JSON: %s" % (name, _first_line(exc))) from None
    if not isinstance(document, dict) or not isinstance(document.get("entry"), dict) or not isinstance(document.get("signature"), dict):
        raise SegmentError("%s is not a table-archive entry (no entry and signature objects)" % name)
    entry = document["entry"]
    if entry.get("format") != FORMAT:
        raise SegmentError("%s is not a table-archive entry (format %r)" % (name, entry.get("format")))
    for field, kind in (("seq", int), ("kind", str), ("chain", dict), ("signer", str)):
        if not isinstance(entry.get(field), kind) or isinstance(entry.get(field), bool):
            raise SegmentError("%s: field %s is missing or malformed" % (name, field))
    return entry, document["signature"]


def signature_valid(entry, signature):
    """True when ``signature`` is a valid Ed25519 signature of ``entry`` by entry.signer."""
    _require_crypto()
    if signature.get("algorithm") != "ed25519" or signature.get("key") != entry.get("signer"):
        return False
    try:
        key = parse_public_key(entry["signer"], "signer")
        key.verify(base64.b64decode(signature.get("value") or "", validate=True), canonical(entry))
    except (SegmentError, InvalidSignature, ValueError, TypeError):
        return False
    return True


# ---- row digests --------------------------------------------------------------------------------


class RowDigest:
    """Count and digest of rows, each row being one line of COPY text (with its newline).

    The digest is the sum, modulo 2**256, of the SHA-256 of each line read as a big-endian
    number: it does not depend on the order of the rows, and the digests of disjoint sets of
    rows add up to the digest of their union (a checkpoint's rows, later split between
    segments and the live table, still add up to the checkpoint's digest)."""

    def __init__(self):
        self.rows = 0
        self._total = 0
        self._partial = b""

    def add_row(self, line):
        """One complete line (a COPY row as the server sends it, newline included)."""
        self._total += int.from_bytes(hashlib.sha256(line).digest(), "big")
        self.rows += 1

    def add_rows(self, lines):
        """Complete lines, many at once (the loop runs in C: this is the archive's hot path)."""
        self._total += sum(map(int.from_bytes, map(_DIGEST_OF, map(hashlib.sha256, lines)), repeat("big")))
        self.rows += len(lines)

    def feed(self, data):
        """Arbitrary chunks of COPY text (rows may be split across chunks)."""
        self._partial = _lines(self._partial + bytes(data), self.add_row)

    def finish(self):
        if self._partial:
            raise SegmentError("row data ends in the middle of a row")
        return self

    @property
    def digest(self):
        return "%064x" % (self._total % DIGEST_MODULUS)


def _lines(data, each):
    """Call ``each(line)`` for every complete line (newline included); return the rest."""
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return data[start:]
        each(data[start : end + 1])
        start = end + 1


def add_digests(*digests):
    """The digest of the union of disjoint row sets, from their digests."""
    return "%064x" % (sum(int(d, 16) for d in digests) % DIGEST_MODULUS)


def subtract_digest(total, part):
    return "%064x" % ((int(total, 16) - int(part, 16)) % DIGEST_MODULUS)


# ---- payload ---------------------------------------------------------------------------------


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def qualified(schema, name):
    return "%s.%s" % (quote_ident(schema), quote_ident(name))


def copy_header(schema, name, columns):
    """The line that opens a section: a COPY statement psql can run."""
    return ("COPY %s (%s) FROM stdin;\n" % (qualified(schema, name), ", ".join(quote_ident(c) for c in columns))).encode("utf-8")


SECTION_END = b"\\.\n"


def payload_preamble(chain_name, seq, encoding):
    lines = [
        "-- lifeboat.backup table archive: chain %s, entry %d (docs/table-archive.md)" % (chain_name, seq),
        "-- Sections hold dependent tables first: load them in reverse order when they have foreign keys.",
        "SET client_encoding = '%s';" % encoding.replace("'", "''"),
    ]
    lines += ["SET %s = '%s';" % (name, value) for name, value in EXPORT_SETTINGS]
    return ("\n".join(lines) + "\n").encode("utf-8")


_COPY_LINE = re.compile(rb'^COPY ((?:"(?:[^"]|"")*")\.(?:"(?:[^"]|"")*")) \(')


class PayloadParser:
    """Recounts a payload's plaintext: for each COPY section, its table, rows and digest.
    ``sink(table, line)`` (optional) receives every data line of every section, and
    ``on_end(table)`` is called at the end of each section."""

    def __init__(self, sink=None, on_end=None):
        self.sections = []
        self._current = None
        self._pending = b""
        self._sink = sink
        self._on_end = on_end

    def feed(self, data):
        self._pending = _lines(self._pending + bytes(data), self._line)

    def _line(self, line):
        if self._current is None:
            match = _COPY_LINE.match(line)
            if match:
                self._current = {"table": _unquote_qualified(match.group(1).decode("utf-8")), "digest": RowDigest()}
            return
        if line == SECTION_END:
            digest = self._current["digest"]
            self.sections.append({"table": self._current["table"], "rows": digest.rows, "digest": digest.digest})
            if self._on_end is not None:
                self._on_end(self._current["table"])
            self._current = None
            return
        self._current["digest"].add_row(line)
        if self._sink is not None:
            self._sink(self._current["table"], line)

    def finish(self):
        if self._pending or self._current is not None:
            raise SegmentError("the payload ends inside a COPY section (truncated)")
        return self.sections


def _unquote_qualified(text):
    parts = re.findall(r'"((?:[^"]|"")*)"', text)
    return ".".join(p.replace('""', '"') for p in parts)


def table_label(schema, name):
    return "%s.%s" % (schema, name)


# ---- chain verification ---------------------------------------------------------------------------


class DirectoryStore:
    """A chain directory on the local file system (the standalone verifier's store)."""

    def __init__(self, path, label=None):
        self.path = path
        self.label = label or path

    def list(self):
        return sorted(n for n in os.listdir(self.path) if os.path.isfile(os.path.join(self.path, n)) and not n.startswith(".lifeboat-"))

    def read(self, name):
        with open(os.path.join(self.path, name), "rb") as handle:
            return handle.read()

    def digest(self, name):
        """(size, sha256 hex) of a file, or None when absent."""
        try:
            handle = open(os.path.join(self.path, name), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return None
        sha = hashlib.sha256()
        size = 0
        with handle:
            while True:
                chunk = handle.read(READ_BLOCK)
                if not chunk:
                    break
                sha.update(chunk)
                size += len(chunk)
        return size, sha.hexdigest()

    def local_path(self, name):
        return os.path.join(self.path, name)


class ChainCheck:
    """The walk over one chain in one store. ``trusted``: public keys ('ed25519:...') the
    auditor trusts, or None to trust the chain's own first entry (said in the report).
    ``level``: 'headers' (entries only), 'checksum' (also each payload's size and SHA-256),
    'full' (also decrypt, decompress and recount: ``open_plaintext(store, name, entry)``
    returns a readable plaintext stream)."""

    def __init__(self, store, name, trusted=None, level="checksum", open_plaintext=None):
        self.store = store
        self.name = name
        self.level = level
        self.open_plaintext = open_plaintext
        self.trusted = set(trusted or [])
        self.expired = {}
        self.trust_source = "given" if trusted else "archive"
        self.problems = []
        self.entries = {}  # seq -> (entry, file name, hash)
        self.rows = []

    def problem(self, kind, message, seq=None, name=None):
        self.problems.append({"kind": kind, "chain": self.name, "location": self.store.label, "seq": seq, "file": name, "message": message})

    def run(self):
        files = self.store.list()
        parsed = self._parse_all(files)
        chain_id = self._chain_id(parsed)
        self._walk(self._place(parsed, chain_id))
        self._check_files(files)
        return self.report(chain_id)

    def _parse_all(self, files):
        parsed = []
        for name in files:
            match = ENTRY_RE.match(name)
            if not match:
                continue
            try:
                entry, signature = decode(self.store.read(name), name)
            except SegmentError as exc:
                self.problem("entry_unreadable", str(exc), int(match.group(1)), name)
                continue
            if entry.get("format_version", 0) > FORMAT_VERSION or entry["kind"] not in KINDS:
                self.problem("unsupported_format", "%s: format version %s, kind %s" % (name, entry.get("format_version"), entry["kind"]), entry["seq"], name)
                continue
            parsed.append({"file": name, "file_seq": int(match.group(1)), "entry": entry, "signature": signature, "hash": entry_hash(entry)})
        return parsed

    def _chain_id(self, parsed):
        genesis = [p for p in parsed if p["entry"]["kind"] == "genesis" and p["entry"]["seq"] == 0]
        if genesis:
            return genesis[0]["entry"]["chain"].get("id")
        self.problem("genesis_missing", "the chain's first entry (00000000.json) is missing or unreadable", 0, entry_name(0))
        counts = {}
        for item in parsed:
            counts[item["entry"]["chain"].get("id")] = counts.get(item["entry"]["chain"].get("id"), 0) + 1
        return max(counts, key=counts.get) if counts else None

    def _place(self, parsed, chain_id):
        """Entries of this chain by their own sequence number; foreign, duplicate and
        misnamed files are named here."""
        placed = {}
        for item in parsed:
            entry = item["entry"]
            if entry["chain"].get("id") != chain_id:
                self.problem(
                    "foreign_entry",
                    "%s belongs to chain %s (%s), not to this chain (%s)" % (item["file"], entry["chain"].get("name"), entry["chain"].get("id"), chain_id),
                    item["file_seq"],
                    item["file"],
                )
                continue
            if item["file_seq"] != entry["seq"]:
                self.problem("out_of_order", "%s holds entry %d: entry files renamed or swapped" % (item["file"], entry["seq"]), item["file_seq"], item["file"])
            if entry["seq"] in placed:
                self.problem(
                    "duplicate_entry", "%s and %s both claim entry %d" % (placed[entry["seq"]]["file"], item["file"], entry["seq"]), entry["seq"], item["file"]
                )
                continue
            placed[entry["seq"]] = item
        return placed

    def _walk(self, placed):
        # Payloads an expiry entry says were removed on purpose (the entry itself is checked
        # like any other: an expiry entry that does not verify is named as a problem).
        self.expired = {
            e["seq"]: item["entry"]["seq"] for item in placed.values() if item["entry"]["kind"] == "expiry" for e in item["entry"].get("expired") or []
        }
        previous = None
        for seq in sorted(placed):
            item = placed[seq]
            self._check_signature(item)
            self._check_link(item, previous, placed)
            if item["entry"]["kind"] == "segment":
                self._check_range(item)
                self._check_payload(item, placed)
            self.entries[seq] = item
            previous = item

    def _check_signature(self, item):
        entry = item["entry"]
        if not signature_valid(entry, item["signature"]):
            item["signature_status"] = "invalid"
            self.problem("signature_invalid", "%s: the signature does not match the entry (altered after signing)" % item["file"], entry["seq"], item["file"])
            return
        if entry["kind"] == "genesis" and self.trust_source == "archive":
            self.trusted.add(entry["signer"])
        if entry["signer"] not in self.trusted:
            item["signature_status"] = "unknown_key"
            self.problem(
                "unknown_signing_key",
                "%s is signed with %s, which is not a trusted key%s"
                % (item["file"], entry["signer"], "" if self.trust_source == "given" else " of this chain"),
                entry["seq"],
                item["file"],
            )
            return
        item["signature_status"] = "valid"
        if entry["kind"] == "rotation" and entry.get("next_signer"):
            self.trusted.add(entry["next_signer"])

    def _check_link(self, item, previous, placed):
        entry = item["entry"]
        expected_seq = previous["entry"]["seq"] + 1 if previous else 0
        if entry["seq"] > expected_seq:
            missing = "%d" % expected_seq if entry["seq"] == expected_seq + 1 else "%d to %d" % (expected_seq, entry["seq"] - 1)
            if not (expected_seq == 0 and 0 not in placed):
                self.problem(
                    "segment_missing",
                    "entry %s is missing: entry %d follows %s" % (missing, entry["seq"], _after(previous)),
                    expected_seq,
                    entry_name(expected_seq),
                )
            return
        wanted = previous["hash"] if previous else None
        if entry.get("prev") != wanted:
            self.problem(
                "chain_broken",
                "%s links to %s, but the entry before it hashes to %s (an entry before it was replaced)"
                % (item["file"], _hash_text(entry.get("prev")), _hash_text(wanted)),
                entry["seq"],
                item["file"],
            )

    def _check_range(self, item):
        """Each segment starts where the segment before it ended (checked only where the
        entries are contiguous: a missing entry is already named)."""
        entry = item["entry"]
        before = self._last_segment()
        if before is None or not self._contiguous(before["entry"]["seq"], entry["seq"]):
            return
        after = (entry.get("range") or {}).get("after")
        wanted = before["entry"]["range"].get("through")
        if after != wanted:
            self.problem(
                "range_gap",
                "segment %d starts after key %s, but the segment before it ended at %s" % (entry["seq"], key_text(after), key_text(wanted)),
                entry["seq"],
                item["file"],
            )

    def _contiguous(self, first, last):
        return all(seq in self.entries for seq in range(first, last))

    def _last_segment(self):
        for seq in sorted(self.entries, reverse=True):
            if self.entries[seq]["entry"]["kind"] == "segment":
                return self.entries[seq]
        return None

    def _check_payload(self, item, placed):
        entry = item["entry"]
        name = (entry.get("payload") or {}).get("name")
        item["payload_status"] = "not checked"
        if self.level == "headers" or not name:
            return
        found = self.store.digest(name)
        if found is None:
            self._absent(item, name)
        elif self._intact(item, name, found, placed):
            item["payload_status"] = "intact"
            if self.level == "full":
                self._check_content(item, name)

    def _absent(self, item, name):
        seq = item["entry"]["seq"]
        if seq in self.expired:
            item["payload_status"] = "expired (entry %d)" % self.expired[seq]
            return
        item["payload_status"] = "missing"
        self.problem("payload_missing", "segment %d: its payload %s is missing" % (seq, name), seq, name)

    def _intact(self, item, name, found, placed):
        entry = item["entry"]
        payload = entry["payload"]
        size, sha = found
        if size == payload.get("size") and sha == payload.get("sha256"):
            return True
        item["payload_status"] = "altered"
        other = [s for s, p in placed.items() if s != entry["seq"] and (p["entry"].get("payload") or {}).get("sha256") == sha]
        hint = " - it is the payload signed by entry %d (payload files swapped)" % other[0] if other else ""
        self.problem(
            "payload_altered",
            "segment %d: %s differs from the payload signed (%d bytes, SHA-256 %s…; signed: %s bytes, %s…)%s"
            % (entry["seq"], name, size, sha[:12], payload.get("size"), (payload.get("sha256") or "")[:12], hint),
            entry["seq"],
            name,
        )
        return False

    def _check_content(self, item, name):
        entry = item["entry"]
        try:
            sections = recount(self.open_plaintext(self.store, name, entry))
        except (SegmentError, OSError) as exc:
            item["payload_status"] = "unreadable"
            self.problem("payload_unreadable", "segment %d: %s cannot be read: %s" % (entry["seq"], name, exc), entry["seq"], name)
            return
        signed = [(s["table"], s["rows"], s["digest"]) for s in entry.get("sections") or []]
        found = [(s["table"], s["rows"], s["digest"]) for s in sections]
        if signed != found:
            item["payload_status"] = "content differs"
            self.problem(
                "content_mismatch",
                "segment %d: the payload holds %s, the entry signed %s" % (entry["seq"], sections_text(found), sections_text(signed)),
                entry["seq"],
                name,
            )
            return
        item["payload_status"] = "rows recounted"

    def _check_files(self, files):
        known = {entry_name(s) for s in self.entries} | {IDENTITY_FILE}
        known |= {(i["entry"].get("payload") or {}).get("name") for i in self.entries.values()}
        flagged = {p["file"] for p in self.problems}
        for name in files:
            if name in known or name in flagged:
                continue
            if ENTRY_RE.match(name) or PAYLOAD_RE.match(name):
                self.problem("unexpected_file", "%s belongs to no entry of the chain (left by an interrupted run, or planted)" % name, None, name)

    def report(self, chain_id):
        return summarize_chain(self.name, chain_id, self.store.label, self.entries, self.problems, self.trusted, self.trust_source, self.level)


def recount(stream):
    """Sections of a plaintext payload stream (table, rows, digest)."""
    parser = PayloadParser()
    try:
        while True:
            chunk = stream.read(READ_BLOCK)
            if not chunk:
                break
            parser.feed(chunk)
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
    return parser.finish()


def _after(previous):
    return "entry %d" % previous["entry"]["seq"] if previous else "nothing"


def _hash_text(value):
    return (value[:16] + "…") if value else "nothing"


def sections_text(sections):
    return ", ".join("%s: %d rows (digest %s…)" % (t, r, (d or "")[:12]) for t, r, d in sections) or "no rows"


CHAIN_PROBLEMS = ("entry_unreadable", "foreign_entry", "duplicate_entry", "out_of_order", "genesis_missing", "segment_missing", "chain_broken", "range_gap")


def summarize_chain(name, chain_id, location, entries, problems, trusted, trust_source, level):
    """The structured report of one chain (what the text report is rendered from)."""
    items = [entries[s] for s in sorted(entries)]
    table = ((entries.get(0) or {}).get("entry") or {}).get("table") or {}
    segments = [_segment_summary(i) for i in items if i["entry"]["kind"] == "segment"]
    head = items[-1] if items else None
    report = {
        "chain": name,
        "id": chain_id,
        "location": location,
        "table": table.get("label"),
        "key": table.get("key"),
        "level": level,
        "entries": len(items),
        "segments": segments,
        "checkpoints": [_checkpoint_summary(i) for i in items if i["entry"]["kind"] == "checkpoint"],
        "expiries": [_expiry_summary(i) for i in items if i["entry"]["kind"] == "expiry"],
        "rows": sum(s["rows"] for s in segments),
        "child_rows": _child_rows(segments),
        "head": _head(head),
        "signers": sorted({i["entry"]["signer"] for i in items}),
        "trusted_keys": sorted(trusted),
        "trust": trust_source,
        "signatures_valid": _all_valid(items),
        "chain_valid": not any(p["kind"] in CHAIN_PROBLEMS for p in problems),
        "problems": problems,
    }
    report.update(_extent(segments))
    return report


def _head(item):
    return {"seq": item["entry"]["seq"], "hash": item["hash"], "kind": item["entry"]["kind"]} if item else None


def _all_valid(items):
    return bool(items) and all(i.get("signature_status") == "valid" for i in items)


def _extent(segments):
    """First and last archived keys, the end of the archived range, and the time span."""
    if not segments:
        return {"first_key": None, "last_key": None, "through": None, "time_range": None}
    return {
        "first_key": segments[0]["first_key"],
        "last_key": segments[-1]["last_key"],
        "through": segments[-1]["through"],
        "time_range": _span([s["time_range"] for s in segments]),
    }


def _segment_summary(item):
    entry = item["entry"]
    return {
        "seq": entry["seq"],
        "file": entry_name(entry["seq"]),
        "payload": (entry.get("payload") or {}).get("name"),
        "created": entry.get("created"),
        "after": entry["range"].get("after"),
        "through": entry["range"].get("through"),
        "first_key": entry.get("first_key"),
        "last_key": entry.get("last_key"),
        "rows": entry.get("rows", 0),
        "sections": entry.get("sections") or [],
        "time_range": entry.get("time_range"),
        "signer": entry["signer"],
        "signature": item.get("signature_status"),
        "payload_status": item.get("payload_status"),
        "hash": item["hash"],
    }


def _checkpoint_summary(item):
    entry = item["entry"]
    return {
        "seq": entry["seq"],
        "created": entry.get("created"),
        "after": entry["range"].get("after"),
        "through": entry["range"].get("through"),
        "first_key": entry.get("first_key"),
        "last_key": entry.get("last_key"),
        "rows": entry.get("rows", 0),
        "digest": entry.get("digest"),
        "columns": entry.get("columns"),
        "time_range": entry.get("time_range"),
        "signature": item.get("signature_status"),
    }


def _expiry_summary(item):
    entry = item["entry"]
    return {"seq": entry["seq"], "created": entry.get("created"), "rule": entry.get("rule"), "segments": [e["seq"] for e in entry.get("expired") or []]}


def _child_rows(segments):
    totals = {}
    for segment in segments:
        for section in segment["sections"]:
            if section.get("role") == "child":
                totals[section["table"]] = totals.get(section["table"], 0) + section["rows"]
    return totals


def _span(ranges):
    ranges = [r for r in ranges if r and r.get("from")]
    if not ranges:
        return None
    return {"from": min(r["from"] for r in ranges), "to": max(r["to"] for r in ranges)}


# ---- report text -----------------------------------------------------------------------------------


def key_text(key):
    """A key as the report prints it: 4,160 for one integer column; (4,160, 3) for several."""
    if key is None:
        return "the start"
    parts = [_number(k) for k in key]
    return parts[0] if len(parts) == 1 else "(%s)" % ", ".join(parts)


def _number(text):
    if text is None:
        return "NULL"
    if re.match(r"^-?\d+$", text):
        return "{:,}".format(int(text))
    return text


def time_text(value):
    """'2026-02-01 19:41:07+00' -> '2026-02-01 19:41'."""
    if not value:
        return "?"
    match = re.match(r"^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d)", value)
    return "%s %s" % match.groups() if match else value


def _span_text(span, word="ending"):
    if not span:
        return ""
    return ", %s %s to %s" % (word, time_text(span["from"]), time_text(span["to"]))


def render_chain(chain, segments=True):
    """Lines for one chain, in the words of the transaction manager's verifier."""
    lines = []
    trust = "trusted keys given" if chain["trust"] == "given" else "key of the chain's first entry (give public keys to authenticate it)"
    first, last = chain["first_key"], chain["last_key"]
    keys = ", keys %s to %s" % (key_text(first), key_text(last)) if chain["segments"] else ""
    lines.append(
        "Checked chain %s (table %s) in %s with %d segments, %s records%s%s. Signatures %s (%s), chain %s. Endpoint in chain is %s"
        % (
            chain["chain"],
            chain["table"] or "?",
            chain["location"],
            len(chain["segments"]),
            "{:,}".format(chain["rows"]),
            keys,
            _span_text(chain["time_range"], "from"),
            "valid" if chain["signatures_valid"] else "NOT valid",
            trust,
            "valid" if chain["chain_valid"] else "BROKEN",
            key_text(chain["through"]) if chain["segments"] else "none (nothing archived yet)",
        )
    )
    if segments:
        lines += ["  " + _segment_line(s) for s in chain["segments"]]
    for expiry in chain.get("expiries") or []:
        lines.append(
            "  Expiry %d (%s): payloads of segments %s removed on purpose (%s)"
            % (expiry["seq"], time_text(expiry["created"]), _seq_ranges(expiry["segments"]), expiry["rule"])
        )
    return lines


def _seq_ranges(seqs):
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts = []
    for seq in sorted(seqs):
        if parts and parts[-1][1] == seq - 1:
            parts[-1][1] = seq
        else:
            parts.append([seq, seq])
    return ", ".join("%d" % a if a == b else "%d-%d" % (a, b) for a, b in parts)


def _segment_line(segment):
    children = "".join(" + %s in %s" % ("{:,}".format(s["rows"]), s["table"]) for s in segment["sections"] if s.get("role") == "child" and s["rows"])
    return "Segment %d: startpoint %s, endpoint %s, %s records%s%s, signature %s, payload %s" % (
        segment["seq"],
        key_text(segment["first_key"]),
        key_text(segment["last_key"]),
        "{:,}".format(segment["rows"]),
        children,
        _span_text(segment["time_range"], "from"),
        segment["signature"] or "?",
        segment["payload_status"] or "?",
    )


def render_problems(problems):
    return ["PROBLEM [%s] %s%s: %s" % (p["kind"], p["chain"] or "", " in %s" % p["location"] if p.get("location") else "", p["message"]) for p in problems]


def verdict_line(problems):
    if not problems:
        return "Result: valid - no problem found"
    kinds = sorted({p["kind"] for p in problems})
    return "Result: NOT VALID - %d problem%s (%s)" % (len(problems), "" if len(problems) == 1 else "s", ", ".join(kinds))


# ---- locating chains -----------------------------------------------------------------------------


def is_chain_dir(names):
    return entry_name(0) in names or any(ENTRY_RE.match(n) for n in names)


def find_chains(path):
    """(chain name, chain directory) under ``path``: the path itself when it is a chain
    directory, else each of its subdirectories that is one."""
    names = os.listdir(path)
    if is_chain_dir(names):
        return [(os.path.basename(os.path.normpath(path)), path)]
    found = []
    for name in sorted(names):
        full = os.path.join(path, name)
        if os.path.isdir(full) and not name.startswith(".") and is_chain_dir(os.listdir(full)):
            found.append((name, full))
    return found


# ---- standalone verifier -----------------------------------------------------------------------------


def _tool_plaintext(identity_file):
    """``open_plaintext`` for the standalone verifier: the stock age and zstd/gzip programs."""

    def opener(store, name, entry):
        path = store.local_path(name)
        payload = entry.get("payload") or {}
        commands = []
        if payload.get("encryption") == "age":
            commands.append(["age", "-d", "-i", identity_file, path])
        decompress = {"zstd": ["zstd", "-d", "-q", "-c"], "gzip": ["gzip", "-d", "-c"]}.get(payload.get("compression"))
        return _pipeline(commands, decompress, path)

    return opener


class _Pipeline:
    def __init__(self, procs):
        self.procs = procs
        self.stdout = procs[-1].stdout

    def read(self, size=-1):
        return self.stdout.read(size)

    def close(self):
        self.stdout.close()
        failed = []
        for proc in self.procs:
            if proc.wait() != 0:
                failed.append("%s: %s" % (proc.args[0], proc.stderr.read().decode("utf-8", "replace").strip() or "exit %d" % proc.returncode))
            proc.stderr.close()
        if failed:
            raise SegmentError("; ".join(failed))


def _pipeline(commands, decompress, path):
    procs = []
    try:
        source = None if commands else open(path, "rb")  # noqa: SIM115 - handed to the child
        for argv in commands + ([decompress] if decompress else []):
            stdin = procs[-1].stdout if procs else source
            procs.append(popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        if not procs:
            return source
        if source is not None:
            source.close()
        return _Pipeline(procs)
    except OSError as exc:
        raise SegmentError("cannot run %s: %s (install age and zstd)" % (exc.filename or "a tool", exc.strerror)) from None


def verify_paths(paths, public_keys=None, identity_file=None, chains=None):
    """Verify every chain under ``paths``; the report the CLI prints."""
    trusted = [normalise_public_key(k) for k in public_keys or []] or None
    level = "full" if identity_file else "checksum"
    reports = []
    for path in paths:
        for name, directory in find_chains(path):
            if chains and name not in chains:
                continue
            store = DirectoryStore(directory, label=directory)
            reports.append(ChainCheck(store, name, trusted, level, _tool_plaintext(identity_file) if identity_file else None).run())
    problems = [p for r in reports for p in r["problems"]]
    return {"chains": reports, "problems": problems, "valid": not problems and bool(reports), "level": level}


def render_report(report, title="Lifeboat table archive verification", extra_lines=()):
    lines = [title, "Checking %d chain%s" % (len(report["chains"]), "" if len(report["chains"]) == 1 else "s")]
    for chain in report["chains"]:
        lines += render_chain(chain)
    lines += list(extra_lines)
    lines += render_problems(report["problems"])
    lines.append(verdict_line(report["problems"]))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description="Verify lifeboat.backup table archives offline (docs/table-archive.md).")
    parser.add_argument("paths", nargs="+", help="archive location directories, or chain directories")
    parser.add_argument("--public-key", action="append", default=[], help="a trusted signing key: ed25519:<base64>, a PEM file's content or @file")
    parser.add_argument("--identity", help="age identity file: also decrypt each payload (age, zstd) and recount its rows")
    parser.add_argument("--chain", action="append", help="only this chain (directory name); repeatable")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        keys = [_read_arg(k) for k in args.public_key]
        report = verify_paths(args.paths, keys, args.identity, args.chain)
    except (SegmentError, OSError) as exc:
        sys.stderr.write("error: %s\n" % exc)
        return 2
    if args.json:
        sys.stdout.write(json.dumps(report, indent=1, sort_keys=True) + "\n")
    else:
        sys.stdout.write("\n".join(render_report(report)) + "\n")
    if not report["chains"]:
        sys.stderr.write("error: no table-archive chain found under %s\n" % ", ".join(args.paths))
        return 2
    return 0 if report["valid"] else 1


def _read_arg(value):
    if value.startswith("@"):
        with open(value[1:]) as handle:
            return handle.read()
    return value


if __name__ == "__main__":
    raise SystemExit(main())
