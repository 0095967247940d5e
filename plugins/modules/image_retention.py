#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_retention
short_description: Remove the backup images a retention policy no longer keeps, on the node and on storage targets
version_added: 0.2.0
description:
  - Applies O(retention) to the images in O(destination) (the node's own images) and on each
    storage target in O(targets), each location on its own. Every image is decided by one rule,
    returned with it - kept by C(keep_daily 7 (2026-11-28)), removed as
    C(not selected by keep_daily 7), and so on.
  - Whatever the policy, the newest successful image of each node is never removed, nor a
    pinned image (O(pinned), or a C(<image>.pinned) file beside it), nor an image whose
    manifest cannot be read (it is reported for a look). Partial and failed images are counted
    apart from the successful ones and go once a newer successful image of their node exists.
  - With O(together), a cluster run's images (one backup id) are kept or removed together -
    give no O(node) then, so that every node's images of the location are seen.
  - An image is removed with its C(.sha256) sidecar. Each removal is recorded in the node's
    audit trail (in O(state_dir), when it exists).
  - Run it after the copies of a run are verified (the backup role does).
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._retention
  - lifeboat.backup._storage.targets
attributes:
  check_mode:
    support: full
    details: Lists what would be removed and the rule that sends each image; nothing is removed.
  diff_mode:
    support: full
    details: One diff per location - the images before, and after the removals; each removed line names its rule.
options:
  destination:
    description:
      - The directory of the node's images (C(backup_destination)). Leave it out to work on
        O(targets) only.
    type: path
  node:
    description:
      - Only images of this node (a shared destination or target holds several nodes' images).
        Default all nodes, each decided on its own.
    type: str
  pinned:
    description:
      - Image names or backup ids that are never removed, beside the C(<image>.pinned) files.
    type: list
    elements: str
    default: []
  together:
    description:
      - Keep a cluster run's images together - an image that the policy would remove is kept
        while another image of the same backup id in the location is kept.
    type: bool
    default: false
  kept_runs:
    description:
      - Cluster runs kept elsewhere - backup id, and why (which image keeps it). With
        O(together), an image of such a run is kept whatever the policy says of it, its rule
        naming the image that keeps it. The backup role passes here the RV(kept_runs) of every
        node's plan (C(backup_retention_together)), so that a run's images on the nodes' own
        destinations are kept or removed together.
    type: dict
    default: {}
    version_added: 0.2.0
  state_dir:
    description:
      - The node's state directory; removals are recorded in its audit trail when it exists.
    type: path
    default: /var/lib/lifeboat
seealso:
  - module: lifeboat.backup.backup_info
  - module: lifeboat.backup.elasticsearch_snapshot
"""

EXAMPLES = r"""
- name: Keep a week of nightlies, four weeklies and a year of monthlies, here and off-site
  lifeboat.backup.image_retention:
    destination: /var/backups/lifeboat
    node: "{{ inventory_hostname }}"
    targets: "{{ backup_storage }}"
    retention:
      keep_daily: 7
      keep_weekly: 4
      keep_monthly: 12
      max_age: 400d

- name: What would go from the shared target, keeping cluster runs whole?
  lifeboat.backup.image_retention:
    targets: "{{ backup_storage }}"
    together: true
    retention:
      keep_last: 14
  check_mode: true
  diff: true
  run_once: true
  register: would_go
"""

RETURN = r"""
removed:
  description: The images removed (in check mode, that would be), with the location and the rule.
  returned: always
  type: list
  elements: dict
  sample: [{location: "file:///var/backups/lifeboat", name: 20261101T020000Z-db1.zip, node: db1, verdict: success, rule: "not selected by keep_daily 7"}]
locations:
  description:
    - One entry per location (the destination first, then each target) - C(location), C(name),
      C(decisions) (every image considered - name, time, verdict, node, backup id, size, pinned,
      C(action) keep or remove, C(rule)), C(kept) and C(removed) counts, C(ignored) (names
      outside O(retention.pattern)), C(error) when the location could not be worked on.
  returned: always
  type: list
  elements: dict
kept_runs:
  description:
    - The cluster runs (backup ids) that some kept image of these locations belongs to, each
      with the image that keeps it and its rule - what O(kept_runs) of another node's run takes.
  returned: always
  type: dict
  sample: {"20261122T020000Z-3fa2c1d0": "20261122T020000Z-db1.zip in destination is kept (keep_daily 7 (2026-11-22))"}
policy:
  description: The policy as applied, in its own words.
  returned: always
  type: str
  sample: keep_daily 7, keep_weekly 4, max_age 400d, min_count 1
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

import os
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _retention, _session, _storage
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule

PINNED_SUFFIX = ".pinned"


def validate(params):
    policy = _retention.parse_policy(params["retention"])
    if not params["destination"] and not params["targets"]:
        raise OptionError("destination", "give destination (the node's images), targets, or both: there is nothing to apply retention to")
    if params["destination"] and not os.path.isdir(params["destination"]):
        raise OptionError("destination", "destination %s does not exist or is not a directory" % params["destination"])
    locations = []
    if params["destination"]:
        locations.append(("destination", {"type": "local", "path": params["destination"], "name": "destination"}))
    for index, target in enumerate(params["targets"]):
        _storage.validate(target, "targets[%d]" % index)
        locations.append(("targets[%d]" % index, target))
    return policy, locations


def image_items(images, pinned_names, pins):
    """Retention items from the images of one location."""
    items = []
    for image in images:
        name = image["name"]
        items.append(
            {
                "name": name,
                "time": image.get("sealed") or image.get("started") or image["mtime"],
                "verdict": None if image.get("error") else image.get("verdict"),
                "pinned": name + PINNED_SUFFIX in pinned_names or name in pins or (image.get("backup_id") or "") in pins,
                "series": image.get("node"),
                "group": image.get("backup_id"),
                "size": image.get("size"),
                "error": image.get("error"),
            }
        )
    return items


def decision_line(decision):
    line = decision.as_dict()
    line.update(node=line.pop("series"), backup_id=line.pop("group"), size=decision.item.get("size"))
    if decision.item.get("error"):
        line["error"] = decision.item["error"]
    return line


def plan_location(backend, params, policy, now):
    """Every image of one location decided (nothing removed yet)."""
    images = _storage.list_images(backend, node=params["node"])
    names = {entry["name"] for entry in backend.list()}
    items = image_items(images, {n for n in names if n.endswith(PINNED_SUFFIX)}, set(params["pinned"]))
    return _retention.plan(items, policy, now, together=params["together"], kept_runs=params["kept_runs"])


def remove(backend, doomed, report):
    """Remove the images the plan sends away, counting each one in ``report`` as it goes."""
    for decision in doomed:
        _storage.delete_image(backend, decision.name)
        report["removed"] += 1


def work_on(option, target, params, policy, now, check_mode):
    """One location: (report, diff, removed lines). Errors are reported, not raised."""
    report = {"option": option, "name": target.get("name"), "location": None, "decisions": [], "kept": 0, "removed": 0, "ignored": []}
    decisions, diff = [], None
    try:
        with _storage.open_target(target, option) as backend:
            report.update(location=backend.location, name=backend.label)
            decisions = plan_location(backend, params, policy, now)
            report["decisions"] = [decision_line(d) for d in decisions if d.action != "ignored"]
            report["ignored"] = [d.name for d in decisions if d.action == "ignored"]
            report["kept"] = sum(1 for d in decisions if d.keep)
            diff = _retention.diff(decisions, label=backend.label)
            doomed = [d for d in decisions if d.action == "remove"]
            if check_mode:
                report["removed"] = len(doomed)
            else:
                remove(backend, doomed, report)
    except LifeboatError as exc:
        report["error"] = exc.msg
    gone = [line for line in report["decisions"] if line["action"] == "remove"][: report["removed"]]
    return report, diff, [dict(line, location=report["location"]) for line in gone]


def kept_runs(reports):
    """backup id -> the first kept image of that run, over every location."""
    kept = {}
    for report in reports:
        for line in report["decisions"]:
            if line.get("backup_id") and line["action"] == "keep":
                kept.setdefault(line["backup_id"], _retention.kept_because(line["name"], line["rule"], report.get("name") or report["option"]))
    return kept


def audit(params, policy, removed):
    if not removed or not os.path.isdir(params["state_dir"]):
        return
    state = _session.NodeState(params["state_dir"])
    state.audit(
        {
            "event": "retention",
            "time": _session.utc_now(),
            "policy": policy.describe(),
            "removed": [{k: line[k] for k in ("location", "name", "backup_id", "verdict", "rule")} for line in removed],
        }
    )


def apply(module):
    params = module.params
    policy, locations = validate(params)
    now = time.time()
    reports, diffs, removed = [], [], []
    for option, target in locations:
        report, diff, gone = work_on(option, target, params, policy, now, module.check_mode)
        reports.append(report)
        removed.extend(gone)
        if diff:
            diffs.append(diff)
    if not module.check_mode:
        audit(params, policy, removed)
    result = dict(changed=bool(removed), removed=removed, locations=reports, kept_runs=kept_runs(reports), policy=policy.describe())
    if module._diff:
        result["diff"] = diffs
    failed = [r for r in reports if r.get("error")]
    if failed:
        raise LifeboatError(
            "retention could not finish on %s; the other locations were done"
            % "; ".join("%s (%s): %s" % (r["option"], r.get("name") or "?", r["error"]) for r in failed),
            done=["removed %s from %s" % (line["name"], line["location"]) for line in removed] if not module.check_mode else None,
            **{k: v for k, v in result.items() if k != "changed"},
        )
    return result


def main():
    module = LifeboatModule(
        argument_spec=dict(
            destination=dict(type="path"),
            node=dict(type="str"),
            pinned=dict(type="list", elements="str", default=[]),
            together=dict(type="bool", default=False),
            kept_runs=dict(type="dict", default={}),
            state_dir=dict(type="path", default="/var/lib/lifeboat"),
        ),
        specs=[_retention.RETENTION_SPEC, _storage.TARGETS_SPEC],
        supports_check_mode=True,
    )
    module.run(apply)


if __name__ == "__main__":
    main()
