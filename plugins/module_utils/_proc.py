# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Stream a command's output into an image member, or a member into a command.

``AnsibleModule.run_command`` collects output in memory; dumps are gigabytes, so the
component modules pipe through here instead. Secrets go in ``env`` (PGPASSWORD, ...)
or files, never in ``argv``. stderr is drained by a thread so a chatty tool cannot
block, and kept (bounded) for the error message.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

COPY_BUFFER = 1024 * 1024
STDERR_LIMIT = 64 * 1024


class CommandError(Exception):
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


def _start(argv, env, stdin, stdout, cwd):
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=full_env, cwd=cwd, start_new_session=True)
    except OSError as exc:
        raise CommandError("cannot run %s: %s" % (argv[0], exc.strerror or exc)) from None


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


def stream_from(argv, sink, env=None, cwd=None, timeout=None, on_chunk=None):
    """Run ``argv`` and copy its stdout into ``sink.write``. Returns (bytes copied, stderr text).

    Raises CommandError when the command cannot start, exits non-zero, is killed, or runs
    longer than ``timeout`` seconds. If writing to ``sink`` fails, the command is ended and
    the write error propagates.
    """
    proc = _start(argv, env, subprocess.DEVNULL, subprocess.PIPE, cwd)
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
        how = "was killed by signal %d" % -rc if rc < 0 else "exited %d" % rc
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
    broken = False
    try:
        while True:
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
        how = "was killed by signal %d" % -rc if rc < 0 else "exited %d" % rc
        if broken and rc == 0:
            how = "stopped reading its input"
        raise CommandError("%s %s: %s" % (os.path.basename(argv[0]), how, stderr or "(no error output)"), rc=rc, stderr=stderr)
    return out.decode("utf-8", "replace"), stderr
