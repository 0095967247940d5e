#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_verify
short_description: Re-read every member of a backup image and check it against the manifest
version_added: 0.1.0
description:
  - Re-reads each member and checks, at the chosen O(level), that it is intact. Fails naming
    the first bad member; RV(members) has the outcome of every member.
  - C(checksum) needs no key - stored size, CRC-32 and SHA-256 of the stored bytes against the
    manifest, and that each age member starts with a well-formed age header.
  - C(authenticate) also decrypts every member and so checks the age header MAC and the
    authentication tag of every 64 KiB chunk; a single flipped bit anywhere fails.
  - C(full) also decompresses every member and compares the plaintext size and SHA-256
    with the manifest. It reads everything a restore would read.
  - Read-only; never reports a change.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._attributes.info_module
  - lifeboat.backup._decryption
  - lifeboat.backup._progress
options:
  image:
    description:
      - Path of the image on the managed node.
      - Called C(path) before 0.2.0 (the restore modules call it O(image)); C(path) is
        deprecated and will be removed in 0.3.0.
    type: path
    required: true
    aliases: [path]
  level:
    description:
      - How deep to check. C(auto) is C(authenticate) when a key is given, else C(checksum).
    type: str
    choices: [auto, checksum, authenticate, full]
    default: auto
  component:
    description:
      - Only verify the members of this component.
    type: str
seealso:
  - module: lifeboat.backup.image_info
"""

EXAMPLES = r"""
- name: Verify without any key (integrity of the stored bytes)
  lifeboat.backup.image_verify:
    image: "{{ sealed.image }}"

- name: Full verification, as a restore would read it
  lifeboat.backup.image_verify:
    image: "{{ sealed.image }}"
    level: full
    passphrase: "{{ vault_backup_passphrase }}"
"""

RETURN = r"""
valid:
  description: Whether every checked member passed.
  returned: always
  type: bool
  sample: true
level:
  description: The level actually applied.
  returned: always
  type: str
  sample: authenticate
first_error:
  description: The first bad member and what is wrong with it.
  returned: when a member is bad
  type: dict
  sample: {member: config/files.tar.zst.age, error: "age payload chunk 3 failed authentication: the data is corrupt"}
members:
  description: One entry per member - name, component, ok, error, level.
  returned: always
  type: list
  elements: dict
  sample: [{name: config/files.tar.zst.age, component: config, ok: true, error: null, level: authenticate}]
damaged:
  description:
    - On a failure - true when the image is damaged (unreadable, a member altered or cut
      short), false when it was not shown to be (the key given does not open it, no key was
      given, the file does not exist).
  returned: failure
  type: bool
  sample: true
  version_added: 0.2.0
checked:
  description: Number of members checked.
  returned: always
  type: int
  sample: 4
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

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule
from ansible_collections.lifeboat.backup.plugins.module_utils._progress import PROGRESS_SPEC


def choose_level(params):
    level = params["level"]
    if level == "auto":
        level = "authenticate" if _image.has_key(params) else "checksum"
    return level


def selected_members(image, component):
    """Names of the members to check (None: all)."""
    if not component:
        return None
    names = {m["name"] for m in image.component_members(component)}
    if not names:
        raise OptionError("component", "component %s has no members in this image" % component)
    return names


def verify(module):
    params = module.params
    level = choose_level(params)
    if level != "checksum":
        module.require("cryptography", _age.HAS_CRYPTOGRAPHY, _age.CRYPTOGRAPHY_IMPORT_ERROR)
    # A failure says whether the image is damaged or only the key does not fit (damaged=false).
    module.keep(dict(valid=False, level=level, members=[], checked=0, damaged=True))
    try:
        image = _image.open_image(params["image"], params)
    except _image.ImageError as exc:
        if not os.path.exists(params["image"]):
            raise type(exc)(str(exc), damaged=False) from None  # missing, not damaged
        raise
    with image:
        encrypted = image.manifest.get("encryption", {}).get("scheme") == "age"
        if level != "checksum" and encrypted and not _image.has_key(params):
            raise OptionError("level", "level=%s decrypts members: give passphrase, identity or identity_file (or use level=checksum)" % level, damaged=False)
        if level != "checksum" and encrypted:
            try:
                image.identities()
            except _image.ImageKeyError as exc:
                raise _image.ImageKeyError(str(exc), damaged=False) from None
        results, first_error = _image.verify_image(image, level, selected_members(image, params["component"]))
    result = dict(changed=False, valid=first_error is None, level=level, members=results, checked=len(results))
    if first_error:
        if first_error.get("damaged") is False:
            # A key that does not fit says nothing about the image: never invite the operator to give it up.
            what = "cannot be read with the key given (nothing says the image is at fault): member %s: %s; give the passphrase or identity it was written with"
        else:
            what = "is damaged: member %s: %s"
        message = ("image %s " + what) % (params["image"], first_error["member"], first_error["error"])
        damaged = first_error.get("damaged") is not False
        raise (_image.ImageError if damaged else _image.ImageKeyError)(message, first_error=first_error, damaged=damaged, **result)
    return result


def main():
    module = LifeboatModule(
        argument_spec=dict(
            image=_image.image_option(),
            level=dict(type="str", choices=["auto", "checksum", "authenticate", "full"], default="auto"),
            component=dict(type="str"),
        ),
        specs=[_image.DECRYPTION_SPEC, PROGRESS_SPEC],
        supports_check_mode=True,
    )
    module.run(verify)


if __name__ == "__main__":
    main()
