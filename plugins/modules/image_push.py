#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_push
short_description: Copy a sealed backup image to a storage target, verified
version_added: 0.2.0
description:
  - Copies one sealed image from the node to a storage target (local directory, NFS,
    SMB, rsync or SFTP over SSH, FTP/FTPS, S3).
  - The image is uploaded under a temporary name, what landed is checked (size and
    SHA-256, computed on the remote side or read back), and only then renamed to its final
    name. An existing name is never overwritten; an image already there with the same
    SHA-256 is left alone and the task reports no change.
  - Network errors and timeouts are retried (O(target.retries)) with backoff, resuming
    from the bytes already uploaded where the protocol allows it.
  - A C(.sha256) sidecar in C(sha256sum -c) format is written beside the image.
  - Every attempt is recorded in the node's audit trail, and each verified copy in its
    status (C(copies) in C(status.json), see docs/storage.md, "Copy records").
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._storage
  - lifeboat.backup._textfile
  - lifeboat.backup._progress
attributes:
  check_mode:
    support: full
    details: Connects to the target and says whether the image would be copied; uploads nothing.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
    description: Runs on the managed node; the target is reached from there.
options:
  path:
    description:
      - The sealed image on the node (a C(.zip) with a manifest).
    type: path
    required: true
  name:
    description:
      - Name of the copy on the target, relative to O(target.path). Defaults to the
        image's file name.
    type: str
  state_dir:
    description:
      - The node's state directory, where the copy is recorded (status and audit trail).
        Set to an empty string to record nothing.
    type: str
    default: /var/lib/lifeboat
seealso:
  - module: lifeboat.backup.image_fetch
  - module: lifeboat.backup.storage_info
"""

EXAMPLES = r"""
- name: Copy the image of this run to the backup server over SFTP
  lifeboat.backup.image_push:
    path: "{{ sealed.image }}"
    target:
      type: sftp
      name: vault
      host: backup.example.net
      user: lifeboat
      path: /srv/backups/lifeboat
      private_key: "{{ vault_backup_ssh_key }}"
      known_hosts: "backup.example.net ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI..."

- name: And to a bucket
  lifeboat.backup.image_push:
    path: "{{ sealed.image }}"
    target:
      type: s3
      endpoint_url: https://s3.example.net
      bucket: backups
      path: lifeboat/
      access_key: "{{ s3_access_key }}"
      secret_key: "{{ s3_secret_key }}"
"""

RETURN = r"""
target:
  description: The target's name, type and location (a URL without secrets).
  returned: always
  type: dict
  sample: {name: vault, type: sftp, location: "sftp://lifeboat@backup.example.net:22/srv/backups/lifeboat"}
name:
  description: Name of the copy on the target.
  returned: always
  type: str
  sample: 20261122T194512Z-db1.zip
size:
  description: Bytes copied.
  returned: success
  type: int
  sample: 1073741824
sha256:
  description: SHA-256 of the image, as checked on the target.
  returned: success
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
verified:
  description: >-
    How the copy was checked: C(remote-sha256) (the SHA-256 of the file, computed by the
    server side), C(server-sha256-parts) (S3: each part's SHA-256 checked by the server on
    receipt, then the object's composite checksum and size), C(server-md5-parts) (S3
    servers without checksums: Content-MD5 per part, then the multipart ETag and size),
    C(read-back) (read back and hashed), C(sidecar) (already there, matching its sidecar).
  returned: success
  type: str
  sample: remote-sha256
attempts:
  description: How many attempts the upload took.
  returned: when copied
  type: int
  sample: 1
resumed_from:
  description: Byte offset a retried upload resumed from (0 when it did not resume).
  returned: when copied
  type: int
  sample: 0
seconds:
  description: Duration of the upload and its check.
  returned: when copied
  type: float
  sample: 12.3
notes:
  description: Retries and other events worth knowing.
  returned: always
  type: list
  elements: str
  sample: ["uploading ...: attempt 1 failed (connection lost); retrying"]
storage_error:
  description: On failure, the kind of error (unreachable, timeout, auth, hostkey, not_mounted, permission, full, exists, integrity, ...).
  returned: failure
  type: str
  sample: unreachable
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

from ansible_collections.lifeboat.backup.plugins.module_utils import _image, _status, _storage
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule
from ansible_collections.lifeboat.backup.plugins.module_utils._progress import PROGRESS_SPEC


def read_image(path):
    """The manifest of a sealed image; ImageError when it is not one."""
    with _image.Image(path) as image:
        return image.manifest


def would_push(backend, name, path):
    existing = backend.stat(name)
    if existing is None:
        return {"changed": True, "msg": "%s would be copied to %s" % (name, backend.label)}
    if existing["size"] == os.path.getsize(path) and _storage.read_sidecar(backend, name) == _storage.file_sha256(path):
        return {"changed": False, "msg": "%s is already on %s with the same SHA-256" % (name, backend.label)}
    return {"changed": False, "msg": "%s is on %s with other content: the push would fail (never overwritten)" % (name, backend.label)}


def push(module):
    params = module.params
    manifest = read_image(params["path"])
    name = params["name"] or os.path.basename(params["path"])
    result = {"target": _storage.describe(params["target"]), "name": name}
    try:
        backend = _storage.open_target(params["target"])
    except _storage.StorageError as exc:
        exc.result.update(result)
        record_attempt(module, result["target"], manifest, None, exc)
        raise
    try:
        if module.check_mode:
            result.update(would_push(backend, name, params["path"]))
            return result
        try:
            record = _storage.push_image(backend, params["path"], name)
        except _storage.StorageError as exc:
            exc.result.update(result, notes=backend.notes)
            record_attempt(module, result["target"], manifest, None, exc)
            raise
    finally:
        backend.close()
    record_attempt(module, result["target"], manifest, record, None)
    result.update(record, notes=backend.notes)
    return result


def record_attempt(module, target, manifest, record, error):
    """The copy (or why it failed) in the node's status; then the node_exporter textfile."""
    params = module.params
    if not params["state_dir"]:
        return
    _storage.record_copy(
        params["state_dir"],
        target["name"],
        target["location"],
        params["path"],
        record,
        backup_id=manifest.get("backup_id"),
        reason=error.msg if error else None,
        error_kind=error.kind if error else None,
    )
    _status.refresh_textfile(params["textfile_dir"], params["state_dir"], module.warn)


def main():
    module = LifeboatModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            name=dict(type="str"),
            state_dir=dict(type="str", default="/var/lib/lifeboat"),
        ),
        specs=[_storage.TARGET_SPEC, _status.TEXTFILE_SPEC, PROGRESS_SPEC],
        supports_check_mode=True,
    )
    module.run(push)


if __name__ == "__main__":
    main()
