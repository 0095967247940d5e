"""Looking for secrets where they must never be: command lines and files.

``CmdlineSampler`` reads every process's ``/proc/<pid>/cmdline`` in a thread while a test
runs something (``ps`` shows argv to every user); ``files_containing`` greps the files
written under some directories since a time.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


class CmdlineSampler:
    """``with CmdlineSampler(secrets) as sampler: ...`` then ``sampler.hits`` (pid, argv) and
    ``sampler.samples`` (how many full passes over /proc were made: a test asserts it is > 0)."""

    def __init__(self, secrets, interval=0.01):
        self.secrets = [s.encode() if isinstance(s, str) else s for s in secrets]
        self.interval = interval
        self.hits = []
        self.samples = 0
        self.seen_pids = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cmdline-sampler", daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for entry in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    data = entry.read_bytes()
                except OSError:
                    continue
                self.seen_pids.add(entry.parent.name)
                for secret in self.secrets:
                    if secret in data:
                        self.hits.append((entry.parent.name, data.replace(b"\0", b" ").decode("utf-8", "replace")))
            self.samples += 1
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def files_containing(roots, secrets, since=0.0, exclude=(), max_size=64 * 1024 * 1024):
    """[(path, secret)] for files under ``roots`` modified at or after ``since`` that hold a secret.
    ``exclude``: files, or directories whose whole tree is left out (the sources themselves)."""
    needles = [s.encode() if isinstance(s, str) else s for s in secrets]
    excluded = {os.path.realpath(p) for p in exclude}
    found = []
    for root in roots:
        for directory, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(directory, name)
                try:
                    info = os.lstat(path)
                    if not os.path.isfile(path) or os.path.islink(path) or info.st_mtime < since or info.st_size > max_size:
                        continue
                    real = os.path.realpath(path)
                    if real in excluded or any(real.startswith(e + os.sep) for e in excluded):
                        continue
                    with open(path, "rb") as handle:
                        data = handle.read()
                except OSError:
                    continue
                found += [(path, needle.decode("utf-8", "replace")) for needle in needles if needle in data]
    return found
