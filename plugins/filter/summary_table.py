# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: summary_table
short_description: Render per-node backup or restore results as a table
version_added: 0.1.0
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
description:
  - Turns the per-node results gathered by the C(backup) and C(restore) roles into lines of
    a fixed-width table - node, verdict, size, and the image or what failed; below a node,
    one line per C(after_restore) action of a restore (component, name, outcome, seconds).
  - A restore's row names the components restored (C(restored) of the result).
options:
  _input:
    description: Node name to result (C(verdict), C(image), C(size), C(failures), C(reason), C(notes), C(actions), C(restored)).
    type: dict
    required: true
  title:
    description: First line of the table.
    type: str
    default: ""
  check_mode:
    description:
      - The run was in check mode (C(ansible_check_mode)) - the table says under the title that
        nothing was done, whatever the verdicts say.
    type: bool
    default: false
    version_added: 0.2.0
"""

EXAMPLES = r"""
- name: Print the summary
  ansible.builtin.debug:
    msg: "{{ backup_summary | lifeboat.backup.summary_table(title='backup ' ~ backup_id) }}"
"""

RETURN = r"""
_value:
  description: The table, one string per line.
  type: list
  elements: str
"""

import os

from ansible.errors import AnsibleFilterError


def _detail(result):
    notes = [_short(note) for note in result.get("notes") or [] if note]
    return "; ".join([_what(result)] + notes) if notes else _what(result)


def _what(result):
    verdict = result.get("verdict")
    failures = result.get("failures") or {}
    if verdict in ("success", "partial") and result.get("image"):
        detail = os.path.basename(result["image"])
        if result.get("restored"):
            detail += "; restored: " + ", ".join(result["restored"])
        if failures:
            detail += "; failed: " + "; ".join("%s: %s" % (k, _short(v)) for k, v in sorted(failures.items()))
        return detail
    if failures:
        return "; ".join("%s: %s" % (k, _short(v)) for k, v in sorted(failures.items()))
    return _short(result.get("reason") or "")


def _size(size):
    if size in (None, "", "None"):
        return "-"
    size = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (size, unit)
        size /= 1000
    return "-"


def _short(text, limit=240):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _action(action):
    """One line per after_restore action: component, name, outcome and duration."""
    outcome = "ok" if action.get("passed") else "FAILED (exit %s)" % action.get("rc", "?")
    line = "after_restore %s: %s  %s  %.1fs" % (action.get("component"), action.get("name"), outcome, float(action.get("seconds") or 0))
    return line if action.get("passed") else line + "  " + _short(action.get("output") or "", 160)


def summary_table(results, title="", check_mode=False):
    if not isinstance(results, dict):
        raise AnsibleFilterError("summary_table expects a dict of node -> result")
    lines = [title] if title else []
    if check_mode:
        lines.append("CHECK MODE: nothing was done - no service stopped, no image written, nothing restored; the verdicts say what a real run would try")
    width = max([len("node")] + [len(str(node)) for node in results])
    row = "%-" + str(width) + "s  %-11s %9s  %s"
    lines.append(row % ("node", "verdict", "size", "image / what failed"))
    for node in sorted(results):
        result = results[node] or {}
        lines.append(row % (node, result.get("verdict", "?"), _size(result.get("size")), _detail(result)))
        lines.extend("  " + _action(action) for action in result.get("actions") or [])
    counts = {}
    for result in results.values():
        counts[(result or {}).get("verdict", "?")] = counts.get((result or {}).get("verdict", "?"), 0) + 1
    lines.append("total: " + ", ".join("%d %s" % (n, v) for v, n in sorted(counts.items())))
    return lines


class FilterModule:
    def filters(self):
        return {"summary_table": summary_table}
