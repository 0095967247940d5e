# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""The moving parts of a point-in-time restore (``postgresql_pitr``).

- ``FetchServer``: while PostgreSQL recovers, the module serves it WAL from the archive.
  The private key stays in the module's memory: PostgreSQL's ``restore_command`` is a
  shell test for a file already fetched into the prefetch folder (then a ``mv``), else the
  archive program asking this server over a unix socket. Worker threads fetch, decrypt and
  check the next files of the recovery's chain ahead of time; a file that cannot be
  delivered (damaged, target down) makes the client exit 126, so recovery stops instead
  of ending early.
- ``verify_chain``: decrypt and check every file a recovery will need, before anything is
  restored.
- ``Postmaster``: the recovering server, run as the data directory's owner, isolated (no
  TCP, a private socket folder and ``pg_hba.conf``).
"""

from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.lifeboat.backup.plugins.module_utils import _proc, _walarchive
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError

FETCH_ATTEMPTS = 3


class RestoreError(LifeboatError):
    """A restore step failed; the message says what and what to do."""


# ---- serving WAL to the recovering server ------------------------------------------------


class FetchServer:
    """Serves WAL files of ``index`` to ``restore_command``, prefetching along ``chain``."""

    def __init__(self, archive, index, identities, chain, prefetch_dir, socket_path, owner=None, prefetch=4, workers=2):
        self.archive = archive
        self.index = index
        self.identities = identities
        self.chain = list(chain)
        self.position = {entry.file: i for i, entry in enumerate(self.chain)}
        self.prefetch_dir = prefetch_dir
        self.socket_path = socket_path
        self.owner = owner
        self.prefetch = max(1, prefetch)
        self.workers = max(1, workers)
        self.state = {}  # file -> "fetching" | "ready" | ("error", message)
        self.cond = threading.Condition()
        self.cursor = 0  # chain files before this one were handed over
        self.error = None  # (file, message) of the first file that could not be delivered
        self.requests = 0
        self.last_request = None
        self.delivered_bytes = 0
        self.missing = []  # files asked for and not in the archive (the end of recovery's reading)
        self._stop = False
        self._threads = []
        self._sock = None

    # ---- life cycle ----

    def start(self):
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        if self.owner:
            os.chown(self.socket_path, *self.owner)
        sock.listen(16)
        sock.settimeout(0.5)
        self._sock = sock
        self._spawn(self._accept_loop, "lifeboat-fetch-accept")
        for number in range(self.workers):
            self._spawn(self._prefetch_loop, "lifeboat-prefetch-%d" % number)
        return self

    def _spawn(self, target, name):
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self):
        self._stop = True
        with self.cond:
            self.cond.notify_all()
        for thread in self._threads:
            thread.join(10)
        if self._sock is not None:
            self._sock.close()
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # ---- progress ----

    def handed_over(self):
        """Chain files PostgreSQL has taken so far."""
        with self.cond:
            self._advance()
            return self.cursor

    def describe(self):
        return {
            "requests": self.requests,
            "last_request": self.last_request,
            "chain_files": len(self.chain),
            "handed_over": self.handed_over(),
            "delivered_bytes": self.delivered_bytes,
            "error": None if self.error is None else {"file": self.error[0], "message": self.error[1]},
        }

    # ---- serving ----

    def _accept_loop(self):
        while not self._stop:
            try:
                conn, _addr = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._spawn_handler(conn)

    def _spawn_handler(self, conn):
        thread = threading.Thread(target=self._handle, args=(conn,), name="lifeboat-fetch-request", daemon=True)
        thread.start()

    def _handle(self, conn):
        try:
            conn.settimeout(3600)
            line = b""
            while not line.endswith(b"\n") and len(line) < 4096:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                line += chunk
            name = json.loads(line.decode("utf-8")).get("file", "")
            reply = self.request(os.path.basename(str(name)))
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def request(self, name):
        """The reply for restore_command asking for ``name``."""
        with self.cond:
            self.requests += 1
            self.last_request = name
            if name in self.position:
                self.cursor = max(self.cursor, self.position[name])
                self.cond.notify_all()
        if name in self.index.conflicts:
            message = "%s is archived twice with different content; the archive cannot tell which one is right" % name
            self._record_error(name, message)
            return {"status": "error", "message": message}
        entry = self.index.find(name)
        if entry is None:
            with self.cond:
                self.missing.append(name)
                del self.missing[:-20]
            return {"status": "missing"}
        outcome = self._obtain(entry)
        if outcome[0] == "ready":
            return {"status": "ready", "path": outcome[1]}
        return {"status": "error", "message": outcome[1]}

    def _path(self, name):
        return os.path.join(self.prefetch_dir, name)

    def _obtain(self, entry):
        """("ready", path) once ``entry`` sits in the prefetch folder, or ("error", message)."""
        name = entry.file
        with self.cond:
            while self.state.get(name) == "fetching":
                self.cond.wait(1)
            current = self.state.get(name)
            if current == "ready" and os.path.exists(self._path(name)):
                return "ready", self._path(name)
            if isinstance(current, tuple):
                return current
            self.state[name] = "fetching"
        outcome = self._fetch(entry)
        with self.cond:
            self.state[name] = "ready" if outcome[0] == "ready" else outcome
            self.cond.notify_all()
        return outcome

    def _fetch(self, entry):
        message = None
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                self._place(entry)
                return "ready", self._path(entry.file)
            except _walarchive.DamagedError as exc:
                message = exc.msg
                break
            except (LifeboatError, OSError) as exc:
                message = "cannot fetch %s from %s: %s" % (entry.file, self.archive.location, getattr(exc, "msg", None) or exc)
                if isinstance(exc, _walarchive.ArchiveError):
                    break  # a wrong key: retrying will not help
                time.sleep(min(5, attempt))
        self._record_error(entry.file, message)
        return "error", message

    def _place(self, entry):
        """Fetch into a temporary beside the final name; rename only once it checked out."""
        tmp = self._path(".tmp-" + entry.file)
        try:
            with open(tmp, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                size = self.archive.fetch(entry, self.identities, handle)
            if self.owner:
                os.chown(tmp, *self.owner)
            os.rename(tmp, self._path(entry.file))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        with self.cond:
            self.delivered_bytes += size

    def _record_error(self, name, message):
        with self.cond:
            if self.error is None:
                self.error = (name, message)

    # ---- prefetching ----

    def _advance(self):
        """Move the cursor past chain files already moved into pg_wal (the shell's mv)."""
        while self.cursor < len(self.chain):
            name = self.chain[self.cursor].file
            if self.state.get(name) == "ready" and not os.path.exists(self._path(name)):
                self.cursor += 1
                continue
            break

    def _prefetch_loop(self):
        while not self._stop:
            entry = None
            with self.cond:
                self._advance()
                if self.error is None:
                    for i in range(self.cursor, min(len(self.chain), self.cursor + self.prefetch)):
                        if self.chain[i].file not in self.state:
                            entry = self.chain[i]
                            break
                if entry is None:
                    self.cond.wait(0.2)
                    continue
            self._obtain(entry)


# ---- checking the chain before a restore -----------------------------------------------------


def verify_chain(archive, chain, identities, workers=2):
    """Decrypt and check every entry of ``chain``. Returns [(entry, message)] of the damaged
    ones, in chain order. A target that fails (not a damaged file) raises."""
    damaged = []

    def check(entry):
        try:
            archive.fetch(entry, identities)
        except _walarchive.DamagedError as exc:
            return entry, exc.msg
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as executor:
        for outcome in executor.map(check, chain):
            if outcome is not None:
                damaged.append(outcome)
    return damaged


# ---- the recovering server -------------------------------------------------------------------


def account_kwargs(owner):
    """subprocess keywords to run a child as ``owner`` (uid, gid) when that is not us."""
    if not owner or owner[0] == os.geteuid():
        return {}
    return {"user": owner[0], "group": owner[1], "extra_groups": []}


_FATAL = re.compile(r"\b(FATAL|PANIC):\s+(.*)$")
_STOPPING = re.compile(r"LOG:\s+(recovery stopping .*)$")


class Postmaster:
    """A PostgreSQL server started from a data directory by this process."""

    def __init__(self, bin_dir, data_dir, options, log_path, owner=None):
        self.bin_dir = bin_dir
        self.data_dir = data_dir
        self.options = options
        self.log_path = log_path
        self.owner = owner
        self.process = None

    def start(self):
        argv = [os.path.join(self.bin_dir, "postgres"), "-D", self.data_dir]
        for key, value in self.options.items():
            argv += ["-c", "%s=%s" % (key, value)]
        with open(self.log_path, "ab") as log:
            if self.owner:
                os.fchown(log.fileno(), *self.owner)
            self.process = _proc.popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.data_dir, start_new_session=True, **account_kwargs(self.owner)
            )
        return self

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout=120):
        """Fast shutdown (SIGINT); immediate (SIGQUIT) if it does not stop in time."""
        if not self.alive():
            return
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 30)):
            try:
                self.process.send_signal(sig)
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue
        self.process.kill()
        self.process.wait()

    def detach(self):
        """Forget the child: it keeps running after this process ends."""
        self.process = None

    def log_lines(self, limit=200):
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(max(0, os.path.getsize(self.log_path) - 256 * 1024))
                return handle.read().decode("utf-8", "replace").splitlines()[-limit:]
        except OSError:
            return []

    def fatal(self):
        """The last FATAL or PANIC message of the log, or None."""
        for line in reversed(self.log_lines()):
            match = _FATAL.search(line)
            if match:
                return match.group(2).strip()
        return None

    def stopping_line(self):
        """PostgreSQL's 'recovery stopping before/after ...' line, or None."""
        for line in reversed(self.log_lines(2000)):
            match = _STOPPING.search(line)
            if match:
                return match.group(1).strip()
        return None


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)


# ---- preparing the data directory ----------------------------------------------------------------


def run_as(argv, owner, timeout=3600, cwd="/"):
    """Run ``argv`` as ``owner``; (exit status, output text)."""
    try:
        proc = _proc.run(argv, capture_output=True, timeout=timeout, cwd=cwd, **account_kwargs(owner))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 255, str(exc)
    return proc.returncode, (proc.stderr + proc.stdout).decode("utf-8", "replace").strip()


def extract(stream, data_dir, owner):
    """Unpack a tar stream into ``data_dir`` with ``tar`` run as the data directory's owner.
    Returns the bytes read. Raises RestoreError; the stream's own errors (a damaged member)
    propagate."""
    proc = _proc.popen(
        ["tar", "-x", "-f", "-", "-C", data_dir],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd="/",
        **account_kwargs(owner),
    )
    copied = 0
    try:
        while True:
            chunk = stream.read(1024 * 1024)
            if not chunk:
                break
            proc.stdin.write(chunk)
            copied += len(chunk)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    stderr = proc.stderr.read().decode("utf-8", "replace").strip()
    if proc.wait() != 0:
        raise RestoreError("unpacking the base backup into %s failed (tar exited %d): %s" % (data_dir, proc.returncode, stderr[-2000:]))
    return copied


def server_bin_dir(major, bin_dir=None):
    """The directory of the PostgreSQL ``major`` server binaries (postgres, pg_ctl, pg_verifybackup)."""
    candidates = [bin_dir] if bin_dir else ["/usr/lib/postgresql/%s/bin" % major, "/usr/pgsql-%s/bin" % major, "/usr/local/pgsql/bin"]
    problems = []
    for directory in candidates:
        postgres = os.path.join(directory, "postgres")
        if not os.access(postgres, os.X_OK):
            problems.append("%s has no postgres" % directory)
            continue
        code, text = run_as([postgres, "--version"], None, timeout=30)
        found = re.search(r"\s(\d+)(?:\.\d+)?", text)
        if code == 0 and found and found.group(1) == str(major):
            return directory
        problems.append("%s is PostgreSQL %s" % (directory, found.group(1) if found else "of unknown version"))
    raise RestoreError(
        "the base backup needs the PostgreSQL %s server binaries: %s. Install them (Debian: postgresql-%s) or set bin_dir" % (major, "; ".join(problems), major)
    )


# ---- recovery targets ------------------------------------------------------------------------------

_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?\s*(Z|UTC|[+-]\d{2}(?::?\d{2})?)?$", re.IGNORECASE)


def parse_time(text):
    """Epoch of a target time. Without a zone, the managed node's local time (as an operator
    reads a clock on it). Raises ValueError with what is accepted."""
    match = _TIME.match((text or "").strip())
    if not match:
        raise ValueError(
            "%r is not a time: write it as 2026-11-29 16:50:00 (node's local time) or with a zone, 2026-11-29 15:50:00+00 / 2026-11-29T15:50:00Z" % text
        )
    year, month, day, hour, minute = (int(match.group(i)) for i in range(1, 6))
    second = int(match.group(6) or 0)
    fraction = float(match.group(7) or 0)
    fields = (year, month, day, hour, minute, second, 0, 0, -1)
    zone = (match.group(8) or "").upper()
    if not zone:
        return time.mktime(fields) + fraction
    base = calendar.timegm(fields)
    if zone in ("Z", "UTC"):
        return base + fraction
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    return base - sign * (int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60) + fraction


def pg_time(epoch):
    """A time PostgreSQL reads exactly, whatever its TimeZone: UTC with microseconds."""
    whole = int(epoch)
    return "%s.%06d+00" % (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole)), int(round((epoch - whole) * 1e6)))


# ---- progress ------------------------------------------------------------------------------------


class Progress:
    """Progress lines in a file an operator can follow (``tail -f``), and samples returned."""

    def __init__(self, path=None, keep=60):
        self.path = path
        self.keep = keep
        self.samples = []
        self.started = time.monotonic()

    def say(self, stage, message, **values):
        sample = dict(values, stage=stage, message=message, elapsed=round(time.monotonic() - self.started, 1))
        self.samples.append(sample)
        if len(self.samples) > self.keep:
            del self.samples[1 : len(self.samples) - self.keep + 1]
        if self.path:
            try:
                with open(self.path, "a") as handle:
                    handle.write("%s %-8s %s\n" % (time.strftime("%H:%M:%S"), stage, message))
            except OSError:
                self.path = None  # progress is a convenience; never fail the restore for it
