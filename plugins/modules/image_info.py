#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_info
short_description: Read the manifest and member list of a backup image
version_added: 0.1.0
description:
  - Reads C(manifest.json) of an image and lists its members, components and verdict.
  - Needs no key. The manifest is stored in plaintext and no member is decrypted.
  - Read-only; never reports a change.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._attributes.info_module
options:
  image:
    description:
      - Path of the image (C(.zip)) on the managed node.
      - Called C(path) before 0.2.0 (the restore modules call it O(image)); C(path) is
        deprecated and will be removed in 0.3.0.
    type: path
    required: true
    aliases: [path]
  component:
    description:
      - Only report this component and its members.
    type: str
seealso:
  - module: lifeboat.backup.image_verify
  - module: lifeboat.backup.backup_info
"""

EXAMPLES = r"""
- name: What is in this image?
  lifeboat.backup.image_info:
    image: /var/backups/lifeboat/20261122T194512Z-db1.zip
  register: info

- name: Show the verdict and the PostgreSQL consistency marker
  ansible.builtin.debug:
    msg: "{{ info.verdict }} / LSN {{ info.manifest.consistency.postgresql.lsn | default('n/a') }}"
"""

RETURN = r"""
manifest:
  description: The whole manifest (see docs/image-format.md).
  returned: always
  type: dict
  sample: {format: lifeboat-image, format_version: 1, node: db1, verdict: success}
verdict:
  description: C(success) or C(partial).
  returned: always
  type: str
  sample: success
backup_id:
  description: Backup id shared by the nodes of the run.
  returned: always
  type: str
  sample: 20261122T194512Z-3fa2c1d0
node:
  description: Node the image belongs to.
  returned: always
  type: str
  sample: db1
platform:
  description: Platform name and version recorded at backup time.
  returned: always
  type: dict
  sample: {name: threatintel, version: 3.4.1}
components:
  description: Component name to status, kind, members and error.
  returned: always
  type: dict
  sample: {config: {status: success, kind: config, members: [config/files.tar.zst.age]}}
members:
  description: Members with their component, sizes, SHA-256 digests, compression and encryption.
  returned: always
  type: list
  elements: dict
  sample: [{name: config/files.tar.zst.age, component: config, stored_size: 4096, plaintext_size: 20480}]
encrypted:
  description: Whether members are age-encrypted.
  returned: always
  type: bool
  sample: true
passphrase_protected:
  description: Whether the image can be opened with the backup passphrase (otherwise only with an identity).
  returned: always
  type: bool
  sample: true
size:
  description: Size of the image file in bytes.
  returned: always
  type: int
  sample: 1048576
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

from ansible_collections.lifeboat.backup.plugins.module_utils import _image
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


def describe(module):
    params = module.params
    with _image.Image(params["image"]) as image:
        manifest = image.manifest
    components = manifest.get("components", {})
    members = manifest.get("members", [])
    wanted = params["component"]
    if wanted:
        if wanted not in components:
            raise OptionError("component", "component %s is not in this image; it has: %s" % (wanted, ", ".join(sorted(components)) or "none"))
        components = {wanted: components[wanted]}
        members = [m for m in members if m.get("component") == wanted]
    encryption = manifest.get("encryption", {})
    return dict(
        changed=False,
        manifest=manifest,
        verdict=manifest.get("verdict"),
        backup_id=manifest.get("backup_id"),
        node=manifest.get("node"),
        platform=manifest.get("platform", {}),
        components=components,
        members=members,
        encrypted=encryption.get("scheme") == "age",
        passphrase_protected=bool(encryption.get("identity_member")),
        size=os.path.getsize(params["image"]),
    )


def main():
    module = LifeboatModule(
        argument_spec=dict(
            image=_image.image_option(),
            component=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    module.run(describe)


if __name__ == "__main__":
    main()
