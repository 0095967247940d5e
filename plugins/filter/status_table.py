# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: status_table
short_description: One table of the backup state of a whole cluster, and what is wrong with it
version_added: 0.2.0
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
description:
  - Turns the M(lifeboat.backup.backup_info) results of every node (as C(status.yml) gathers
    them) into a fixed-width table - node, state, last success and its age, size, copies per
    storage target, next scheduled run, last failure and why.
  - With O(problems=true) it returns instead, per node, the list of problems that make the
    status check fail - stale (older than C(max_age)), the last run failed, a storage target
    unreachable, services left down, the node itself unreachable.
options:
  _input:
    description:
      - Node name to its C(backup_info) result, or to C({error - why}) when the node could not
        be asked.
    type: dict
    required: true
  problems:
    description: Return node to problems instead of the table.
    type: bool
    default: false
  fail_on_partial:
    description: Count a partial last run as a problem too.
    type: bool
    default: false
  now:
    description: The time to compute ages at (Unix time); default now.
    type: float
"""

EXAMPLES = r"""
- name: Print the cluster's backup status
  ansible.builtin.debug:
    msg: "{{ nodes | lifeboat.backup.status_table }}"

- name: Nodes with problems
  ansible.builtin.set_fact:
    problems: "{{ nodes | lifeboat.backup.status_table(problems=true) | dict2items | selectattr('value') | items2dict }}"
"""

RETURN = r"""
_value:
  description: The table, one string per line; or, with O(problems), node to a list of problems (empty when all is well).
  type: raw
"""

import calendar
import time

from ansible.errors import AnsibleFilterError

from ansible_collections.lifeboat.backup.plugins.filter.summary_table import _short, _size


def _epoch(text):
    try:
        return calendar.timegm(time.strptime(str(text)[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _age(text, now):
    moment = _epoch(text) if text else None
    if moment is None:
        return "-"
    seconds = max(0, int(now - moment))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            rest = seconds % size
            sub = {"d": ("h", 3600), "h": ("m", 60), "m": ("s", 1)}[unit]
            return "%d%s%s" % (seconds // size, unit, " %d%s" % (rest // sub[1], sub[0]) if rest // sub[1] else "")
    return "%ds" % seconds


def _error(result):
    """Why the node gave no status: recorded by the play, or the registered result of a task
    that failed or could not reach the node."""
    if result.get("error"):
        return result["error"]
    if result.get("unreachable"):
        return "unreachable: %s" % (result.get("msg") or "")
    if result.get("failed") or "status" not in result:
        return result.get("msg") or "backup_info gave no status"
    return None


def node_problems(result, fail_on_partial=False):
    """The problems of one node, each one line."""
    if not isinstance(result, dict):
        return ["no status: %r" % (result,)]
    if _error(result):
        return ["cannot be asked: %s" % _short(_error(result), 200)]
    status = result.get("status") or {}
    return _backup_problems(status, fail_on_partial) + _node_problems(result, status)


def _backup_problems(status, fail_on_partial):
    """A stale backup, a failed (or, if asked, partial) last run."""
    problems = []
    staleness = status.get("staleness") or {}
    if staleness.get("stale"):
        problems.append("stale: %s" % staleness.get("reason"))
    last = status.get("last_result") or {}
    if last.get("verdict") == "failed" or (fail_on_partial and last.get("verdict") == "partial"):
        problems.append("last run %s: %s" % (last.get("verdict"), _short(last.get("reason") or last.get("failures") or "", 200)))
    return problems


def _node_problems(result, status):
    """Unreachable storage targets, services an earlier run left down."""
    problems = []
    for copy in result.get("copies") or []:
        if not copy.get("reachable"):
            problems.append("target %s unreachable: %s" % (copy.get("name"), _short(copy.get("error") or "", 200)))
    for service in status.get("services_left_down") or []:
        name = service.get("name") if isinstance(service, dict) else service
        problems.append("service %s left down by an earlier run" % name)
    return problems


def _copies(result):
    parts = []
    for copy in result.get("copies") or []:
        if not copy.get("reachable"):
            parts.append("%s: UNREACHABLE" % copy.get("name"))
            continue
        newest = (copy.get("newest_success") or {}).get("name")
        last_success = ((result.get("status") or {}).get("last_success") or {}).get("image") or ""
        current = " (latest)" if newest and last_success.endswith(newest) else (" (behind)" if newest else "")
        parts.append("%s: %d%s" % (copy.get("name"), copy.get("images") or 0, current))
    return ", ".join(parts) or "-"


def _row(node, result, now, fail_on_partial):
    problems = node_problems(result, fail_on_partial)
    if _error(result):
        return [node, "UNREACHABLE", "-", "-", "-", "-", "-", _short(_error(result), 80)]
    status = result.get("status") or {}
    success = status.get("last_success") or {}
    failure = status.get("last_failure") or {}
    state = "OK" if not problems else ("STALE" if any(p.startswith("stale") for p in problems) else "FAILING")
    if status.get("state") == "in_progress":
        state += " (running)"
    why = "%s %s" % (failure.get("time") or "", _short(failure.get("reason") or "", 80)) if failure else "-"
    return [
        node,
        state,
        success.get("time") or "never",
        _age(success.get("time"), now),
        _size(success.get("size")),
        _copies(result),
        status.get("next_run") or "-",
        why.strip() or "-",
    ]


def status_table(nodes, problems=False, fail_on_partial=False, now=None):
    if not isinstance(nodes, dict):
        raise AnsibleFilterError("status_table expects a dict of node -> backup_info result")
    now = time.time() if now is None else float(now)
    if problems:
        return {node: node_problems(result or {}, fail_on_partial) for node, result in nodes.items()}
    header = ["node", "state", "last success", "age", "size", "copies", "next run", "last failure"]
    rows = [header] + [_row(node, nodes[node] or {}, now, fail_on_partial) for node in sorted(nodes)]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(str(value).ljust(widths[i]) for i, value in enumerate(r[:-1])) + "  " + str(r[-1]) for r in rows]
    bad = sum(1 for node in nodes if node_problems(nodes[node] or {}, fail_on_partial))
    lines.append("%d node(s), %d with problems" % (len(nodes), bad))
    return lines


class FilterModule:
    def filters(self):
        return {"status_table": status_table}
