#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: elasticsearch_fingerprint
short_description: Compare restored Elasticsearch or OpenSearch indices with the fingerprint recorded in their backup image
version_added: 0.2.0
description:
  - Reads the fingerprint that M(lifeboat.backup.elasticsearch_snapshot) recorded right after the
    snapshot (option C(fingerprint)) - per index the document count, the aliases and a digest of
    every document's id and source, or the ids and source digests of a fixed sample - takes the
    same fingerprint of the indices on the cluster, and compares.
  - Fails naming every index that differs - missing, another document count, other aliases,
    changed documents with the same count, sampled documents missing or changed.
  - Run it after a restore, on the node that reaches the restored server, to prove that what
    came back is what was backed up (C(docs/drills.md)). Changes nothing.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._decryption
  - lifeboat.backup._decryption.image
  - lifeboat.backup._elasticsearch
attributes:
  check_mode:
    support: full
    details: Reads and compares as in a normal run; nothing is ever changed.
  diff_mode:
    support: none
options:
  component:
    description:
      - Name of the Elasticsearch component in the image.
    type: str
    default: elasticsearch
  indices:
    description:
      - Indices of the fingerprint to compare (their names at backup time). Default is every one.
    type: list
    elements: str
    default: []
  rename:
    description:
      - Indices restored under another name - keys are names at backup time, values the names on
        the cluster.
    type: dict
    default: {}
  rename_aliases:
    description:
      - Aliases restored under another name - keys are names at backup time, values the names
        expected on the cluster.
    type: dict
    default: {}
notes:
  - A fingerprint taken while the indices were written to (not quiesced) is marked unstable in the
    image; the comparison then reports the differences all the same, and says so.
seealso:
  - module: lifeboat.backup.elasticsearch_snapshot
  - module: lifeboat.backup.elasticsearch_restore
  - name: Restore drills (docs/drills.md)
    description: Fingerprints, what they cost, and the drill that compares them.
    link: https://github.com/lifeboat-backup/lifeboat.backup/blob/main/docs/drills.md
"""

EXAMPLES = r"""
- name: Are the restored indices what was backed up?
  lifeboat.backup.elasticsearch_fingerprint:
    image: /var/backups/lifeboat/20261122T194512Z-search1.zip
    passphrase: "{{ vault_backup_passphrase }}"
    component: search
    hosts: ["http://localhost:9200"]

- name: Compare an index restored under another name
  lifeboat.backup.elasticsearch_fingerprint:
    image: /restore/20261122T194512Z-search1.zip
    identity_file: /root/backup-key.txt
    component: search
    rename: {stix-v4: restored-stix-v4}
    rename_aliases: {stix: restored-stix}
"""

RETURN = r"""
equal:
  description: Whether every compared index matched its fingerprint.
  returned: always
  type: bool
  sample: true
indices:
  description: One entry per compared index - its name at backup time, the target name, documents, method and differences.
  returned: always
  type: list
  elements: dict
  sample: [{name: stix-v4, target: stix-v4, docs: 2000, method: full, differences: []}]
differences:
  description: Every difference found, one line each, naming the index.
  returned: always
  type: list
  elements: str
  sample: ["index stix-v4 has 1999 documents, 2000 at backup time"]
stable:
  description: Whether the indices kept their document count while the backup fingerprinted them.
  returned: always
  type: bool
  sample: true
seconds:
  description: Time taken to fingerprint the indices on the cluster.
  returned: always
  type: float
  sample: 0.6
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

import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _fingerprint, _image
from ansible_collections.lifeboat.backup.plugins.module_utils import _elasticsearch as es
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


def recorded_fingerprint(params, image):
    _image.restorable_component(image, params["component"], "elasticsearch", "Elasticsearch")
    document = _fingerprint.read_document(image, params["component"], "elasticsearch")
    if document is None:
        raise OptionError(
            "image",
            "component %s of %s has no fingerprint: it was taken with fingerprint=none or by lifeboat.backup 0.1" % (params["component"], params["image"]),
        )
    return document


def select(params, recorded):
    wanted = params["indices"] or sorted(recorded)
    unknown = [i for i in wanted if i not in recorded]
    if unknown:
        raise OptionError("indices", "indices: %s not in the fingerprint; it covers: %s" % (", ".join(unknown), ", ".join(sorted(recorded)) or "none"))
    stray = [i for i in params["rename"] if i not in wanted]
    if stray:
        raise OptionError("rename", "rename: %s not among the indices compared (%s)" % (", ".join(stray), ", ".join(wanted)))
    return [(index, params["rename"].get(index, index)) for index in wanted]


def compare(module):
    params = module.params
    module.require("cryptography", _age.HAS_CRYPTOGRAPHY, _age.CRYPTOGRAPHY_IMPORT_ERROR)
    es.check_libraries()
    with _image.open_image(params["image"], params) as image:
        document = recorded_fingerprint(params, image)
    recorded = document.get("indices") or {}
    pairs = select(params, recorded)
    client = es.Client.from_params(params)
    result = module.keep(dict(changed=False, equal=False, indices=[], differences=[], stable=bool(document.get("stable"))))
    started = time.time()
    for index, target in pairs:
        live = _fingerprint.es_live(client, target, recorded[index])
        found = _fingerprint.es_compare(index, target, recorded[index], live, params["rename_aliases"])
        result["indices"].append(dict(name=index, target=target, docs=recorded[index]["docs"], method=recorded[index]["method"], differences=found))
        result["differences"] += found
    result["seconds"] = round(time.time() - started, 3)
    result["equal"] = not result["differences"]
    if result["differences"]:
        shown = "; ".join(result["differences"][:5])
        more = " (and %d more)" % (len(result["differences"]) - 5) if len(result["differences"]) > 5 else ""
        unstable = "" if result["stable"] else " (the indices were written to while the backup fingerprinted them: not quiesced)"
        raise LifeboatError("the restored indices differ from the backup: %s%s%s" % (shown, more, unstable))
    return result


def main():
    module = LifeboatModule(
        specs=[_image.IMAGE_SPEC, _image.DECRYPTION_SPEC],
        **es.module_kwargs(
            dict(
                component=dict(type="str", default="elasticsearch"),
                indices=dict(type="list", elements="str", default=[]),
                rename=dict(type="dict", default={}),
                rename_aliases=dict(type="dict", default={}),
            )
        ),
    )
    module.run(compare)


if __name__ == "__main__":
    main()
