# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Exporting a break-the-glass secrets bundle: decide, encrypt, write, record.

State of one bundle name lives in ``<state_dir>/<name>/`` (mode 0700): ``state.json`` (the
last export, keyed digests, the custody's public part), ``digest.key`` (the HMAC key of
the digests), ``custody/<id>/`` (the officers' encrypted shares, copied beside every
bundle) and ``audit.jsonl`` (one line per run: exported, unchanged, failed). No value is
ever written there: digests are HMAC-SHA256 under a key that never leaves the node, so a
digest in an audit trail or a log cannot be used to guess a weak password.

Custody: a custody key (an age X25519 identity) is made once, split M of N with
``_shamir`` (ssss-compatible), each share encrypted to its officer's age key (or written
for hand-over where an officer has none), and then forgotten: the node keeps only its
public recipient. Every later bundle is encrypted to it, so officers' shares stay valid
until the custody changes (officers, threshold, or ``rotate``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _retention, _secrets, _secrets_sources, _secrets_store, _shamir
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError

MIN_PASSPHRASE = 8
MAX_OFFICERS = 99
STAMP = "%Y%m%dT%H%M%S"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,63}$")


class ExportError(LifeboatError):
    """The export could not be completed; nothing incomplete is left under a final name."""


def utc_iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


def write_file_atomic(path, data, mode=0o600):
    """Write ``data`` under a temporary name, fsync, rename: ``path`` is whole or absent."""
    tmp = "%s.partial.%d" % (path, os.getpid())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- state ------------------------------------------------------------------------------


class State:
    """The node-side record of one bundle name; see the module docstring."""

    def __init__(self, state_dir, name):
        self.dir = os.path.join(state_dir, name)
        self.path = os.path.join(self.dir, "state.json")
        self.audit_path = os.path.join(self.dir, "audit.jsonl")
        self.data = {}
        self._lock = None

    def ensure(self):
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise OptionError("state_dir", "cannot create the state directory %s: %s" % (self.dir, exc.strerror)) from None
        os.chmod(self.dir, 0o700)

    def load(self):
        try:
            with open(self.path) as handle:
                self.data = json.load(handle)
        except FileNotFoundError:
            self.data = {}
        except ValueError:
            raise ExportError("the state file %s is damaged (not JSON); move it away to start afresh (the next run exports again)" % self.path) from None
        return self.data

    def save(self):
        write_file_atomic(self.path, (json.dumps(self.data, indent=2, sort_keys=True) + "\n").encode("utf-8"))

    def audit(self, record):
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def lock(self, timeout):
        """Take the bundle's lock, waiting up to ``timeout`` seconds for another export."""
        fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.time() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock = fd
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.time() >= deadline:
                    os.close(fd)
                    raise ExportError("another export of this bundle holds %s/lock; try again when it has finished" % self.dir) from None
                time.sleep(0.2)

    def unlock(self):
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def digest_key(self):
        """The HMAC key of this bundle's digests, made on first use (0600, never leaves the node)."""
        path = os.path.join(self.dir, "digest.key")
        try:
            with open(path, "rb") as handle:
                key = handle.read()
            if len(key) == 32:
                return key
        except FileNotFoundError:
            pass
        key = secrets.token_bytes(32)
        write_file_atomic(path, key)
        return key


def keyed_digest(key, value):
    return "hmac-sha256:" + hmac.new(key, _secrets.canonical(value), hashlib.sha256).hexdigest()


# ---- custody ----------------------------------------------------------------------------


def custody_wanted(custody):
    """The part of the custody options that, when changed, needs a new custody key."""
    if not custody:
        return None
    officers = [{"name": o["name"], "recipient": (o.get("recipient") or "").strip() or None, "share_file": o.get("share_file")} for o in custody["officers"]]
    return {"threshold": custody["threshold"], "officers": officers}


def _write_plain_share(path, line):
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise OptionError("custody.officers.share_file", "the directory of share_file %s does not exist" % path)
    # The line alone, so that the file can be fed to ssss-combine as it is.
    write_file_atomic(path, ("%s\n" % line).encode("ascii"))


def make_custody(state, name, wanted):
    """A new custody key split among the officers; returns the custody record (public only)."""
    identity, recipient = _age.generate_identity()
    custody_id = secrets.token_hex(4)
    officers = wanted["officers"]
    token = _secrets.custody_token(name, custody_id, wanted["threshold"], len(officers))
    lines = _shamir.split(identity.encode("ascii"), wanted["threshold"], len(officers), token=token)
    # The split is checked before the key is forgotten: the first M shares give it back.
    if _shamir.combine(lines[: wanted["threshold"]]) != identity.encode("ascii"):
        raise ExportError("internal error: the custody shares do not combine into the custody key; nothing was written")
    parent = os.path.join(state.dir, "custody")
    os.makedirs(parent, mode=0o700, exist_ok=True)
    directory = os.path.join(parent, custody_id)
    os.mkdir(directory, 0o700)
    shares = []
    for index, (officer, line) in enumerate(zip(officers, lines), 1):
        share = {"index": index, "officer": officer["name"], "recipient": officer["recipient"], "file": None, "plain_file": None}
        if officer["recipient"]:
            share["file"] = "share-%d-%s.age" % (index, _secrets.safe_part(officer["name"]))
            blob = _age.encrypt_bytes((line + "\n").encode("ascii"), recipients=[officer["recipient"]])
            write_file_atomic(os.path.join(directory, share["file"]), blob)
        else:
            _write_plain_share(officer["share_file"], line)
            share["plain_file"] = officer["share_file"]
        shares.append(share)
    del identity, lines
    return {
        "id": custody_id,
        "token": token,
        "recipient": recipient,
        "threshold": wanted["threshold"],
        "count": len(officers),
        "created": utc_iso(time.time()),
        "wanted": wanted,
        "shares": shares,
    }


def ensure_custody(state, name, custody_options, check_mode):
    """(custody record or None, rotated?) for this run."""
    wanted = custody_wanted(custody_options)
    current = state.data.get("custody")
    if wanted is None:
        return None, False
    if current and current.get("wanted") == wanted and not custody_options.get("rotate"):
        return current, False
    if check_mode:
        return {"id": "(new)", "threshold": wanted["threshold"], "count": len(wanted["officers"]), "wanted": wanted, "shares": []}, True
    return make_custody(state, name, wanted), True


# ---- the decision -----------------------------------------------------------------------


def unlock_config(request, custody, key):
    """What the bundle is encrypted to; a change of any of it needs a new bundle."""
    return {
        "passphrase": keyed_digest(key, request["passphrase"]) if request["passphrase"] else None,
        "recipients": sorted(request["recipients"]),
        "custody": custody["id"] if custody else None,
        "work_factor": request["work_factor"] if request["passphrase"] else None,
    }


def decide(state, content, unlock, request, now, missing):
    """(export?, reason) - the reasons are the ones the module documents. ``missing``:
    {location: [files of the last set it lacks]}."""
    last = state.data.get("last_export")
    if request["force"]:
        return True, "forced"
    if not last:
        return True, "first export"
    if last.get("content_digest") != content:
        return True, "content changed"
    if last.get("unlock_digest") != unlock:
        return True, "encryption changed"
    lacking = [location for location, names in missing.items() if names]
    if lacking:
        return True, "the last bundle set is missing from %s" % ", ".join(lacking)
    if request["max_age"] and now - last.get("time", 0) >= request["max_age"]:
        return True, "older than max_age"
    return False, "unchanged"


# ---- writing ----------------------------------------------------------------------------


def build_document(request, collected, export_id, now):
    entries = [entry for _summary, source_entries in collected for entry in source_entries]
    return {
        "format": _secrets.FORMAT,
        "schema_version": _secrets.SCHEMA_VERSION,
        "name": request["name"],
        "export_id": export_id,
        "created": utc_iso(now),
        "node": request["node"],
        "sources": [summary for summary, _entries in collected],
        "entries": entries,
        "entry_count": len(entries),
        "content_sha256": _secrets.content_sha256(entries),
    }


def encrypt_set(request, doc, custody, stem):
    """{file name: bytes} of the set but its index, and the export's passphrase identity (or None)."""
    names = _secrets.set_names(stem)
    files = {}
    recipients = list(request["recipients"])
    identity = None
    if custody:
        recipients.insert(0, custody["recipient"])
    if request["passphrase"]:
        identity, recipient = _age.generate_identity()
        recipients.insert(0, recipient)
        text = "# lifeboat.backup secrets bundle %s: unlock with the master passphrase\n%s\n" % (stem, identity)
        files[names["key"]] = _age.encrypt_bytes(text.encode("ascii"), passphrase=request["passphrase"], work_factor=request["work_factor"])
    payload = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    files[names["bundle"]] = _age.encrypt_bytes(payload, recipients=recipients)
    return files, identity


def _custody_index(request, custody, stem):
    if not custody:
        return None, {}
    shares, copies = [], {}
    source_dir = os.path.join(request["state_dir"], request["name"], "custody", custody["id"])
    for share in custody["shares"]:
        entry = {"index": share["index"], "officer": share["officer"], "recipient": share["recipient"], "file": None}
        if share["file"]:
            entry["file"] = _secrets.share_file_name(stem, share["index"], share["officer"])
            try:
                with open(os.path.join(source_dir, share["file"]), "rb") as handle:
                    copies[entry["file"]] = handle.read()
            except OSError as exc:
                raise ExportError(
                    "the encrypted share of officer %s is gone from %s (%s); make a new custody with custody.rotate: true "
                    "(the officers then get new shares)" % (share["officer"], source_dir, exc.strerror)
                ) from None
        shares.append(entry)
    record = {k: custody[k] for k in ("id", "token", "threshold", "count", "created")}
    record["shares"] = shares
    return record, copies


def build_index(request, doc, files, custody_record, stem, content):
    names = _secrets.set_names(stem)
    bundle = files[names["bundle"]]
    return {
        "format": _secrets.INDEX_FORMAT,
        "schema_version": _secrets.SCHEMA_VERSION,
        "name": request["name"],
        "export_id": doc["export_id"],
        "created": doc["created"],
        "node": doc["node"],
        "bundle": {"file": names["bundle"], "size": len(bundle), "sha256": hashlib.sha256(bundle).hexdigest()},
        "entry_count": doc["entry_count"],
        "sources": [{"name": s["name"], "type": s["type"], "entries": s["entries"]} for s in doc["sources"]],
        "content_digest": content,
        "unlock": {
            "passphrase": {"file": names["key"]} if names["key"] in files else None,
            "recipients": sorted(request["recipients"]),
            "custody": custody_record,
        },
        "reader": _secrets.READER_NAME,
    }


# ---- validation -------------------------------------------------------------------------


def _duration(option, value):
    if value in (None, "", "0", 0):
        return None
    try:
        return _retention.parse_duration(value)
    except ValueError as exc:
        raise OptionError(option, "%s: %s" % (option, exc)) from None


def _recipient(option, text):
    try:
        _age.parse_recipient(text)
    except _age.AgeError as exc:
        raise OptionError(option, "%s: %s" % (option, exc)) from None
    return text.strip()


def _validate_custody(custody):
    if not custody:
        return
    officers = custody["officers"]
    if len(officers) < 2 or len(officers) > MAX_OFFICERS:
        raise OptionError("custody.officers", "custody needs 2 to %d officers, %d given" % (MAX_OFFICERS, len(officers)))
    if not 2 <= custody["threshold"] <= len(officers):
        raise OptionError(
            "custody.threshold", "custody.threshold must be between 2 and the number of officers (%d), not %d" % (len(officers), custody["threshold"])
        )
    names = [o["name"] for o in officers]
    if len(set(names)) != len(names):
        raise OptionError("custody.officers", "custody.officers: each officer needs a name of their own")
    for officer in officers:
        if officer.get("recipient"):
            officer["recipient"] = _recipient("custody.officers.recipient", officer["recipient"])
        elif not officer.get("share_file"):
            raise OptionError(
                "custody.officers",
                "officer %s needs a recipient (their age1... key: the share is encrypted to it and stored with every bundle) "
                "or a share_file (a path on the node where the plaintext share is written for hand-over)" % officer["name"],
            )


def _validate_encryption(params):
    """(passphrase, recipients) checked; a bundle is never written unencrypted."""
    passphrase = params.get("passphrase")
    if passphrase is not None and len(passphrase) < MIN_PASSPHRASE:
        raise OptionError("passphrase", "passphrase is too short: it must be at least %d characters (a long phrase is better)" % MIN_PASSPHRASE)
    recipients = [_recipient("recipients", r) for r in params.get("recipients") or []]
    _validate_custody(params.get("custody"))
    if not passphrase and not recipients and not params.get("custody"):
        raise OptionError("passphrase", "a secrets bundle is always encrypted: give passphrase, recipients or custody (or several)")
    return passphrase, recipients


def _validate_sources(sources):
    if not sources:
        raise OptionError("sources", "sources is empty: name at least one source of credentials")
    for source in sources:
        kinds = [k for k in _secrets_sources.SOURCE_TYPES if source.get(k) is not None]
        if len(kinds) != 1:
            raise OptionError("sources", "source %s needs exactly one of %s" % (source["name"], ", ".join(_secrets_sources.SOURCE_TYPES)))


def validate(params, node):
    """The request: options checked, durations in seconds. Raises OptionError naming the option."""
    if not _NAME.match(params["name"]):
        raise OptionError("name", "name %r: use 1 to 64 letters, digits, '_' or '.', starting with a letter or digit" % params["name"])
    passphrase, recipients = _validate_encryption(params)
    _validate_sources(params["sources"])
    if not params.get("destination") and not params.get("targets"):
        raise OptionError("destination", "give a destination directory or storage targets (or both) for the bundle sets")
    request = dict(
        params,
        node=params.get("node") or node,
        passphrase=passphrase,
        recipients=recipients,
        max_age=_duration("max_age", params.get("max_age")),
        stale_after=_duration("stale_after", params.get("stale_after")),
        retention=_retention.parse_policy(params["retention"]) if params.get("retention") else None,
    )
    _secrets_store.validate_locations(request)
    return request


# ---- one run ----------------------------------------------------------------------------


def _summary_result(request, state, now):
    last = state.data.get("last_export") or {}
    success = state.data.get("last_success")
    stale = bool(request["stale_after"]) and (not success or now - success > request["stale_after"])
    return {
        "name": request["name"],
        "node": request["node"],
        "destination": request["destination"],
        "last_export": {k: last.get(k) for k in ("export_id", "stem", "files", "entry_count")} if last else None,
        "last_exported": utc_iso(last.get("time")),
        "last_success": utc_iso(success),
        "stale": stale,
    }


def _custody_result(custody, rotated):
    if not custody:
        return None
    return {
        "id": custody["id"],
        "threshold": custody["threshold"],
        "officers": [o["name"] for o in custody["wanted"]["officers"]],
        "rotated": rotated,
        "plaintext_share_files": [s["plain_file"] for s in custody.get("shares", []) if s.get("plain_file")] if rotated else [],
    }


def check_before_publishing(bundle, identity, doc):
    """The encrypted bundle, read back in memory before it goes anywhere: a well-formed age
    file and, with the export's own key, the very content that was meant."""
    try:
        _age._parse_header(io.BytesIO(bundle))
        if identity is not None:
            plain = _age.AgeReader(io.BytesIO(bundle), identities=_age.parse_identities(identity)).read()
            if json.loads(plain.decode("utf-8")).get("content_sha256") != doc["content_sha256"]:
                raise ExportError("internal error: the bundle decrypts to other content; nothing was written")
    except _age.AgeError as exc:
        raise ExportError("internal error: the bundle just encrypted does not read back (%s); nothing was written" % exc) from None


def _build_set(request, collected, custody, content, now):
    """(export record, [(file name, bytes)] with the index last)."""
    # Milliseconds in the id: stems sort by time even for two exports in one second.
    export_id = "%s.%03dZ-%s" % (time.strftime(STAMP, time.gmtime(now)), int(now * 1000) % 1000, secrets.token_hex(2))
    stem = "%s-%s" % (request["name"], export_id)
    doc = build_document(request, collected, export_id, now)
    files, identity = encrypt_set(request, doc, custody, stem)
    check_before_publishing(files[_secrets.set_names(stem)["bundle"]], identity, doc)
    custody_record, copies = _custody_index(request, custody, stem)
    files.update(copies)
    index = build_index(request, doc, files, custody_record, stem, content)
    ordered = sorted(files.items()) + [(_secrets.set_names(stem)["index"], (json.dumps(index, indent=2, sort_keys=True) + "\n").encode("utf-8"))]
    record = {"export_id": export_id, "stem": stem, "files": [name for name, _data in ordered], "entry_count": doc["entry_count"]}
    return record, ordered


def _export(request, collected, custody, content, now, locations):
    """Write the set to every location; ``locations`` gets each one's outcome."""
    record, ordered = _build_set(request, collected, custody, content, now)
    for option, target in _secrets_store.location_specs(request):
        outcome = locations.setdefault(option, {"location": option})
        try:
            with _secrets_store.opened(option, target, create=True) as backend:
                outcome["label"] = backend.label
                _secrets_store.publish(backend, ordered)
                outcome["written"] = True
        except LifeboatError as exc:
            outcome.update(written=False, error=str(exc))
    return record


def _missing_by_location(request, last):
    """{location: files of the last set it lacks}; StoreError when a location cannot be asked."""
    missing = {}
    if not last:
        return missing
    for option, target in _secrets_store.location_specs(request):
        try:
            with _secrets_store.opened(option, target) as backend:
                missing[option] = _secrets_store.missing(backend, last["files"])
        except LifeboatError as exc:
            raise _secrets_store.StoreError("cannot check the last bundle set on %s: %s" % (option, exc)) from None
    return missing


def _maintain(request, locations, check_mode, now, warn):
    """Retention and the reader copy on every location that is reachable."""
    for option, target in _secrets_store.location_specs(request):
        outcome = locations.setdefault(option, {"location": option})
        if outcome.get("written") is False or (check_mode and option == "destination" and not os.path.isdir(target["path"])):
            continue
        try:
            with _secrets_store.opened(option, target, create=not check_mode) as backend:
                outcome["label"] = backend.label
                if request["retention"] is not None:
                    decisions = _secrets_store.retention_plan(backend, request["name"], request["node"], request["retention"], now)
                    gone = [{"stem": d.name, "rule": d.rule} for d in decisions if d.action == "remove"]
                    outcome["removed"] = gone if check_mode else _secrets_store.apply_retention(backend, decisions)
                if request.get("reader") and not check_mode:
                    outcome["reader"] = _secrets_store.place_reader(backend, request["reader"])
        except (LifeboatError, OSError) as exc:
            outcome["maintenance_error"] = str(exc)
            warn("secrets bundle %s on %s: retention or the reader copy failed: %s" % (request["name"], option, exc))


def run(request, check_mode, warn):
    """Collect, decide, export (or not), keep the locations tidy, record. Returns the result."""
    now = time.time()
    state = State(request["state_dir"], request["name"])
    if not check_mode:
        state.ensure()
        state.lock(request["lock_timeout"])
    try:
        if os.path.isdir(state.dir):
            state.load()
        return _run_locked(request, state, check_mode, warn, now)
    finally:
        state.unlock()


def _prepare(request, state, check_mode, warn):
    """Sources read, digests and custody: (collected, content digest, unlock digest, custody, rotated)."""
    collected = _secrets_sources.collect(request["sources"])
    key = state.digest_key() if not check_mode or os.path.exists(os.path.join(state.dir, "digest.key")) else secrets.token_bytes(32)
    entries = [entry for _summary, source_entries in collected for entry in source_entries]
    custody, rotated = ensure_custody(state, request["name"], request.get("custody"), check_mode)
    if rotated and not check_mode:
        state.data["custody"] = custody
        state.save()
        _warn_plain_shares(custody, warn)
    return collected, keyed_digest(key, entries), keyed_digest(key, unlock_config(request, custody, key)), custody, rotated


def _run_locked(request, state, check_mode, warn, now):
    collected, content, unlock, custody, rotated = _prepare(request, state, check_mode, warn)
    export, reason = decide(state, content, unlock, request, now, _missing_by_location(request, state.data.get("last_export")))
    result = dict(changed=export or rotated, exported=False, reason=reason, content_digest=content)
    result.update(entry_count=sum(len(e) for _s, e in collected), sources=[summary for summary, _e in collected], custody=_custody_result(custody, rotated))
    locations = {}
    if export and not check_mode:
        record = _export(request, collected, custody, content, now, locations)
        if any(o.get("written") for o in locations.values()):
            state.data["last_export"] = dict(record, time=now, content_digest=content, unlock_digest=unlock)
            result.update(record, exported=True)
    _maintain(request, locations, check_mode, now, warn)
    result["locations"] = list(locations.values())
    failed = [o for o in result["locations"] if o.get("written") is False]
    if not check_mode:
        _record(request, state, result, now, succeeded=not failed)
    result.update(_summary_result(request, state, now))
    if failed:
        raise _partly_written(result, failed)
    return result


def _partly_written(result, failed):
    """The error of a run whose set did not reach every location (with where it did)."""
    return ExportError(
        "the bundle set could not be written to %s" % "; ".join("%s (%s)" % (o["location"], o["error"]) for o in failed),
        done=["bundle set %s written to %s" % (result["stem"], o["location"]) for o in result["locations"] if o.get("written")],
        **{k: v for k, v in result.items() if k not in ("changed", "msg")},
    )


def _record(request, state, result, now, succeeded):
    """The state (last success only when every location has the set) and the audit line."""
    if succeeded:
        state.data["last_success"] = now
        state.data.pop("last_failure", None)
    state.save()
    state.audit(_audit_record(request, result, now))


def _warn_plain_shares(custody, warn):
    plain = [s["plain_file"] for s in custody["shares"] if s.get("plain_file")]
    if plain:
        warn(
            "custody %s: the shares of officers without an age key were written in plaintext to %s; "
            "hand each to its officer and delete it from this node" % (custody["id"], ", ".join(plain))
        )


def _audit_record(request, result, now):
    """What the audit trail keeps of a run: never a value."""
    record = {
        "time": utc_iso(now),
        "event": "exported" if result.get("exported") else "unchanged",
        "name": request["name"],
        "node": request["node"],
        "destination": request["destination"],
        "locations": [{k: o.get(k) for k in ("location", "label", "written", "error")} for o in result.get("locations", [])],
        "reason": result["reason"],
        "entry_count": result["entry_count"],
        "sources": [{"name": s["name"], "type": s["type"], "entries": s["entries"]} for s in result["sources"]],
        "content_digest": result["content_digest"],
    }
    for key in ("export_id", "files"):
        if key in result:
            record[key] = result[key]
    if result.get("custody"):
        record["custody"] = {k: result["custody"][k] for k in ("id", "threshold", "rotated")}
    return record


def record_failure(request, reason):
    """The failure hook: the audit line and the state say why the run failed."""
    state = State(request["state_dir"], request["name"])
    if not os.path.isdir(state.dir):
        return
    state.load()
    now = time.time()
    state.data["last_failure"] = {"time": now, "reason": reason}
    state.save()
    state.audit({"time": utc_iso(now), "event": "failed", "name": request["name"], "node": request["node"], "reason": reason})


def failure_result(request):
    """Extra values of a failed run: when the last good export was, whether the bundle is stale."""
    state = State(request["state_dir"], request["name"])
    with contextlib.suppress(LifeboatError, OSError):
        state.load()
    return _summary_result(request, state, time.time())
