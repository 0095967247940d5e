# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: module_options
short_description: The keys of a profile component that are options of a module
version_added: 0.2.0
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
description:
  - Keeps the keys of a profile component that are options (or aliases) of a module of this
    collection, for the roles to pass a component to its module once, in C(module_defaults),
    instead of listing every option. A new module option is then a new profile key, with no
    role edit.
  - The option names are read from the module's C(DOCUMENTATION) and the doc fragments it
    extends, which C(ansible-test sanity) keeps equal to its argument spec; nothing is listed
    twice.
  - The keys that describe the component in the profile and the plan (C(kind), C(group),
    C(once), C(audit), C(applies), C(selected), C(reason), C(members), C(details)) are never
    passed. The profile key C(owner_group) is the module option C(group) (C(group) is where
    the component is hosted).
  - With O(prefix), a key C(<prefix><option>) sets the option and wins over a plain
    C(<option>) key. A plain key that a module listed in O(except_own_options_of) documents
    as its own option (not one of a shared doc fragment) is that module's setting and is not
    passed. The restore role uses C(restore_) and the backup module of the kind, so a
    component's C(jobs) is the dump's and C(restore_jobs) the restore's, while the connection
    (a shared fragment) serves both.
options:
  _input:
    description: The profile component (as the roles combine it with its plan entry).
    type: dict
    required: true
  module:
    description: The module's short name (C(postgresql_dump)) or its FQCN in this collection.
    type: str
    required: true
  prefix:
    description: A key prefix that selects options for this module first (C(restore_)).
    type: str
  except_own_options_of:
    description: Modules whose own options a plain key means instead (the backup module of the kind, in a restore).
    type: list
    elements: str
    default: []
  exclude:
    description: Plain keys that mean something else for this module (a C(<prefix><option>) key still sets the option).
    type: list
    elements: str
    default: []
  shared_only:
    description:
      - Only the options of the module's shared doc fragments (the connection), as for a
        reachability check before the capture.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Dump one component (every profile key that is a postgresql_dump option)
  lifeboat.backup.postgresql_dump:
    session: "{{ session.work_dir }}"
    name: "{{ component.name }}"
  module_defaults:
    lifeboat.backup.postgresql_dump: "{{ component | lifeboat.backup.module_options('postgresql_dump') }}"
"""

RETURN = r"""
_value:
  description: The component's keys that are options of the module, under the option's name.
  type: dict
"""

import functools

from ansible.errors import AnsibleFilterError

from ansible_collections.lifeboat.backup.plugins.plugin_utils._module_docs import documented_options

# What a profile component or a plan entry says about the component itself (component_plan,
# restore_order): never a module option, whatever a module calls its own options.
NOT_OPTIONS = ("kind", "group", "once", "audit", "applies", "selected", "reason", "members", "details")
# Profile keys named apart from the option, because the option's name is taken by one above.
RENAMED = {"owner_group": "group"}


@functools.cache
def module_spec(module):
    """({name or alias: option name}, own option names) of a module of this collection; its
    own options are those it documents itself, the others come from shared doc fragments."""
    options, own = documented_options(module)
    names = {}
    for name, spec in options.items():
        for alias in [name] + list((spec or {}).get("aliases") or []):
            names[alias] = name
    return names, own


def module_options(component, module, prefix=None, except_own_options_of=None, shared_only=False, exclude=None):
    if not isinstance(component, dict):
        raise AnsibleFilterError("module_options expects a profile component (a dict), not %s" % type(component).__name__)
    names, own = module_spec(module)
    theirs = set(exclude or [])
    for other in except_own_options_of or []:
        theirs.update(module_spec(other)[1])
    skip = own if shared_only else frozenset()
    chosen = _plain_options(component, names, theirs, prefix)
    # Then the prefixed keys (archive_<option>): they win over the unprefixed ones.
    chosen.update(_prefixed_options(component, names, prefix))
    return {option: value for option, value in chosen.items() if option not in skip}


def _plain_options(component, names, theirs, prefix):
    """The component's keys that name an option of the module (or an alias, or an old name)."""
    chosen = {}
    # Aliases first, so that an option's own name wins over a deprecated alias.
    for key, value in sorted(component.items(), key=lambda item: names.get(item[0]) == item[0]):
        if key in NOT_OPTIONS or key in theirs or (prefix and key.startswith(prefix) and key not in names):
            continue
        option = names.get(RENAMED.get(key, key))
        if option:
            chosen[option] = value
    return chosen


def _prefixed_options(component, names, prefix):
    """``<prefix><option>`` keys of the component, by option."""
    if not prefix:
        return {}
    return {names[key[len(prefix) :]]: value for key, value in component.items() if key.startswith(prefix) and key[len(prefix) :] in names}


class FilterModule:
    def filters(self):
        return {"module_options": module_options}
