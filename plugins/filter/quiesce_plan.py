# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: quiesce_plan
short_description: The part of a profile's quiesce section that applies to a host
version_added: 0.1.0
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
description:
  - A platform's services do not all run on every node. A profile's C(quiesce) section may
    say where it applies (C(group)), and each service may too; this filter returns what
    the C(lifeboat.backup.quiesce) role must do on one host, with the C(group) keys removed.
options:
  _input:
    description: The profile's C(quiesce) section - C(services), C(queues), C(purge) and optionally C(group).
    type: dict
    required: true
  host:
    description: C(inventory_hostname).
    type: str
    required: true
  groups:
    description: The inventory's C(groups).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: What to quiesce here
  ansible.builtin.set_fact:
    plan: "{{ backup_profile.quiesce | lifeboat.backup.quiesce_plan(inventory_hostname, groups) }}"
"""

RETURN = r"""
_value:
  description: C(apply) (bool, anything to do on this host), C(services), C(queues), C(purge).
  type: dict
"""


def _here(item, host, groups):
    group = item.get("group") if isinstance(item, dict) else None
    return not group or host in groups.get(group, [])


def quiesce_plan(section, host, groups):
    section = section or {}
    if not _here(section, host, groups):
        return {"apply": False, "services": [], "queues": [], "purge": []}
    services = [{k: v for k, v in s.items() if k != "group"} for s in section.get("services") or [] if _here(s, host, groups)]
    queues = list(section.get("queues") or [])
    purge = list(section.get("purge") or [])
    return {"apply": bool(services or queues or purge), "services": services, "queues": queues, "purge": purge}


class FilterModule:
    def filters(self):
        return {"quiesce_plan": quiesce_plan}
