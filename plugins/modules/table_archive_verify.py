#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: table_archive_verify
short_description: Prove that archived and live rows of PostgreSQL tables are complete and unaltered
version_added: 0.2.0
description:
  - Checks the chains written by M(lifeboat.backup.table_archive) in every archive location,
    and the live tables beside them, and reports per table and chain - the segments with
    their start and end keys, row counts and time ranges, signature and chain validity, the
    live rows that continue the chain after its last archived key (reported as an "orphan
    chain", in the words of the transaction manager's verifier), and every problem found.
  - Problems are named (RV(problems)[].kind) - C(payload_altered), C(signature_invalid),
    C(segment_missing), C(out_of_order), C(foreign_entry), C(unknown_signing_key),
    C(chain_broken), C(range_gap), C(checkpoint_mismatch) (rows deleted, altered or inserted
    in the live table below a checkpoint), C(rows_in_archived_range), C(head_missing)
    (entries removed from the end of a chain, or from an image's record),
    C(uncommitted_entry) and others listed in docs/table-archive.md.
  - The report (RV(report)) reads like the seed's verification utility; the same facts are
    returned as data (RV(chains), RV(tables), RV(problems)).
  - Read-only; never reports a change. The same checks, without a database, are made by the
    standalone verifier shipped in the collection (docs/table-archive.md, "Offline verification").
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._table_archive.targets
  - lifeboat.backup._attributes
  - lifeboat.backup._attributes.info_module
  - lifeboat.backup._postgresql
  - lifeboat.backup._decryption
  - lifeboat.backup._table_archive.tables
  - lifeboat.backup._storage.targets
options:
  chains:
    description:
      - Chains checked without a database (their names, as directories in the locations).
    type: list
    elements: str
    default: []
  images:
    description:
      - Paths of backup images whose C(archive) component recorded chain heads; each
        recorded entry must still be in the chain (this finds entries removed from the end
        of a chain). Read from the images' manifests, without a key.
    type: list
    elements: path
    default: []
  public_keys:
    description:
      - Signing keys the auditor trusts (C(ed25519:<base64>), a PEM public key or an
        C(ssh-ed25519) line). Entries signed with any other key are C(unknown_signing_key).
      - Without it, the key of each chain's first entry is trusted (and the report says so) -
        which proves integrity but not who wrote the chain.
    type: list
    elements: str
    default: []
  level:
    description:
      - C(headers) checks the entries only. C(checksum) also reads every payload and checks
        its size and SHA-256 against the signed entry (no key needed). C(full) also decrypts
        and decompresses every payload and recounts its rows and digests (give
        O(passphrase), O(identity) or O(identity_file)).
    type: str
    choices: [headers, checksum, full]
    default: checksum
  checkpoints:
    description:
      - C(latest) compares the newest checkpoint of each table with the live rows (and every
        checkpoint the archive has passed, from the entries alone); C(all) compares every one.
    type: str
    choices: [latest, all]
    default: latest
  fail_on_problems:
    description:
      - Fail the task when any problem is found (the result still holds the whole report).
    type: bool
    default: true
  state_schema:
    description:
      - Schema of the table in which M(lifeboat.backup.table_archive) records each chain's head.
    type: str
    default: lifeboat
  spool_dir:
    description:
      - Directory for payloads being decrypted with O(level=full) (they are fetched encrypted
        and removed after each). Defaults to the system's temporary directory.
    type: path
seealso:
  - module: lifeboat.backup.table_archive
  - module: lifeboat.backup.table_checkpoint
"""

EXAMPLES = r"""
- name: Prove the audit archive and the live table to an auditor
  lifeboat.backup.table_archive_verify:
    login_db: ttm
    targets: [{name: primary, type: local, path: /srv/table-archive}]
    public_keys: ["ed25519:xBhRAQEknpC3bYh8+kpMv+toe7pi3Pm+x/UKCheUUL8="]
    tables:
      - {name: public.raw_data, key: [recordid], time_column: timestamp, time_unit: epoch_ms,
         children: [{name: public.init_table, link: [sessionid]}]}
  register: verified

- name: Show the report
  ansible.builtin.debug:
    msg: "{{ verified.report }}"
"""

RETURN = r"""
valid:
  description: Whether no problem was found.
  returned: always
  type: bool
report:
  description: The report as lines of text.
  returned: always
  type: list
  elements: str
  sample:
    - Lifeboat table archive verification
    - "Checked chain ttm.public.raw_data (table public.raw_data) in primary with 10 segments, 1,000,000 records, keys 1 to 1,000,000 ..."
    - "Orphan chain from table public.raw_data, startpoint 1,000,001, endpoint 1,050,000 is valid (50,000 live records ...)"
    - "Result: valid - no problem found"
chains:
  description:
    - One per chain and location - chain, id, location, table, key, entries, rows, first_key,
      last_key, through, time_range, child_rows, head, signers, trusted_keys, trust,
      signatures_valid, chain_valid, problems, and segments (seq, file, payload, after,
      through, first_key, last_key, rows, sections, time_range, signer, signature,
      payload_status, hash) and checkpoints.
  returned: always
  type: list
  elements: dict
tables:
  description:
    - One per table - table, chain, recorded_head (as the database recorded it), orphans
      (rows, first_key, last_key, time_range of the live rows after the chain's end),
      rows_in_archived_range, checkpoints (seq, rows_recorded, rows_archived_since,
      rows_live, matches), problems.
  returned: always
  type: list
  elements: dict
problems:
  description: Every problem found - kind, chain, location, seq, file, message.
  returned: always
  type: list
  elements: dict
image_heads:
  description: Chain heads recorded in O(images) - image, chain, seq, hash.
  returned: always
  type: list
  elements: dict
level:
  description: The level applied.
  returned: always
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

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image, _postgresql, _storage, _table_chain, _table_db, _table_segment, _table_verify
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


def main():
    module = LifeboatModule(
        argument_spec=dict(
            chains=dict(type="list", elements="str", default=[]),
            images=dict(type="list", elements="path", default=[]),
            public_keys=dict(type="list", elements="str", default=[], no_log=False),
            level=dict(type="str", choices=["headers", "checksum", "full"], default="checksum"),
            checkpoints=dict(type="str", choices=["latest", "all"], default="latest"),
            fail_on_problems=dict(type="bool", default=True),
            spool_dir=dict(type="path"),
        ),
        specs=[
            _postgresql.CONNECTION_SPEC,
            _storage.TARGETS_SPEC,
            _table_chain.STATE_SPEC,
            _image.DECRYPTION_SPEC,
            _table_db.TABLES_SPEC,
        ],
        mutually_exclusive=_postgresql.CONNECTION_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    module.run(verify)


def verify(module):
    params = module.params
    module.require("cryptography", _table_segment.HAS_CRYPTOGRAPHY, _table_segment.CRYPTOGRAPHY_IMPORT_ERROR)
    if not params["tables"] and not params["chains"]:
        raise OptionError("tables", "name what to verify: tables (chains and live rows) and/or chains (archives only)")
    if params["level"] == "full" and not _image.has_key(params):
        raise OptionError("level", "level=full decrypts every payload: give passphrase, identity or identity_file (or use level=checksum)")
    if params["tables"]:
        module.require("psycopg (or psycopg2)", _postgresql.HAS_PSYCOPG, _postgresql.PSYCOPG_IMPORT_ERROR)
        _table_db.validate_tables(params["tables"], archiving=False)
    try:
        with _table_db.opened(params, database=bool(params["tables"])) as (conn, locations):
            tables = [_table_db.describe_table(conn, spec, index, archiving=False) for index, spec in enumerate(params["tables"])]
            result = _table_verify.verify(conn, params, locations, tables, params["chains"])
    except _age.AgeError as exc:
        raise LifeboatError("cannot decrypt the payloads: %s" % exc.msg) from None
    result["changed"] = False
    if params["fail_on_problems"] and not result["valid"]:
        raise LifeboatError(problem_summary(result), **result)
    return result


def problem_summary(result):
    problems = result["problems"]
    first = problems[0]
    return "the archive does not verify: %d problem%s (%s); first: [%s] %s" % (
        len(problems),
        "" if len(problems) == 1 else "s",
        ", ".join(sorted({p["kind"] for p in problems})),
        first["kind"],
        first["message"],
    )


if __name__ == "__main__":
    main()
