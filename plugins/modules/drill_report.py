#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: drill_report
short_description: Write the report of a restore drill - a terminal table, a JSON file and an HTML page
version_added: 0.2.0
description:
  - Takes the per-node results of a restore drill (the C(drill) role's C(drill_result) of every
    node) and writes them to O(dest) as a JSON file (for AWX/Tower and CI) and an HTML page with
    one bar per component and node, its length the restore time and its colour the result
    (passed, failed, not covered by the drill).
  - Returns the same as lines of a table for the terminal, and the drill's verdict - C(failed)
    when a node or a component failed, else C(passed). What the drill did not cover is listed,
    never counted as passed.
  - Run it on the controller (C(delegate_to=localhost), C(run_once)), as C(playbooks/drill.yml)
    does. Changes nothing but the two new files; a report never overwrites another.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
attributes:
  check_mode:
    support: full
    details: Builds the table and the verdict; writes no file.
  diff_mode:
    support: none
options:
  results:
    description:
      - Node name to its drill result (C(node), C(verdict), C(image), C(backup_id), C(versions),
        C(components) with each C(name), C(kind), C(result), C(seconds), C(compare_seconds),
        C(differences), C(actions), C(reason)).
    type: dict
    required: true
  dest:
    description:
      - Directory for the report files, created (mode 0700) when absent.
    type: path
    required: true
  name:
    description:
      - Base name of the files (C(<name>.json), C(<name>.html)). Default is
        C(drill-<UTC time>).
    type: str
seealso:
  - module: lifeboat.backup.drill_sandbox
"""

EXAMPLES = r"""
- name: Write the drill report
  lifeboat.backup.drill_report:
    results: "{{ drill_summary }}"
    dest: /var/lib/awx/drills
  delegate_to: localhost
  run_once: true
  register: report

- name: Where it is
  ansible.builtin.debug:
    msg: "{{ report.table + [report.html] }}"
"""

RETURN = r"""
verdict:
  description: C(passed) when every node's drill passed, else C(failed).
  returned: always
  type: str
  sample: passed
table:
  description: The report as lines of text for the terminal.
  returned: always
  type: list
  elements: str
  sample:
    - "node  component   kind        result   restore  compare  detail"
    - "db1   postgresql  postgresql  passed      3.1s     0.8s  intel: 3 tables, 7300 rows equal"
not_covered:
  description: C(node/component) entries the drill did not restore (a kind it does not handle yet).
  returned: always
  type: list
  elements: str
  sample: [search1/search]
json:
  description: Path of the JSON report (not written in check mode).
  returned: always
  type: str
  sample: /root/lifeboat-drills/drill-20261130T041500Z.json
html:
  description: Path of the HTML report (not written in check mode).
  returned: always
  type: str
  sample: /root/lifeboat-drills/drill-20261130T041500Z.html
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

import html
import json
import os
import time

from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule

COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "not covered": "#9e9e9e"}


def _seconds(value):
    return "-" if value in (None, "") else "%.1fs" % float(value)


def _files_detail(details):
    return "%d files equal" % details["files"]


def _rows_detail(details):
    return "%s: %d tables, %d rows equal" % (", ".join(details.get("databases") or []), details.get("tables") or 0, details.get("rows") or 0)


def _graphs_detail(details):
    graphs = details["graphs"] or {}
    counted = ", ".join("%s: %d nodes, %d relationships" % (g, c.get("nodes", 0), c.get("relationships", 0)) for g, c in sorted(graphs.items()))
    return "store ids equal; " + (counted + " equal" if counted else "no counts recorded in the image")


def _documents_detail(details):
    return "%d indices, %d documents equal" % (len(details.get("indices") or []), details["documents"] or 0)


# What a passed comparison says, by the key its details carry (one per kind of component).
_DETAILS = (("files", _files_detail), ("rows", _rows_detail), ("graphs", _graphs_detail), ("documents", _documents_detail))


def _detail(entry):
    if entry.get("result") != "passed":
        return entry.get("reason") or ""
    details = entry.get("details") or {}
    return next((describe(details) for key, describe in _DETAILS if key in details), "")


def _versions(result):
    versions = result.get("versions") or {}
    if not versions:
        return "not reached"
    image, node = versions.get("image_platform") or {}, versions.get("node_platform") or {}
    names = (image.get("name", "?"), image.get("version", "?"), node.get("name", "?"), node.get("version", "?"))
    parts = ["platform in the image %s %s, on the node %s %s" % names]
    if versions and not versions.get("same_platform", True):
        parts[0] += " (DIFFERENT: a restore onto this node is refused unless forced)"
    servers = versions.get("servers") or []
    parts += ["%s: %s %s at backup, sandbox %s" % (s.get("component"), s.get("engine") or "PostgreSQL", s.get("recorded"), s.get("sandbox")) for s in servers]
    return "; ".join(parts)


def _components(result):
    return (result or {}).get("components") or []


def _row(node, entry):
    seconds = (_seconds(entry.get("seconds")), _seconds(entry.get("compare_seconds")))
    return (node, entry.get("name"), entry.get("kind"), entry.get("result")) + seconds + (_detail(entry),)


def _action(action):
    outcome = "ok" if action.get("passed") else "FAILED (exit %s)" % action.get("rc")
    return "  after_restore %s: %s  %s  %.1fs" % (action.get("component"), action.get("name"), outcome, float(action.get("seconds") or 0))


def _node_rows(node, result):
    """One node's table rows (a row for the node itself when it failed without a failed
    component), and the lines printed under them (versions, after_restore actions)."""
    components = result.get("components") or []
    rows = [_row(node, entry) for entry in components]
    if result.get("verdict") != "passed" and not any(e.get("result") == "failed" for e in components):
        rows.append((node, "-", "-", result.get("verdict", "?"), "-", "-", result.get("reason") or ""))
    under = ["  versions: " + _versions(result)] if result.get("versions") else []
    return rows, under + [_action(a) for e in components for a in e.get("actions") or []]


def table(results):
    rows = [("node", "component", "kind", "result", "restore", "compare", "detail")]
    under = {}
    for node in sorted(results):
        node_rows, lines = _node_rows(node, results[node] or {})
        rows += node_rows
        under.setdefault(len(rows) - 1, []).extend(lines)
    widths = [max(len(str(row[i])) for row in rows) for i in range(6)]
    lines = []
    for number, row in enumerate(rows):
        cells = [str(row[i]).rjust(widths[i]) if i in (4, 5) else str(row[i]).ljust(widths[i]) for i in range(6)]
        lines.append(("  ".join(cells) + "  " + str(row[6])).rstrip())
        lines += under.get(number, [])
    return lines


def _bar(node, entry, longest):
    """One component's table row in the page: its restore time as a bar coloured by its result."""
    result = entry.get("result") or "?"
    width = max(1.0, 100.0 * float(entry.get("seconds") or 0) / longest) if entry.get("seconds") is not None else 0
    cells = (result, _seconds(entry.get("seconds")), _seconds(entry.get("compare_seconds")), _detail(entry))
    return (
        '<tr><td>%s</td><td>%s <small>(%s)</small></td><td class="bar"><div style="width:%.1f%%;background:%s"></div></td>'
        "<td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>"
        % tuple(
            [html.escape(str(node)), html.escape(str(entry.get("name"))), html.escape(str(entry.get("kind"))), width, COLOURS.get(result, "#ef6c00")]
            + [html.escape(str(x)) for x in cells]
        )
    )


def _node_item(node, result):
    """One node's line in the page: verdict, image, backup id, reason and versions."""
    reason = ": " + result["reason"] if result.get("reason") else ""
    values = (node, result.get("verdict"), os.path.basename(str(result.get("image") or "-")), result.get("backup_id"), reason, _versions(result))
    return "<li><b>%s</b>: %s - image %s (backup id %s)%s<br><small>%s</small></li>" % tuple(html.escape(str(x)) for x in values)


def page(results, verdict, created):
    """The HTML report: one bar per component and node."""
    entries = [(node, e) for node in sorted(results) for e in (results[node] or {}).get("components") or []]
    longest = max([float(e.get("seconds") or 0) for _node, e in entries] + [0.001])
    bars = [_bar(node, entry, longest) for node, entry in entries]
    nodes = "".join(_node_item(node, results[node] or {}) for node in sorted(results))
    return """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>lifeboat.backup restore drill %(created)s</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left}
td.bar{width:320px}td.bar div{height:14px}.v{color:%(colour)s}</style></head>
<body><h1>Restore drill %(created)s: <span class="v">%(verdict)s</span></h1>
<p>Bar length: restore time (the recovery time to quote); colour: green passed, red failed, grey not covered by the drill.</p>
<table><tr><th>node</th><th>component</th><th>restore time</th><th>result</th><th>restore</th><th>compare</th><th>detail</th></tr>
%(bars)s</table><h2>Nodes and versions</h2><ul>%(nodes)s</ul></body></html>
""" % dict(created=created, colour=COLOURS.get(verdict, "#000"), verdict=verdict, bars="\n".join(bars), nodes=nodes)


def write_new(path, text):
    """Write a new file (never replacing one), mode 0600."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


def report(module):
    params = module.params
    results = params["results"]
    failed = [node for node, result in results.items() if (result or {}).get("verdict") != "passed"]
    verdict = "failed" if failed or not results else "passed"
    created = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = os.path.join(params["dest"], params["name"] or "drill-" + created)
    number = 1
    while not params["name"] and (os.path.exists(base + ".json") or os.path.exists(base + ".html")):
        number += 1  # two drills in the same second
        base = os.path.join(params["dest"], "drill-%s-%d" % (created, number))
    out = dict(
        changed=not module.check_mode,
        verdict=verdict,
        table=table(results),
        not_covered=[node + "/" + str(e.get("name")) for node in sorted(results) for e in _components(results[node]) if e.get("result") == "not covered"],
        json=base + ".json",
        html=base + ".html",
    )
    if not module.check_mode:
        os.makedirs(params["dest"], mode=0o700, exist_ok=True)
        write_new(out["json"], json.dumps({"verdict": verdict, "created": created, "nodes": results}, indent=2, sort_keys=True, default=str) + "\n")
        write_new(out["html"], page(results, verdict, created))
    return out


def main():
    module = LifeboatModule(
        argument_spec=dict(
            results=dict(type="dict", required=True),
            dest=dict(type="path", required=True),
            name=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    module.run(report)


if __name__ == "__main__":
    main()
