# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations

# The policy is documented twice: required (image_retention) and optional (secrets_export,
# OPTIONAL_RETENTION_SPEC). ansible-test's yamllint reads doc fragments as string literals
# only, so the two cannot share a string; tests/unit/plugins/test_doc_fragments.py checks that
# they say the same.


class ModuleDocFragment:
    # The retention policy (module_utils/_retention.py POLICY_OPTIONS): the restic forget model
    # plus the collection's guards, one vocabulary for images, copies, WAL and bundles.
    DOCUMENTATION = r"""
options:
  retention:
    description:
      - The retention policy, in the restic C(forget) vocabulary. An item is kept when a C(keep_*)
        rule or O(retention.keep_within) selects it and it is not older than
        O(retention.max_age); O(retention.max_age) alone keeps everything younger. Give at least
        one of the C(keep_*) rules, O(retention.keep_within) or O(retention.max_age).
      - Whatever the policy, pinned items, items whose verdict cannot be read, and the newest
        O(retention.min_count) successful items of each node are never removed.
      - Partial and failed items are counted apart from the successful ones - they fill no
        C(keep_*) slot - and are removed once a newer successful item of the same node exists,
        or when older than O(retention.max_age).
      - Calendar periods are counted in UTC. The rules are explained with worked examples in
        C(docs/operations.md).
    type: dict
    required: true
    version_added: 0.2.0
    suboptions:
      keep_last:
        description:
          - Keep the newest N successful items.
        type: int
      keep_hourly:
        description:
          - Keep the newest successful item of each of the last N hours that have one.
        type: int
      keep_daily:
        description:
          - Keep the newest successful item of each of the last N days that have one.
        type: int
      keep_weekly:
        description:
          - Keep the newest successful item of each of the last N ISO weeks that have one.
        type: int
      keep_monthly:
        description:
          - Keep the newest successful item of each of the last N months that have one.
        type: int
      keep_yearly:
        description:
          - Keep the newest successful item of each of the last N years that have one.
        type: int
      keep_within:
        description:
          - Keep every successful item younger than this duration (C(45s), C(90m), C(12h),
            C(30d), C(2w), C(1y)).
        type: str
      max_age:
        description:
          - Remove what is older than this duration, even when a C(keep_*) rule selects it
            (O(retention.min_count) and pinned items excepted).
        type: str
      min_count:
        description:
          - The newest N successful items of each node are always kept. At least 1 - the newest
            successful item is never removed.
        type: int
        default: 1
      pattern:
        description:
          - Consider only items whose name matches this shell pattern, for example C(nightly-*);
            the others are left alone.
        type: str
"""

    # Modules where retention may be left out (secrets_export): without it, nothing is removed.
    OPTIONAL = r"""
options:
  retention:
    description:
      - The retention policy, in the restic C(forget) vocabulary. An item is kept when a C(keep_*)
        rule or O(retention.keep_within) selects it and it is not older than
        O(retention.max_age); O(retention.max_age) alone keeps everything younger. Give at least
        one of the C(keep_*) rules, O(retention.keep_within) or O(retention.max_age).
      - Whatever the policy, pinned items, items whose verdict cannot be read, and the newest
        O(retention.min_count) successful items of each node are never removed.
      - Partial and failed items are counted apart from the successful ones - they fill no
        C(keep_*) slot - and are removed once a newer successful item of the same node exists,
        or when older than O(retention.max_age).
      - Calendar periods are counted in UTC. The rules are explained with worked examples in
        C(docs/operations.md).
      - Without it, nothing is removed.
    type: dict
    version_added: 0.2.0
    suboptions:
      keep_last:
        description:
          - Keep the newest N successful items.
        type: int
      keep_hourly:
        description:
          - Keep the newest successful item of each of the last N hours that have one.
        type: int
      keep_daily:
        description:
          - Keep the newest successful item of each of the last N days that have one.
        type: int
      keep_weekly:
        description:
          - Keep the newest successful item of each of the last N ISO weeks that have one.
        type: int
      keep_monthly:
        description:
          - Keep the newest successful item of each of the last N months that have one.
        type: int
      keep_yearly:
        description:
          - Keep the newest successful item of each of the last N years that have one.
        type: int
      keep_within:
        description:
          - Keep every successful item younger than this duration (C(45s), C(90m), C(12h),
            C(30d), C(2w), C(1y)).
        type: str
      max_age:
        description:
          - Remove what is older than this duration, even when a C(keep_*) rule selects it
            (O(retention.min_count) and pinned items excepted).
        type: str
      min_count:
        description:
          - The newest N successful items of each node are always kept. At least 1 - the newest
            successful item is never removed.
        type: int
        default: 1
      pattern:
        description:
          - Consider only items whose name matches this shell pattern, for example C(nightly-*);
            the others are left alone.
        type: str
"""
