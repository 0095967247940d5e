#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postgresql_fingerprint
short_description: Compare restored PostgreSQL databases with the fingerprint recorded in their backup image
version_added: 0.2.0
description:
  - Reads the fingerprint that M(lifeboat.backup.postgresql_dump) recorded when it dumped the
    databases (option C(fingerprint)) - row counts, row digests, sequence values, the number of
    large objects - takes the same fingerprint of the databases on the server, and compares.
  - Fails naming every table, sequence or count that differs - a missing table, a lost or added
    row, a changed row with the same count, a sequence set back below its value at backup time.
  - A table fingerprinted from a sample of its rows (larger than the dump's
    C(fingerprint_max_bytes)) is compared on the same sample; one fingerprinted by count only is
    compared by count.
  - Run it after a restore, on the node that reaches the restored server, to prove that what
    came back is what was backed up (C(docs/drills.md)). Changes nothing.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._decryption
  - lifeboat.backup._decryption.image
  - lifeboat.backup._postgresql
attributes:
  check_mode:
    support: full
    details: Reads and compares as in a normal run; nothing is ever changed.
  diff_mode:
    support: none
options:
  component:
    description:
      - Name of the PostgreSQL component in the image.
    type: str
    default: postgresql
  databases:
    description:
      - Databases of the image to compare (their names at dump time). Default is every one the
        fingerprint covers.
    type: list
    elements: str
    default: []
  rename:
    description:
      - Databases restored under another name - keys are names in the image, values the names on
        the server (as given to M(lifeboat.backup.postgresql_restore)).
    type: dict
    default: {}
seealso:
  - module: lifeboat.backup.postgresql_dump
  - module: lifeboat.backup.postgresql_restore
  - name: Restore drills (docs/drills.md)
    description: Fingerprints, what they cost, and the drill that compares them.
    link: https://github.com/lifeboat-backup/lifeboat.backup/blob/main/docs/drills.md
"""

EXAMPLES = r"""
- name: Is the restored database what was backed up?
  lifeboat.backup.postgresql_fingerprint:
    image: /var/backups/lifeboat/20261122T194512Z-db1.zip
    passphrase: "{{ vault_backup_passphrase }}"
    login_host: 127.0.0.1
    login_password: "{{ vault_postgres_password }}"

- name: Compare a database restored under another name
  lifeboat.backup.postgresql_fingerprint:
    image: /restore/20261122T194512Z-db1.zip
    identity_file: /root/backup-key.txt
    login_unix_socket: /var/run/postgresql
    databases: [platform]
    rename: {platform: platform_restored}
"""

RETURN = r"""
equal:
  description: Whether every compared database matched its fingerprint.
  returned: always
  type: bool
  sample: true
databases:
  description:
    - One entry per compared database - its name in the image, the target name, the tables, rows
      and sequences compared, how many tables were compared by digest, by sample and by count, and
      its differences.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: app, target: app, tables: 42, rows: 1203344, sequences: 12, digests: 40, samples: 1, counts: 1, differences: []}
differences:
  description: Every difference found, one line each, naming the database and the table or sequence.
  returned: always
  type: list
  elements: str
  sample: ["app: table public.orders: row contents differ from the backup (same row count 1200)"]
level:
  description: The fingerprint level the dump recorded (C(full) or C(counts)).
  returned: always
  type: str
  sample: full
seconds:
  description: Time taken to fingerprint the databases on the server.
  returned: always
  type: float
  sample: 3.2
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
from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql as pg
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


def recorded_fingerprint(params, image):
    """The fingerprint document of the component; OptionError when the dump took none."""
    _image.restorable_component(image, params["component"], "postgresql", "PostgreSQL")
    document = _fingerprint.read_document(image, params["component"], "postgresql")
    if document is None:
        raise OptionError(
            "image",
            "component %s of %s has no fingerprint: it was dumped with fingerprint=none, by lifeboat.backup 0.1, or with mode=dumpall"
            % (params["component"], params["image"]),
        )
    return document


def select(params, recorded):
    """[(name in the image, target name)] to compare; OptionError naming the option."""
    wanted = params["databases"] or sorted(recorded)
    unknown = [d for d in wanted if d not in recorded]
    if unknown:
        raise OptionError("databases", "databases: %s not in the fingerprint; it covers: %s" % (", ".join(unknown), ", ".join(sorted(recorded)) or "none"))
    stray = [d for d in params["rename"] if d not in wanted]
    if stray:
        raise OptionError("rename", "rename: %s not among the databases compared (%s)" % (", ".join(stray), ", ".join(wanted)))
    return [(name, params["rename"].get(name, name)) for name in wanted]


def compare_one(params, name, target, recorded):
    """The entry for one database: its counts and differences."""
    tables = recorded.get("tables") or {}
    methods = [t["method"] for t in tables.values()]
    entry = dict(
        name=name,
        target=target,
        tables=len(tables),
        rows=sum(t["rows"] for t in tables.values()),
        sequences=len(recorded.get("sequences") or {}),
        digests=methods.count("full"),
        samples=methods.count("sample"),
        counts=methods.count("counts"),
    )
    try:
        conn = pg.connect(params, target)
    except pg.PgError as exc:
        entry["differences"] = ["%s: cannot be read (%s)" % (target, exc)]
        return entry
    try:
        live = _fingerprint.pg_live(pg, conn, recorded)
    finally:
        conn.close()
    entry["differences"] = _fingerprint.pg_compare(name, target, recorded, live)
    return entry


def compare(module):
    params = module.params
    module.require("cryptography", _age.HAS_CRYPTOGRAPHY, _age.CRYPTOGRAPHY_IMPORT_ERROR)
    module.require("psycopg (or psycopg2)", pg.HAS_PSYCOPG, pg.PSYCOPG_IMPORT_ERROR)
    with _image.open_image(params["image"], params) as image:
        document = recorded_fingerprint(params, image)
    recorded = document.get("databases") or {}
    pairs = select(params, recorded)
    started = time.time()
    result = module.keep(dict(changed=False, equal=False, level=document.get("level"), databases=[], differences=[]))
    for name, target in pairs:
        entry = compare_one(params, name, target, recorded[name])
        result["databases"].append(entry)
        result["differences"] += entry["differences"]
    result["seconds"] = round(time.time() - started, 3)
    result["equal"] = not result["differences"]
    if result["differences"]:
        shown = "; ".join(result["differences"][:5])
        more = " (and %d more)" % (len(result["differences"]) - 5) if len(result["differences"]) > 5 else ""
        raise LifeboatError("the restored databases differ from the backup: %s%s" % (shown, more))
    return result


def main():
    module = LifeboatModule(
        argument_spec=dict(
            component=dict(type="str", default="postgresql"),
            databases=dict(type="list", elements="str", default=[]),
            rename=dict(type="dict", default={}),
        ),
        specs=[pg.CONNECTION_SPEC, _image.IMAGE_SPEC, _image.DECRYPTION_SPEC],
        mutually_exclusive=pg.CONNECTION_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    module.run(compare)


if __name__ == "__main__":
    main()
