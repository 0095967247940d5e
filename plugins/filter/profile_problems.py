# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: profile_problems
short_description: What is wrong with a backup profile, before anything runs
version_added: 0.2.0
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
description:
  - Validates a backup profile against its schema and returns every problem found; the
    backup and restore roles (and C(playbooks/plan.yml)) refuse to start on a profile
    with problems.
  - Each component is checked against the keys of its kind - the options of the modules the
    roles run for that kind, passed as the roles pass them (M(lifeboat.backup.postgresql_dump)
    options for a C(postgresql) component, C(restore_<option>) for its restore), and the
    keys the roles read themselves. An unknown key is reported with the component, the key
    and the nearest valid name (C(path) - did you mean C(paths)?); a value of the wrong type
    or outside its choices is reported with the key.
  - The profile's C(quiesce) section, its services and its C(checks) are checked the same way.
  - Every key of every kind is listed in C(docs/profile-reference.md), generated from the same schema.
options:
  _input:
    description: The profile (C(backup_profile)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: The profile is usable
  ansible.builtin.assert:
    that: backup_profile | lifeboat.backup.profile_problems | length == 0
    fail_msg: "{{ backup_profile | lifeboat.backup.profile_problems | join('; ') }}"
"""

RETURN = r"""
_value:
  description: One line per problem, naming where it is (C(component maindb (postgresql))), the key and the fix; empty when the profile is usable.
  type: list
  elements: str
"""

from ansible_collections.lifeboat.backup.plugins.plugin_utils._profile_schema import profile_problems


class FilterModule:
    def filters(self):
        return {"profile_problems": profile_problems}
