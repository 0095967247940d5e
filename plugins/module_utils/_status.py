# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""What a node's backups look like from outside: staleness, copies on storage targets, the
schedule recorded by the schedule role, and the node_exporter textfile (docs/operations.md).

Read-only except ``write_textfile``; no Ansible import.
"""

from __future__ import annotations

import os
import re
import shutil
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _proc, _retention, _session, _storage

SCHEDULE_RECORD = "schedule.json"
TEXTFILE_NAME = "lifeboat_backup.prom"
# The option of the modules that rewrite the textfile (doc fragment lifeboat.backup._textfile).
TEXTFILE_SPEC = dict(textfile_dir=dict(type="path"))


def staleness(status, max_age, now):
    """Whether the node's last success is older than ``max_age`` seconds (or missing).
    Returns {stale, age_seconds, limit_seconds, last_success, reason}."""
    last = status.get("last_success") or {}
    result = {"stale": False, "age_seconds": None, "limit_seconds": max_age, "last_success": last.get("time"), "reason": None}
    if not last.get("time"):
        result.update(stale=True, reason="no successful backup recorded on this node")
        return result
    try:
        age = now - _retention.item_time({"name": "last_success", "time": last["time"]})
    except ValueError:
        result.update(stale=True, reason="the last success has an unreadable time %r" % last["time"])
        return result
    result["age_seconds"] = int(age)
    if age > max_age:
        result.update(
            stale=True,
            reason="the last successful backup is %s old, more than max_age %s" % (_retention.format_duration(age), _retention.format_duration(max_age)),
        )
    return result


# ---- the schedule the schedule role recorded ------------------------------------------------


def schedule_record(state_dir):
    return _session.read_json(os.path.join(state_dir, SCHEDULE_RECORD))


def systemd_next(expression, now):
    """Next elapse of an OnCalendar expression (epoch seconds) by systemd-analyze, or None."""
    program = shutil.which("systemd-analyze")
    if not program:
        return None
    proc = _proc.run([program, "calendar", "--iterations=1", expression], capture_output=True, text=True, env=dict(os.environ, TZ="UTC"))
    match = re.search(r"Next elapse: \w+ (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC", proc.stdout)
    if not match:
        return None
    return _retention.item_time({"name": "next", "time": match.group(1)})


def recorded_schedule(state_dir, now, next_cron_run):
    """(next run ISO or None, description) from the schedule role's record, or None when
    there is no record. ``next_cron_run(expression, now)`` computes a cron expression."""
    record = schedule_record(state_dir)
    if not isinstance(record, dict) or not record.get("expression"):
        return None
    where = "%s on %s" % (record.get("kind"), record.get("host")) if record.get("kind") != "awx" else "AWX schedule"
    text = "%s %s (%s mode, recorded by the schedule role): %s" % (where, record.get("name"), record.get("mode"), record["expression"])
    try:
        if record.get("kind") == "systemd":
            when = systemd_next(record["expression"], now)
            if when is None:
                return None, text + "; next run unknown here (no systemd-analyze)"
        else:
            when = next_cron_run(record["expression"], now)
    except (ValueError, KeyError) as exc:
        return None, "%s; cannot read it: %s" % (text, exc)
    return _session.iso(when), text


# ---- copies on storage targets ------------------------------------------------------------


def target_copies(targets, node, recorded=None):
    """Per target: reachable, the node's images there (count, newest, newest success), the
    last verified copy and last copy error recorded on the node. Never raises."""
    recorded = recorded or {}
    report = []
    for index, target in enumerate(targets):
        option = "targets[%d]" % index
        entry = {"name": target.get("name"), "reachable": False, "images": 0, "newest": None, "newest_success": None, "names": []}
        try:
            with _storage.open_target(target, option) as backend:
                entry.update(name=backend.label, location=backend.location)
                images = _storage.list_images(backend, node=node)
                entry["reachable"] = True
        except _storage.StorageError as exc:
            entry.update(error=exc.msg, kind=exc.kind)
            images = []
        except Exception as exc:  # noqa: BLE001 - an option error or a missing library: reported, not raised
            entry["error"] = str(exc)
            images = []
        entry["images"] = len(images)
        entry["names"] = [i["name"] for i in images]
        if images:
            entry["newest"] = _image_line(images[-1])
            successes = [i for i in images if i.get("verdict") == "success"]
            entry["newest_success"] = _image_line(successes[-1]) if successes else None
        mine = recorded.get(entry["name"]) or {}
        entry["last_copy"] = mine.get("last_success")
        entry["last_copy_error"] = mine.get("last_error")
        report.append(entry)
    return report


def _image_line(image):
    return {k: image.get(k) for k in ("name", "backup_id", "sealed", "verdict", "size")}


def copies_of(images, targets_report):
    """For each local image name: the targets (by name) that hold a copy."""
    return {image["name"]: [t["name"] for t in targets_report if image["name"] in t["names"]] for image in images}


# ---- node_exporter textfile -------------------------------------------------------------


def _epoch(text):
    return int(_retention.item_time({"name": "metric", "time": text}))


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics(node, status, copies=None, now=None):
    """The Prometheus text exposition of a node's backup state."""
    now = time.time() if now is None else now
    base = {"node": node}
    written = ("lifeboat_backup_textfile_written_timestamp_seconds", "When this file was written.", [(base, int(now))])
    lines = []
    for name, help_text, samples in _last_backup_gauges(base, status) + _copy_gauges(base, copies) + [written]:
        lines.append("# HELP %s %s" % (name, help_text))
        lines.append("# TYPE %s gauge" % name)
        for labels, value in samples:
            text = ",".join('%s="%s"' % (k, _label(v)) for k, v in sorted(labels.items()))
            lines.append("%s{%s} %s" % (name, text, value))
    return "\n".join(lines) + "\n"


def _last_backup_gauges(base, status):
    """(name, help, samples) of the last success and the last attempt."""
    last = status.get("last_success") or {}
    result = status.get("last_result") or {}
    gauges = []
    if last.get("time"):
        gauges.append(("lifeboat_backup_last_success_timestamp_seconds", "End of the last successful backup (Unix time).", [(base, _epoch(last["time"]))]))
        if last.get("size") is not None:
            gauges.append(("lifeboat_backup_last_success_size_bytes", "Size of the last successful image.", [(base, int(last["size"]))]))
    if result.get("started") and result.get("ended"):
        duration = _epoch(result["ended"]) - _epoch(result["started"])
        gauges.append(("lifeboat_backup_last_duration_seconds", "Duration of the last backup attempt.", [(base, duration)]))
    if result.get("verdict"):
        gauges.append(
            (
                "lifeboat_backup_last_verdict",
                "Verdict of the last attempt: 1 for the verdict it had, 0 for the others.",
                [(dict(base, verdict=v), int(result["verdict"] == v)) for v in ("success", "partial", "failed")],
            )
        )
    return gauges


def _copy_gauges(base, copies):
    """(name, help, samples) of the copies to each storage target."""
    if not copies:
        return []
    gauges = []
    samples = []
    for target, record in sorted(copies.items()):
        good = (record or {}).get("last_success") or {}
        if good.get("time"):
            samples.append((dict(base, target=target), _epoch(good["time"])))
    if samples:
        gauges.append(("lifeboat_backup_last_copy_timestamp_seconds", "Time of the last verified copy to each storage target.", samples))
    gauges.append(
        (
            "lifeboat_backup_copy_failing",
            "1 when the last copy to a storage target failed after its last verified one.",
            [(dict(base, target=t), int(bool((r or {}).get("last_error")))) for t, r in sorted(copies.items())],
        )
    )
    return gauges


def write_textfile(directory, node, status, copies=None):
    """Write ``lifeboat_backup.prom`` into the node_exporter textfile directory atomically
    (a temporary name, then rename, as the collector wants). Returns the path."""
    path = os.path.join(directory, TEXTFILE_NAME)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as handle:
        handle.write(metrics(node, status, copies))
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)
    return path


def textfile_from_state(directory, state_dir):
    """Rewrite the textfile from the node's status (after a seal or a push). Never raises:
    returns (path, None) or (None, reason)."""
    try:
        status = _session.NodeState(state_dir).status()
        node = (status.get("last_result") or {}).get("node") or (status.get("current") or {}).get("node") or os.uname()[1]
        return write_textfile(directory, node, status, status.get("copies")), None
    except (OSError, ValueError) as exc:
        return None, "node_exporter textfile in %s not written: %s" % (directory, exc)


def refresh_textfile(directory, state_dir, warn):
    """After a seal, an abort or a push: rewrite the textfile when ``directory`` is set.
    Returns its path, or None; a failure is a warning (``warn``), never an error."""
    if not directory:
        return None
    path, problem = textfile_from_state(directory, state_dir)
    if problem:
        warn(problem)
    return path
