# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Progress of a long-running module, for the controller to show while the module runs.

The action plugin of a long module (plugins/plugin_utils/_progress_action.py) puts the
path of a progress file in the module's environment (``LIFEBOAT_PROGRESS_FILE``). The
module reports through ``reporter()``; the record is rewritten atomically (temporary
name, rename) at most once a second, so the controller always reads a whole record:

    {"version": 1, "started": ..., "updated": ..., "phase": "dump",
     "item": "postgresql/appdb.dump", "bytes": 1048576, "item_bytes": 1048576,
     "item_total": 3145728, "shards_done": null, "shards_total": null}

``bytes`` counts everything the run has moved so far, ``item_bytes`` the current item
(member, object) of ``item_total`` when that is known. Without the environment variable
(a module run by hand, by a test, in check mode) the reporter does nothing. Reporting
never fails the module: a file that cannot be written is given up silently.
"""

from __future__ import annotations

import json
import os
import threading
import time

ENVIRONMENT = "LIFEBOAT_PROGRESS_FILE"
VERSION = 1
# At most one write a second: the controller reads every few seconds at most.
WRITE_EVERY = 1.0

# The option read by the action plugin on the controller (doc fragment lifeboat.backup._progress).
PROGRESS_SPEC = dict(progress_interval=dict(type="int"))


class Reporter:
    """Writes the progress record of this module run to ``path`` (nothing when None)."""

    def __init__(self, path=None, clock=time.time, monotonic=time.monotonic):
        self.path = path
        self._clock = clock
        self._monotonic = monotonic
        self._last_write = None
        # Several threads report at once in a parallel dump (one member each): the counts
        # are updated and the file written under one lock, never interleaved.
        self._lock = threading.RLock()
        self.record = {
            "version": VERSION,
            "started": clock(),
            "updated": None,
            "phase": None,
            "item": None,
            "bytes": 0,
            "item_bytes": 0,
            "item_total": None,
            "shards_done": None,
            "shards_total": None,
        }

    @property
    def active(self):
        return self.path is not None

    def phase(self, phase, item=None, total=None):
        """A new step (``phase`` such as dump, archive, restore, transfer) on ``item``, of
        ``total`` bytes when known; the item's byte count starts again at 0."""
        if self.path is None:
            return
        self.record.update(phase=phase, item=item, item_bytes=0, item_total=total)
        self.write(force=True)

    def advance(self, count):
        """``count`` more bytes done (called for every block: cheap when not writing)."""
        if self.path is None or not count:
            return
        with self._lock:
            record = self.record
            record["bytes"] += count
            record["item_bytes"] += count
            self.write()

    def item_done(self, done, total=None):
        """The current item stands at ``done`` bytes (of ``total``): for callers that count
        themselves, such as a storage upload that resumes."""
        if self.path is None:
            return
        record = self.record
        record["bytes"] += max(0, done - record["item_bytes"])
        record["item_bytes"] = done
        if total is not None:
            record["item_total"] = total
        self.write()

    def shards(self, done, total, size_done=None, size_total=None):
        """A snapshot or recovery at ``done`` of ``total`` shards (and bytes when known)."""
        if self.path is None:
            return
        self.record.update(shards_done=done, shards_total=total)
        if size_done is not None:
            self.record.update(bytes=size_done, item_bytes=size_done, item_total=size_total)
        self.write()

    def write(self, force=False):
        with self._lock:
            self._write(force)

    def _write(self, force):
        if self.path is None:
            return
        now = self._monotonic()
        if not force and self._last_write is not None and now - self._last_write < WRITE_EVERY:
            return
        self._last_write = now
        self.record["updated"] = self._clock()
        temporary = "%s.%d.tmp" % (self.path, os.getpid())
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            # Readable by the connection user when the module runs as another (become).
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "w") as handle:
                json.dump(self.record, handle)
            os.replace(temporary, self.path)
        except (OSError, ValueError):
            # Progress is a courtesy: a directory that went away or filled up stops the
            # reports, never the backup.
            self.path = None
            try:
                os.unlink(temporary)
            except OSError:
                pass


_REPORTER = None


def reporter():
    """The reporter of this module process (one per run, set up from the environment)."""
    global _REPORTER  # pylint: disable=global-statement
    if _REPORTER is None:
        _REPORTER = Reporter(os.environ.get(ENVIRONMENT) or None)
    return _REPORTER
