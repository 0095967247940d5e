# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE plugin_utils of lifeboat.backup: not a public API, may change without notice.
"""Progress of a long module on the controller: the action plugin that shows it, and the
line it prints (docs/progress.md).

``ProgressAction`` runs the module exactly as the normal action does (same arguments,
same process on the node, same result, same check mode and no_log), in a thread of the
worker process; meanwhile the main thread reads the progress record the module writes
(module_utils/_progress.py) every ``progress_interval`` seconds and prints one line:

    lifeboat.backup.postgresql_dump on node1: 1.2 GiB done at 48.1 MiB/s; dump of
    postgresql/appdb.dump 1.2 GiB of 3.0 GiB (40%), about 38s left; 25s elapsed

The record is read with a plain command without privilege escalation (its directory is
made by the become user beforehand, readable by the connection user), so the read never
competes with the module's own escalation on the connection.
"""

from __future__ import annotations

import json
import threading
import time

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.lifeboat.backup.plugins.module_utils._progress import ENVIRONMENT

display = Display()

DEFAULT_INTERVAL = 30
VARIABLE = "lifeboat_progress_interval"
UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size_text(count):
    """``1288490188`` -> ``1.2 GiB``."""
    value = float(count)
    for unit in UNITS:
        if abs(value) < 1024 or unit == UNITS[-1]:
            return ("%d %s" % (value, unit)) if unit == "B" else ("%.1f %s" % (value, unit))
        value /= 1024
    return "%d B" % count  # pragma: no cover - the loop always returns


def duration_text(seconds):
    """``3725`` -> ``1h 02m``; ``125`` -> ``2m 05s``; ``7`` -> ``7s``."""
    seconds = int(round(max(0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return "%dh %02dm" % (hours, minutes)
    if minutes:
        return "%dm %02ds" % (minutes, secs)
    return "%ds" % secs


def rate_of(record, previous=None):
    """Bytes per second: since ``previous`` (the record read before) when it is of the same
    run and older, otherwise the average since the module started; None when unknown."""
    updated = record.get("updated")
    if not updated:
        return None
    if previous and previous.get("updated") and previous.get("started") == record.get("started") and updated > previous["updated"]:
        return max(0.0, (record.get("bytes", 0) - previous.get("bytes", 0)) / (updated - previous["updated"]))
    elapsed = updated - (record.get("started") or updated)
    if elapsed <= 0:
        return None
    return record.get("bytes", 0) / elapsed


def time_left(record, rate):
    """Seconds left for the current item (shards first, then bytes), or None."""
    shards_done, shards_total = record.get("shards_done"), record.get("shards_total")
    if shards_total and shards_done:
        elapsed = (record.get("updated") or 0) - (record.get("started") or 0)
        if elapsed > 0:
            return elapsed * (shards_total - shards_done) / shards_done
    total, done = record.get("item_total"), record.get("item_bytes") or 0
    if total and rate:
        return max(0, total - done) / rate
    return None


def progress_line(label, record, previous=None, elapsed=None, show_item=True):
    """The line printed for one progress ``record``; ``show_item`` False (no_log) leaves the
    item's name out."""
    rate = rate_of(record, previous)
    parts = ["%s done" % size_text(record.get("bytes", 0))]
    if rate is not None and record.get("bytes"):
        parts[0] += " at %s/s" % size_text(rate)
    step = " ".join(text for text in (record.get("phase"), record["item"] if show_item and record.get("item") else None) if text)
    details = [step] if step else []
    if record.get("shards_total"):
        details.append("%s of %s shards" % (record.get("shards_done") or 0, record["shards_total"]))
    total = record.get("item_total")
    if total:
        done = record.get("item_bytes") or 0
        details.append("%s of %s (%d%%)" % (size_text(done), size_text(total), min(100, 100 * done // total)))
    left = time_left(record, rate)
    if left is not None:
        details.append("about %s left" % duration_text(left))
    if details:
        parts.append(", ".join(details))
    if elapsed is not None:
        parts.append("%s elapsed" % duration_text(elapsed))
    return "%s: %s" % (label, "; ".join(parts))


def parse_record(text):
    """The progress record in ``text`` (what the node's file holds), or None."""
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("version") == 1 else None


def interval_of(value, name):
    """``progress_interval`` (or the variable) as whole seconds >= 0."""
    if value is None or value == "":
        return None
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        raise AnsibleError("%s must be a whole number of seconds (0 turns progress off), not %r" % (name, value)) from None
    if seconds < 0:
        raise AnsibleError("%s must be 0 (off) or more seconds, not %d" % (name, seconds))
    return seconds


class ProgressAction(ActionBase):
    """The action plugin of a long module: runs it, printing its progress while it runs."""

    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        wrap_async = self._task.async_val and not self._connection.has_native_async
        interval = self._interval(task_vars)
        if wrap_async or self._task.check_mode or not interval:
            # The task's own async, a plan (check mode) or progress turned off: the normal action.
            result.update(self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
        else:
            result.update(self._run_with_progress(task_vars, interval))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _interval(self, task_vars):
        option = interval_of(self._task.args.get("progress_interval"), "progress_interval")
        if option is not None:
            return option
        variable = interval_of(self._templar.template(task_vars.get(VARIABLE)) if VARIABLE in task_vars else None, VARIABLE)
        return DEFAULT_INTERVAL if variable is None else variable

    def _run_with_progress(self, task_vars, interval):
        directory = self._progress_directory()
        if directory is None:
            return self._execute_module(task_vars=task_vars)
        path = self._connection._shell.join_path(directory, "progress.json")
        if self._task.environment is None:
            self._task.environment = []
        self._task.environment.append({ENVIRONMENT: path})
        outcome = {}
        worker = threading.Thread(target=self._execute_into, args=(task_vars, outcome), name="lifeboat-module", daemon=True)
        try:
            worker.start()
            self._watch(worker, path, interval, "%s on %s" % (self._task.resolved_action or self._task.action, task_vars.get("inventory_hostname", "?")))
        finally:
            self._task.environment.pop()
            if not worker.is_alive():
                self._remove_directory(directory)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    def _execute_into(self, task_vars, outcome):
        try:
            outcome["result"] = self._execute_module(task_vars=task_vars)
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            outcome["error"] = exc

    def _progress_directory(self):
        """A fresh directory on the node where the module (as the become user, if any) can
        write and the connection user can read; None (progress off) when it cannot be made."""
        mode = "0711" if self._connection.become else "0700"
        command = 'umask 077 && d=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-progress.XXXXXXXXXX") && chmod %s "$d" && echo "$d"' % mode
        try:
            made = self._low_level_execute_command(command, sudoable=True)
        except AnsibleError as exc:
            display.vvv("lifeboat progress: no progress directory on the node (%s); progress is not shown" % exc)
            return None
        lines = to_text(made.get("stdout", "")).strip().splitlines()
        if made.get("rc") != 0 or not lines or not lines[-1].startswith("/"):
            display.vvv("lifeboat progress: no progress directory on the node (%s); progress is not shown" % to_text(made.get("stderr", "")).strip())
            return None
        return lines[-1].strip()

    def _remove_directory(self, directory):
        # The module's result is what matters: a directory left in /tmp is only noted.
        try:
            removed = self._low_level_execute_command("rm -rf %s" % self._connection._shell.quote(directory), sudoable=True)
        except AnsibleError as exc:
            removed = {"rc": None, "stderr": str(exc)}
        if removed.get("rc") != 0:
            display.vvv("lifeboat progress: %s was not removed: %s" % (directory, to_text(removed.get("stderr", "")).strip()))

    def _watch(self, worker, path, interval, label):
        show_item = not self._task.no_log
        started = time.monotonic()
        previous = None
        next_line = started + interval
        while True:
            worker.join(max(0.0, next_line - time.monotonic()))
            if not worker.is_alive():
                return
            next_line = time.monotonic() + interval
            record = self._read(path)
            elapsed = time.monotonic() - started
            if record is None:
                display.display("%s: running, nothing reported yet; %s elapsed" % (label, duration_text(elapsed)))
            else:
                display.display(progress_line(label, record, previous, elapsed, show_item))
                previous = record

    def _read(self, path):
        try:
            read = self._low_level_execute_command("cat %s" % self._connection._shell.quote(path), sudoable=False)
        except AnsibleError as exc:
            display.vvv("lifeboat progress: reading %s failed: %s" % (path, exc))
            return None
        if read.get("rc") != 0:
            return None
        return parse_record(to_text(read.get("stdout", "")))
