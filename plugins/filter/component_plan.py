# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: component_plan
short_description: Which of a profile's components apply to a host, and which are selected
version_added: 0.1.0
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
description:
  - Turns a backup profile's component list into the plan for one host. A component applies
    where it is hosted (its O(_input[].group)), once per cluster when O(_input[].once) is set,
    and nowhere the host lists in O(skip).
  - A C(standard) selection is every applicable component except audits (unless
    O(include_audits)); a C(custom) selection is exactly the O(requested) components.
  - Fails on a profile error (a component without a name or kind, an unknown kind, a
    duplicate name, a requested component the profile does not have).
options:
  _input:
    description: The profile's components, each a dict with C(name), C(kind) and kind-specific options.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Component name, unique in the profile.
        type: str
        required: true
      kind:
        description:
          - C(config), C(postgresql), C(postgresql_basebackup), C(postgresql_pitr), C(elasticsearch), C(neo4j),
            or C(archive) (table archiving, docs/table-archive.md).
        type: str
        required: true
      group:
        description: Inventory group of the hosts that host this component. Default is every host.
        type: str
      once:
        description: Run on one host of O(_input[].group) only (the first one in the play), for cluster-wide components such as a search snapshot.
        type: bool
        default: false
      audit:
        description: An audit component, left out of a standard selection unless O(include_audits).
        type: bool
        default: false
  host:
    description: The host to plan for (C(inventory_hostname)).
    type: str
    required: true
  groups:
    description: The inventory's C(groups).
    type: dict
    required: true
  play_hosts:
    description: The hosts of the play (C(ansible_play_hosts_all)), for O(_input[].once).
    type: list
    elements: str
    required: true
  selection:
    description: C(standard) or C(custom).
    type: str
    default: standard
  requested:
    description: The components of a custom selection.
    type: list
    elements: str
    default: []
  include_audits:
    description: Include audit components in a standard selection.
    type: bool
    default: false
  skip:
    description: Components never to run on this host.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Plan this host's backup
  ansible.builtin.set_fact:
    plan: >-
      {{ backup_profile.components | lifeboat.backup.component_plan(
           host=inventory_hostname, groups=groups, play_hosts=ansible_play_hosts_all,
           selection=backup_selection, requested=backup_components) }}
"""

RETURN = r"""
_value:
  description:
    - One entry per profile component, in profile order, with the component's own keys plus
      C(applies) (bool), C(selected) (bool, run it on this host) and C(reason) (why not, or null).
    - A requested component that does not apply here is C(selected=false) with C(reason)
      starting with C(not applicable); the role fails on it with halt.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.lifeboat.backup.plugins.plugin_utils._profile_schema import KINDS


def _applies(component, host, groups, play_hosts, skip):
    if component["name"] in skip:
        return False, "skipped on this host (backup_skip_components)"
    group = component.get("group")
    members = list(play_hosts) if not group else list(groups.get(group, []))
    if group and host not in members:
        return False, "not hosted here (host is not in group %s)" % group
    if component.get("once"):
        first = next((h for h in play_hosts if h in members), None)
        if first != host:
            return False, "runs once per cluster, on %s" % first
    return True, None


# Profile keys that hold credentials, at any depth (an archive component's storage targets
# carry passwords and keys). The plan is kept in facts, which -v prints, so it carries none
# of them; the roles take them from the profile when they call a module.
SECRET_KEYS = (
    "login_password",
    "password",
    "api_key",
    "bearer_token",
    "passphrase",
    "signing_key",
    "previous_signing_key",
    "private_key",
    "private_key_passphrase",
    "secret_key",
    "session_token",
    "identity",
    "secret",
)


def without_secrets(component):
    if isinstance(component, dict):
        return {key: without_secrets(value) for key, value in component.items() if key not in SECRET_KEYS}
    if isinstance(component, list):
        return [without_secrets(value) for value in component]
    return component


def _check_component(index, component, names):
    """Raise AnsibleFilterError for a profile entry that is not a usable component."""
    if not isinstance(component, dict) or not component.get("name") or not component.get("kind"):
        raise AnsibleFilterError("profile component #%d needs a name and a kind" % (index + 1))
    if component["kind"] not in KINDS:
        raise AnsibleFilterError("profile component %s has unknown kind %r; known kinds: %s" % (component["name"], component["kind"], ", ".join(KINDS)))
    if component["name"] in names:
        raise AnsibleFilterError("profile component name %s is used twice" % component["name"])


def _selected(component, applies, reason, selection, requested, include_audits):
    """(selected, reason it is not) for an applicable-or-not component."""
    if selection == "custom":
        if component["name"] not in requested:
            return False, "not requested (custom selection)"
        return applies, None if applies else "not applicable: %s" % reason
    selected = applies and (include_audits or not component.get("audit"))
    if applies and not selected:
        return False, "audit component (include it with backup_include_audits)"
    return selected, None if selected else reason


def component_plan(components, host, groups, play_hosts, selection="standard", requested=None, include_audits=False, skip=None):
    requested = list(requested or [])
    skip = list(skip or [])
    if selection not in ("standard", "custom"):
        raise AnsibleFilterError("backup_selection must be standard or custom, not %r" % selection)
    if selection == "custom" and not requested:
        raise AnsibleFilterError("backup_selection is custom but backup_components is empty: list the components to back up")
    names = []
    plan = []
    for index, component in enumerate(components or []):
        _check_component(index, component, names)
        names.append(component["name"])
        applies, reason = _applies(component, host, groups, play_hosts, skip)
        selected, reason = _selected(component, applies, reason, selection, requested, include_audits)
        plan.append(dict(without_secrets(component), applies=applies, selected=selected, reason=reason))
    unknown = sorted(set(requested) - set(names))
    if unknown:
        raise AnsibleFilterError(
            "backup_components lists %s, which the profile does not define; it defines: %s" % (", ".join(unknown), ", ".join(names) or "nothing")
        )
    return plan


class FilterModule:
    def filters(self):
        return {"component_plan": component_plan}
