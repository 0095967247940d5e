#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: table_checkpoint
short_description: Record a signed digest of the rows still in a PostgreSQL table
version_added: 0.2.0
description:
  - For each table in O(tables), records in its chain (see M(lifeboat.backup.table_archive))
    a signed checkpoint entry - the count and digest of the live rows after the archive's
    end, up to a key (O(through), by default the newest row).
  - M(lifeboat.backup.table_archive_verify) later adds the rows archived since to the live
    rows in that range and compares them with the checkpoint, so rows deleted, altered or
    inserted in the table below a checkpoint are found, not only changes to archives.
  - Later segments of the chain never straddle a checkpoint's end, so that their digests
    add up to it.
  - With O(record=false), only computes the count and digest of every row of each table
    and returns them, with one digest over all the tables - nothing is written, and no
    location or key is needed. The backup role's C(when_changed) uses this to take a
    component only when its tables changed.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._table_archive.targets
  - lifeboat.backup._attributes
  - lifeboat.backup._postgresql
  - lifeboat.backup._table_archive
  - lifeboat.backup._table_archive.tables
  - lifeboat.backup._storage.targets
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
options:
  record:
    description:
      - C(true) records a checkpoint entry in each table's chain. C(false) only returns the
        digests of the tables' rows (RV(digests), RV(digest)).
    type: bool
    default: true
  through:
    description:
      - The last key the checkpoint covers (one value per key column). Only with a single
        table. Defaults to the newest key, leaving out rows younger than O(settle).
    type: list
    elements: str
  settle:
    description:
      - Seconds. Rows whose O(tables[].time_column) is younger are left out of the default
        O(through), so that a transaction that commits a lower key a moment later does not
        look like a row inserted below the checkpoint. C(0) - up to the newest key.
    type: int
    default: 60
seealso:
  - module: lifeboat.backup.table_archive
  - module: lifeboat.backup.table_archive_verify
"""

EXAMPLES = r"""
- name: Checkpoint the live audit rows after each archiving run
  lifeboat.backup.table_checkpoint:
    login_db: ttm
    targets: [{name: primary, type: local, path: /srv/table-archive}]
    signing_key_file: /etc/lifeboat/archive-signing.pem
    tables:
      - {name: public.raw_data, key: [recordid], time_column: timestamp, time_unit: epoch_ms}

- name: Digest of the configuration tables (nothing recorded)
  lifeboat.backup.table_checkpoint:
    login_db: ttm
    record: false
    tables: [{name: public.config}, {name: public.cert_table}, {name: public.roles}]
  register: config_digest
"""

RETURN = r"""
public_key:
  description: The public key of O(signing_key).
  returned: when O(record=true)
  type: str
  sample: ed25519:xBhRAQEknpC3bYh8+kpMv+toe7pi3Pm+x/UKCheUUL8=
tables:
  description:
    - One result per table - C(table), C(chain), C(chain_id), C(targets), C(checkpoint)
      (seq, after, through, rows, digest, first_key, last_key, time_range), C(head),
      C(recovered), or C(skipped) with the reason (no live rows after the archive's end).
  returned: when O(record=true)
  type: list
  elements: dict
digests:
  description: Per table - table, columns, rows, digest (of every row).
  returned: when O(record=false)
  type: list
  elements: dict
  sample: [{table: public.config, columns: [id, name, value], rows: 42, digest: 5f1c...}]
digest:
  description: SHA-256 over RV(digests) - changes when any row of any of the tables does.
  returned: when O(record=false)
  type: str
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

from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql, _storage, _table_archive, _table_chain, _table_db, _table_segment
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


def main():
    module = LifeboatModule(
        argument_spec=dict(
            record=dict(type="bool", default=True),
            through=dict(type="list", elements="str", no_log=False),
            settle=dict(type="int", default=60),
        ),
        specs=[
            _postgresql.CONNECTION_SPEC,
            _storage.TARGETS_SPEC,
            _table_chain.SIGNING_SPEC,
            _table_chain.STATE_SPEC,
            _table_db.TABLES_SPEC,
        ],
        mutually_exclusive=_postgresql.CONNECTION_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    module.run(checkpoint)


def checkpoint(module):
    params = module.params
    module.require("psycopg (or psycopg2)", _postgresql.HAS_PSYCOPG, _postgresql.PSYCOPG_IMPORT_ERROR)
    _table_db.validate_tables(params["tables"], archiving=False)
    if params["through"] and len(params["tables"]) != 1:
        raise OptionError("through", "through applies to one table: give a single item in tables, or leave through out")
    if params["settle"] < 0:
        raise OptionError("settle", "settle must not be negative")
    if not params["record"]:
        with _table_db.opened(params, targets=False) as (conn, _locations):
            digests, combined = _table_db.table_digests(conn, params["tables"])
        return dict(changed=False, digests=digests, digest=combined)
    module.require("cryptography", _table_segment.HAS_CRYPTOGRAPHY, _table_segment.CRYPTOGRAPHY_IMPORT_ERROR)
    with _table_archive.writing(params, module.check_mode, archiving=False) as ctx:
        results = [_table_archive.checkpoint_table(ctx, table, params["through"], params["settle"]) for table in ctx.tables]
    return dict(changed=any(r.get("changed") for r in results), public_key=ctx.signer, tables=results)


if __name__ == "__main__":
    main()
