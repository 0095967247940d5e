# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: role_advice
short_description: A module's message in the words of the role that ran it
version_added: 0.2.0
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
description:
  - Modules advise with their own options (C(set clean=true), C(partial=true)). Run by the
    backup or restore role, the operator sets a role variable or a profile key instead; this
    filter rewrites each C(<option>=<true|false>) of the modules the role runs for the
    component's kind into the key that reaches that option - the restore role's variable
    C(restore_clean) for the clean option of M(lifeboat.backup.postgresql_restore), the profile
    key C(restore_partial) of an Elasticsearch component for the partial option of
    M(lifeboat.backup.elasticsearch_restore) (in a restore a plain C(partial) is the
    snapshot's and would not reach the restore).
  - The keys are those of the profile schema (C(docs/profile-reference.md)). Anything else in
    the message is left as it is.
options:
  _input:
    description: The module's message.
    type: str
    required: true
  kind:
    description: The component's kind.
    type: str
    required: true
  phase:
    description: C(backup) or C(restore) - which of the kind's modules gave the message.
    type: str
    default: backup
  component:
    description: The component's name, for the advice to name it.
    type: str
"""

EXAMPLES = r"""
- name: Record a failure in the role's words
  ansible.builtin.set_fact:
    reason: "{{ result.msg | lifeboat.backup.role_advice(component.kind, phase='restore', component=component.name) }}"
"""

RETURN = r"""
_value:
  description: The message, with module options replaced by role variables or profile keys.
  type: str
"""

from ansible_collections.lifeboat.backup.plugins.plugin_utils._profile_schema import role_advice


class FilterModule:
    def filters(self):
        return {"role_advice": role_advice}
