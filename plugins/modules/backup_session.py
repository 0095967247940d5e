#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup_session
short_description: Start, seal or abort the backup of one node into one image
version_added: 0.1.0
description:
  - A backup session produces one image per node and run. C(state=started) takes the node's
    lock, records the status C(in_progress) and creates a private work area next to the
    destination; component modules (M(lifeboat.backup.config_archive),
    M(lifeboat.backup.postgresql_dump), ...) then write into it.
  - C(state=sealed) writes the manifest, finishes the image aside and publishes it under its
    final name with an atomic rename, records the status and one audit line, and releases
    the lock. The verdict is C(success) when every component succeeded, C(partial) when some
    failed (the image holds the others), C(failed) when none succeeded or when O(halt) is set
    and one failed. A failed session publishes nothing.
  - C(state=aborted) removes the work area and records the failure.
  - C(state=not_started) records an attempt that failed before any session started (a
    preflight check, a busy lock) - one audit line and the status's last failure, with
    O(reason). A running session is left alone. The backup role does this, so that every
    attempt is in the audit trail.
  - When the state directory cannot be written (full, read-only), the image is still
    published and a warning names the directory; the next C(started) records the published
    image from its manifest instead of calling it abandoned.
  - Between module runs a small keeper process holds the lock. A second concurrent
    C(started) fails at once naming the holder. If the keeper is gone (the controller died
    and the O(lease) ran out, or it was killed), the next C(started) takes the lock over,
    removes the dead session's work area and records it as failed.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._textfile
attributes:
  check_mode:
    support: full
    details: C(started) validates options, destination and lock without writing; C(sealed) computes the verdict without publishing.
  diff_mode:
    support: none
options:
  state:
    description:
      - C(started) begins a session, C(sealed) finishes it, C(aborted) ends it without an image.
      - C(not_started) records a failed attempt that never started a session (version 0.2.0).
    type: str
    required: true
    choices: [started, sealed, aborted, not_started]
  destination:
    description:
      - Directory where images are published. The work area is created inside it (in
        C(.lifeboat-work/)) so that publishing is a rename on one filesystem.
      - Required with O(state=started).
    type: path
  state_dir:
    description:
      - Local directory for the node's lock, C(status.json) and C(audit.jsonl).
    type: path
    default: /var/lib/lifeboat
  node:
    description:
      - Node name used in the image name and manifest. Defaults to the host name.
    type: str
  prefix:
    description:
      - Optional image name prefix. Image names are C([prefix-]YYYYMMDDTHHMMSSZ-node.zip).
    type: str
    default: ""
  backup_id:
    description:
      - Identifier shared by every node of one cluster run. Generated when omitted.
    type: str
  encryption:
    description:
      - C(age) encrypts every member in the age format. C(none) writes plaintext members and
        must be asked for explicitly; the module then warns that the image holds passwords.
    type: str
    choices: [age, none]
    default: age
  passphrase:
    description:
      - Backup passphrase ("domain master secret"), at least 8 characters. A fresh age
        identity is generated for the image, members are encrypted to it, and the identity
        is stored in the image encrypted with this passphrase.
      - Can be combined with O(recipients). Never logged, never written in plaintext.
    type: str
  recipients:
    description:
      - age X25519 public keys (C(age1...)). Members are encrypted to each of them. Without
        O(passphrase) the node writes images it cannot read itself.
    type: list
    elements: str
    default: []
  work_factor:
    description:
      - scrypt work factor (log2 N) protecting the image identity with O(passphrase). 18 is
        age's default (about 256 MiB of memory and a second of CPU, once per image).
    type: int
    default: 18
  compression:
    description:
      - Member compression. C(auto) is zstd when the C(zstandard) library is present, else gzip.
    type: str
    choices: [auto, zstd, gzip, none]
    default: auto
  halt:
    description:
      - Fail the whole backup at the first component failure instead of sealing a partial
        image. Component modules of the session fail at once when set.
    type: bool
    default: false
  selection:
    description:
      - Recorded in the manifest. C(standard) is every applicable component except audits,
        C(custom) exactly the listed ones.
    type: str
    choices: [standard, custom]
    default: standard
  components:
    description:
      - Components expected in this session. At seal, an expected component without a result
        is recorded as failed.
    type: list
    elements: str
    default: []
  platform:
    description:
      - Platform identity recorded in the manifest, for the restore version rule
        with the keys C(name) and C(version) (for example C(threatintel) and C(3.4.1)).
    type: dict
    default: {}
  facts_dir:
    description:
      - Directory where the node's backup status is written as the Ansible local fact
        C(lifeboat.fact) at every change, so C(setup) shows it as C(ansible_local.lifeboat).
        An empty string disables it.
    type: path
    default: /etc/ansible/facts.d
  lease:
    description:
      - Seconds without activity after which the keeper gives the lock up. Every component
        module refreshes it while it runs.
    type: int
    default: 3600
  session:
    description:
      - Work area of the session (RV(session.work_dir) of the start). Required with
        O(state=sealed); with O(state=aborted) the session running under O(state_dir) is
        aborted when omitted.
    type: path
  errors:
    description:
      - With O(state=sealed), failure reasons for components whose module could not record
        one (for example it was never started). Keys are component names.
    type: dict
    default: {}
  consistency:
    description:
      - With O(state=sealed), extra consistency markers for the manifest, for example
        the keys C(quiesced_at) and C(resumed_at) set by the quiesce role.
    type: dict
    default: {}
  reason:
    description:
      - With O(state=aborted), why the session ends; recorded in the status and audit log.
    type: str
requirements:
  - cryptography (Python library, on the managed node) unless O(encryption=none).
  - zstandard (Python library, on the managed node) for zstd compression.
notes:
  - The image is recoverable with stock tools only; see C(docs/recovery-by-hand.md).
seealso:
  - module: lifeboat.backup.backup_info
  - module: lifeboat.backup.image_verify
"""

EXAMPLES = r"""
- name: Start the session
  lifeboat.backup.backup_session:
    state: started
    destination: /var/backups/lifeboat
    passphrase: "{{ vault_backup_passphrase }}"
    backup_id: "{{ backup_id }}"
    components: [config]
  register: backup

- name: Capture configuration files
  lifeboat.backup.config_archive:
    session: "{{ backup.session.work_dir }}"
    paths: [/etc/nginx, /etc/default/myapp*]

- name: Seal and publish the image
  lifeboat.backup.backup_session:
    state: sealed
    session: "{{ backup.session.work_dir }}"
  register: sealed

- name: Abort (for example in a rescue block)
  lifeboat.backup.backup_session:
    state: aborted
    session: "{{ backup.session.work_dir }}"
    reason: "{{ ansible_failed_result.msg | default('failed') }}"
"""

RETURN = r"""
session:
  description: The session (with O(state=started)).
  returned: state is started
  type: dict
  contains:
    work_dir:
      description: Work area; pass it as O(lifeboat.backup.config_archive#module:session) to component modules.
      type: str
      sample: /var/backups/lifeboat/.lifeboat-work/20261122T194512Z-db1
    backup_id:
      description: Backup id of this run.
      type: str
      sample: 20261122T194512Z-3fa2c1d0
    image:
      description: File name the image will be published under.
      type: str
      sample: 20261122T194512Z-db1.zip
    node:
      description: Node name.
      type: str
      sample: db1
    compression:
      description: Member compression in use.
      type: str
      sample: zstd
    keeper_pid:
      description: Process id of the keeper holding the node lock.
      type: int
      sample: 4242
verdict:
  description: C(success), C(partial) or C(failed) (with O(state=sealed), O(state=aborted) or O(state=not_started)).
  returned: state is sealed, aborted or not_started
  type: str
  sample: partial
image:
  description: Path of the published image, or null when nothing was published.
  returned: state is sealed
  type: str
  sample: /var/backups/lifeboat/20261122T194512Z-db1.zip
size:
  description: Size of the published image in bytes.
  returned: state is sealed
  type: int
  sample: 1048576
components:
  description: Component name to status (C(success), C(failed), C(skipped)).
  returned: state is sealed or aborted
  type: dict
  sample: {config: success, postgresql: failed}
failures:
  description: Component name to failure reason.
  returned: state is sealed or aborted
  type: dict
  sample: {postgresql: "pg_dump exited 1: connection refused"}
reason:
  description: Why the session failed, when it did (with O(state=not_started), the reason recorded).
  returned: state is sealed, aborted or not_started
  type: str
  sample: "halt: postgresql: pg_dump exited 1"
recorded:
  description: False when the state directory could not record the attempt (a warning names it and why).
  returned: when the state directory could not be written, and with O(state=not_started)
  type: bool
  sample: false
  version_added: 0.2.0
textfile:
  description: The node_exporter textfile written (O(textfile_dir)), or null when it could not be.
  returned: with O(textfile_dir), when state is sealed, aborted or not_started
  type: str
  sample: /var/lib/node_exporter/textfile_collector/lifeboat_backup.prom
  version_added: 0.2.0
notes:
  description: What the start did besides the obvious (stale lock taken over, old work area removed).
  returned: state is started
  type: list
  elements: str
  sample: []
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

import os
import socket
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image, _session, _status
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


def check_start(params):
    """Validate everything a start would do, without writing (check mode)."""
    destination = params["destination"]
    if not os.path.isdir(destination):
        raise _session.SessionError("destination %s does not exist or is not a directory" % destination)
    _session.validate_encryption(params["encryption"], params.get("passphrase"), params.get("recipients"))
    _image.resolve_compression(params["compression"])
    state = _session.NodeState(params["state_dir"])
    holder = state.holder() if os.path.isdir(params["state_dir"]) else None
    current = state.status().get("current") if os.path.isdir(params["state_dir"]) else None
    holder = holder or (current if _session.keeper_alive(current) else None)
    if holder:
        raise _session.SessionError(
            "another backup is in progress on this node: backup_id %s (keeper pid %s)" % (holder.get("backup_id"), holder.get("keeper_pid"))
        )
    name = _image.image_name(params["node"], time.time(), params["prefix"])
    return dict(changed=True, session={"image": name, "node": params["node"], "work_dir": None, "backup_id": params.get("backup_id")}, notes=[])


def start(module, params):
    module.require("cryptography", params["encryption"] != "age" or _age.HAS_CRYPTOGRAPHY, _age.CRYPTOGRAPHY_IMPORT_ERROR)
    if not 10 <= params["work_factor"] <= _age.MAX_WORK_FACTOR:
        raise OptionError("work_factor", "work_factor must be between 10 and %d (age's limit when decrypting); 18 is age's default" % _age.MAX_WORK_FACTOR)
    if params["lease"] < 60:
        raise OptionError("lease", "lease must be at least 60 seconds")
    if module.check_mode:
        return check_start(params)
    session, notes, _stale = _session.start(params)
    for note in notes:
        module.warn(note)
    if params["encryption"] == "none":
        module.warn("encryption=none: the image is NOT encrypted and holds configuration files and database dumps, passwords included; store it accordingly")
    public = {k: session[k] for k in ("work_dir", "backup_id", "image", "node", "compression", "keeper_pid", "started", "destination")}
    return dict(changed=True, session=public, notes=notes)


def outcome(module, record):
    """What a sealed or aborted session returns from its audit record."""
    result = dict(changed=True, **{k: record[k] for k in ("verdict", "components", "failures", "reason", "backup_id")})
    if record.get("state_warning"):
        module.warn(record["state_warning"])  # the state directory could not record it
        result["recorded"] = False
    return result


def with_textfile(module, params, state_dir, result):
    """Rewrite the node_exporter textfile when asked (a failed run is worth a metric too)."""
    if params["textfile_dir"]:
        result["textfile"] = _status.refresh_textfile(params["textfile_dir"], state_dir, module.warn)
    return result


def seal(module, params):
    if module.check_mode:
        data = _session.load_session_data(params["session"]) if os.path.isdir(params["session"]) else None
        if data is None:
            raise _session.SessionError("session %s does not exist" % params["session"])
        return dict(changed=True, verdict=None, image=None)
    state_dir = _session.load_session_data(params["session"])["state_dir"]
    record, _manifest = _session.seal(params["session"], errors=params["errors"], consistency=params["consistency"])
    result = dict(outcome(module, record), image=record["image"], size=record["size"])
    with_textfile(module, params, state_dir, result)
    if record["verdict"] == "failed":
        raise _session.SessionError("backup failed, no image published: %s" % record["reason"], **result)
    if record["verdict"] == "partial":
        module.warn("partial backup: %s" % "; ".join("%s: %s" % kv for kv in sorted(record["failures"].items())))
    return result


def abort(module, params):
    if module.check_mode:
        return dict(changed=bool(params["session"] and os.path.isdir(params["session"])))
    session = _session.read_json(os.path.join(params["session"], "session.json")) if params["session"] else None
    record = _session.abort(params["session"], params["state_dir"], params["reason"])
    if record is None:
        return dict(changed=False, verdict=None, msg="no session to abort")
    return with_textfile(module, params, (session or {}).get("state_dir") or params["state_dir"], outcome(module, record))


def not_started(module, params):
    if module.check_mode:
        return dict(changed=False)
    record, warning = _session.record_not_started(params["state_dir"], params["node"], params["backup_id"], params["reason"], params["facts_dir"])
    if warning:
        module.warn(warning)
    result = dict(changed=not warning, verdict="failed", reason=record["reason"], backup_id=record["backup_id"], recorded=not warning)
    return with_textfile(module, params, params["state_dir"], result)


def run(module):
    params = dict(module.params)
    params["node"] = params["node"] or socket.gethostname().split(".")[0]
    return {"started": start, "sealed": seal, "aborted": abort, "not_started": not_started}[params["state"]](module, params)


def main():
    module = LifeboatModule(
        argument_spec=dict(
            state=dict(type="str", required=True, choices=["started", "sealed", "aborted", "not_started"]),
            destination=dict(type="path"),
            state_dir=dict(type="path", default="/var/lib/lifeboat"),
            node=dict(type="str"),
            prefix=dict(type="str", default=""),
            backup_id=dict(type="str"),
            encryption=dict(type="str", choices=["age", "none"], default="age"),
            passphrase=dict(type="str", no_log=True),
            recipients=dict(type="list", elements="str", default=[]),
            work_factor=dict(type="int", default=18),
            compression=dict(type="str", choices=["auto", "zstd", "gzip", "none"], default="auto"),
            halt=dict(type="bool", default=False),
            selection=dict(type="str", choices=["standard", "custom"], default="standard"),
            components=dict(type="list", elements="str", default=[]),
            platform=dict(type="dict", default={}),
            lease=dict(type="int", default=_session.DEFAULT_LEASE),
            facts_dir=dict(type="path", default="/etc/ansible/facts.d"),
            session=dict(type="path"),
            errors=dict(type="dict", default={}),
            consistency=dict(type="dict", default={}),
            reason=dict(type="str"),
        ),
        required_if=[("state", "started", ["destination"]), ("state", "sealed", ["session"]), ("state", "not_started", ["reason"])],
        specs=[_status.TEXTFILE_SPEC],
        supports_check_mode=True,
    )
    module.run(run)


if __name__ == "__main__":
    main()
