# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: restore_order
short_description: The components of an image to restore, in the documented order
version_added: 0.1.0
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
description:
  - Takes the components of an image (from M(lifeboat.backup.image_info)) and returns those
    to restore, in the documented order - configuration files first (services must find
    their configuration), then PostgreSQL, then Elasticsearch/OpenSearch (indices may be
    rebuilt from the database), then Neo4j.
  - Each entry carries the profile's options for that component (connection settings and so
    on), matched by name.
  - Only components captured successfully are restored; asking for one that is not in the
    image, or that failed at backup time, is an error.
  - A profile component's C(after_restore) actions (each C(name), C(command), and optionally
    C(environment), C(chdir), C(timeout) in seconds) are checked here, so that a misspelt
    action fails before anything is restored.
  - PostgreSQL base backups replace a whole data directory and are restored by hand
    (docs/postgresql.md); they are left out unless named in O(only).
  - An C(archive) component (table archiving) holds the heads of the archive's chains, not
    rows - archived rows come back with M(lifeboat.backup.table_archive_restore), by hand
    (docs/table-archive.md). It is left out unless named in O(only), where the role says so.
  - The base backup of a profile component of kind C(postgresql_pitr) is restored with the
    WAL archive to a point in time (M(lifeboat.backup.postgresql_pitr), docs/pitr.md); its
    entry has kind C(postgresql_pitr).
options:
  _input:
    description: The image's components (name to manifest entry with C(kind) and C(status)).
    type: dict
    required: true
  profile:
    description: The profile's component list.
    type: list
    elements: dict
    default: []
  only:
    description: Restore only these components.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Restore plan
  ansible.builtin.set_fact:
    plan: "{{ image.components | lifeboat.backup.restore_order(profile=restore_profile.components) }}"
"""

RETURN = r"""
_value:
  description:
    - Entries with C(name), C(kind), C(stage), C(members) and the profile's options, in restore order.
    - C(stage) is the entry's place in the documented order (0 configuration files, 1 PostgreSQL,
      2 Elasticsearch/OpenSearch, 3 Neo4j). The restore role runs one stage at a time on every
      node at once, so a later stage never starts on one node before an earlier stage ended on all.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.lifeboat.backup.plugins.filter.component_plan import without_secrets

ORDER = {"config": 0, "postgresql": 1, "postgresql_basebackup": 1, "postgresql_pitr": 1, "archive": 1, "elasticsearch": 2, "neo4j": 3}
MANUAL = ("postgresql_basebackup", "archive")


def _kind(entry, profile_entry):
    """The kind to restore: the image's (its manifest spells postgresql-basebackup), except that
    the base backup of a profile's postgresql_pitr component is restored to a point in time."""
    kind = (entry.get("kind") or "").replace("-", "_")
    if kind == "postgresql_basebackup" and profile_entry.get("kind") == "postgresql_pitr":
        return "postgresql_pitr"
    return kind


def _check_only(components, only):
    """Raise unless every component named in ``only`` is in the image and was captured."""
    unknown = [n for n in only if n not in components]
    if unknown:
        raise AnsibleFilterError(
            "restore_components lists %s, not in this image; it holds: %s" % (", ".join(unknown), ", ".join(sorted(components)) or "nothing")
        )
    failed = [n for n in only if components[n].get("status") != "success"]
    if failed:
        raise AnsibleFilterError("components %s were not captured successfully in this image and cannot be restored" % ", ".join(failed))


def _restorable(name, kind, entry, only):
    if kind not in ORDER or entry.get("status") != "success" or (only and name not in only):
        return False
    # Restored by hand (docs/postgresql.md); only when asked, to say so.
    return kind not in MANUAL or name in only


ACTION_KEYS = ("name", "command", "environment", "chdir", "timeout")


def check_after_restore(name, actions):
    """Raise, naming the component and the fix, unless ``actions`` is a usable after_restore list."""
    if not isinstance(actions, list):
        raise AnsibleFilterError("component %s: after_restore must be a list of actions, each with name and command" % name)
    for number, action in enumerate(actions, 1):
        where = "component %s: after_restore action #%d" % (name, number)
        if not isinstance(action, dict) or not isinstance(action.get("name"), str) or not isinstance(action.get("command"), str):
            raise AnsibleFilterError("%s needs a name and a command (a shell command string)" % where)
        unknown = sorted(set(action) - set(ACTION_KEYS))
        if unknown:
            raise AnsibleFilterError("%s (%s) has unknown keys %s; known: %s" % (where, action["name"], ", ".join(unknown), ", ".join(ACTION_KEYS)))
        timeout = action.get("timeout", 3600)
        if isinstance(timeout, bool) or not str(timeout).isdigit() or int(timeout) < 1:
            raise AnsibleFilterError("%s (%s): timeout must be a number of seconds above 0, not %r" % (where, action["name"], timeout))
        if not isinstance(action.get("environment", {}), dict):
            raise AnsibleFilterError("%s (%s): environment must be a dict of variable names to values" % (where, action["name"]))


def restore_order(components, profile=None, only=None):
    only = list(only or [])
    by_name = {c.get("name"): c for c in profile or [] if isinstance(c, dict)}
    profile_rank = {name: i for i, name in enumerate(by_name)}
    _check_only(components, only)
    for name, component in by_name.items():
        check_after_restore(name, component.get("after_restore", []))
    plan = [
        dict(
            without_secrets(by_name.get(name, {})), name=name, kind=kind, stage=ORDER[kind], members=entry.get("members", []), details=entry.get("details", {})
        )
        for name, entry, kind in ((n, e, _kind(e, by_name.get(n, {}))) for n, e in components.items())
        if _restorable(name, kind, entry, only)
    ]
    plan.sort(key=lambda c: (ORDER[c["kind"]], profile_rank.get(c["name"], len(profile_rank)), c["name"]))
    return plan


class FilterModule:
    def filters(self):
        return {"restore_order": restore_order}
