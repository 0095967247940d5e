# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations


class ModuleDocFragment:
    # Modules that read member contents.
    DOCUMENTATION = r"""
options:
  passphrase:
    description:
      - The backup passphrase the image was written with. It unlocks the image identity
        stored in the image (one scrypt derivation per image).
      - Never logged, never returned.
    type: str
    version_added: 0.1.0
  identity:
    description:
      - Content of an age identity file (one or more C(AGE-SECRET-KEY-1...) lines), for
        images written to public-key recipients.
      - Never logged, never returned.
    type: str
    version_added: 0.1.0
  identity_file:
    description:
      - Path on the managed node of an age identity file (as made by C(age-keygen)).
    type: path
    version_added: 0.1.0
requirements:
  - cryptography (Python library, on the managed node) to decrypt members.
  - zstandard (Python library, on the managed node) for zstd-compressed members.
"""

    # The image a restore module reads (_image.IMAGE_SPEC).
    IMAGE = r"""
options:
  image:
    description:
      - Path of the image on the managed node.
    type: path
    required: true
    version_added: 0.1.0
"""
