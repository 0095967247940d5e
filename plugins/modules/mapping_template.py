#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mapping_template
short_description: Write a migration mapping template of the environment-specific values found in a backup image
version_added: 0.2.0
description:
  - Finds the values of a backup image that belong to its environment - the node's name, the
    database and index names its manifest records, and in the text of its configuration
    files the host names (three labels or more), IPv4 addresses, hosts of URLs and
    C(host:port) pairs of URLs, absolute paths (of two components or more, outside C(/usr),
    C(/bin), C(/lib), C(/proc), C(/sys), C(/dev), C(/tmp), C(/run)), service accounts (the
    account of a URL, the value of a C(user)/C(owner)/C(run_as)/C(account)/C(principal)-like
    setting; not C(root) or C(nobody)), distinguished names (C(CN=...,O=...) or
    C(/C=../CN=..)), the subjects and DNS names of PEM certificates, and every occurrence of
    the manifest's names - each with where it occurs (component, file, line).
  - Writes them to O(dest) as a YAML template, each with an empty C(target) for the operator
    to fill in with the other environment's value, or C(keep) to set to true for a value that
    is not environment-specific. M(lifeboat.backup.mapping_apply) (the restore role's
    C(restore_mapping)) then rewrites restored configuration files and renames databases, and
    refuses a mapping that leaves a value of the source environment.
  - Loopback addresses and C(localhost) are left out. Any other value can be added to the
    file by hand (same form); a path needs no entry when a directory holding it is mapped.
  - Reads the image (configuration members are decrypted in memory, file by file); changes
    nothing but O(dest), which it never replaces unless O(force).
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._decryption
  - lifeboat.backup._decryption.image
  - lifeboat.backup._mapping
attributes:
  check_mode:
    support: full
    details: Finds and returns the values; writes no file.
  diff_mode:
    support: none
options:
  dest:
    description:
      - Path of the template to write (mode 0600).
    type: path
    required: true
  force:
    description:
      - Replace O(dest) when it exists (a filled-in mapping would be lost).
    type: bool
    default: false
seealso:
  - module: lifeboat.backup.mapping_apply
  - name: Migration (docs/migration.md)
    description: Restore into another environment with a mapping.
    link: https://github.com/lifeboat-backup/lifeboat.backup/blob/main/docs/migration.md
"""

EXAMPLES = r"""
- name: A mapping template of the newest image, to fill in for the other environment
  lifeboat.backup.mapping_template:
    image: /var/backups/lifeboat/20261122T194512Z-app1.zip
    passphrase: "{{ vault_backup_passphrase }}"
    dest: /root/mapping-app1.yml
"""

RETURN = r"""
environment_values:
  description:
    - The environment-specific values found in the image, each with C(kind) (node, cluster, database, index, host, address, endpoint, path,
      account, subject), C(source) and C(occurs).
  returned: always
  type: list
  elements: dict
  sample: [{kind: host, source: db1.prod.example.com, occurs: ["config: /etc/app/settings.py line 3"]}]
dest:
  description: The template written (not in check mode).
  returned: always
  type: str
  sample: /root/mapping-app1.yml
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

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image, _mapping
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


def write(module, text):
    dest = module.params["dest"]
    if os.path.exists(dest) and not module.params["force"]:
        raise OptionError("dest", "dest: %s exists (perhaps a filled-in mapping); set force=true to replace it" % dest)
    temporary = dest + ".lifeboat-tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, dest)


def template(module):
    params = module.params
    module.require("cryptography", _age.HAS_CRYPTOGRAPHY, _age.CRYPTOGRAPHY_IMPORT_ERROR)
    with _image.open_image(params["image"], params) as image:
        found = _mapping.scan(image, params["components"], params["max_file_bytes"])
        text = _mapping.template_text(found.as_list(), params["image"], image.manifest)
    if not module.check_mode:
        write(module, text)
    return dict(changed=not module.check_mode, environment_values=found.as_list(), dest=params["dest"])


def main():
    module = LifeboatModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            force=dict(type="bool", default=False),
        ),
        specs=[_image.IMAGE_SPEC, _image.DECRYPTION_SPEC, _mapping.SCAN_SPEC],
        supports_check_mode=True,
    )
    module.run(template)


if __name__ == "__main__":
    main()
