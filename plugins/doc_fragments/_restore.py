# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations


class ModuleDocFragment:
    # Restore modules: what they check before their first change (_image.RESTORE_SPEC).
    DOCUMENTATION = r"""
options:
  authenticate:
    description:
      - Before the first change, read every image member this restore will use to its end -
        decrypt and authenticate each chunk, decompress, compare the size and both SHA-256
        digests with the manifest. A damaged member, or a key that does not open the image,
        then fails the task with nothing changed, naming the member.
      - The members are read twice (once to check, once to restore). Set V(false) only when
        the image was verified at level C(full) just before, as the C(lifeboat.backup.restore)
        role does with M(lifeboat.backup.image_verify).
      - A failure after a change (a database dropped, files written) lists in C(done) exactly
        what was changed, and the message says how to go on.
    type: bool
    default: true
    version_added: 0.2.0
"""
