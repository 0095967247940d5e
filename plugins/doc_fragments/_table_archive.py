# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations

# The specs are in plugins/module_utils/_table_chain.py (SIGNING_SPEC, ENCRYPTION_SPEC,
# STATE_SPEC) and _table_db.py (TABLES_SPEC); keep both in step. The archive locations are
# storage targets: the modules take them as ``targets`` (doc fragment _storage.targets).


class ModuleDocFragment:
    # Signing and the chains' state in the database (table_archive, table_checkpoint).
    DOCUMENTATION = r"""
options:
  signing_key:
    description:
      - The Ed25519 private key that signs every entry of the chains - PEM (as made by
        C(openssl genpkey -algorithm ed25519)), an unencrypted OpenSSH key
        (C(ssh-keygen -t ed25519 -N '')), or C(ed25519-private:<base64 of the 32-byte seed>).
      - Its public key (C(ed25519:<base64>)) is recorded in every entry and returned as
        RV(public_key); give it to auditors, who pass it to
        M(lifeboat.backup.table_archive_verify) or the offline verifier.
      - Never logged, never returned, never written anywhere. One of O(signing_key) or
        O(signing_key_file) is required.
    type: str
    version_added: 0.2.0
  signing_key_file:
    description:
      - Path on the managed node of the signing key (see O(signing_key)).
    type: path
    version_added: 0.2.0
  previous_signing_key:
    description:
      - To move a chain to a new O(signing_key), the key that signed it so far. A rotation
        entry signed by it names the new key, so that a verifier that trusts the old key
        trusts the new one too. Without it, a chain signed with another key is refused.
      - Never logged, never returned.
    type: str
    version_added: 0.2.0
  previous_signing_key_file:
    description:
      - Path on the managed node of O(previous_signing_key).
    type: path
    version_added: 0.2.0
  state_schema:
    description:
      - Schema of the table C(table_archive_chains) in which each chain's head is recorded,
        in the same transaction as the rows' deletion. Created when missing (the role needs
        the right to create it there once; see docs/table-archive.md, "Privileges").
    type: str
    default: lifeboat
    version_added: 0.2.0
"""

    ENCRYPTION = r"""
options:
  encryption:
    description:
      - C(age) encrypts every payload (to O(recipients) and/or the chain's passphrase
        identity). C(none) leaves payloads compressed only; only when asked explicitly.
      - Entries (keys, counts, digests, times) are never encrypted, so that a chain can be
        verified without any decryption key.
    type: str
    choices: [age, none]
    default: age
    version_added: 0.2.0
  recipients:
    description:
      - age X25519 public keys (C(age1...)) the payloads are encrypted to. The node then
        holds no key that can read the archive.
    type: list
    elements: str
    default: []
    version_added: 0.2.0
  passphrase:
    description:
      - A passphrase (at least 8 characters) protecting the chain's own X25519 identity,
        stored as C(identity.age) beside the entries (one scrypt per chain and run, not per
        segment). Checked against C(identity.age) at each run.
      - Never logged, never returned.
    type: str
    version_added: 0.2.0
  work_factor:
    description:
      - scrypt work factor (log2 N) of C(identity.age) when a chain's identity is created.
    type: int
    default: 18
    version_added: 0.2.0
  compression:
    description:
      - Payload compression. C(auto) is zstd when the C(zstandard) library is present, else gzip.
    type: str
    choices: [auto, zstd, gzip, none]
    default: auto
    version_added: 0.2.0
requirements:
  - cryptography (Python library, on the managed node) for signatures and age encryption.
  - zstandard (Python library, on the managed node) for zstd compression.
"""

    TABLES = r"""
options:
  tables:
    description:
      - The tables, each with its own chain. At least one is needed, except by
        M(lifeboat.backup.table_archive_verify) given O(lifeboat.backup.table_archive_verify#module:chains).
      - M(lifeboat.backup.table_checkpoint) and M(lifeboat.backup.table_archive_verify) use
        only C(name), C(key), C(time_column), C(time_unit), C(children) and C(chain).
    type: list
    elements: dict
    default: []
    version_added: 0.2.0
    suboptions:
      name:
        description:
          - The table, as C(schema.table) (or as the search path finds it).
        type: str
        required: true
      key:
        description:
          - Columns that order and identify the rows (a primary key or unique index must
            cover them). Batches follow this order and the archive is always the table's
            beginning in it. Defaults to the primary key.
        type: list
        elements: str
      time_column:
        description:
          - The time of each row, reported as the time range of segments and live rows,
            and the default O(tables[].cutoff_column).
        type: str
      time_unit:
        description:
          - How O(tables[].time_column) holds time. C(epoch_s) and C(epoch_ms) are numbers of
            seconds or milliseconds since 1970 (the transaction manager's C(TIMESTAMP)).
        type: str
        choices: [timestamp, epoch_s, epoch_ms]
        default: timestamp
      cutoff_column:
        description:
          - The column compared with the cut-off. Defaults to O(tables[].time_column), else
            the first key column.
        type: str
      older_than:
        description:
          - Archive rows whose cutoff column is older than this PostgreSQL interval
            (C(90 days), C(1 year)). One of O(tables[].older_than) or O(tables[].before) is
            required by M(lifeboat.backup.table_archive).
        type: str
      before:
        description:
          - Archive rows whose cutoff column is below this value (a key, a time).
        type: str
      children:
        description:
          - Linked tables whose rows are archived together with the table's rows, in the
            same segment and transaction. A child row moves with the batch that takes the
            last row of the table it is linked to (so an init record goes with the last raw
            record of its session).
          - Foreign keys from other tables to the table or its children are refused - their
            rows would block the delete or be deleted or changed with it.
        type: list
        elements: dict
        default: []
        suboptions:
          name:
            description:
              - The linked table.
            type: str
            required: true
          link:
            description:
              - Its columns that hold the link.
            type: list
            elements: str
            required: true
          parent_link:
            description:
              - The table's columns they link to. Defaults to the same names as O(tables[].children[].link).
            type: list
            elements: str
      chain:
        description:
          - Name of the table's chain (its directory in each location). Defaults to
            C(<database>.<schema>.<table>).
        type: str
      batch_rows:
        description:
          - Rows of the table per segment (one transaction each).
        type: int
        default: 100000
      expire_after:
        description:
          - Remove, from every location, the payloads of segments whose newest row is older
            than this (C(30d), C(52w), C(7y); units s, m, h, d, w, y). First a signed expiry
            entry naming those segments and the rule is added to the chain; the segments'
            entries stay, so the chain stays whole and verifiable and the verifier reports them
            as expired, not missing. Nothing ever expires without this option.
        type: str
      targets:
        description:
          - Names of the archive locations (O(targets[].name)) this table's chain lives in;
            each of them gets every segment before the rows are deleted. Defaults to all of
            O(targets).
        type: list
        elements: str
"""

    # Placed before lifeboat.backup._storage.targets and lifeboat.backup._postgresql in a
    # module's list: what the archive locations and the database are for these modules.
    TARGETS = r"""
options:
  targets:
    description:
      - The archive locations, each a storage target as described in docs/storage.md
        (C(type=local) with a C(path) for a directory on the node). Dedicated to archives -
        never the directory where the rotating system images are kept, so that image
        retention can never remove archived rows.
      - Every location a table uses holds its whole chain; an entry counts once it is in all
        of them, written, synced and read back. A chain is read (verified, restored) from each
        of them, or from the first where it verifies with no problem.
      - At least one is needed, except by M(lifeboat.backup.table_checkpoint) with
        O(lifeboat.backup.table_checkpoint#module:record=false).
  login_db:
    description:
      - The database that holds the tables (or, for M(lifeboat.backup.table_archive_restore),
        the one to restore into).
"""
