# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""The collection's one place that starts processes; streams a command's output into an
image member, or a member into a command.

Every process of the collection's managed-node code starts in ``popen`` below (``run`` and
the stream helpers build on it). ``AnsibleModule.run_command`` is used where it can do the
job (a module with short output and no deadline); it cannot do what the calls here need:

- stream: it collects stdin/stdout in memory, and dumps, WAL segments and table
  segments are gigabytes, piped process to process and into the image with progress;
- bound the time: it has no timeout, and a hung NFS mount, ssh connection or tool must
  fail the task rather than hang the play;
- run as the server's account (``user``/``group``), in a new session (a timeout ends the
  whole process group), with a variable unset (an inherited PGPASSWORD must not win over
  a passfile);
- start a server or agent that outlives the call (the restore sandbox's PostgreSQL and
  search servers, ssh-agent, the WAL archiver's program);
- run from module_utils that hold no AnsibleModule (storage backends, restore sandboxes).

Secrets go in ``env`` (PGPASSWORD, ...) or files, never in ``argv``. stderr is drained by a
thread so a chatty tool cannot block, and kept (bounded) for the error message.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading
import time

from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError

COPY_BUFFER = 1024 * 1024
PIPE_SIZE = 1024 * 1024
STDERR_LIMIT = 64 * 1024


class CommandError(LifeboatError):
    def __init__(self, message, rc=None, stderr=""):
        super().__init__(message)
        self.rc = rc
        self.stderr = stderr


class _StderrCollector(threading.Thread):
    def __init__(self, stream):
        super().__init__(name="lifeboat-stderr", daemon=True)
        self.stream = stream
        self.data = bytearray()

    def run(self):
        for chunk in iter(lambda: self.stream.read(8192), b""):
            if len(self.data) < STDERR_LIMIT:
                self.data += chunk[: STDERR_LIMIT - len(self.data)]

    def text(self):
        return self.data.decode("utf-8", "replace").strip()


def popen(argv, **kwargs):
    """Start ``argv`` (keyword arguments as subprocess.Popen's): the one call of
    subprocess.Popen in the collection's managed-node code."""
    # ansible-test's pylint (ansible-core 2.19+) flags every subprocess call in modules and
    # module_utils, asking for run_command; the module docstring says what run_command
    # cannot do. This line is the collection's only exemption from that rule.
    return subprocess.Popen(argv, **kwargs)  # pylint: disable=ansible-bad-function


def run(argv, data=None, timeout=None, capture_output=False, **kwargs):
    """subprocess.run(argv, input=data, check=False, ...) started by ``popen``: returns a
    subprocess.CompletedProcess. On ``timeout`` the process is killed and
    subprocess.TimeoutExpired raised, as subprocess.run does."""
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    if data is not None:
        kwargs["stdin"] = subprocess.PIPE
    with popen(argv, **kwargs) as proc:
        try:
            stdout, stderr = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        except BaseException:
            proc.kill()  # the with block waits for it
            raise
        return subprocess.CompletedProcess(argv, proc.poll(), stdout, stderr)


class _Running:
    """The processes the workers of one run_parallel call started. Once a task fails, the
    others' running commands are ended (SIGTERM to their process group; their own thread
    then sees them end and fails) and no new one starts: a failed dump or restore is
    reported when it fails, not when the largest remaining stream would have finished."""

    def __init__(self):
        self._lock = threading.Lock()
        self._procs = []
        self.stopped = False

    def add(self, proc):
        with self._lock:
            if self.stopped:
                _kill(proc)
                raise CommandError("not started: another task of the same run failed")
            self._procs = [p for p in self._procs if p.poll() is None] + [proc]

    def stop_all(self):
        with self._lock:
            self.stopped = True
            procs, self._procs = self._procs, []
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass


_worker_scope = threading.local()


def _start(argv, env, stdin, stdout, cwd):
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)  # None unsets: e.g. an inherited PGPASSWORD must not win over a passfile
        else:
            full_env[key] = value
    try:
        proc = popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=full_env, cwd=cwd, start_new_session=True)
    except OSError as exc:
        raise CommandError("cannot run %s: %s" % (argv[0], exc.strerror or exc)) from None
    running = getattr(_worker_scope, "running", None)
    if running is not None:
        running.add(proc)
    return proc


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named in the fcntl module from Python 3.10 only


def widen_pipe(stream, size=PIPE_SIZE):
    """Ask for a ``size`` pipe buffer (Linux; the default is 64 KiB) so the tool writing into
    it keeps going while the reader hashes and hands on a block. Best effort."""
    try:
        fcntl.fcntl(stream.fileno(), _F_SETPIPE_SZ, size)
    except (OSError, ValueError, AttributeError):
        pass


def stream_from(argv, sink, env=None, cwd=None, timeout=None, on_chunk=None):
    """Run ``argv`` and copy its stdout into ``sink.write``. Returns (bytes copied, stderr text).

    Raises CommandError when the command cannot start, exits non-zero, is killed, or runs
    longer than ``timeout`` seconds. If writing to ``sink`` fails, the command is ended and
    the write error propagates.
    """
    proc = _start(argv, env, subprocess.DEVNULL, subprocess.PIPE, cwd)
    widen_pipe(proc.stdout)
    collector = _StderrCollector(proc.stderr)
    collector.start()
    deadline = time.time() + timeout if timeout else None
    copied = 0
    try:
        while True:
            chunk = proc.stdout.read1(COPY_BUFFER) if hasattr(proc.stdout, "read1") else proc.stdout.read(COPY_BUFFER)
            if not chunk:
                break
            sink.write(chunk)
            copied += len(chunk)
            if on_chunk:
                on_chunk(copied)
            if deadline and time.time() > deadline:
                raise CommandError("%s did not finish within %d s" % (os.path.basename(argv[0]), timeout))
        rc = proc.wait(timeout=max(1, deadline - time.time()) if deadline else None)
    except subprocess.TimeoutExpired:
        _kill(proc)
        collector.join(5)
        raise CommandError("%s did not finish within %d s" % (os.path.basename(argv[0]), timeout), stderr=collector.text()) from None
    except BaseException:
        _kill(proc)
        collector.join(5)
        raise
    finally:
        proc.stdout.close()
    collector.join()
    stderr = collector.text()
    if rc != 0:
        how = _how_it_ended(rc)
        raise CommandError("%s %s: %s" % (os.path.basename(argv[0]), how, stderr or "(no error output)"), rc=rc, stderr=stderr)
    return copied, stderr


def stream_into(argv, source, env=None, cwd=None, timeout=None):
    """Run ``argv`` feeding ``source.read`` into its stdin. Returns (stdout text, stderr text).

    Raises CommandError as stream_from does; a broken pipe (the tool stopped reading)
    is reported with the tool's own error output.
    """
    proc = _start(argv, env, subprocess.PIPE, subprocess.PIPE, cwd)
    collector = _StderrCollector(proc.stderr)
    collector.start()
    out = bytearray()

    def drain():
        for chunk in iter(lambda: proc.stdout.read(8192), b""):
            if len(out) < STDERR_LIMIT:
                out.extend(chunk[: STDERR_LIMIT - len(out)])

    reader = threading.Thread(target=drain, name="lifeboat-stdout", daemon=True)
    reader.start()
    deadline = time.time() + timeout if timeout else None
    try:
        broken = _feed(proc, source, deadline, argv, timeout)
        rc = proc.wait(timeout=max(1, deadline - time.time()) if deadline else None)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise CommandError("%s did not finish within %d s" % (os.path.basename(argv[0]), timeout), stderr=collector.text()) from None
    except BaseException:
        _kill(proc)
        raise
    reader.join()
    collector.join()
    stderr = collector.text()
    if rc != 0 or broken:
        how = "stopped reading its input" if rc == 0 else _how_it_ended(rc)
        raise CommandError("%s %s: %s" % (os.path.basename(argv[0]), how, stderr or "(no error output)"), rc=rc, stderr=stderr)
    return out.decode("utf-8", "replace"), stderr


def _feed(proc, source, deadline, argv, timeout):
    """Copy ``source`` into the process's stdin and close it; True when the process stopped
    reading before the end (a broken pipe)."""
    broken = False
    while not broken:
        chunk = source.read(COPY_BUFFER)
        if not chunk:
            break
        try:
            proc.stdin.write(chunk)
        except BrokenPipeError:
            broken = True
            break
        if deadline and time.time() > deadline:
            raise CommandError("%s did not finish within %d s" % (os.path.basename(argv[0]), timeout))
    try:
        proc.stdin.close()
    except BrokenPipeError:
        broken = True
    return broken


def _how_it_ended(rc):
    return "was killed by signal %d" % -rc if rc < 0 else "exited %d" % rc


class Feed:
    """A process that reads a copy of a stream on its stdin, beside the main sink (see Tee).

    Used to check a dump while it is written (``pg_restore --list`` reads it back) without
    a copy on disk. The process may stop reading early - ``pg_restore --list`` exits once it
    has the table of contents - after which writes are dropped. ``finish()`` returns its
    stdout (up to ``output_limit`` bytes) and raises CommandError unless it exited 0.
    """

    def __init__(self, argv, env=None, cwd=None, output_limit=256 * 1024 * 1024):
        self.argv = argv
        self.proc = _start(argv, env, subprocess.PIPE, subprocess.PIPE, cwd)
        self.stopped_reading = False
        self._collector = _StderrCollector(self.proc.stderr)
        self._collector.start()
        self._out = bytearray()
        self._overflow = False

        def drain():
            for chunk in iter(lambda: self.proc.stdout.read(65536), b""):
                if len(self._out) + len(chunk) > output_limit:
                    self._overflow = True
                    continue
                self._out.extend(chunk)

        self._reader = threading.Thread(target=drain, name="lifeboat-feed-stdout", daemon=True)
        self._reader.start()

    def write(self, data):
        if self.stopped_reading:
            return len(data)
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, ValueError):
            self.stopped_reading = True
        return len(data)

    def finish(self, timeout=600):
        """Close its input, wait for it; returns (stdout text, stderr text)."""
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(self.proc)
            raise CommandError("%s did not finish within %d s after its input ended" % (os.path.basename(self.argv[0]), timeout)) from None
        self._reader.join()
        self._collector.join()
        stderr = self._collector.text()
        if rc != 0:
            how = _how_it_ended(rc)
            raise CommandError("%s %s: %s" % (os.path.basename(self.argv[0]), how, stderr or "(no error output)"), rc=rc, stderr=stderr)
        if self._overflow:
            raise CommandError("%s printed more than the output limit" % os.path.basename(self.argv[0]))
        return self._out.decode("utf-8", "replace"), stderr

    def abort(self):
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        _kill(self.proc)
        self._reader.join(5)
        self._collector.join(5)


class Tee:
    """A sink that writes to ``sink`` and to each Feed; keeps the first and last bytes
    (``head``, ``tail``) for format checks."""

    def __init__(self, sink, feeds=(), head_size=512, tail_size=512):
        self.sink = sink
        self.feeds = list(feeds)
        self.head = b""
        self.tail = b""
        self._head_size = head_size
        self._tail_size = tail_size
        self.size = 0

    def write(self, data):
        if len(self.head) < self._head_size:
            self.head += bytes(data[: self._head_size - len(self.head)])
        self.tail = (self.tail + bytes(data[-self._tail_size :]))[-self._tail_size :]
        self.size += len(data)
        self.sink.write(data)
        for feed in self.feeds:
            feed.write(data)
        return len(data)


class Watched:
    """A command whose stderr is read line by line as it runs (progress such as
    ``pg_dump --verbose``); stdout is discarded. Use as a context manager: leaving the
    block with an exception ends the process group.

        with Watched(argv, env=env) as cmd:
            for line in cmd.lines(): ...
            cmd.check()   # CommandError unless it exited 0
    """

    def __init__(self, argv, env=None, cwd=None, keep=200):
        self.argv = argv
        self.proc = _start(argv, env, subprocess.DEVNULL, subprocess.DEVNULL, cwd)
        self.tail = []
        self._keep = keep

    def lines(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            if len(self.tail) > self._keep:
                del self.tail[0]
            yield line

    def check(self, timeout=None):
        """Wait for the end; raise CommandError unless it exited 0. Returns the kept stderr lines."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(self.proc)
            raise CommandError("%s did not finish within %d s" % (os.path.basename(self.argv[0]), timeout)) from None
        if rc != 0:
            how = _how_it_ended(rc)
            errors = [line for line in self.tail if "error" in line.lower() or "fatal" in line.lower()] or self.tail[-5:]
            text = "\n".join(errors).strip()
            raise CommandError("%s %s: %s" % (os.path.basename(self.argv[0]), how, text or "(no error output)"), rc=rc, stderr="\n".join(self.tail))
        return list(self.tail)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            _kill(self.proc)
        self.proc.stderr.close()
        return False


def run_parallel(tasks, jobs, name="lifeboat-worker"):
    """Run the callables ``tasks`` on ``jobs`` threads, taken in list order; returns their
    results in that order. The first failure stops the others from starting, ends the
    commands the running ones started (``_Running``), and is raised once they have ended
    (each owns a process that must not be left behind)."""
    failures = []
    results = [None] * len(tasks)
    lock = threading.Lock()
    pending = list(enumerate(tasks))
    running = _Running()

    def worker():
        _worker_scope.running = running
        while True:
            with lock:
                if not pending or failures:
                    return
                index, task = pending.pop(0)
            try:
                results[index] = task()
            except BaseException as exc:  # raised again below, in the caller's thread
                with lock:
                    failures.append(exc)
                    first = len(failures) == 1
                if first:
                    running.stop_all()

    threads = [threading.Thread(target=worker, name="%s-%d" % (name, n), daemon=True) for n in range(max(1, jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return results
