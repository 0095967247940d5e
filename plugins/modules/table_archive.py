#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: table_archive
short_description: Move old rows of fast-growing PostgreSQL tables into signed, chained archive segments
version_added: 0.2.0
description:
  - Moves the rows of each table in O(tables) that are older than a cut-off out of the
    database, in batches, into archive segments kept in dedicated archive locations
    (O(targets)); rows of linked child tables move with them.
  - Each segment is compressed and age-encrypted, chained (it carries the hash of the
    entry before it in the table's chain) and signed with Ed25519 (O(signing_key)). The
    format is specified in docs/table-archive.md.
  - A batch is one transaction. Its rows are deleted and streamed into the segment by the
    same statement; the segment is written to every location, synced and read back there,
    the chain's head is recorded in the database, and only then is the transaction
    committed. Anything that fails before that rolls back, so no row is lost.
  - A run killed at any point (C(kill -9), the server stopped) leaves every row in the
    table or in a committed segment, never in both; the next run removes what the
    interrupted one wrote without committing, and copies to a location the entries it
    lacks.
  - The archive of a table is always its beginning in key order (O(tables[].key)) -
    archiving stops at the first row that is not older than the cut-off.
  - Check mode reports what would move (rows, key range, time range, estimated bytes,
    child rows) and changes nothing.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._table_archive.targets
  - lifeboat.backup._attributes
  - lifeboat.backup._postgresql
  - lifeboat.backup._table_archive
  - lifeboat.backup._table_archive.encryption
  - lifeboat.backup._table_archive.tables
  - lifeboat.backup._storage.targets
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
options:
  max_batches:
    description:
      - At most this many segments per table in this run (C(0) - no limit). A run can be
        kept short this way and continued by the next one.
    type: int
    default: 0
  spool_dir:
    description:
      - Directory for the segment being written (encrypted; removed after each batch).
        Defaults to the system's temporary directory.
    type: path
  session:
    description:
      - Work area of a running backup session (see M(lifeboat.backup.backup_session)). When
        given, the run is recorded as an C(archive) component of the session's image - the
        segments stay in the archive locations, never in the image, but the image's
        manifest records each chain's head and the public key, so that
        M(lifeboat.backup.table_archive_verify) can later show that no entry was removed
        from the end of a chain (its O(lifeboat.backup.table_archive_verify#module:images)).
      - This is how the backup role's C(archive) component kind runs it.
    type: path
  name:
    description:
      - Name of the component in the image, with O(session).
    type: str
    default: archive
notes:
  - The archive locations must not be the directory of the rotating system images; give
    archives their own retention (they keep every segment until you remove it).
  - To prove later that rows still in the table were not deleted or altered, record
    checkpoints with M(lifeboat.backup.table_checkpoint).
seealso:
  - module: lifeboat.backup.table_checkpoint
  - module: lifeboat.backup.table_archive_verify
  - module: lifeboat.backup.table_archive_restore
"""

EXAMPLES = r"""
- name: Archive raw messages (with their init records) older than 90 days
  lifeboat.backup.table_archive:
    login_host: db1.example.com
    login_user: archiver
    login_password: "{{ vault_archiver_password }}"
    login_db: ttm
    targets:
      - {name: primary, type: local, path: /srv/table-archive}
      - {name: offsite, type: sftp, host: vault.example.com, user: archive, path: /archive/ttm,
         private_key: "{{ vault_archive_ssh_key }}", known_hosts: "{{ vault_known_hosts }}"}
    signing_key: "{{ vault_archive_signing_key }}"
    recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
    tables:
      - name: public.raw_data
        key: [recordid]
        time_column: timestamp
        time_unit: epoch_ms
        older_than: 90 days
        children:
          - {name: public.init_table, link: [sessionid]}
      - name: public.auditdata
        time_column: created
        older_than: 1 year
  register: archived

- name: What would move (changes nothing)
  lifeboat.backup.table_archive:
    login_db: ttm
    targets: [{type: local, path: /srv/table-archive}]
    signing_key_file: /etc/lifeboat/archive-signing.pem
    recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p]
    tables: [{name: public.error, time_column: logged_at, older_than: 6 months}]
  check_mode: true
"""

RETURN = r"""
public_key:
  description: The public key of O(signing_key), as recorded in every entry.
  returned: always
  type: str
  sample: ed25519:xBhRAQEknpC3bYh8+kpMv+toe7pi3Pm+x/UKCheUUL8=
rows:
  description: Rows of the tables moved into segments by this run (child rows not counted).
  returned: always
  type: int
  sample: 1000000
segments:
  description: Segments written by this run.
  returned: always
  type: int
  sample: 10
tables:
  description:
    - One result per table - C(table), C(chain), C(chain_id), C(targets), C(cutoff) (the
      column, the value it was compared with, the first key that was not old), C(rows),
      C(child_rows), C(segments) (each - seq, rows, first_key, last_key, time_range,
      child_rows, stored_bytes, plaintext_bytes, payload), C(head) (the chain's head now -
      seq, hash, through, rows, signer), C(recovered) (what an interrupted run had left and
      was undone or copied), C(expired) (payloads removed by O(tables[].expire_after)).
    - In check mode, C(would_move) - rows, first_key, last_key, time_range, child_rows,
      bytes_estimate, segments - and C(would_expire).
  returned: always
  type: list
  elements: dict
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

from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql, _session, _storage, _table_archive, _table_chain, _table_db, _table_segment
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


def main():
    module = LifeboatModule(
        argument_spec=dict(
            max_batches=dict(type="int", default=0),
            spool_dir=dict(type="path"),
        ),
        specs=[
            _session.component_spec("archive", required=False),
            _postgresql.CONNECTION_SPEC,
            _storage.TARGETS_SPEC,
            _table_chain.SIGNING_SPEC,
            _table_chain.ENCRYPTION_SPEC,
            _table_chain.STATE_SPEC,
            _table_db.TABLES_SPEC,
        ],
        mutually_exclusive=_postgresql.CONNECTION_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    module.run(archive)


def archive(module):
    params = module.params
    module.require("psycopg (or psycopg2)", _postgresql.HAS_PSYCOPG, _postgresql.PSYCOPG_IMPORT_ERROR)
    module.require("cryptography", _table_segment.HAS_CRYPTOGRAPHY, _table_segment.CRYPTOGRAPHY_IMPORT_ERROR)
    _table_db.validate_tables(params["tables"])
    _table_chain.check_encryption(params)
    component = None
    if params["session"] and not module.check_mode:
        component = module.start_component(module.open_session(params["session"], writes_members=False), params["name"], "archive")
    result = module.keep(dict(tables=[]))  # a failure still returns the tables archived before it
    with _table_archive.writing(params, module.check_mode) as ctx:
        result["public_key"] = ctx.signer
        for table in ctx.tables:
            result["tables"].append(run_table(ctx, table, result["tables"]))
    results = result["tables"]
    if component is not None:
        component.succeed(_table_archive.component_details(ctx.signer, results))
    result.update(
        segments=sum(len(r["segments"]) for r in results),
        rows=sum(r["rows"] for r in results),
        changed=any(r["segments"] or r.get("recovered") or r.get("expired") for r in results),
    )
    return result


def run_table(ctx, table, done):
    """One table; a failure also says what the tables before it archived."""
    try:
        return _table_archive.archive_table(ctx, table)
    except LifeboatError as exc:
        earlier = ["%s: %d rows in %d segments" % (r["table"], r["rows"], len(r["segments"])) for r in done if r["segments"]]
        if earlier:
            exc.with_done(*earlier)
        raise


if __name__ == "__main__":
    main()
