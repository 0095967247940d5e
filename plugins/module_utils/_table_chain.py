# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Table-archive chains in their archive locations (docs/table-archive.md).

An archive location is a storage target (``_storage.open_target``); each chain is a
directory ``<chain>/`` in it holding the entry files (``NNNNNNNN.json``), the payloads of
segments (``NNNNNNNN.sql.zst.age``) and, for passphrase-protected chains, ``identity.age``.
Every location a table names holds the whole chain: an entry counts only once it is in
all of them, written, synced and read back (``Backend.put`` checks what landed).

The database records each chain's head (``<state_schema>.table_archive_chains``), updated
in the same transaction that deletes the archived rows. That record decides what an
interrupted run left behind: an entry one past the recorded head was written by a run that
did not commit, and is removed; entries the record knows but a location lacks are copied
from a location that has them.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tempfile
import time
import uuid

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image, _session, _storage
from ansible_collections.lifeboat.backup.plugins.module_utils import _table_segment as fmt
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError

# Options shared by the table-archive modules, documented in plugins/doc_fragments/_table_archive.py.
# The archive locations are the ``targets`` option (storage targets: _storage.TARGETS_SPEC).
SIGNING_SPEC = dict(
    signing_key=dict(type="str", no_log=True),
    signing_key_file=dict(type="path", no_log=False),
    previous_signing_key=dict(type="str", no_log=True),
    previous_signing_key_file=dict(type="path", no_log=False),
)
ENCRYPTION_SPEC = dict(
    encryption=dict(type="str", choices=["age", "none"], default="age"),
    recipients=dict(type="list", elements="str", default=[]),
    passphrase=dict(type="str", no_log=True),
    work_factor=dict(type="int", default=_age.DEFAULT_WORK_FACTOR),
    compression=dict(type="str", choices=["auto", "zstd", "gzip", "none"], default="auto"),
)
STATE_SPEC = dict(state_schema=dict(type="str", default="lifeboat"))


class ArchiveError(LifeboatError):
    """A chain cannot be read, extended or repaired; the message says what and what to do."""


def utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---- keys ----------------------------------------------------------------------------------


def _key_text(params, option):
    text = params.get(option)
    path = params.get(option + "_file")
    if text and path:
        raise OptionError(option, "give %s or %s_file, not both" % (option, option))
    if path:
        try:
            with open(path) as handle:
                return handle.read()
        except OSError as exc:
            raise OptionError(option + "_file", "cannot read %s_file %s: %s" % (option, path, exc.strerror)) from None
    return text


def signing_keys(params, required=True):
    """(signing key, previous signing key or None) from the SIGNING_SPEC options."""
    text = _key_text(params, "signing_key")
    if not text:
        if required:
            raise OptionError("signing_key", "signing_key (or signing_key_file) is required: the Ed25519 key that signs the chain's entries")
        return None, None
    previous = _key_text(params, "previous_signing_key")
    return _private_key(text, "signing_key"), _private_key(previous, "previous_signing_key") if previous else None


def _private_key(text, option):
    try:
        return fmt.load_private_key(text, option)
    except fmt.SegmentError as exc:
        raise OptionError(option, exc.msg) from None


def check_encryption(params):
    """The encryption options can work (before anything is written)."""
    try:
        _session.validate_encryption(params["encryption"], params.get("passphrase"), params.get("recipients"))
    except _session.SessionError as exc:
        raise OptionError("encryption", exc.msg) from None
    if not 10 <= params["work_factor"] <= _age.MAX_WORK_FACTOR:
        raise OptionError("work_factor", "work_factor must be between 10 and %d; 18 is age's default" % _age.MAX_WORK_FACTOR)


# ---- locations --------------------------------------------------------------------------------


class Location:
    """One open archive location: a name, a storage backend, and chain-relative helpers."""

    def __init__(self, name, backend):
        self.name = name
        self.backend = backend

    @property
    def label(self):
        return "%s (%s)" % (self.name, self.backend.location) if self.name != self.backend.location else self.name

    def files(self, chain):
        return {posixpath.basename(e["name"]): e for e in self.backend.list(chain + "/")}

    def read(self, chain, name):
        sink = io.BytesIO()
        self.backend.get(posixpath.join(chain, name), sink)
        return sink.getvalue()

    def put_bytes(self, chain, name, data):
        return self.backend.put(posixpath.join(chain, name), io.BytesIO(data), size=len(data))

    def put_file(self, chain, name, path):
        return self.backend.put(posixpath.join(chain, name), path)

    def delete(self, chain, name):
        return self.backend.delete(posixpath.join(chain, name))

    def digest(self, chain, name):
        found = self.backend.stat(posixpath.join(chain, name))
        if found is None:
            return None
        got = self.backend.get(posixpath.join(chain, name), _Discard())
        return got["size"], got["sha256"]

    def download(self, chain, name, directory):
        """A private local copy of a file (payloads are encrypted: no plaintext lands)."""
        fd, path = tempfile.mkstemp(prefix="lifeboat-segment-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                self.backend.get(posixpath.join(chain, name), handle)
        except BaseException:
            os.unlink(path)
            raise
        return path

    def close(self):
        self.backend.close()


class _Discard:
    def write(self, data):
        return len(data)


def open_locations(params_list, option="targets"):
    """Open every archive location (the ``targets`` option); names are the targets' names,
    else their locations (URLs)."""
    if not params_list:
        raise OptionError(option, "%s must name at least one archive location (a storage target, e.g. {type: local, path: /srv/archive})" % option)
    opened = []
    try:
        for index, params in enumerate(params_list):
            backend = _storage.open_target(params, "%s[%d]" % (option, index))
            name = params.get("name") or backend.location
            if any(loc.name == name for loc in opened):
                raise OptionError("%s[%d].name" % (option, index), "two archive locations in %s are both called %s: give each a distinct name" % (option, name))
            opened.append(Location(name, backend))
    except BaseException:
        close_locations(opened)
        raise
    return opened


def close_locations(locations):
    for location in locations:
        try:
            location.close()
        except Exception:  # noqa: BLE001 - closing must not hide the real outcome
            pass


class LocationStore:
    """One chain in one location, as ``_table_segment.ChainCheck`` reads it. Full checks
    download each payload (encrypted) to ``spool_dir`` and decrypt it there in memory."""

    def __init__(self, location, chain, spool_dir=None):
        self.location = location
        self.chain = chain
        self.label = location.label
        self.spool_dir = spool_dir

    def list(self):
        return sorted(self.location.files(self.chain))

    def read(self, name):
        return self.location.read(self.chain, name)

    def digest(self, name):
        return self.location.digest(self.chain, name)


# ---- one chain across its locations ------------------------------------------------------------


class Chain:
    """A chain's entries in all of its locations, and the operations that keep them equal."""

    def __init__(self, name, locations):
        self.name = name
        self.locations = locations
        self.head = None  # {"seq", "hash", "entry"} once loaded
        self.genesis = None
        self.notes = []

    # -- reading --

    def listing(self):
        """{location name: {file name: entry}} for every location."""
        return {loc.name: loc.files(self.name) for loc in self.locations}

    def read_entry(self, location, seq):
        data = location.read(self.name, fmt.entry_name(seq))
        entry, signature = fmt.decode(data, "%s/%s in %s" % (self.name, fmt.entry_name(seq), location.label))
        if not fmt.signature_valid(entry, signature):
            raise ArchiveError(
                "%s/%s in %s: the signature does not match the entry: the archive was altered. Run table_archive_verify"
                % (self.name, fmt.entry_name(seq), location.label)
            )
        return entry

    def load(self, recorded):
        """Read genesis and head from the first location that has the recorded head."""
        for location in self.locations:
            if fmt.entry_name(recorded["seq"]) in location.files(self.name):
                self.genesis = self.read_entry(location, 0)
                head = self.read_entry(location, recorded["seq"]) if recorded["seq"] else self.genesis
                if fmt.entry_hash(head) != recorded["entry_hash"]:
                    raise ArchiveError(
                        "chain %s: entry %d in %s is not the one the database recorded (hash %s…, recorded %s…): the archive was altered or "
                        "replaced. Run table_archive_verify before archiving more"
                        % (self.name, recorded["seq"], location.label, fmt.entry_hash(head)[:12], recorded["entry_hash"][:12])
                    )
                self.head = {"seq": recorded["seq"], "hash": recorded["entry_hash"], "entry": head}
                return self
        raise ArchiveError("chain %s: no archive location holds entry %d, which the database records as its head" % (self.name, recorded["seq"]))

    def entries(self, location=None):
        """Every entry from genesis to the head, signatures checked and linked to the head the
        database recorded (so nothing here acts on an entry someone slipped in)."""
        location = location or self.locations[0]
        found = [self.read_entry(location, seq) for seq in range(self.head["seq"] + 1)]
        expected = self.head["hash"]
        for entry in reversed(found):
            if fmt.entry_hash(entry) != expected:
                raise ArchiveError(
                    "chain %s: entry %d in %s does not link to the recorded head: run table_archive_verify" % (self.name, entry["seq"], location.label)
                )
            expected = entry.get("prev")
        return found

    def remove_payloads(self, names):
        """Remove payload files from every location (expired on purpose); returns what was removed."""
        removed = []
        for location in self.locations:
            for name in names:
                if location.delete(self.name, name):
                    removed.append({"action": "expired", "location": location.name, "file": name})
        return removed

    def last_segment(self, location=None):
        """The newest segment entry (walking back from the head), or None."""
        location = location or self.locations[0]
        seq = self.head["seq"]
        entry = self.head["entry"]
        while entry["kind"] != "segment" and seq > 0:
            seq -= 1
            entry = self.read_entry(location, seq)
        return entry if entry["kind"] == "segment" else None

    # -- writing --

    def publish(self, seq, document, payload_path=None, payload_name=None):
        """Put an entry (and its payload first) into every location. Undone everywhere when
        any location fails, so that no location keeps an entry the others lack."""
        written = []
        try:
            for location in self.locations:
                if payload_path:
                    location.put_file(self.name, payload_name, payload_path)
                    written.append((location, payload_name))
                location.put_bytes(self.name, fmt.entry_name(seq), fmt.encode(document))
                written.append((location, fmt.entry_name(seq)))
        except LifeboatError as exc:
            self._remove(written)
            raise ArchiveError(
                "chain %s: writing entry %d to %s failed (%s); it was removed from every location again" % (self.name, seq, location.label, exc.msg)
            ) from None
        return [loc.name for loc in self.locations]

    def unpublish(self, seq, payload_name=None):
        """Remove an entry that was written but never committed."""
        removed = []
        for location in self.locations:
            for name in (fmt.entry_name(seq), payload_name):
                if name and location.delete(self.name, name):
                    removed.append("%s/%s in %s" % (self.name, name, location.name))
        return removed

    def _remove(self, written):
        for location, name in reversed(written):
            try:
                location.delete(self.name, name)
            except LifeboatError as exc:
                self.notes.append("could not remove %s/%s from %s after a failed write: %s" % (self.name, name, location.label, exc.msg))

    def put_identity(self, blob):
        for location in self.locations:
            if fmt.IDENTITY_FILE not in location.files(self.name):
                location.put_bytes(self.name, fmt.IDENTITY_FILE, blob)

    # -- repair --

    def reconcile(self, recorded):
        """Bring every location to the recorded head: remove an uncommitted entry one past
        it, copy entries a location lacks from one that has them. Returns what was done."""
        actions = []
        listing = self.listing()
        if recorded is None:
            return self._reconcile_unrecorded(listing)
        for location in self.locations:
            files = listing[location.name]
            seqs = sorted(int(m.group(1)) for m in (fmt.ENTRY_RE.match(n) for n in files) if m)
            top = seqs[-1] if seqs else -1
            if top > recorded["seq"] + 1:
                raise ArchiveError(
                    "chain %s: %s holds entries up to %d but the database records %d as the head: the database may have been restored from an "
                    "older backup. Nothing was changed; compare with table_archive_verify and see docs/table-archive.md, 'Recovery'"
                    % (self.name, location.label, top, recorded["seq"])
                )
            if top == recorded["seq"] + 1:
                actions += self._undo(location, top)
            actions += self._remove_stray_payloads(location, files, recorded["seq"])
        for location in self.locations:
            actions += self._fill(location, recorded["seq"])
        return actions

    def _reconcile_unrecorded(self, listing):
        actions = []
        for location in self.locations:
            files = listing[location.name]
            entries = [n for n in files if fmt.ENTRY_RE.match(n)]
            if not entries:
                continue
            if entries != [fmt.entry_name(0)]:
                raise ArchiveError(
                    "chain %s: %s holds %d entries but the database has no record of the chain (dropped state table, or a database restored "
                    "from before the chain began?). Nothing was changed: see docs/table-archive.md, 'Recovery'" % (self.name, location.label, len(entries))
                )
            # A chain whose creation was interrupted before the database recorded it.
            for name in (fmt.entry_name(0), fmt.IDENTITY_FILE):
                if name in files and location.delete(self.name, name):
                    actions.append({"action": "undone", "seq": 0, "location": location.name, "file": name})
        return actions

    def _undo(self, location, seq):
        try:
            entry = self.read_entry(location, seq)
            payload = (entry.get("payload") or {}).get("name")
        except (LifeboatError, ValueError):
            payload = None
        removed = []
        for name in (payload, fmt.entry_name(seq)):
            if name and location.delete(self.name, name):
                removed.append({"action": "undone", "seq": seq, "location": location.name, "file": name})
        return removed

    def _remove_stray_payloads(self, location, files, head_seq):
        """Payloads past the head whose entry was never written (killed between the two puts)."""
        removed = []
        current = location.files(self.name)
        for name in files:
            match = fmt.PAYLOAD_RE.match(name)
            seq = int(match.group(1)) if match else -1
            if seq > head_seq and fmt.entry_name(seq) not in current and location.delete(self.name, name):
                removed.append({"action": "undone", "seq": seq, "location": location.name, "file": name})
        return removed

    def _fill(self, target, head_seq):
        files = target.files(self.name)
        missing = [s for s in range(head_seq + 1) if fmt.entry_name(s) not in files]
        if not missing:
            return []
        source = next((loc for loc in self.locations if loc is not target and fmt.entry_name(head_seq) in loc.files(self.name)), None)
        if source is None:
            raise ArchiveError(
                "chain %s: %s lacks entries %s and no other location has them: restore the location from a copy, then run again"
                % (self.name, target.label, _seq_list(missing))
            )
        actions = []
        with tempfile.TemporaryDirectory(prefix="lifeboat-chain-") as scratch:
            if fmt.IDENTITY_FILE in source.files(self.name) and fmt.IDENTITY_FILE not in files:
                target.put_bytes(self.name, fmt.IDENTITY_FILE, source.read(self.name, fmt.IDENTITY_FILE))
            for seq in missing:
                actions.append(self._copy_entry(source, target, seq, scratch))
        return actions

    def _copy_entry(self, source, target, seq, scratch):
        data = source.read(self.name, fmt.entry_name(seq))
        entry, signature = fmt.decode(data, fmt.entry_name(seq))
        if not fmt.signature_valid(entry, signature):
            raise ArchiveError("chain %s: entry %d in %s has an invalid signature; it was not copied to %s" % (self.name, seq, source.label, target.label))
        payload = entry.get("payload") or {}
        if payload.get("name") and payload["name"] not in target.files(self.name):
            path = source.download(self.name, payload["name"], scratch)
            try:
                got = target.put_file(self.name, payload["name"], path)
            finally:
                os.unlink(path)
            if got["sha256"] != payload.get("sha256"):
                target.delete(self.name, payload["name"])
                raise ArchiveError("chain %s: the payload of entry %d in %s differs from the one signed; it was not copied" % (self.name, seq, source.label))
        target.put_bytes(self.name, fmt.entry_name(seq), data)
        return {"action": "copied", "seq": seq, "location": target.name, "from": source.name}


def _seq_list(seqs):
    return ", ".join(str(s) for s in seqs[:10]) + (" ..." if len(seqs) > 10 else "")


def new_chain_id():
    return uuid.uuid4().hex


# ---- encryption of payloads ----------------------------------------------------------------------


def payload_recipients(params, chain, spool_dir=None):
    """(recipients, identity record or None, identity blob to publish or None) for the
    payloads of ``chain``. A passphrase protects one X25519 identity per chain, kept as
    identity.age beside the entries (one scrypt per chain, not per segment); its recipient
    and SHA-256 are recorded in every segment, and checked against the passphrase."""
    check_encryption(params)
    if params["encryption"] == "none":
        return [], None, None
    recipients = list(params.get("recipients") or [])
    if not params.get("passphrase"):
        return recipients, None, None
    existing = _existing_identity(chain)
    if existing:
        record, blob = existing
        _check_passphrase(chain, blob, params["passphrase"], record)
        return [record["recipient"]] + recipients, record, None
    member_recipients, blob = _session.encryption_plan("age", params["passphrase"], [], params["work_factor"])
    record = {"name": fmt.IDENTITY_FILE, "recipient": member_recipients[0], "sha256": _sha256(blob)}
    return [record["recipient"]] + recipients, record, blob


def _existing_identity(chain):
    for location in chain.locations:
        if fmt.IDENTITY_FILE in location.files(chain.name):
            blob = location.read(chain.name, fmt.IDENTITY_FILE)
            return {"name": fmt.IDENTITY_FILE, "sha256": _sha256(blob)}, blob
    return None


def _check_passphrase(chain, blob, passphrase, record):
    try:
        text = _age.AgeReader(io.BytesIO(blob), passphrase=passphrase).read().decode("ascii")
        identity = _age.parse_identities(text)[0]
    except _age.AgeError as exc:
        raise ArchiveError(
            "chain %s: the passphrase does not open the chain's identity.age (%s): use the passphrase the chain was started with" % (chain.name, exc.msg)
        ) from None
    record["recipient"] = _age.recipient_of(identity)


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def decryption_identities(params, chain_name, location):
    """X25519 identities able to read a chain's payloads: the DECRYPTION_SPEC options; a
    passphrase unlocks the chain's identity.age."""
    keys = _image.load_identities(identity=params.get("identity"), identity_file=params.get("identity_file"))
    if params.get("passphrase") and fmt.IDENTITY_FILE in location.files(chain_name):
        blob = location.read(chain_name, fmt.IDENTITY_FILE)
        try:
            keys += _age.parse_identities(_age.AgeReader(io.BytesIO(blob), passphrase=params["passphrase"]).read().decode("ascii"))
        except _age.AgeError as exc:
            raise ArchiveError("chain %s: the passphrase does not open identity.age in %s: %s" % (chain_name, location.label, exc.msg)) from None
    return keys


class PayloadReader:
    """Plaintext of a payload file: age-decrypted, decompressed, read as a stream."""

    def __init__(self, path, payload, identities):
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        source = self._file
        if payload.get("encryption") == "age":
            if not identities:
                self._file.close()
                raise ArchiveError("the payload is encrypted: give passphrase, identity or identity_file")
            source = _age.AgeReader(self._file, identities=identities)
        self._source = source
        self._decompressor = _image._Decompressor(payload.get("compression") or "none")
        self._eof = False

    def read(self, size=-1):
        while not self._eof:
            chunk = self._source.read(fmt.READ_BLOCK)
            if not chunk:
                self._eof = True
                self._decompressor.finish()
                return b""
            out = self._decompressor.decompress(chunk)
            if out:
                return out
        return b""

    def close(self):
        self._file.close()
