#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mapping_apply
short_description: Check a migration mapping against a backup image, and rewrite restored configuration files with it
version_added: 0.2.0
description:
  - Takes a mapping made from M(lifeboat.backup.mapping_template) and filled in by the operator
    (each value of the source environment with the C(target) of the other one, or C(keep) true).
  - Finds the image's environment-specific values again and refuses the mapping, listing each
    value left (with where it occurs), when any has neither a target different from it nor
    C(keep). Run it with O(state=checked) before anything is restored, as the restore role
    does with C(restore_mapping); nothing is touched then.
  - With O(state=applied), checks the same way, then replaces the values in the text files of
    the image's configuration components restored under O(root) (whole words only, longest
    value first; each file rewritten atomically with its mode and owner) and reports every
    replacement.
  - An account is replaced only where it is one (the account of a URL, the value of a
    C(user)/C(owner)/C(account)-like setting), as an account's name is often a common word. A
    path under a directory the mapping maps needs no entry of its own.
  - A PEM certificate cannot be rewritten. The files holding a certificate whose subject the
    mapping replaces are returned in RV(certificates) (and warned about); put the other
    environment's certificate in their place.
  - Returns RV(renames), the database and index names each component is restored under (the
    C(rename) option of M(lifeboat.backup.postgresql_restore), M(lifeboat.backup.elasticsearch_restore)
    and M(lifeboat.backup.neo4j_restore)). A mapping renaming what a component cannot restore under
    another name (the databases of a Neo4j image taken with C(method=files), Neo4j's C(system)
    database) is refused with the others, before anything is touched.
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
    details: With O(state=applied), reports the replacements it would make and writes nothing.
  diff_mode:
    support: none
options:
  mapping:
    description:
      - The filled-in mapping (the template's content), with its C(values) list.
    type: dict
    required: true
  state:
    description:
      - C(checked) only checks the mapping; C(applied) checks it and rewrites the restored files.
    type: str
    choices: [checked, applied]
    default: checked
  root:
    description:
      - The root the configuration files were restored under (the restore's C(root)).
    type: path
    default: /
seealso:
  - module: lifeboat.backup.mapping_template
  - name: Migration (docs/migration.md)
    description: Restore into another environment with a mapping.
    link: https://github.com/lifeboat-backup/lifeboat.backup/blob/main/docs/migration.md
"""

EXAMPLES = r"""
- name: Refuse an incomplete mapping before anything is restored
  lifeboat.backup.mapping_apply:
    image: /var/backups/lifeboat/20261122T194512Z-app1.zip
    passphrase: "{{ vault_backup_passphrase }}"
    mapping: "{{ lookup('ansible.builtin.file', 'mapping-app1.yml') | from_yaml }}"
    state: checked
  register: mapping

- name: Rewrite the restored configuration files
  lifeboat.backup.mapping_apply:
    image: /var/backups/lifeboat/20261122T194512Z-app1.zip
    passphrase: "{{ vault_backup_passphrase }}"
    mapping: "{{ lookup('ansible.builtin.file', 'mapping-app1.yml') | from_yaml }}"
    state: applied
"""

RETURN = r"""
replacements:
  description: Each replacement made (would be, in check mode) - C(path), C(source), C(target), C(count).
  returned: state=applied
  type: list
  elements: dict
  sample: [{path: /etc/app/settings.py, source: db1.prod.example.com, target: db1.staging.example.com, count: 2}]
certificates:
  description:
    - Restored files holding a PEM certificate whose subject the mapping replaces - C(path),
      C(subject), C(target) - to be replaced by the other environment's certificate.
  returned: state=applied
  type: list
  elements: dict
  sample: [{path: /etc/app/tls/api.pem, subject: "CN=api.prod.example.com,O=Acme", target: "CN=api.staging.example.com,O=Acme"}]
rename:
  description: Database names of the image to their target names (every component's; see RV(renames)).
  returned: always
  type: dict
  sample: {intel: intel_staging}
renames:
  description: Per component of the image, its database or index names the mapping renames, to their target names.
  returned: always
  type: dict
  sample: {postgresql: {intel: intel_staging}, search: {stix_v4: stix_v4_staging}}
mapped:
  description: Number of values replaced by the mapping (the others are kept).
  returned: always
  type: int
  sample: 7
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

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image, _mapping, _tree
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


def restored_files(image, components, root):
    """Paths under ``root`` of the regular files of the configuration components."""
    paths = []
    for name in _mapping.config_components(image.manifest, components):
        details = image.manifest["components"][name].get("details") or {}
        with image.open_member(details["index_member"]) as stream:
            index = _tree.read_index(stream)
        for path, record in sorted(index.items()):
            if record.get("type") == "file":
                paths.append(os.path.join(root, path.lstrip("/")) if root != "/" else path)
    return paths


def apply(module):
    params = module.params
    module.require("cryptography", _age.HAS_CRYPTOGRAPHY, _age.CRYPTOGRAPHY_IMPORT_ERROR)
    with _image.open_image(params["image"], params) as image:
        found = _mapping.scan(image, params["components"], params["max_file_bytes"])
        replacements = _mapping.check(params["mapping"], found)
        renames = _mapping.renames(image.manifest, replacements)
        paths = restored_files(image, params["components"], params["root"]) if params["state"] == "applied" else []
    databases = {v for v, e in found.values.items() if e["kind"] == "database"}
    result = dict(changed=False, mapped=len(replacements), rename={k: v for k, v in replacements.items() if k in databases}, renames=renames)
    if params["state"] == "checked":
        return result
    accounts = _mapping.accounts_of(params["mapping"], found)
    result.update(replacements=[], certificates=[])
    for path in paths:
        if not os.path.isfile(path) or os.path.islink(path) or os.path.getsize(path) > params["max_file_bytes"]:
            continue
        made = _mapping.rewrite_file(path, replacements, dry_run=module.check_mode, accounts=accounts)
        result["replacements"] += [dict(path=path, source=s, target=t, count=c) for s, t, c in made]
        result["certificates"] += [dict(path=path, subject=s, target=t) for s, t in _mapping.certificates_left(path, replacements)]
    for certificate in result["certificates"]:
        module.warn("%(path)s: a certificate for %(subject)s cannot be rewritten; put the one for %(target)s in its place" % certificate)
    result["changed"] = bool(result["replacements"]) and not module.check_mode
    return result


def main():
    module = LifeboatModule(
        argument_spec=dict(
            mapping=dict(type="dict", required=True),
            state=dict(type="str", choices=["checked", "applied"], default="checked"),
            root=dict(type="path", default="/"),
        ),
        specs=[_image.IMAGE_SPEC, _image.DECRYPTION_SPEC, _mapping.SCAN_SPEC],
        supports_check_mode=True,
    )
    module.run(apply)


if __name__ == "__main__":
    main()
