#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup_info
short_description: Backup status, history and stored images of a node
version_added: 0.1.0
description:
  - Reports whether a backup is running on the node (and whether its lock holder is still
    alive), the last successful backup and its image, the last failure and why, the next
    scheduled run when a schedule exists, the history of attempts from the audit log, and
    the images in a destination with their details.
  - The same status is kept as the Ansible local fact C(ansible_local.lifeboat) by
    M(lifeboat.backup.backup_session) (see its O(lifeboat.backup.backup_session#module:facts_dir)).
  - Read-only; never reports a change.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._attributes.info_module
  - lifeboat.backup._storage.targets
options:
  state_dir:
    description:
      - The node's state directory, as given to M(lifeboat.backup.backup_session).
    type: path
    default: /var/lib/lifeboat
  destination:
    description:
      - Directory of images to list. Not listed when omitted.
    type: path
  node:
    description:
      - Only list images of this node (a shared destination holds several nodes' images).
    type: str
  history:
    description:
      - How many of the most recent audit entries to return. C(0) returns none.
    type: int
    default: 10
  schedule:
    description:
      - Where to look for the node's backup schedule. A systemd timer unit name, or the path
        of a cron file (C(/etc/cron.d/...)) whose first lifeboat entry is read.
      - When neither exists, the schedule recorded by the C(lifeboat.backup.schedule) role in
        O(state_dir) (C(schedule.json), also written for schedules that live on the control
        node or in AWX) gives the next run. Without any, RV(status.next_run) is null and
        RV(status.schedule) says so.
    type: str
    default: lifeboat-backup.timer
  max_age:
    description:
      - How old the last successful backup may be, for example C(26h) or C(2d). When given,
        RV(status.staleness) says whether the node is stale, with the age and the limit.
    type: str
    version_added: 0.2.0
  verify_images:
    description:
      - Also check every listed image's members against their checksums (stored SHA-256, no key
        needed; it reads each image whole). A damaged image is listed with C(verdict=damaged).
      - Without it, only images that cannot be opened at all are listed as damaged.
    type: bool
    default: false
    version_added: 0.2.0
  targets:
    description:
      - Storage targets to look for this node's copies on (as C(backup_storage)). RV(copies)
        reports each one (reachable, the node's images there, the newest, the last verified
        copy), and each image in O(destination) lists the targets that hold it.
    version_added: 0.2.0
seealso:
  - module: lifeboat.backup.backup_session
  - module: lifeboat.backup.image_info
"""

EXAMPLES = r"""
- name: Where do backups stand on this node?
  lifeboat.backup.backup_info:
    destination: /var/backups/lifeboat
    node: "{{ inventory_hostname }}"
  register: backups

- name: Fail when the last success is older than a day
  ansible.builtin.assert:
    that:
      - backups.status.last_success is not none
      - (now(utc=true) - (backups.status.last_success.time | to_datetime('%Y-%m-%dT%H:%M:%SZ'))).total_seconds() < 86400
    fail_msg: "no successful backup in 24 h; last failure: {{ backups.status.last_failure.reason | default('none') }}"

- name: The same status, from facts
  ansible.builtin.debug:
    var: ansible_local.lifeboat.last_success
"""

RETURN = r"""
status:
  description: The node's backup status.
  returned: always
  type: dict
  contains:
    state:
      description: C(not_running), C(in_progress), or C(stale) (a session is recorded as running but its lock holder is gone; the next start cleans it up).
      type: str
      sample: not_running
    current:
      description: The running session (backup id, image name, start time, keeper pid), or null.
      type: dict
      sample: {backup_id: 20261122T194512Z-3fa2c1d0, image: 20261122T194512Z-db1.zip, keeper_pid: 4242}
    last_success:
      description: Time, backup id, image path and size of the last successful backup, or null.
      type: dict
      sample: {time: "2026-11-22T19:47:03Z", backup_id: 20261122T194512Z-3fa2c1d0, image: /var/backups/lifeboat/20261122T194512Z-db1.zip}
    last_failure:
      description: Time, backup id and reason of the last failed (or partial) backup, or null.
      type: dict
      sample: {time: "2026-11-21T02:00:09Z", reason: "postgresql: pg_dump exited 1"}
    last_result:
      description: The audit record of the last attempt.
      type: dict
      sample: {verdict: success}
    next_run:
      description: Next scheduled run (UTC, ISO 8601) when a schedule exists, else null.
      type: str
      sample: "2026-11-23T02:00:00Z"
    schedule:
      description: Where the schedule was found, or why there is none.
      type: str
      sample: "cron /etc/cron.d/lifeboat-backup: 0 2 * * *"
    staleness:
      description:
        - With O(max_age) - C(stale), C(age_seconds) of the last success, C(limit_seconds),
          C(last_success) (time) and the C(reason) when stale.
      type: dict
      returned: when max_age is given
      sample:
        stale: true
        age_seconds: 190000
        limit_seconds: 93600
        last_success: "2026-11-27T02:04:11Z"
        reason: the last successful backup is 2d 4h old, more than max_age 1d 2h
      version_added: 0.2.0
    copies:
      description: The copies to storage targets recorded on the node, per target - C(last_success) and C(last_error).
      type: dict
      sample: {offsite: {last_success: {time: "2026-11-29T02:09:00Z", image: 20261129T020000Z-db1.zip}, last_error: null}}
      version_added: 0.2.0
    services_left_down:
      description:
        - Services a run stopped (quiesce role) and never started again - the controller died, or
          their start failed - each with the run that stopped it and when. While a backup is in
          progress these are its own. The next run's resume starts them again; a warning names them.
      type: list
      elements: dict
      sample: [{service: celery-worker, manager: systemd, stopped_by: backup 20261122T194512Z-3fa2c1d0, stopped_at: "2026-11-22T19:45:13Z"}]
      version_added: 0.2.0
copies:
  description:
    - Per target in O(targets) - C(name), C(location), C(reachable), C(error) and C(kind) when
      it cannot be listed, C(images) (how many of this node's images are there), C(names),
      C(newest) and C(newest_success) (name, backup_id, sealed, verdict, size), C(last_copy) and
      C(last_copy_error) as recorded on the node.
  returned: when targets are given
  type: list
  elements: dict
  version_added: 0.2.0
  sample: [{name: offsite, reachable: true, images: 12, newest_success: {name: 20261129T020000Z-db1.zip, verdict: success}}]
history:
  description: The most recent audit entries, oldest first.
  returned: always
  type: list
  elements: dict
  sample: [{backup_id: 20261122T194512Z-3fa2c1d0, verdict: success, image: /var/backups/lifeboat/20261122T194512Z-db1.zip}]
images:
  description:
    - Images in O(destination), oldest first, with their manifest summary.
    - A damaged image - one that cannot be opened, or with O(verify_images) one whose members
      do not match - has C(verdict=damaged), C(damaged=true), the C(error), and the verdict its
      manifest recorded in C(recorded_verdict) when it could be read. It is never listed as a success.
  returned: when destination is given
  type: list
  elements: dict
  sample:
    - {name: 20261122T194512Z-db1.zip, node: db1, backup_id: 20261122T194512Z-3fa2c1d0, verdict: success, size: 1048576, components: {config: success},
       copies: [offsite]}
lifeboat_succeeded:
  description:
    - C(true) in every successful result of a lifeboat.backup module, absent from every failure.
    - The roles run modules with C(failed_when) false and count every result without it (a failure, a crash,
      a timeout) as failed; see docs/architecture.md, section Module result contract.
  returned: success
  type: bool
  sample: true
  version_added: 0.2.0
"""

import calendar
import datetime
import os
import re
import socket
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _image, _retention, _session, _status, _storage
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


def node_status(state_dir):
    state = _session.NodeState(state_dir)
    recorded = state.status() if os.path.isdir(state_dir) else {}
    holder = state.holder() if os.path.isdir(state_dir) else None
    if holder:
        current, label = dict(holder), "in_progress"
    elif recorded.get("state") == "in_progress":
        # Lock free, status "in progress": stale only if the keeper itself is gone.
        current = recorded.get("current")
        label = "in_progress" if _session.keeper_alive(current) else "stale"
    else:
        current, label = None, "not_running"
    return {
        "state": label,
        "current": current,
        "last_success": recorded.get("last_success"),
        "last_failure": recorded.get("last_failure"),
        "last_partial": recorded.get("last_partial"),
        "last_result": recorded.get("last_result"),
        "services_left_down": state.stopped_services() if os.path.isdir(state_dir) else [],
    }


# ---- schedule --------------------------------------------------------------------------

_FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]
_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MONTHS = {m: i for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _cron_field(text, low, high, names):
    values = set()
    for part in text.lower().split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            first, last = part.split("-", 1)
            start, end = int(names.get(first, first)), int(names.get(last, last))
        else:
            start = int(names.get(part, part))
            end = high if step > 1 else start
        values.update(v % 7 if high == 6 else v for v in range(start, end + 1, step))
    return values


def next_cron_run(expression, now):
    """Next time (UTC epoch, minute resolution) matching a 5-field cron expression."""
    expression = _MACROS.get(expression.strip(), expression)
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError("not a 5-field cron expression: %s" % expression)
    minutes, hours, days, months, weekdays = (
        _cron_field(f, low, high, _MONTHS if i == 3 else _NAMES if i == 4 else {}) for i, (f, (low, high)) in enumerate(zip(fields, _FIELDS))
    )
    day_restricted, weekday_restricted = fields[2] != "*", fields[4] != "*"
    moment = datetime.datetime.fromtimestamp(now - now % 60 + 60, datetime.timezone.utc)
    limit = moment + datetime.timedelta(days=366 * 5)
    while moment < limit:
        day_ok = moment.day in days
        weekday_ok = (moment.isoweekday() % 7) in weekdays
        # cron: when both day fields are restricted, either may match
        date_ok = (day_ok or weekday_ok) if (day_restricted and weekday_restricted) else (day_ok and weekday_ok)
        if moment.month not in months or not date_ok:
            moment = (moment + datetime.timedelta(days=1)).replace(hour=0, minute=0)
        elif moment.hour not in hours:
            moment = (moment + datetime.timedelta(hours=1)).replace(minute=0)
        elif moment.minute not in minutes:
            moment += datetime.timedelta(minutes=1)
        else:
            return calendar.timegm(moment.timetuple())
    return None


def cron_schedule(path):
    """(next run ISO string or None, description) of the first entry of a cron file."""
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None, "no schedule: %s does not exist" % path
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        expression = line.split()[0] if line.startswith("@") else " ".join(line.split()[:5])
        try:
            when = next_cron_run(expression, time.time())
        except (ValueError, KeyError) as exc:
            return None, "cron %s: cannot read %r: %s" % (path, expression, exc)
        return _session.iso(when), "cron %s: %s" % (path, expression)
    return None, "no schedule: %s has no entry" % path


def timer_schedule(module, timer):
    """(next run ISO string or None, description) of a systemd timer."""
    systemctl = module.get_bin_path("systemctl")
    if not systemctl or not os.path.isdir("/run/systemd/system"):
        return None, "no schedule: systemd is not running here"
    _rc, out, _err = module.run_command([systemctl, "show", "--property=LoadState,NextElapseUSecRealtime", "--timestamp=unix", timer])
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    if props.get("LoadState") != "loaded":
        return None, "no schedule: timer %s is not installed" % timer
    match = re.search(r"@(\d+)", props.get("NextElapseUSecRealtime", ""))
    if not match:
        return None, "timer %s is installed but has no next run (inactive?)" % timer
    return _session.iso(int(match.group(1))), "systemd timer %s" % timer


def find_schedule(module, where):
    """(next run ISO string or None, description): a cron file (a path) or a systemd timer."""
    return cron_schedule(where) if where.startswith("/") else timer_schedule(module, where)


# ---- images ------------------------------------------------------------------------------


def list_images(destination, node, verify=False):
    """The images in ``destination`` (of ``node``), oldest first. An image that cannot be
    read - or, with ``verify``, whose members do not match their checksums - is listed as
    damaged: verdict ``damaged``, ``damaged: true``, the ``error``, and what its manifest
    said in ``recorded_verdict`` when it could be read."""
    images = []
    suffix = "-%s.zip" % _image.safe_name(node, "node") if node else None
    for name in sorted(os.listdir(destination)):
        path = os.path.join(destination, name)
        if not name.endswith(".zip") or not os.path.isfile(path):
            continue
        entry = {"name": name, "path": path, "size": os.path.getsize(path), "mtime": _session.iso(os.path.getmtime(path)), "damaged": False}
        try:
            with _image.Image(path) as image:
                manifest = image.manifest
                first_error = _image.verify_image(image, "checksum")[1] if verify else None
        except _image.ImageError as exc:
            if suffix and not name.endswith(suffix):
                continue  # unreadable, and by its name another node's
            entry.update(verdict="damaged", damaged=True, error=str(exc))
            images.append(entry)
            continue
        if node and manifest.get("node") != node:
            continue
        entry.update(
            node=manifest.get("node"),
            backup_id=manifest.get("backup_id"),
            started=manifest.get("started"),
            sealed=manifest.get("sealed"),
            verdict=manifest.get("verdict"),
            platform=manifest.get("platform", {}),
            components={n: c.get("status") for n, c in manifest.get("components", {}).items()},
            encrypted=manifest.get("encryption", {}).get("scheme") == "age",
        )
        if first_error:
            entry.update(
                recorded_verdict=entry["verdict"], verdict="damaged", damaged=True, error="member %s: %s" % (first_error["member"], first_error["error"])
            )
        images.append(entry)
    return images


def outside_view(params, status, result):
    """What the node's backups look like from outside: copies on targets, staleness, and
    the schedule recorded by the schedule role when none is installed here."""
    now = time.time()
    status["copies"] = _session.NodeState(params["state_dir"]).status().get("copies") or {}
    if status["next_run"] is None:
        recorded = _status.recorded_schedule(params["state_dir"], now, next_cron_run)
        if recorded is not None:
            status["next_run"], status["schedule"] = recorded
    if params["max_age"]:
        try:
            limit = _retention.parse_duration(params["max_age"])
        except ValueError as exc:
            raise OptionError("max_age", "max_age: %s" % exc) from None
        status["staleness"] = _status.staleness(status, limit, now)
    if params["targets"]:
        node = params["node"] or (status.get("last_result") or {}).get("node")
        result["copies"] = _status.target_copies(params["targets"], node, status["copies"])
        for image in result.get("images", []):
            image["copies"] = _status.copies_of([image], result["copies"])[image["name"]]


def report(module):
    params = module.params
    status = node_status(params["state_dir"])
    status["next_run"], status["schedule"] = find_schedule(module, params["schedule"])
    if status["services_left_down"] and status["state"] != "in_progress":
        module.warn(
            "%s: services stopped by a run and never started again: %s; the next backup or restore run starts them again "
            "(or run the quiesce role's resume)"
            % (
                socket.gethostname(),
                "; ".join("%s (stopped by %s at %s)" % (r["service"], r.get("stopped_by"), r.get("stopped_at")) for r in status["services_left_down"]),
            )
        )
    history = _session.NodeState(params["state_dir"]).history(params["history"]) if params["history"] > 0 else []
    result = dict(changed=False, status=status, history=history)
    if params["destination"]:
        if not os.path.isdir(params["destination"]):
            raise OptionError("destination", "destination %s does not exist or is not a directory" % params["destination"], **result)
        result["images"] = list_images(params["destination"], params["node"], params["verify_images"])
    outside_view(params, status, result)
    return result


def main():
    module = LifeboatModule(
        argument_spec=dict(
            state_dir=dict(type="path", default="/var/lib/lifeboat"),
            destination=dict(type="path"),
            node=dict(type="str"),
            history=dict(type="int", default=10),
            schedule=dict(type="str", default="lifeboat-backup.timer"),
            max_age=dict(type="str"),
            verify_images=dict(type="bool", default=False),
            **_storage.TARGETS_SPEC,
        ),
        supports_check_mode=True,
    )
    module.run(report)


if __name__ == "__main__":
    main()
