#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: secrets_export
short_description: Export credentials into an encrypted break-the-glass bundle readable offline with stock tools
version_added: 0.2.0
description:
  - Collects credentials from O(sources) (a PostgreSQL query, JSON/YAML/.env files or whole
    files such as keys and certificates, the JSON output of a command such as a secret
    manager's CLI, Ansible variables) into one JSON document, the I(bundle), encrypted in the
    age format. It is kept apart from system images - it is for reading a credential on the
    worst day, on a machine that has nothing of this collection (C(docs/break-the-glass.md)),
    never for restoring a system.
  - The bundle is encrypted to a master O(passphrase), to O(recipients) (age X25519 public
    keys, each able to read it alone) and/or to a custody key split M of N among officers
    (O(custody)) in the format of the Debian C(ssss) tools, so that any M officers recover it
    with C(ssss-combine) and C(age).
  - Bundle sets go to O(destination) and/or to storage O(targets) of their own, apart from
    system images, each file put atomically and checked where it landed, the index last; a set
    is never overwritten, and a location that fails keeps nothing of the export. O(retention)
    then applies to this node's sets of this bundle on each location.
  - A bundle is written only when the content changed, the encryption changed, the last bundle
    set is missing from a location, or it is older than O(max_age); otherwise nothing is
    written and the task reports no change.
  - Every run is recorded in C(<state_dir>/<name>/audit.jsonl) (when, where, how many entries
    from which source, a keyed digest, the files), never a value.
  - Values never leave memory in plaintext; no temporary file, no command line, no log line,
    no returned value holds one. Run the task with C(no_log) where the sources come from
    variables, and prefer SSH pipelining so that the module's arguments are not written to a
    temporary file on the node either.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._storage.targets
  - lifeboat.backup._retention.optional
attributes:
  check_mode:
    support: full
    details: Reads the sources (read-only) and reports whether a bundle would be exported and why; writes nothing.
  diff_mode:
    support: none
  platform:
    description: Target OS/families that can be operated against.
    platforms: posix
    support: full
options:
  name:
    description:
      - Name of the bundle, in file names and the state directory. Letters, digits, C(_) and C(.).
    type: str
    required: true
  sources:
    description:
      - Where the credentials come from. Each source has a O(sources[].name) and exactly one of
        O(sources[].postgresql), O(sources[].file), O(sources[].command) or O(sources[].variables).
      - Every entry has a C(name) and a C(secret), optionally C(username), C(host), C(notes), and
        any other field (kept under C(fields)). Field names are matched loosely - C(password),
        C(value) or C(token) count as C(secret); C(user) or C(login) as C(username).
      - A source that fails, or yields no entry (unless O(sources[].allow_empty)), fails the
        export and nothing is written; a bundle never silently lacks a source's credentials.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Name of the source, recorded with each of its entries and in the audit trail.
        type: str
        required: true
      allow_empty:
        description:
          - Accept a source that yields no entry.
        type: bool
        default: false
      postgresql:
        description:
          - Rows of a query on PostgreSQL, run in a read-only session. The query returns a
            C(name) and a C(secret) (or C(password)) column, optionally C(username), C(host),
            C(notes) and any other column. C(bytea) secrets are kept as base64.
          - The connection options are those of the C(lifeboat.backup._postgresql) fragment.
        type: dict
        suboptions:
          query:
            description: The SQL query. It runs in a read-only transaction.
            type: str
            required: true
          timeout:
            description: Seconds the query may run (C(statement_timeout)).
            type: int
            default: 120
          login_host:
            description: Host name or IP address of the server.
            type: str
            aliases: [host]
          port:
            description: TCP port of the server.
            type: int
            default: 5432
            aliases: [login_port]
          login_unix_socket:
            description: Directory of the server's unix socket; mutually exclusive with O(sources[].postgresql.login_host).
            type: path
            aliases: [unix_socket]
          login_user:
            description: Role to connect as; it needs C(SELECT) on what the query reads.
            type: str
            default: postgres
            aliases: [user]
          login_password:
            description: Password of O(sources[].postgresql.login_user); never logged or returned.
            type: str
            aliases: [password]
          login_db:
            description: Database to connect to.
            type: str
            default: postgres
          ssl_mode:
            description: libpq C(sslmode).
            type: str
            choices: [disable, allow, prefer, require, verify-ca, verify-full]
            default: prefer
          ca_cert:
            description: CA certificate(s) for the server's certificate (libpq C(sslrootcert)).
            type: path
            aliases: [ssl_rootcert]
          ssl_cert:
            description: Client certificate (libpq C(sslcert)).
            type: path
          ssl_key:
            description: Private key of O(sources[].postgresql.ssl_cert) (libpq C(sslkey)).
            type: path
          connect_timeout:
            description: Seconds to wait for a connection.
            type: int
            default: 10
      file:
        description:
          - Credentials in a file. C(json) and C(yaml) hold a list of entries, a mapping of name
            to secret, or a mapping of name to entry fields; C(env) holds C(KEY=value) lines;
            C(raw) keeps the whole file (a key, a certificate) as one entry, with its path, mode
            and owner. C(auto) tells by the file name (C(.json), C(.yml), C(.yaml), C(.env)).
        type: dict
        suboptions:
          path:
            description: Path of the file, or a glob matching several (each C(raw) file is one entry named by its path).
            type: path
            required: true
          format:
            description: How to read the file.
            type: str
            choices: [auto, json, yaml, env, raw]
            default: auto
          root:
            description: For C(json) and C(yaml), the dotted key of the part that holds the credentials (C(data.data)).
            type: str
          entry:
            description: For C(raw), the entry's name (default the file's path).
            type: str
      command:
        description:
          - The JSON printed by a command (a secret manager's CLI), read like a JSON file. It runs
            without a shell; put no secret in O(sources[].command.argv) (any user sees it in
            C(ps)) and pass tokens in O(sources[].command.environment).
        type: dict
        suboptions:
          argv:
            description: The command and its arguments.
            type: list
            elements: str
            required: true
          environment:
            description: Extra environment variables of the command (tokens, addresses); never logged.
            type: dict
          timeout:
            description: Seconds the command may run.
            type: int
            default: 120
          chdir:
            description: Working directory of the command.
            type: path
          root:
            description: Dotted key of the part of the output that holds the credentials.
            type: str
      variables:
        description:
          - Credentials given as Ansible data (from Ansible Vault), in the shapes a JSON file
            takes. Never logged or returned.
        type: raw
  destination:
    description:
      - Directory on the node where bundle sets are written (created with mode C(0700) if
        missing), a storage target of type C(local). Give O(destination), O(targets) or both.
      - A bundle is for the day the platform is gone - keep at least one copy off the node that
        holds the sources (O(targets)).
    type: path
  reader:
    description:
      - Path on the node of the standalone reader C(lifeboat-secrets-reader.py) (the role ships
        it from C(roles/secrets/files/)). When given, a copy is kept on every location beside the
        bundle sets, so that whoever fetches the bundles has the reader too.
    type: path
  passphrase:
    description:
      - The master passphrase, at least 8 characters (a long phrase is better). A fresh age
        identity opens each bundle; it is stored beside it as C(<stem>.key.age), encrypted to
        this passphrase, so C(age -d -i <stem>.key.age <stem>.secrets.age) reads the bundle.
    type: str
  recipients:
    description:
      - Age X25519 public keys (C(age1...)) that can each open every bundle alone.
    type: list
    elements: str
    default: []
  custody:
    description:
      - Shared custody. A custody key is made once, split so that any O(custody.threshold) of
        the O(custody.officers) recover it with C(ssss-combine), and then forgotten by the node;
        every bundle is encrypted to it. Each share is encrypted to its officer's own age key
        and stored with every bundle, or, for an officer without a key, written once to
        O(custody.officers[].share_file) for hand-over.
      - Shares stay valid for every later bundle until the officers or the threshold change, or
        O(custody.rotate) is set; then a new custody key and new shares are made.
    type: dict
    suboptions:
      threshold:
        description: How many officers are needed together (at least 2).
        type: int
        required: true
      officers:
        description: The officers, at least 2; the share numbers follow this order.
        type: list
        elements: dict
        required: true
        suboptions:
          name:
            description: The officer's name (in share file names and the index).
            type: str
            required: true
          recipient:
            description: The officer's age public key (C(age1...)); their share is encrypted to it.
            type: str
          share_file:
            description:
              - Without O(custody.officers[].recipient), where on the node the plaintext share is
                written (mode C(0600)) when a custody is made. Hand it over and delete it.
            type: path
      rotate:
        description: Make a new custody key and new shares now.
        type: bool
        default: false
  max_age:
    description:
      - Export again after this long even when nothing changed (C(30d), C(12h), C(2w)); C(0)
        never does.
    type: str
    default: 30d
  stale_after:
    description:
      - When the last successful run (an export, or a check that found the bundle current) is
        older than this, RV(stale) is true - also in a failed run, for the alert C(bundle stale).
    type: str
  force:
    description:
      - Export even when nothing changed.
    type: bool
    default: false
  state_dir:
    description:
      - Directory of the node-side state (last export, keyed digests, the custody's public part
        and encrypted shares) and of the audit trail, under C(<state_dir>/<name>/).
    type: path
    default: /var/lib/lifeboat/secrets
  node:
    description:
      - Node name recorded in the bundle. Defaults to the host name.
    type: str
  work_factor:
    description:
      - scrypt work factor (log2) of the passphrase key file; age's default is 18 (about 1 s).
    type: int
    default: 18
  lock_timeout:
    description:
      - Seconds to wait for another export of the same bundle to finish.
    type: int
    default: 60
notes:
  - The bundle format, the index and the custody shares are specified in C(docs/secrets-bundle-format.md).
  - The standalone reader C(roles/secrets/files/lifeboat-secrets-reader.py) (Python 3 with the
    C(cryptography) library, nothing else) prints the entries, one entry by name, or checks a
    bundle without showing any value.
seealso:
  - name: Break-the-glass recovery with stock tools
    description: Reading a bundle with age, ssss-combine and jq.
    link: https://github.com/lifeboat-backup/lifeboat.backup/blob/main/docs/break-the-glass.md
"""

EXAMPLES = r"""
- name: Export the vault's credentials under a master passphrase and 2-of-3 custody
  lifeboat.backup.secrets_export:
    name: vault
    destination: /var/backups/lifeboat-secrets
    targets:
      - type: sftp
        name: vault-site-b
        host: backup.site-b.example.com
        user: bundles
        private_key_file: /root/.ssh/bundles_ed25519
        known_hosts: "backup.site-b.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK..."
        path: /srv/secrets
    retention: {keep_last: 10, keep_monthly: 12}
    passphrase: "{{ vault_master_passphrase }}"
    custody:
      threshold: 2
      officers:
        - {name: alice, recipient: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p}
        - {name: bob, recipient: age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg}
        - {name: carol, share_file: /root/carol-share.txt}
    sources:
      - name: pam
        postgresql:
          login_host: 127.0.0.1
          login_user: backup_reader
          login_password: "{{ vault_pam_db_password }}"
          login_db: vault
          query: SELECT title AS name, login AS username, password AS secret, hostname AS host, notes FROM credentials
      - name: service-accounts
        file: {path: /etc/platform/service-accounts.yml}
      - name: tls
        file: {path: "/etc/ssl/private/*.key", format: raw}
      - name: kv
        command:
          argv: [vault, kv, get, -format=json, secret/breakglass]
          environment: {VAULT_ADDR: "https://127.0.0.1:8200", VAULT_TOKEN: "{{ vault_token }}"}
          root: data.data
      - name: backup
        variables:
          backup-passphrase: "{{ vault_backup_passphrase }}"
    stale_after: 2d
  no_log: true
  register: export
"""

RETURN = r"""
locations:
  description:
    - One entry per location (C(destination), C(targets[0]) ...) - its label, whether the set of
      this run was C(written) (absent when nothing was exported), the C(error) when it was not,
      the sets C(removed) by retention with the rule (in check mode, those it would remove), and
      C(reader) C(added) or C(replaced) when the reader copy changed.
  returned: always
  type: list
  elements: dict
  sample:
    - location: destination
      label: destination /var/backups/lifeboat-secrets
      written: true
      removed: [{stem: vault-20261001T101500Z-1a2b, rule: not selected by keep_last 10}]
exported:
  description: Whether a new bundle set was written.
  returned: always
  type: bool
  sample: true
reason:
  description: >-
    Why a bundle was (or would be) written, or C(unchanged): C(first export), C(content changed),
    C(encryption changed), C(older than max_age), C(forced), or the last bundle missing from the destination.
  returned: always
  type: str
  sample: content changed
export_id:
  description: Identifier of the bundle written by this run.
  returned: when exported
  type: str
  sample: 20261130T101500.250Z-3fa2
stem:
  description: Common name of the files of the set written by this run.
  returned: when exported
  type: str
  sample: vault-20261130T101500.250Z-3fa2
files:
  description: Files of the set written to each location, the index C(<stem>.json) last.
  returned: when exported
  type: list
  elements: str
  sample: [vault-20261130T101500.250Z-3fa2.key.age, vault-20261130T101500.250Z-3fa2.secrets.age, vault-20261130T101500.250Z-3fa2.json]
entry_count:
  description: Number of entries collected.
  returned: always
  type: int
  sample: 42
sources:
  description: Per source its name, type, origin (no value) and number of entries.
  returned: always
  type: list
  elements: dict
  sample: [{name: pam, type: postgresql, origin: "postgresql 127.0.0.1 port 5432 as backup_reader database vault", entries: 40}]
content_digest:
  description: HMAC-SHA256 of the entries under a key kept on the node; equal digests mean equal content. Not a hash of any value.
  returned: always
  type: str
  sample: hmac-sha256:9f2c...
custody:
  description: The custody in use - id, threshold, officers, whether it was made or changed in this run, and the plaintext share files written.
  returned: when custody is set
  type: dict
  sample: {id: 3c9e01aa, threshold: 2, officers: [alice, bob, carol], rotated: false, plaintext_share_files: []}
last_export:
  description: The current bundle set (export id, stem, files, entry count).
  returned: always
  type: dict
last_exported:
  description: When the current bundle set was written (UTC).
  returned: always
  type: str
  sample: "2026-11-30T10:15:00Z"
last_success:
  description: When a run last exported or found the bundle current (UTC). Also returned by a failed run.
  returned: always
  type: str
  sample: "2026-11-30T10:15:00Z"
stale:
  description: Whether RV(last_success) is older than O(stale_after). Also returned by a failed run.
  returned: always
  type: bool
  sample: false
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

import socket

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _postgresql, _retention, _secrets_export, _secrets_sources, _storage
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


def source_spec():
    """Options of one source (see DOCUMENTATION)."""
    connection = _postgresql.connection_argument_spec()
    connection.pop("client_bin_dir")
    connection.update(query=dict(type="str", required=True), timeout=dict(type="int", default=120))
    return dict(
        name=dict(type="str", required=True),
        allow_empty=dict(type="bool", default=False),
        postgresql=dict(type="dict", options=connection, mutually_exclusive=_postgresql.CONNECTION_MUTUALLY_EXCLUSIVE),
        file=dict(
            type="dict",
            options=dict(
                path=dict(type="path", required=True),
                format=dict(type="str", choices=list(_secrets_sources.FILE_FORMATS), default="auto"),
                root=dict(type="str"),
                entry=dict(type="str"),
            ),
        ),
        command=dict(
            type="dict",
            options=dict(
                argv=dict(type="list", elements="str", required=True),
                environment=dict(type="dict", no_log=True),
                timeout=dict(type="int", default=120),
                chdir=dict(type="path"),
                root=dict(type="str"),
            ),
        ),
        variables=dict(type="raw", no_log=True),
    )


def custody_spec():
    officer = dict(name=dict(type="str", required=True), recipient=dict(type="str"), share_file=dict(type="path"))
    return dict(
        threshold=dict(type="int", required=True),
        officers=dict(type="list", elements="dict", required=True, options=officer),
        rotate=dict(type="bool", default=False),
    )


def main():
    module = LifeboatModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            sources=dict(type="list", elements="dict", required=True, options=source_spec()),
            destination=dict(type="path"),
            reader=dict(type="path"),
            passphrase=dict(type="str", no_log=True),
            recipients=dict(type="list", elements="str", default=[]),
            custody=dict(type="dict", options=custody_spec()),
            max_age=dict(type="str", default="30d"),
            stale_after=dict(type="str"),
            force=dict(type="bool", default=False),
            state_dir=dict(type="path", default="/var/lib/lifeboat/secrets"),
            node=dict(type="str"),
            work_factor=dict(type="int", default=18),
            lock_timeout=dict(type="int", default=60),
        ),
        specs=[_storage.TARGETS_SPEC, _retention.OPTIONAL_RETENTION_SPEC],
        supports_check_mode=True,
    )
    module.run(export)


def export(module):
    module.require("cryptography", _age.HAS_CRYPTOGRAPHY, _age.CRYPTOGRAPHY_IMPORT_ERROR)
    request = _secrets_export.validate(module.params, socket.gethostname())
    if not module.check_mode:
        module.on_failure.append(lambda reason: _secrets_export.record_failure(request, reason))
    try:
        return _secrets_export.run(request, module.check_mode, module.warn)
    except LifeboatError as exc:
        exc.result.update(_secrets_export.failure_result(request))
        raise


if __name__ == "__main__":
    main()
