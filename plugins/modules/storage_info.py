#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: storage_info
short_description: Reachability, genuineness, space and stored images of a storage target
version_added: 0.2.0
description:
  - Tells whether a storage target can be reached, whether it is what it claims (an NFS
    path really is a mounted NFS export, not the empty directory below a lost mount),
    whether it can be written (a probe file is written and removed), its used, free and
    total space where the protocol can tell (FTP and S3 cannot, C(space) is then null and
    C(space_note) says so), and the images stored there.
  - Each image's details (node, backup id, times, verdict, components, encryption kind)
    come from its plaintext manifest, read with ranged reads of the zip's central
    directory - without the key and without downloading the image.
  - Changes nothing (the probe file is removed at once) and never reports a change.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._attributes.info_module
  - lifeboat.backup._storage
options:
  images:
    description:
      - List the images on the target with their details.
    type: bool
    default: true
  node:
    description:
      - Only list the images of this node.
    type: str
  write_test:
    description:
      - Write and remove a probe file to tell whether the target is writable.
    type: bool
    default: true
seealso:
  - module: lifeboat.backup.image_push
  - module: lifeboat.backup.image_fetch
"""

EXAMPLES = r"""
- name: Is the backup share there, and what does it hold?
  lifeboat.backup.storage_info:
    target:
      type: nfs
      path: /mnt/backups/lifeboat
  register: share

- name: Say how much room is left
  ansible.builtin.debug:
    msg: "{{ share.space.free | human_readable }} free, {{ share.images | length }} images"
"""

RETURN = r"""
target:
  description: The target's name, type and location (a URL without secrets).
  returned: always
  type: dict
  sample: {name: share, type: nfs, location: "nfs://filer:/export/backups"}
reachable:
  description: Whether the target answered.
  returned: always
  type: bool
  sample: true
genuine:
  description: Whether the target is what it claims (for NFS, a mount of the expected type and source).
  returned: always
  type: bool
  sample: true
writable:
  description: Whether a probe file could be written and removed (null when O(write_test=false)).
  returned: always
  type: bool
  sample: true
write_error:
  description: Why the probe file could not be written.
  returned: always
  type: str
  sample: null
space:
  description: Total, used and free bytes, or null when the protocol cannot tell.
  returned: always
  type: dict
  sample: {total: 107374182400, used: 53687091200, free: 53687091200}
space_note:
  description: Why C(space) is null.
  returned: when space is null
  type: str
  sample: "unknown: FTP has no command for free space"
details:
  description: Protocol details (mount source and options, SSH host key fingerprint, server versions).
  returned: always
  type: dict
  sample: {host_key: "ssh-ed25519 SHA256:..."}
images:
  description: Images on the target, oldest first.
  returned: when O(images=true) and the target is reachable
  type: list
  elements: dict
  sample: [{name: 20261122T194512Z-db1.zip, size: 1048576, node: db1, backup_id: 20261122T194512Z-3fa2c1d0, verdict: success, encryption: passphrase}]
partials:
  description: Leftovers of interrupted uploads (resumed by the next push of the same name).
  returned: when the target is reachable
  type: list
  elements: dict
  sample: []
error:
  description: Why the target is unreachable or not genuine.
  returned: when it is not
  type: str
  sample: "/mnt/backups is not a mount point: the NFS export is not mounted"
storage_error:
  description: The kind of that error (unreachable, timeout, auth, hostkey, not_mounted, not_found, ...).
  returned: when the target is unreachable or not genuine
  type: str
  sample: not_mounted
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

from ansible_collections.lifeboat.backup.plugins.module_utils import _storage
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule

_NO_SPACE = {
    "ftp": "unknown: FTP has no command for free space",
    "ftps": "unknown: FTP has no command for free space",
    "s3": "unknown: object storage has no free space to report",
}


def inspect(module):
    params = module.params
    result = {
        "changed": False,
        "target": _storage.describe(params["target"]),
        "reachable": False,
        "genuine": False,
        "writable": None,
        "write_error": None,
        "space": None,
        "details": {},
    }
    backend = None
    try:
        backend = _storage.open_target(params["target"])
        report = backend.probe(write=params["write_test"] and not module.check_mode)
        result.update({k: report[k] for k in ("reachable", "genuine", "writable", "write_error", "space", "details")})
        if result["space"] is None:
            result["space_note"] = _NO_SPACE.get(params["target"]["type"], "unknown: the server did not say")
        if params["images"]:
            result["images"] = _storage.list_images(backend, node=params["node"])
        result["partials"] = backend.partials() if hasattr(backend, "partials") else []
    except _storage.StorageError as exc:
        exc.result.update(result, error=exc.msg, reachable=exc.kind not in ("unreachable", "timeout", "auth", "hostkey"))
        raise
    finally:
        if backend is not None:
            backend.close()
    return result


def main():
    module = LifeboatModule(
        argument_spec=dict(
            images=dict(type="bool", default=True),
            node=dict(type="str"),
            write_test=dict(type="bool", default=True),
        ),
        specs=[_storage.TARGET_SPEC],
        supports_check_mode=True,
    )
    module.run(inspect)


if __name__ == "__main__":
    main()
