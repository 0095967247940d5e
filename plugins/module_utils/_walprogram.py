# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""``lifeboat-wal``: the program PostgreSQL runs as its ``archive_command`` (and, during a
point-in-time restore, as its ``restore_command``). ``postgresql_wal_archive`` installs it
as one executable zip holding this file and the module_utils it needs.

::

    lifeboat-wal push SETTINGS PATH      archive one WAL file (archive_command, %p)
    lifeboat-wal daemon SETTINGS         the asynchronous pusher (started by push)
    lifeboat-wal check SETTINGS          settings, libraries and target usable? (JSON)
    lifeboat-wal status SETTINGS         the pusher's status (JSON)
    lifeboat-wal get SOCKET FILE PATH    fetch a WAL file from postgresql_pitr (restore_command)

The settings file is JSON, mode 0600 (it may hold the storage target's credentials).

**Asynchronous, parallel push** (pgBackRest's archive-async model). PostgreSQL archives one
file at a time and waits for each command. ``push`` only asks: if the pusher already
stored the file, ``<spool>/<file>.ok`` exists and ``push`` succeeds at once (the installed
``archive_command`` tests for that file in the shell first, so a whole batch costs one
process start); otherwise it starts the pusher if none runs and waits for the file's
``.ok`` or ``.error``. The pusher scans ``pg_wal/archive_status/*.ready`` of every server
registered in the spool, and pushes the oldest files in parallel threads; it writes
``.ok`` only once the file is stored durably under its final name, removes ``.ok``
markers PostgreSQL no longer needs, and exits after a minute of idleness. A failing
target gives ``.error`` files: ``push`` fails, PostgreSQL keeps the WAL and retries; the
pusher keeps retrying with backoff and raises an alert.

Exit status: ``push`` 0 or 1 (never above 125: PostgreSQL would restart its archiver);
``get`` 0 (delivered), 1 (not in the archive: the normal end of recovery), 126 (the file
exists but cannot be delivered: damaged, target down, restore stopped) so that PostgreSQL
stops recovery instead of ending it early.

Only the standard library is imported at the top: the foreground ``push`` and ``get``
must start fast. The pusher imports the rest (storage, age, compression) when it starts.
"""

from __future__ import annotations

import ast
import errno
import fcntl
import hashlib
import importlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ABORT_RECOVERY = 126
PROGRAM_NAME = "lifeboat-wal"
PACKAGE = "ansible_collections.lifeboat.backup.plugins.module_utils"
# What the program runs; the module_utils they import are added, and the storage backends.
PROGRAM_MODULES = ("_walprogram", "_walarchive", "_storage")
SETTINGS_FORMAT = 1
IDLE_EXIT = 60.0
MAX_BACKOFF = 10.0
ALERT_INTERVAL = 3600.0
STATUS_EVERY = 1.0


class ProgramError(Exception):
    """A failure the program reports in one line and exits on."""


# ---- settings -------------------------------------------------------------------------------


def load_settings(path):
    """The settings file, refused unless it is private to its owner."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ProgramError("cannot open the settings file %s: %s" % (path, exc.strerror)) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_mode & 0o077:
            raise ProgramError("the settings file %s has mode %04o; it may hold credentials: chmod 600 it" % (path, info.st_mode & 0o7777))
        try:
            settings = json.loads(handle.read().decode("utf-8"))
        except ValueError as exc:
            raise ProgramError("the settings file %s is not valid JSON: %s" % (path, exc)) from None
    missing = [key for key in ("target", "recipients", "spool_dir", "system_identifier", "segment_size") if not settings.get(key)]
    if missing:
        raise ProgramError("the settings file %s lacks %s: run postgresql_wal_archive again" % (path, ", ".join(missing)))
    settings["_path"] = os.path.abspath(path)
    return settings


def spool_of(settings):
    """The spool folder of one database system: markers, registrations, the pusher's lock."""
    return os.path.join(settings["spool_dir"], str(settings["system_identifier"]))


def ensure_dir(path, mode=0o700):
    try:
        os.makedirs(path, mode)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise


def write_atomic(path, data):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


# ---- foreground push ------------------------------------------------------------------------


def register(spool, wal_dir):
    """Tell the pusher where this server's pg_wal is (several servers of one lineage may
    share a spool: a restored copy archives its new timeline beside the original)."""
    wal_dir = os.path.realpath(wal_dir)
    marker = os.path.join(spool, "servers", hashlib.sha1(wal_dir.encode()).hexdigest()[:16])
    if not os.path.exists(marker):
        ensure_dir(os.path.dirname(marker))
        write_atomic(marker, wal_dir.encode())


def pusher_running(spool):
    """True if a pusher holds the spool's lock."""
    try:
        fd = os.open(os.path.join(spool, "pusher.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


def start_pusher(settings):
    spool = spool_of(settings)
    if pusher_running(spool):
        return
    log_path = os.path.join(spool, "pusher.log")
    if os.path.exists(log_path) and os.path.getsize(log_path) > 1024 * 1024:
        os.replace(log_path, log_path + ".1")
    from ansible_collections.lifeboat.backup.plugins.module_utils._proc import popen  # not at the top: push starts fast

    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        popen(
            [sys.executable, os.path.abspath(sys.argv[0]), "daemon", settings["_path"]],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=spool,
            close_fds=True,
            start_new_session=True,  # outlives this command; PostgreSQL does not wait for it
        )
    finally:
        log.close()


def push(settings, wal_path):
    """archive_command: 0 once the file is stored durably, 1 otherwise (PostgreSQL retries)."""
    if not settings.get("asynchronous", True):
        return push_now(settings, wal_path)
    spool = spool_of(settings)
    ensure_dir(spool)
    name = os.path.basename(wal_path)
    ok, error = os.path.join(spool, name + ".ok"), os.path.join(spool, name + ".error")
    if os.path.exists(ok):
        return EXIT_OK
    register(spool, os.path.dirname(os.path.abspath(wal_path)))
    deadline = time.monotonic() + float(settings.get("push_timeout", 60))
    started = False
    pause = 0.01
    while True:
        if os.path.exists(ok):
            return EXIT_OK
        if os.path.exists(error):
            # The pusher keeps retrying and removes the error once the file is stored: fail
            # now, PostgreSQL keeps the file and asks again (soon under load, within a minute
            # otherwise), rather than holding its archiver (and a shutdown) here.
            report_error(error, name)
            start_pusher(settings)
            return EXIT_FAILED
        if not started or not pusher_running(spool):
            start_pusher(settings)
            started = True
        if time.monotonic() > deadline:
            sys.stderr.write(
                "lifeboat-wal: %s not archived after %s s (the pusher is still working or stuck; see %s/status.json and pusher.log)\n"
                % (name, settings.get("push_timeout", 60), spool)
            )
            return EXIT_FAILED
        time.sleep(pause)
        pause = min(pause * 1.5, 0.05)


def report_error(path, name):
    try:
        with open(path, "rb") as handle:
            message = handle.read(8192).decode("utf-8", "replace").strip()
    except OSError:
        message = "(the pusher has just retried it)"
    sys.stderr.write("lifeboat-wal: %s not archived: %s\n" % (name, message))


def push_now(settings, wal_path):
    """Synchronous push in this process (asynchronous: false)."""
    archive, close = open_archive(settings)
    try:
        archive.push(wal_path, settings["recipients"], settings.get("compression", "zstd"), settings.get("compression_level"), spool_of(settings))
    except Exception as exc:  # noqa: BLE001 - any failure means: not archived, PostgreSQL keeps the file
        sys.stderr.write("lifeboat-wal: %s not archived: %s\n" % (os.path.basename(wal_path), exc))
        return EXIT_FAILED
    finally:
        close()
    return EXIT_OK


def open_archive(settings):
    """(Archive, close function) for the settings' target."""
    from ansible_collections.lifeboat.backup.plugins.module_utils import _storage, _walarchive

    backend = _storage.open_target(settings["target"])
    archive = _walarchive.Archive(backend, settings.get("prefix", ""), int(settings["segment_size"]), settings["system_identifier"])
    return archive, backend.close


# ---- the pusher ---------------------------------------------------------------------------------


class Pusher:
    """Pushes every ready WAL file of the registered servers, oldest first, in parallel."""

    def __init__(self, settings, archive):
        self.settings = settings
        self.archive = archive
        self.spool = spool_of(settings)
        self.parallel = max(1, int(settings.get("parallel", 2)))
        self.inflight = {}
        self.retry_at = {}
        self.failures = {}
        self.status = {"pid": os.getpid(), "started": _now_iso(), "pushed": 0, "duplicates": 0, "bytes": 0, "stored_bytes": 0, "failing_since": None}
        self._status_written = 0.0
        self._alerted_at = 0.0

    def ready(self):
        """[(file name, path)] waiting to be archived, in PostgreSQL's order."""
        found = {}
        servers = os.path.join(self.spool, "servers")
        for marker in _listdir(servers):
            try:
                with open(os.path.join(servers, marker), "rb") as handle:
                    wal_dir = handle.read().decode()
            except OSError:
                continue
            status_dir = os.path.join(wal_dir, "archive_status")
            if not os.path.isdir(status_dir):
                _unlink(os.path.join(servers, marker))  # that server is gone
                continue
            for entry in _listdir(status_dir):
                if entry.endswith(".ready"):
                    name = entry[: -len(".ready")]
                    found.setdefault(name, os.path.join(wal_dir, name))
        from ansible_collections.lifeboat.backup.plugins.module_utils._wal import archive_order

        return sorted(found.items(), key=lambda item: archive_order(item[0]))

    def forget_done(self, waiting):
        """Remove .ok markers of files PostgreSQL no longer waits for."""
        waiting = set(waiting) | set(self.inflight)
        for entry in _listdir(self.spool):
            if entry.endswith(".ok") and entry[:-3] not in waiting:
                _unlink(os.path.join(self.spool, entry))

    def run(self, executor, idle_exit=IDLE_EXIT):
        idle_since = time.monotonic()
        while True:
            ready = self.ready()
            todo = [(n, p) for n, p in ready if not os.path.exists(os.path.join(self.spool, n + ".ok"))]
            self.forget_done(n for n, _p in ready)
            self.submit(executor, todo)
            if self.inflight:
                self.collect()
                idle_since = time.monotonic()
            elif not todo and time.monotonic() - idle_since > idle_exit:
                self.write_status(0, force=True)
                return
            else:
                time.sleep(0.1 if todo else 0.2)
            self.write_status(len(todo))

    def submit(self, executor, todo):
        """Start the oldest files not yet in flight, keeping two per worker queued."""
        now = time.monotonic()
        for name, path in todo:
            if len(self.inflight) >= self.parallel * 2:
                return
            if name not in self.inflight and self.retry_at.get(name, 0) <= now:
                self.inflight[name] = executor.submit(self.push_one, name, path)

    def collect(self):
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _pending = wait(list(self.inflight.values()), timeout=0.2, return_when=FIRST_COMPLETED)
        for name in [n for n, f in self.inflight.items() if f in done]:
            self.finish(name, self.inflight.pop(name))

    def push_one(self, name, path):
        return self.archive.push(
            path, self.settings["recipients"], self.settings.get("compression", "zstd"), self.settings.get("compression_level"), self.spool
        )

    def finish(self, name, future):
        error = future.exception()
        if error is None:
            result = future.result()
            write_atomic(os.path.join(self.spool, name + ".ok"), b"")
            _unlink(os.path.join(self.spool, name + ".error"))
            self.failures.pop(name, None)
            self.retry_at.pop(name, None)
            self.status["pushed"] += 1
            self.status["duplicates"] += int(result["duplicate"])
            self.status["bytes"] += result["size"]
            self.status["stored_bytes"] += result["stored_bytes"]
            self.status["last_success"] = {"file": name, "time": _now_iso()}
            if self.status["failing_since"] and not self.failures:
                self.alert("wal_archive_recovered", "archiving works again (%s stored)" % name, name)
                self.status["failing_since"] = None
            return
        message = str(error) or type(error).__name__
        count = self.failures[name] = self.failures.get(name, 0) + 1
        # A conflict will not heal by itself: retry rarely. Anything else: 1, 2, 4 ... 10 s.
        delay = 60.0 if type(error).__name__ == "ConflictError" else min(MAX_BACKOFF, 2.0 ** (count - 1))
        self.retry_at[name] = time.monotonic() + delay
        write_atomic(os.path.join(self.spool, name + ".error"), message.encode("utf-8", "replace"))
        self.status["last_failure"] = {"file": name, "time": _now_iso(), "message": message}
        _log("%s not archived (attempt %d, next in %.0f s): %s" % (name, count, delay, message))
        if not self.status["failing_since"]:
            self.status["failing_since"] = _now_iso()
            self.alert("wal_archive_failed", message, name)
        elif time.monotonic() - self._alerted_at > float(self.settings.get("alert_interval", ALERT_INTERVAL)):
            self.alert("wal_archive_failed", "still failing since %s: %s" % (self.status["failing_since"], message), name)

    def alert(self, kind, reason, name):
        """Raise an alert without holding up the pushes (channels may be slow or down)."""
        self._alerted_at = time.monotonic()
        event = {
            "kind": kind,
            "severity": "info" if kind.endswith("recovered") else "error",
            "node": self.settings.get("node"),
            "reason": reason,
            "target": self.archive.location,
            "details": {"file": name, "archive": self.settings.get("name"), "failing_since": self.status.get("failing_since")},
        }
        self.status.setdefault("alerts", []).append({"kind": kind, "time": _now_iso()})
        del self.status["alerts"][:-10]
        thread = threading.Thread(target=send_alert, args=(event, self.settings.get("alerts") or []), daemon=True)
        thread.start()

    def write_status(self, queue, force=False):
        now = time.monotonic()
        if not force and now - self._status_written < STATUS_EVERY:
            return
        self._status_written = now
        self.status.update(updated=_now_iso(), queue=queue, inflight=sorted(self.inflight))
        try:
            write_atomic(os.path.join(self.spool, "status.json"), json.dumps(self.status, sort_keys=True).encode())
        except OSError as exc:
            _log("cannot write status.json: %s" % exc)


def send_alert(event, channels):
    """Record the event in the pusher's log; deliver it to the configured channels (the
    collection's alerts: never raises, never blocks archiving - this runs in a thread)."""
    _log("alert %s: %s" % (event["kind"], event["reason"]))
    if not channels:
        return
    from ansible_collections.lifeboat.backup.plugins.module_utils import _alerts

    outcomes = _alerts.send(event, channels)
    _log("alert: %s" % _alerts.summarise(outcomes))


def daemon(settings):
    """The pusher: one per spool (a lock), until idle for a minute."""
    from concurrent.futures import ThreadPoolExecutor

    spool = spool_of(settings)
    ensure_dir(spool)
    fd = os.open(os.path.join(spool, "pusher.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return EXIT_OK  # another pusher runs
    _log("pusher %d started (parallel %s)" % (os.getpid(), settings.get("parallel", 2)))
    archive, close = open_archive(settings)
    try:
        pusher = Pusher(settings, archive)
        with ThreadPoolExecutor(max_workers=pusher.parallel) as executor:
            pusher.run(executor, float(settings.get("idle_exit", IDLE_EXIT)))
    finally:
        close()
        _log("pusher %d stopped" % os.getpid())
        os.close(fd)
    return EXIT_OK


# ---- check and status --------------------------------------------------------------------------


def check(settings):
    """What postgresql_wal_archive runs as the server's account before switching archiving on."""
    from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image

    report = {"python": sys.executable, "python_version": "%d.%d.%d" % sys.version_info[:3]}
    if not _age.HAS_CRYPTOGRAPHY:
        raise ProgramError("%s cannot import the 'cryptography' library (needed for age encryption): install it for that interpreter" % sys.executable)
    _image.resolve_compression(settings.get("compression", "zstd"))
    for recipient in settings["recipients"]:
        _age.parse_recipient(recipient)
    spool = spool_of(settings)
    ensure_dir(spool)
    probe = os.path.join(spool, ".probe")
    write_atomic(probe, b"")
    os.unlink(probe)
    archive, close = open_archive(settings)
    try:
        report["probe"] = archive.backend.probe(write=True)
        descriptor, created = archive.create_or_check(
            settings["system_identifier"], settings["segment_size"], settings.get("server_version_num", 0), settings.get("node")
        )
        report.update(archive=archive.location, descriptor=descriptor, created=created)
    finally:
        close()
    report["ok"] = True
    return report


def status(settings):
    spool = spool_of(settings)
    try:
        with open(os.path.join(spool, "status.json"), "rb") as handle:
            data = json.loads(handle.read().decode())
    except (OSError, ValueError):
        data = {}
    data["pusher_running"] = pusher_running(spool) if os.path.isdir(spool) else False
    data["errors"] = sorted(e[: -len(".error")] for e in _listdir(spool) if e.endswith(".error"))
    return data


# ---- restore_command client ---------------------------------------------------------------------


def get(socket_path, filename, dest, timeout=3600.0):
    """Ask postgresql_pitr's fetch server for ``filename``; move it to ``dest``."""
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(timeout)
        conn.connect(socket_path)
        conn.sendall(json.dumps({"file": filename}).encode() + b"\n")
        reply = json.loads(_read_line(conn).decode("utf-8"))
    except (OSError, ValueError) as exc:
        sys.stderr.write("lifeboat-wal: cannot reach the restore's fetch server at %s (%s): stopping recovery\n" % (socket_path, exc))
        return EXIT_ABORT_RECOVERY
    if reply.get("status") == "missing":
        return EXIT_FAILED
    if reply.get("status") != "ready":
        sys.stderr.write("lifeboat-wal: %s: %s\n" % (filename, reply.get("message", "the fetch server refused it")))
        return EXIT_ABORT_RECOVERY
    try:
        os.rename(reply["path"], dest)
    except OSError as exc:
        sys.stderr.write("lifeboat-wal: cannot move %s to %s: %s\n" % (reply["path"], dest, exc.strerror))
        return EXIT_ABORT_RECOVERY
    return EXIT_OK


def _read_line(conn, limit=65536):
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ValueError("reply too long")
    return bytes(data)


# ---- the executable ------------------------------------------------------------------------------


def build(interpreter):
    """The program as bytes: a shebang line, then a zip of __main__.py and the module_utils
    it needs (read from this collection as loaded, so AnsiballZ's copies work too)."""
    names = set(PROGRAM_MODULES)
    names.update(n.rsplit(".", 1)[1] for n in list(sys.modules) if n.startswith(PACKAGE + "._storage_"))
    sources = {}
    while names - set(sources):
        for name in sorted(names - set(sources)):
            sources[name] = _source_of(PACKAGE + "." + name)
            names.update(_imported_utils(sources[name]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        _add(archive, "__main__.py", b"import sys\nfrom %s import _walprogram\n\nsys.exit(_walprogram.main(sys.argv[1:]))\n" % PACKAGE.encode())
        parts = PACKAGE.split(".")
        for depth in range(1, len(parts) + 1):
            _add(archive, "/".join(parts[:depth]) + "/__init__.py", b"")
        for name in sorted(sources):
            _add(archive, "/".join(parts) + "/%s.py" % name, sources[name])
    return b"#!%s -Es\n" % interpreter.encode() + buffer.getvalue()


def _imported_utils(source):
    """Names of this collection's module_utils that ``source`` imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE + "."):
            found.add(node.module.rsplit(".", 1)[1])
    return found


def _source_of(fullname):
    """Source bytes of a loaded (or loadable) module, from a file or from AnsiballZ's zip."""
    module = importlib.import_module(fullname)
    try:
        return module.__loader__.get_data(module.__file__)
    except (AttributeError, OSError, TypeError) as exc:
        raise ProgramError("cannot read the source of %s to build %s: %s" % (fullname, PROGRAM_NAME, exc)) from None


def _add(archive, name, data):
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


USAGE = """usage: lifeboat-wal push SETTINGS PATH | daemon SETTINGS | check SETTINGS | status SETTINGS | get SOCKET FILE PATH"""


def main(argv):
    command = argv[0] if argv else None
    try:
        if command == "get" and len(argv) == 4:
            return get(argv[1], argv[2], argv[3])
        if command in ("push", "daemon", "check", "status") and len(argv) == (3 if command == "push" else 2):
            settings = load_settings(argv[1])
            if command == "push":
                return push(settings, argv[2])
            if command == "daemon":
                return daemon(settings)
            sys.stdout.write(json.dumps(check(settings) if command == "check" else status(settings), sort_keys=True, default=str) + "\n")
            return EXIT_OK
        sys.stderr.write(USAGE + "\n")
        return 2
    except Exception as exc:  # noqa: BLE001 - one line for PostgreSQL's log, never a traceback exit above 125
        sys.stderr.write("lifeboat-wal %s: %s\n" % (command, exc))
        return EXIT_ABORT_RECOVERY if command == "get" else EXIT_FAILED


# ---- small helpers -------------------------------------------------------------------------------


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _log(message):
    sys.stderr.write("%s lifeboat-wal[%d]: %s\n" % (_now_iso(), os.getpid(), message))
    sys.stderr.flush()
