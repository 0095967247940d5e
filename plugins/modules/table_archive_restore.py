#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: table_archive_restore
short_description: Load archived rows back into a PostgreSQL table, after verifying them
version_added: 0.2.0
description:
  - Loads the rows of segments of a chain written by M(lifeboat.backup.table_archive) back
    into the table they came from, or into another table (for an investigation), together
    with the rows of its child tables.
  - Nothing reaches a target before it is authenticated - the chain is verified first
    (signatures against O(public_keys), links, each payload's SHA-256), taken from the
    first location where it verifies with no problem. Then, in one transaction, each
    segment's rows are staged in private temporary tables while their counts and digests
    are recomputed and compared with the signed entry; only when all match are they
    inserted into the targets (the table first, then its children) and committed.
  - Segments are chosen by number (O(segments)), key range (O(from_key), O(to_key)) or time
    range (O(from_time), O(to_time)); the key and time ranges also filter the rows.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._table_archive.targets
  - lifeboat.backup._attributes
  - lifeboat.backup._postgresql
  - lifeboat.backup._decryption
  - lifeboat.backup._storage.targets
attributes:
  check_mode:
    support: full
    details: Verifies the chain and reports what would be restored.
  diff_mode:
    support: none
options:
  chain:
    description:
      - The chain (its name, as M(lifeboat.backup.table_archive) returned it - by default
        C(<database>.<schema>.<table>)).
    type: str
    required: true
  target:
    description:
      - Table to restore the rows into (C(schema.table)). Defaults to the archived table.
    type: str
  child_targets:
    description:
      - Where the rows of each child table go, by archived child table (C(schema.table)).
        Required for each child when O(target) is another table, unless O(children=false).
    type: dict
    default: {}
  children:
    description:
      - Restore the rows of the child tables too.
    type: bool
    default: true
  create_target:
    description:
      - Create a target table that does not exist (and its schema), with the columns and
        types the chain recorded (and the key as primary key for the table).
    type: bool
    default: false
  segments:
    description:
      - Only these segments (their numbers in the chain).
    type: list
    elements: int
  from_key:
    description:
      - Only rows whose key is at least this (one value per key column).
    type: list
    elements: str
  to_key:
    description:
      - Only rows whose key is at most this.
    type: list
    elements: str
  from_time:
    description:
      - Only rows whose time column is at or after this time (a timestamp PostgreSQL reads).
    type: str
  to_time:
    description:
      - Only rows whose time column is at or before this time.
    type: str
  on_conflict:
    description:
      - C(error) fails (and restores nothing) when a row is already in the target (same
        unique key). C(skip) keeps the rows that are there and adds the others.
    type: str
    choices: [error, skip]
    default: error
  public_keys:
    description:
      - Signing keys trusted for the chain; see M(lifeboat.backup.table_archive_verify).
        Without it, the key of the chain's first entry is trusted.
    type: list
    elements: str
    default: []
  spool_dir:
    description:
      - Directory for payloads being restored (fetched encrypted, removed after each).
        Defaults to the system's temporary directory.
    type: path
seealso:
  - module: lifeboat.backup.table_archive
  - module: lifeboat.backup.table_archive_verify
"""

EXAMPLES = r"""
- name: Bring back January's raw messages into a table of their own, for an investigation
  lifeboat.backup.table_archive_restore:
    login_db: ttm
    targets: [{name: primary, type: local, path: /srv/table-archive}]
    chain: ttm.public.raw_data
    public_keys: ["ed25519:xBhRAQEknpC3bYh8+kpMv+toe7pi3Pm+x/UKCheUUL8="]
    identity_file: /root/archive-identity.txt
    from_time: "2026-01-01"
    to_time: "2026-01-31 23:59:59"
    target: investigation.raw_data
    child_targets: {public.init_table: investigation.init_table}
    create_target: true

- name: Put segment 12 back where it came from
  lifeboat.backup.table_archive_restore:
    login_db: ttm
    targets: [{type: local, path: /srv/table-archive}]
    chain: ttm.public.raw_data
    passphrase: "{{ vault_archive_passphrase }}"
    segments: [12]
"""

RETURN = r"""
chain:
  description: The chain restored from.
  returned: always
  type: str
location:
  description: The location the chain was verified and read in.
  returned: always
  type: str
segments:
  description: Numbers of the segments restored (or, in check mode, that would be).
  returned: always
  type: list
  elements: int
rows_archived:
  description: Rows of the table in those segments.
  returned: always
  type: int
tables:
  description: Per table - source, target, rows_in_segments, rows_restored, rows_skipped (already there, with O(on_conflict=skip)).
  returned: always
  type: list
  elements: dict
verified:
  description: What the verification found - entries, signers, trust (C(given) or C(archive)).
  returned: always
  type: dict
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

from ansible_collections.lifeboat.backup.plugins.module_utils import _image, _postgresql, _storage, _table_db, _table_restore, _table_segment
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


def main():
    module = LifeboatModule(
        argument_spec=dict(
            chain=dict(type="str", required=True),
            target=dict(type="str"),
            child_targets=dict(type="dict", default={}),
            children=dict(type="bool", default=True),
            create_target=dict(type="bool", default=False),
            segments=dict(type="list", elements="int"),
            from_key=dict(type="list", elements="str", no_log=False),
            to_key=dict(type="list", elements="str", no_log=False),
            from_time=dict(type="str"),
            to_time=dict(type="str"),
            on_conflict=dict(type="str", choices=["error", "skip"], default="error"),
            public_keys=dict(type="list", elements="str", default=[], no_log=False),
            spool_dir=dict(type="path"),
        ),
        specs=[_postgresql.CONNECTION_SPEC, _storage.TARGETS_SPEC, _image.DECRYPTION_SPEC],
        mutually_exclusive=_postgresql.CONNECTION_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    module.run(restore)


def restore(module):
    params = module.params
    module.require("psycopg (or psycopg2)", _postgresql.HAS_PSYCOPG, _postgresql.PSYCOPG_IMPORT_ERROR)
    module.require("cryptography", _table_segment.HAS_CRYPTOGRAPHY, _table_segment.CRYPTOGRAPHY_IMPORT_ERROR)
    with _table_db.opened(params) as (conn, locations):
        return _table_restore.restore(conn, params, locations, module.check_mode)


if __name__ == "__main__":
    main()
