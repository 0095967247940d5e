# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""A backup session on one node: lock, work area, component records, seal, status, audit.

Layout (docs/image-format.md, "Work area and node state"):

    <state_dir>/lock          flock held by the session's keeper process; JSON holder info
    <state_dir>/status.json   current state, last success, last failure
    <state_dir>/audit.jsonl   one line per attempt
    <destination>/.lifeboat-work/<image stem>/
        session.json  journal.jsonl  image.partial  heartbeat  components/*.json  scratch/

A session spans several module runs, and no process of ours lives between them, so
``state=started`` leaves a small *keeper* process holding the lock. It exits when the
session is sealed or aborted, or when no module of the session has touched the
heartbeat for ``lease`` seconds (the controller died). Once the keeper is gone the lock
is free, and the next start finds the dead session's record, cleans its work area and
writes its audit line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
import uuid

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError
from ansible_collections.lifeboat.backup.plugins.module_utils._version import COLLECTION, COLLECTION_VERSION

WORK_ROOT = ".lifeboat-work"
STOPPED_SERVICES = "stopped-services"  # under state_dir: one record per service a run stopped (quiesce role)
DEFAULT_LEASE = 3600
MIN_PASSPHRASE = 8


def component_spec(default_name, required=True):
    """The options of the ``lifeboat.backup._session`` doc fragment (``session``, ``name``)
    for a component module whose component is called ``default_name`` unless named."""
    session = dict(type="path", required=True) if required else dict(type="path")
    return dict(session=session, name=dict(type="str", default=default_name))


class SessionError(LifeboatError):
    """A session-level problem; the message says what and what to do."""


def utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


def write_json_atomic(path, data, mode=0o600):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # no half-written temporary left (a full disk, a kill)
        raise


def read_json(path, default=None):
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default
    except ValueError:
        return default


def append_line(path, record):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def pid_alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _proc_stat(pid):
    """Fields 3 onwards of /proc/<pid>/stat (state first), or None where /proc cannot tell."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            data = handle.read()
        # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
        return data[data.rindex(")") + 2 :].split()
    except (OSError, ValueError):
        return None


def process_start(pid):
    """When ``pid`` started, in clock ticks since boot (/proc/<pid>/stat, field 22), or None
    where /proc cannot tell. With the boot id, it tells a process from a later one that
    reused its pid."""
    fields = _proc_stat(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


def keeper_identity(pid):
    """What identifies the keeper process beyond its pid (recorded with the session)."""
    return {"keeper_pid": pid, "keeper_start": process_start(pid), "boot_id": _boot_id()}


def keeper_alive(record):
    """Whether the keeper named in ``record`` (a lock holder, status ``current`` or session
    data) still runs: its pid is alive and, where it was recorded, it is the same process
    (same start time, same boot). Never decided from the lock file alone: a lock file
    removed by hand frees the flock but not the session."""
    pid = (record or {}).get("keeper_pid")
    if not pid or not pid_alive(pid):
        return False
    fields = _proc_stat(pid)
    if fields and fields[0] in ("Z", "X"):
        return False  # killed, not yet reaped by init: it holds nothing any more
    if record.get("boot_id") and _boot_id() and record["boot_id"] != _boot_id():
        return False
    started = record.get("keeper_start")
    if started is not None:
        now = process_start(pid)
        if now is not None and now != started:
            return False  # the pid was reused by another process
    return True


def free_bytes(path):
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


# ---- node state: status and audit ---------------------------------------------------------


class NodeState:
    def __init__(self, state_dir, facts_dir=None):
        self.dir = state_dir
        self.facts_dir = facts_dir
        self.lock_path = os.path.join(state_dir, "lock")
        self.status_path = os.path.join(state_dir, "status.json")
        self.audit_path = os.path.join(state_dir, "audit.jsonl")

    def ensure(self):
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise SessionError("cannot create state_dir %s: %s" % (self.dir, exc.strerror)) from None

    def status(self):
        return read_json(self.status_path, {}) or {}

    def update_status(self, **changes):
        status = self.status()
        status.update(changes)
        status["updated"] = utc_now()
        write_json_atomic(self.status_path, status)
        self._write_fact(status)
        return status

    def _write_fact(self, status):
        """The status as an Ansible local fact (``ansible_local.lifeboat`` after ``setup``)."""
        if not self.facts_dir:
            return
        try:
            os.makedirs(self.facts_dir, mode=0o755, exist_ok=True)
            write_json_atomic(os.path.join(self.facts_dir, "lifeboat.fact"), dict(status, state_dir=self.dir), mode=0o644)
        except OSError:
            pass  # a fact is a convenience; status.json is the record

    def audit(self, record):
        append_line(self.audit_path, record)

    def holder(self):
        """The lock holder's record if a live process holds the lock, else None."""
        if not os.path.exists(self.lock_path):
            return None
        fd = os.open(self.lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_json(self.lock_path, {}) or {"pid": None}
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def stopped_services(self):
        """Services a run recorded as stopped and that no resume has started again
        (``stopped-services/*.json``, written by the quiesce role), oldest stop first."""
        records = []
        folder = os.path.join(self.dir, STOPPED_SERVICES)
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return records
        for name in names:
            if name.endswith(".json"):
                record = read_json(os.path.join(folder, name))
                if isinstance(record, dict) and record.get("service"):
                    records.append(record)
        return sorted(records, key=lambda r: (r.get("stopped_at") or "", r["service"]))

    def history(self, limit=None):
        records = []
        try:
            with open(self.audit_path) as handle:
                for line in handle:
                    if line.endswith("\n"):
                        try:
                            records.append(json.loads(line))
                        except ValueError:
                            continue
        except FileNotFoundError:
            pass
        return records[-int(limit) :] if limit else records


# ---- the keeper -------------------------------------------------------------------------


def _keeper_loop(lock_fd, work_dir, lease, poll):
    heartbeat = os.path.join(work_dir, "heartbeat")
    done = os.path.join(work_dir, "done")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        time.sleep(poll)
        if not os.path.isdir(work_dir) or os.path.exists(done):
            os._exit(0)
        try:
            age = time.time() - os.stat(heartbeat).st_mtime
        except OSError:
            os._exit(0)
        if age > lease:
            os._exit(0)  # the controller is gone; the next start cleans up


def spawn_keeper(lock_fd, work_dir, lease, poll=1.0):
    """Fork a detached process that keeps ``lock_fd`` (and so the flock) open. Returns its pid."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the detached process
        try:
            os.close(read_end)
            os.setsid()
            if os.fork():
                os._exit(0)
            os.chdir("/")
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.write(write_end, str(os.getpid()).encode())
            os.close(write_end)
            keep = sorted({lock_fd, 0, 1, 2})
            low = 3
            for fd in keep[3:] if len(keep) > 3 else []:
                os.closerange(low, fd)
                low = fd + 1
            os.closerange(low, 65536)
            _keeper_loop(lock_fd, work_dir, lease, poll)
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end) as pipe:
        return int(pipe.read() or 0)


def stop_keeper(pid, timeout=10, identity=None):
    """SIGTERM the keeper and wait for it; with ``identity`` (a record carrying keeper_start
    and boot_id), only if the process with that pid is still the keeper."""
    if not pid or pid == os.getpid():
        return
    if identity is not None and not keeper_alive(identity):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline and pid_alive(pid):
        # Reap it if it happens to be our child (tests run modules in-process).
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)


# ---- starting ---------------------------------------------------------------------------


def validate_encryption(encryption, passphrase, recipients):
    """Raise SessionError naming the option when the encryption settings cannot work."""
    if encryption == "none":
        if passphrase or recipients:
            raise SessionError("encryption=none but passphrase or recipients were given; drop them or use encryption=age")
        return
    if not passphrase and not recipients:
        raise SessionError(
            "encryption=age needs a passphrase (at least %d characters) or recipients (age1... public keys); "
            "to write an unencrypted image set encryption=none explicitly" % MIN_PASSPHRASE
        )
    if passphrase is not None and len(passphrase) < MIN_PASSPHRASE:
        raise SessionError("passphrase is too short: it must be at least %d characters" % MIN_PASSPHRASE)
    for recipient in recipients or []:
        try:
            _age.parse_recipient(recipient)
        except _age.AgeError as exc:
            raise SessionError("recipients: %s" % exc) from None


def encryption_plan(encryption, passphrase, recipients, work_factor):
    """Validate encryption options; return (recipients for members, identity member bytes)."""
    validate_encryption(encryption, passphrase, recipients)
    if encryption == "none":
        return [], None
    member_recipients = list(recipients or [])
    identity_blob = None
    if passphrase:
        # One X25519 identity per image, itself encrypted to the passphrase (one scrypt
        # per image instead of one per member); stock `age -d` unlocks it by hand.
        identity, image_recipient = _age.generate_identity()
        member_recipients.insert(0, image_recipient)
        text = "# lifeboat.backup image identity; unlock with the backup passphrase\n%s\n" % identity
        identity_blob = _age.encrypt_bytes(text.encode("ascii"), passphrase=passphrase, work_factor=work_factor)
    return member_recipients, identity_blob


def _take_lock(state):
    fd = os.open(state.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = read_json(state.lock_path, {}) or {}
        raise SessionError(
            "another backup is in progress on this node: backup_id %s (image %s), started %s, lock kept by pid %s; "
            "wait for it to finish, or end it with state=aborted"
            % (holder.get("backup_id"), holder.get("image"), holder.get("started"), holder.get("keeper_pid"))
        ) from None
    return fd


def _live_session_error(record, what):
    return SessionError(
        "another backup is in progress on this node: backup_id %s (image %s), started %s, its keeper pid %s still runs, "
        "but %s; the live session is left alone: wait for it to finish, or end it with state=aborted"
        % (record.get("backup_id"), record.get("image"), record.get("started"), record.get("keeper_pid"), what)
    )


def _clean_stale(state, notes):
    """The lock was free: if the status says a session was in progress, its owner died -
    unless its keeper still runs (the lock file was removed or replaced under it)."""
    status = state.status()
    current = status.get("current")
    if status.get("state") != "in_progress" or not current:
        return None
    if keeper_alive(current):
        raise _live_session_error(current, "the lock file %s no longer holds its lock (removed or replaced by hand?)" % state.lock_path)
    published = _published_unrecorded(current)
    if published:
        return _record_published(state, current, published, notes)
    work_dir = current.get("work_dir")
    if work_dir and os.path.isdir(work_dir):
        shutil.rmtree(work_dir, ignore_errors=True)
    reason = "abandoned: the session's keeper (pid %s) is gone without sealing or aborting (controller killed or lease expired)" % current.get("keeper_pid")
    record = {
        "backup_id": current.get("backup_id"),
        "node": current.get("node"),
        "image": None,
        "started": current.get("started"),
        "ended": utc_now(),
        "verdict": "failed",
        "reason": reason,
        "components": {},
    }
    warning = record_attempt(
        state, record, {"last_failure": {"time": record["ended"], "backup_id": record["backup_id"], "reason": reason}}, state="idle", current=None
    )
    if warning:
        raise SessionError(warning)
    notes.append("took over a stale lock: %s (backup_id %s); its work area was removed" % (reason, record["backup_id"]))
    return record


def _published_unrecorded(current):
    """The manifest of the image the recorded session published, if it did: its seal
    could not write status and audit (the state directory was full)."""
    work_dir, name = current.get("work_dir"), current.get("image")
    if not work_dir or not name:
        return None
    path = os.path.join(os.path.dirname(os.path.dirname(work_dir.rstrip("/"))), name)
    try:
        with _image.Image(path) as image:
            manifest = image.manifest
    except _image.ImageError:
        return None
    if manifest.get("backup_id") != current.get("backup_id"):
        return None
    return dict(manifest, path=path)


def _record_published(state, current, manifest, notes):
    failures = {n: c.get("error") for n, c in (manifest.get("components") or {}).items() if c.get("status") == "failed"}
    record = {
        "backup_id": manifest["backup_id"],
        "node": manifest.get("node"),
        "started": manifest.get("started"),
        "ended": manifest.get("sealed"),
        "verdict": manifest.get("verdict"),
        "image": manifest["path"],
        "size": os.path.getsize(manifest["path"]),
        "components": {n: c.get("status") for n, c in (manifest.get("components") or {}).items()},
        "failures": failures,
        "reason": "published %s; its status and audit line could not be written at the time (state directory full?): recorded by the next start"
        % manifest["path"],
        "recorded_late": utc_now(),
    }
    changes = {}
    if record["verdict"] == "success":
        changes["last_success"] = {"time": record["ended"], "backup_id": record["backup_id"], "image": record["image"], "size": record["size"]}
    else:
        changes["last_partial"] = {"time": record["ended"], "backup_id": record["backup_id"], "image": record["image"], "failures": failures}
    warning = record_attempt(state, record, changes, state="idle", current=None)
    if warning:
        raise SessionError(warning)
    shutil.rmtree(current["work_dir"], ignore_errors=True)
    notes.append("backup %s had published %s without recording it (its state directory was full); recorded it now" % (record["backup_id"], record["image"]))
    return record


def record_not_started(state_dir, node, backup_id, reason, facts_dir=None):
    """An attempt that failed before any session started (preflight, a busy lock): one
    audit line and the status's last failure, so no attempt goes unrecorded. A running
    session, if any, is left alone. Returns (record, warning or None)."""
    state = NodeState(state_dir, facts_dir)
    now = utc_now()
    record = {
        "backup_id": backup_id,
        "node": node,
        "started": now,
        "ended": now,
        "verdict": "failed",
        "image": None,
        "size": None,
        "components": {},
        "failures": {},
        "reason": "not started: %s" % reason,
    }
    warning = record_attempt(state, record, {"last_failure": {"time": now, "backup_id": backup_id, "reason": record["reason"]}})
    return record, warning


def start(params):
    """Create the work area and take the node lock. ``params``: the module's options."""
    destination = params["destination"]
    _check_destination(destination)
    state = NodeState(params["state_dir"], params.get("facts_dir"))
    state.ensure()
    recipients, identity_blob = encryption_plan(params["encryption"], params.get("passphrase"), params.get("recipients"), params["work_factor"])
    compression = _image.resolve_compression(params["compression"])
    notes = []
    lock_fd = _take_lock(state)
    try:
        stale = _clean_stale(state, notes)
        _remove_orphan_work_areas(destination, params["node"], params["state_dir"], notes)
        now, name = _free_image_name(destination, params)
        work_dir = _make_work_area(destination, name)
        session = _session_data(params, now, name, work_dir, compression, recipients, identity_blob)
        write_json_atomic(os.path.join(work_dir, "session.json"), session)
        with open(os.path.join(work_dir, "heartbeat"), "w"):
            pass
        if identity_blob:
            with _image.ImageAppender(work_dir) as appender:
                appender.add_bytes(_image.IDENTITY_MEMBER, "lifeboat", "application/age", identity_blob)
        _hand_to_keeper(lock_fd, state, session)
    except BaseException:
        os.close(lock_fd)
        raise
    os.close(lock_fd)  # the keeper holds its own copy of the locked descriptor
    return session, notes, stale


def _check_destination(destination):
    if not os.path.isdir(destination):
        raise SessionError("destination %s does not exist or is not a directory; create it (mode 0700) or fix the path" % destination)
    if not os.access(destination, os.W_OK | os.X_OK):
        raise SessionError("destination %s is not writable by uid %d" % (destination, os.getuid()))


def _free_image_name(destination, params):
    """The time and the name of the new image: one no image in ``destination`` has."""
    now = time.time()
    name = _image.image_name(params["node"], now, params.get("prefix") or "")
    while os.path.exists(os.path.join(destination, name)):
        time.sleep(1.0)  # same node, same second: names never collide
        now = time.time()
        name = _image.image_name(params["node"], now, params.get("prefix") or "")
    return now, name


def _make_work_area(destination, name):
    work_dir = os.path.join(destination, WORK_ROOT, name[: -len(".zip")])
    os.makedirs(os.path.join(work_dir, "components"), mode=0o700)
    os.makedirs(os.path.join(work_dir, "scratch"), mode=0o700)
    os.chmod(os.path.join(destination, WORK_ROOT), 0o700)
    return work_dir


def _session_data(params, now, name, work_dir, compression, recipients, identity_blob):
    """session.json of a new session (the keeper's identity is added once it runs)."""
    return {
        "backup_id": params.get("backup_id") or "%s-%s" % (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)), uuid.uuid4().hex[:8]),
        "node": params["node"],
        "image": name,
        "destination": params["destination"],
        "work_dir": work_dir,
        "state_dir": params["state_dir"],
        "facts_dir": params.get("facts_dir"),
        "started": iso(now),
        "compression": compression,
        "encryption": {
            "scheme": params["encryption"],
            "recipients": recipients,
            "passphrase": bool(params.get("passphrase")),
            "identity_member": _image.IDENTITY_MEMBER if identity_blob else None,
        },
        "halt": params["halt"],
        "selection": params.get("selection") or "standard",
        "components": params.get("components") or [],
        "platform": params.get("platform") or {},
        "lease": params["lease"],
        "controller": params.get("controller") or {},
    }


def _hand_to_keeper(lock_fd, state, session):
    """Start the keeper that holds the node lock between module runs, name it in the lock
    file, session.json and the status file. Nothing is left behind when the status file
    cannot be written."""
    work_dir = session["work_dir"]
    keeper = spawn_keeper(lock_fd, work_dir, session["lease"])
    holder = dict(
        keeper_identity(keeper), backup_id=session["backup_id"], image=session["image"], started=session["started"], work_dir=work_dir, node=session["node"]
    )
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, json.dumps(holder).encode(), 0)
    session.update(keeper_identity(keeper))
    write_json_atomic(os.path.join(work_dir, "session.json"), session)
    try:
        state.update_status(state="in_progress", current=dict(holder, work_dir=work_dir))
    except OSError as exc:
        stop_keeper(keeper, identity=session)
        shutil.rmtree(work_dir, ignore_errors=True)
        raise SessionError(
            "cannot record the session in the state directory %s: %s%s; nothing was started"
            % (state.dir, exc.strerror or exc, " (the file system is full: free space there)" if exc.errno == errno.ENOSPC else "")
        ) from None


def _remove_orphan_work_areas(destination, node, state_dir, notes):
    """Work areas of this node left by a dead session that never reached the status file.

    Called with the node lock held, so no live session of this node can own one.
    """
    root = os.path.join(destination, WORK_ROOT)
    if not os.path.isdir(root):
        return
    for entry in os.listdir(root):
        path = os.path.join(root, entry)
        owner = read_json(os.path.join(path, "session.json"))
        if owner is not None and keeper_alive(owner) and not os.path.exists(os.path.join(path, "done")):
            if owner.get("state_dir") == state_dir:  # the lock is per state directory, whatever the node is called
                raise _live_session_error(owner, "neither the lock file nor the status file records it (removed by hand?)")
            continue  # a live session of another state directory
        if owner is not None:
            mine = owner.get("node") == node and owner.get("state_dir") == state_dir
        else:
            # Killed before session.json existed: recognise it by name (stamp-node).
            mine = _STEM.match(entry) is not None and _STEM.match(entry).group("node") == _image.safe_name(node, "node")
        if mine and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            notes.append("removed the work area %s left by an interrupted session" % path)


_STEM = re.compile(r"^(?:.*-)?\d{8}T\d{6}Z-(?P<node>.+)$")


# ---- a running session, as seen by component modules ------------------------------------------


class Session:
    """An open session, loaded from its work area by a component module."""

    def __init__(self, work_dir):
        self.work_dir = work_dir
        self.path = os.path.join(work_dir, "session.json")
        data = read_json(self.path)
        if data is None:
            raise SessionError(
                "session %s does not exist (never started, already sealed or aborted); start one with lifeboat.backup.backup_session state=started" % work_dir
            )
        if os.path.exists(os.path.join(work_dir, "done")):
            raise SessionError("session %s is already sealed or aborted" % work_dir)
        self.data = data
        self.touch()

    @property
    def recipients(self):
        return self.data["encryption"]["recipients"]

    @property
    def compression(self):
        return self.data["compression"]

    @property
    def halt(self):
        return bool(self.data.get("halt"))

    @property
    def scratch(self):
        return os.path.join(self.work_dir, "scratch")

    def touch(self):
        try:
            os.utime(os.path.join(self.work_dir, "heartbeat"))
        except OSError:
            pass

    @contextlib.contextmanager
    def heartbeat(self, interval=30):
        """Keep the lease alive while a long step runs."""
        stop = threading.Event()

        def beat():
            while not stop.wait(interval):
                self.touch()

        thread = threading.Thread(target=beat, name="lifeboat-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.touch()

    def member_name(self, component, name):
        return _image.member_name(component, name, self.compression, bool(self.recipients))

    def component(self, name, kind):
        return Component(self, name, kind)


class Component:
    """Records one component's progress and verdict in ``components/<name>.json``.

    Written as "running" at once, so a module killed mid-way leaves a record that
    the seal turns into a failure.
    """

    def __init__(self, session, name, kind):
        self.session = session
        self.name = _image.safe_name(name)
        self.kind = kind
        self.path = os.path.join(session.work_dir, "components", self.name + ".json")
        existing = read_json(self.path)
        if existing and existing.get("status") in ("success", "running"):
            raise SessionError("component %s was already captured in this session; give it another name" % self.name)
        self.record = {
            "name": self.name,
            "kind": kind,
            "status": "running",
            "started": utc_now(),
            "finished": None,
            "members": [],
            "markers": {},
            "details": {},
            "warnings": [],
            "error": None,
            "pid": os.getpid(),
        }
        self._save()

    def _save(self):
        write_json_atomic(self.path, self.record)

    def appender(self):
        return _image.ImageAppender(self.session.work_dir)

    def member(self, appender, name, media_type, threads=0, extra=None):
        """A MemberWriter for ``<component>/<name><.zst><.age>``."""
        full = self.session.member_name(self.name, name)
        return appender.add_member(full, self.name, media_type, self.session.compression, self.session.recipients, threads=threads, extra=extra)

    def add_member_record(self, record):
        self.record["members"].append(record["name"])

    def marker(self, key, value):
        self.record["markers"][key] = value

    def warn(self, text):
        self.record["warnings"].append(text)

    def succeed(self, details=None):
        self.record["details"].update(details or {})
        self.record["status"] = "success"
        self.record["finished"] = utc_now()
        self._save()
        self.session.touch()

    def fail(self, reason, details=None):
        self.record["details"].update(details or {})
        self.record["status"] = "failed"
        self.record["error"] = reason
        self.record["finished"] = utc_now()
        try:
            self._save()
        except OSError:
            pass  # e.g. the disk is full: the record stays "running" and the seal marks it failed
        self.session.touch()

    def skip(self, reason):
        self.record["status"] = "skipped"
        self.record["error"] = reason
        self.record["finished"] = utc_now()
        self._save()


# ---- sealing and aborting ---------------------------------------------------------------


def _component_records(work_dir):
    records = {}
    comp_dir = os.path.join(work_dir, "components")
    for entry in sorted(os.listdir(comp_dir)):
        if entry.endswith(".json"):
            record = read_json(os.path.join(comp_dir, entry))
            if record:
                records[record["name"]] = record
    return records


def verdict_of(components, halt):
    statuses = [c["status"] for c in components.values()]
    succeeded = statuses.count("success")
    failed = statuses.count("failed")
    if not succeeded:
        return "failed"
    if failed:
        return "failed" if halt else "partial"
    return "success"


def _host_facts():
    return {
        "hostname": socket.gethostname(),
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def build_manifest(session, components, entries, sealed_at, verdict, extra=None):
    members = []
    for entry in entries:
        record = {k: v for k, v in entry.items() if k != "zip"}
        members.append(record)
    manifest = {
        "format": _image.FORMAT_NAME,
        "format_version": _image.FORMAT_VERSION,
        "image": session["image"],
        "backup_id": session["backup_id"],
        "node": session["node"],
        "started": session["started"],
        "sealed": sealed_at,
        "verdict": verdict,
        "halt": session["halt"],
        "selection": session["selection"],
        "requested": session["components"],
        "platform": session.get("platform") or {},
        "tool": {"name": COLLECTION, "version": COLLECTION_VERSION},
        "host": _host_facts(),
        "compression": session["compression"],
        "encryption": {
            "scheme": session["encryption"]["scheme"],
            "recipients": session["encryption"]["recipients"],
            "passphrase": session["encryption"]["passphrase"],
            "identity_member": session["encryption"]["identity_member"],
        },
        "components": {},
        "members": members,
        "consistency": {},
    }
    for name, comp in components.items():
        manifest["components"][name] = {
            "kind": comp["kind"],
            "status": comp["status"],
            "started": comp.get("started"),
            "finished": comp.get("finished"),
            "members": comp.get("members", []),
            "markers": comp.get("markers", {}),
            "details": comp.get("details", {}),
            "warnings": comp.get("warnings", []),
            "error": comp.get("error"),
        }
        if comp.get("markers"):
            manifest["consistency"][name] = comp["markers"]
    if extra:
        manifest["consistency"].update(extra)
    return manifest


def record_attempt(node_state, record, status_changes, **status):
    """One audit line and the status for an attempt. Returns None, or - when the state
    directory cannot be written (full, read-only) - a warning naming it: the caller reports
    it, and the next start records the attempt from what it finds."""
    try:
        node_state.ensure()
        node_state.audit(record)
        node_state.update_status(last_result=record, **dict(status, **status_changes))
    except (OSError, SessionError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        if getattr(exc, "errno", None) == errno.ENOSPC:
            reason += " (the file system is full: free space there)"
        return "the state directory %s could not record %s of backup %s (%s): %s; status and audit are behind until it can" % (
            node_state.dir,
            "the published image %s" % record["image"] if record.get("image") else "this %s attempt" % record.get("verdict"),
            record.get("backup_id"),
            record.get("reason") or record.get("verdict"),
            reason,
        )
    return None


def _finish_session(session, state, record, status_changes):
    work_dir = session["work_dir"]
    with contextlib.suppress(OSError), open(os.path.join(work_dir, "done"), "w"):
        pass
    stop_keeper(session.get("keeper_pid"), identity=session if session.get("keeper_start") is not None else None)
    shutil.rmtree(work_dir, ignore_errors=True)
    warning = record_attempt(state, record, status_changes, state="idle", current=None)
    if warning:
        record["state_warning"] = warning


def load_session_data(work_dir):
    data = read_json(os.path.join(work_dir, "session.json"))
    if data is None:
        raise SessionError("session %s does not exist (never started, already sealed or aborted)" % work_dir)
    return data


def seal(work_dir, errors=None, consistency=None):
    """Finish the image and publish it, or record the failure. Returns the audit record."""
    session = load_session_data(work_dir)
    state = NodeState(session["state_dir"], session.get("facts_dir"))
    components = _component_records(work_dir)
    _settle_components(session, components, errors or {})
    verdict = verdict_of(components, session["halt"])
    sealed_at = utc_now()
    record = _seal_record(session, components, sealed_at, verdict)
    failures = record["failures"]
    if verdict == "failed":
        record["reason"] = _failed_reason(components, session["halt"], failures)
        _finish_session(session, state, record, {"last_failure": {"time": sealed_at, "backup_id": session["backup_id"], "reason": record["reason"]}})
        return record, None
    try:
        final, manifest = _publish_image(session, work_dir, components, sealed_at, verdict, consistency)
    except OSError as exc:
        reason = "could not write the image in %s: %s" % (session["destination"], exc.strerror or exc)
        if exc.errno == errno.ENOSPC:
            reason += " (the destination is full: free space or choose another destination)"
        record["verdict"] = "failed"
        record["reason"] = reason
        _finish_session(session, state, record, {"last_failure": {"time": sealed_at, "backup_id": session["backup_id"], "reason": reason}})
        return record, None
    record["image"] = final
    record["size"] = os.path.getsize(final)
    _finish_session(session, state, record, _published_changes(session, record, sealed_at, verdict))
    return record, manifest


def _settle_components(session, components, errors):
    """Give every component a final status before the verdict: one still "running" failed
    (with the caller's reason when it has one), a failure without a reason gets the
    caller's, and a requested component that recorded nothing failed."""
    # The caller's reason (the module's own message, as the role saw it) beats a guess: a
    # module that could not write its record (disk full) leaves it "running".
    told = {_image.safe_name(name): reason for name, reason in errors.items() if reason}
    for comp in components.values():
        if comp["status"] == "running":
            comp["status"] = "failed"
            comp["error"] = comp.get("error") or told.get(comp["name"]) or _unfinished_reason(comp)
    for name, reason in errors.items():
        # Reasons from the caller fill in for components that recorded nothing themselves;
        # a component that recorded success keeps it.
        key = _image.safe_name(name)
        comp = components.get(key)
        if comp is None:
            components[key] = {"name": key, "kind": name, "status": "failed", "error": reason, "members": [], "markers": {}, "details": {}, "warnings": []}
        elif comp["status"] == "failed" and not comp.get("error"):
            comp["error"] = reason
    for requested in session["components"]:
        key = _image.safe_name(requested)
        if key not in components:
            components[key] = {"name": key, "kind": requested, "status": "failed", "error": "no result recorded: the component did not run", "members": []}


def _unfinished_reason(comp):
    """Why a component still "running" at the seal failed, when nobody said."""
    if pid_alive(comp.get("pid")) and comp.get("pid") != os.getpid():
        return "still running in pid %s when the session was sealed" % comp.get("pid")
    return "interrupted: the module ended before recording a result"


def _seal_record(session, components, sealed_at, verdict):
    """The audit record of a seal, before the image (or the failure's reason) is known."""
    return {
        "backup_id": session["backup_id"],
        "node": session["node"],
        "started": session["started"],
        "ended": sealed_at,
        "verdict": verdict,
        "image": None,
        "size": None,
        "components": {n: c["status"] for n, c in components.items()},
        "failures": {n: c.get("error") for n, c in components.items() if c["status"] == "failed"},
        "reason": None,
    }


def _failed_reason(components, halt, failures):
    """The reason of a failed verdict, naming each failed component's own."""
    if not components:
        return "nothing was captured: no component ran in this session"
    listed = "; ".join("%s: %s" % kv for kv in sorted(failures.items()))
    if halt and failures:
        return "halt: %s" % listed
    return "every component failed: %s" % listed


def _publish_image(session, work_dir, components, sealed_at, verdict, consistency):
    """Write the manifest, finish the image and rename it into the destination. Returns the
    image's path and the manifest; raises OSError (disk full, ...)."""
    final = os.path.join(session["destination"], session["image"])
    with _image.ImageAppender(work_dir) as appender:
        manifest = build_manifest(session, components, appender.entries, sealed_at, verdict, consistency)
        # Members referenced by failed components are dropped from the manifest's member list
        # only if never journaled; journaled members of failed components stay, flagged by status.
        appender.add_bytes(_image.MANIFEST_NAME, "lifeboat", "application/json", json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
        appender.finish()
    os.rename(os.path.join(work_dir, "image.partial"), final)
    _fsync_dir(session["destination"])
    return final, manifest


def _published_changes(session, record, sealed_at, verdict):
    """Status changes for a published image: last_success, or last_partial and last_failure."""
    if verdict == "success":
        return {"last_success": {"time": sealed_at, "backup_id": session["backup_id"], "image": record["image"], "size": record["size"]}}
    failures = record["failures"]
    return {
        "last_partial": {"time": sealed_at, "backup_id": session["backup_id"], "image": record["image"], "failures": failures},
        "last_failure": {
            "time": sealed_at,
            "backup_id": session["backup_id"],
            "reason": "partial: %s" % "; ".join("%s: %s" % kv for kv in sorted(failures.items())),
        },
    }


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def abort(work_dir=None, state_dir=None, reason=None):
    """End a session without publishing. By work area, or whatever runs under ``state_dir``."""
    session = None
    if work_dir:
        session = read_json(os.path.join(work_dir, "session.json"))
    if session is None and state_dir:
        current = NodeState(state_dir).status().get("current") or {}
        if current.get("work_dir"):
            session = read_json(os.path.join(current["work_dir"], "session.json"))
    if session is None:
        return None
    state = NodeState(session["state_dir"], session.get("facts_dir"))
    components = _component_records(session["work_dir"]) if os.path.isdir(os.path.join(session["work_dir"], "components")) else {}
    ended = utc_now()
    reason = reason or "aborted"
    record = {
        "backup_id": session["backup_id"],
        "node": session["node"],
        "started": session["started"],
        "ended": ended,
        "verdict": "failed",
        "image": None,
        "size": None,
        "components": {n: c["status"] for n, c in components.items()},
        "failures": {n: c.get("error") for n, c in components.items() if c["status"] == "failed"},
        "reason": "aborted: %s" % reason,
    }
    _finish_session(session, state, record, {"last_failure": {"time": ended, "backup_id": session["backup_id"], "reason": record["reason"]}})
    return record


def format_exception():
    return "".join(traceback.format_exception(*sys.exc_info()))
