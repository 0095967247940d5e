#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_fetch
short_description: Bring a backup image from a storage target to the node, verified
version_added: 0.2.0
description:
  - Downloads one image from a storage target into a directory on the node, for a restore
    on a rebuilt node or a drill.
  - The image is chosen by O(name), or as the newest successful image of O(node) (or the
    one of O(backup_id)) found by reading the manifests on the target, without the key.
  - The download goes to a hidden partial file. Before it gets its final name, the whole
    file's SHA-256 is compared with the C(.sha256) sidecar on the target, and every
    member's stored SHA-256 with the manifest. A damaged copy is refused and removed; it
    never reaches the destination.
  - An image already in the destination with the same name is not replaced. When its
    SHA-256 matches the target's sidecar the task succeeds without a change.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._storage
  - lifeboat.backup._progress
attributes:
  check_mode:
    support: full
    details: Chooses the image and says what would be fetched; downloads nothing.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
    description: Runs on the managed node; the target is reached from there.
options:
  destination:
    description:
      - Directory on the node to put the image in (it must exist).
    type: path
    required: true
  name:
    description:
      - Name of the image on the target (relative to O(target.path)).
      - Mutually exclusive with O(node) and O(backup_id).
    type: str
  node:
    description:
      - Fetch the newest image of this node whose verdict is C(success) (or the one of
        O(backup_id)).
    type: str
  backup_id:
    description:
      - With O(node), the image of this backup run, whatever its verdict.
    type: str
seealso:
  - module: lifeboat.backup.image_push
  - module: lifeboat.backup.storage_info
  - module: lifeboat.backup.image_verify
"""

EXAMPLES = r"""
- name: Bring the newest image of this node back from the backup server
  lifeboat.backup.image_fetch:
    destination: /var/backups/lifeboat
    node: "{{ inventory_hostname }}"
    target: "{{ backup_storage[0] }}"
  register: fetched

- name: Restore from it
  ansible.builtin.debug:
    msg: "restoring {{ fetched.path }} ({{ fetched.image.backup_id }})"
"""

RETURN = r"""
path:
  description: Path of the image on the node.
  returned: success
  type: str
  sample: /var/backups/lifeboat/20261122T194512Z-db1.zip
name:
  description: Name of the image on the target.
  returned: always
  type: str
  sample: 20261122T194512Z-db1.zip
size:
  description: Bytes fetched.
  returned: success
  type: int
  sample: 1073741824
sha256:
  description: SHA-256 of the fetched image.
  returned: success
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
checks:
  description: What was checked before the image was kept.
  returned: success
  type: list
  elements: str
  sample: ["sha256 of the whole image matches the sidecar", "stored SHA-256 of 4 members match the manifest"]
image:
  description: Node, backup id, times, verdict, components and encryption kind of the chosen image (from its manifest).
  returned: always
  type: dict
  sample: {node: db1, backup_id: 20261122T194512Z-3fa2c1d0, verdict: success, encryption: passphrase}
target:
  description: The target's name, type and location (a URL without secrets).
  returned: always
  type: dict
  sample: {name: vault, type: sftp, location: "sftp://lifeboat@backup.example.net:22/srv/backups/lifeboat"}
storage_error:
  description: On failure, the kind of error (not_found, integrity, unreachable, ...).
  returned: failure
  type: str
  sample: integrity
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
import posixpath

from ansible_collections.lifeboat.backup.plugins.module_utils import _storage
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule
from ansible_collections.lifeboat.backup.plugins.module_utils._progress import PROGRESS_SPEC


def choose(backend, params):
    """(name, image details) of the image to fetch."""
    if params["name"]:
        return params["name"], _storage.image_details(_storage.remote_manifest(backend, params["name"]))
    images = [i for i in _storage.list_images(backend, node=params["node"]) if i.get("node") == params["node"]]
    if params["backup_id"]:
        images = [i for i in images if i.get("backup_id") == params["backup_id"]]
        what = "of backup %s for node %s" % (params["backup_id"], params["node"])
    else:
        images = [i for i in images if i.get("verdict") == "success"]
        what = "with verdict success for node %s" % params["node"]
    if not images:
        raise _storage.StorageError("no image %s on %s; storage_info lists what is there" % (what, backend.label), kind="not_found")
    chosen = images[-1]
    return chosen["name"], {k: chosen.get(k) for k in ("node", "backup_id", "started", "sealed", "verdict", "platform", "components", "encryption")}


def already_here(backend, name, destination):
    """True when the destination holds this image already, with the target's SHA-256."""
    local = os.path.join(destination, posixpath.basename(name))
    if not os.path.exists(local):
        return False
    expected = _storage.read_sidecar(backend, name)
    if expected is None or _storage.file_sha256(local) != expected:
        raise _storage.StorageError(
            "%s already exists on this node and differs from the copy on %s (or the copy has no sidecar to compare with); "
            "move it away to fetch again" % (local, backend.label),
            kind="exists",
        )
    return True


def fetch(module):
    params = module.params
    if params["name"] and (params["node"] or params["backup_id"]):
        raise OptionError("name", "give name, or node (with backup_id), not both")
    if not params["name"] and not params["node"]:
        raise OptionError("node", "say which image to fetch: name, or node (newest successful image) with an optional backup_id")
    if not os.path.isdir(params["destination"]):
        raise OptionError("destination", "destination %s does not exist or is not a directory; create it first" % params["destination"])
    result = {"target": _storage.describe(params["target"])}
    with _storage.open_target(params["target"]) as backend:
        name, details = choose(backend, params)
        result.update(name=name, image=details)
        local = os.path.join(params["destination"], posixpath.basename(name))
        if already_here(backend, name, params["destination"]):
            result.update(changed=False, path=local, msg="%s is already here with the same SHA-256" % local)
        elif module.check_mode:
            result.update(changed=True, path=local, msg="%s would be fetched from %s" % (name, backend.label))
        else:
            result.update(_storage.fetch_image(backend, name, params["destination"]), changed=True)
    return result


def main():
    module = LifeboatModule(
        argument_spec=dict(
            destination=dict(type="path", required=True),
            name=dict(type="str"),
            node=dict(type="str"),
            backup_id=dict(type="str"),
        ),
        specs=[_storage.TARGET_SPEC, PROGRESS_SPEC],
        supports_check_mode=True,
    )
    module.run(fetch)


if __name__ == "__main__":
    main()
