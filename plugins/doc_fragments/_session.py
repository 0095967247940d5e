# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations


class ModuleDocFragment:
    # Component modules: where they write.
    DOCUMENTATION = r"""
options:
  session:
    description:
      - Work area of the backup session to write into, as returned by
        M(lifeboat.backup.backup_session) with O(lifeboat.backup.backup_session#module:state=started)
        in RV(lifeboat.backup.backup_session#module:session.work_dir).
      - The session decides compression and encryption. Component modules encrypt to the
        session's public recipients only, so they never need the passphrase.
    type: path
    required: true
    version_added: 0.1.0
  name:
    description:
      - Name of this component in the image (member folder and manifest key). Must be unique
        within the session.
    type: str
    version_added: 0.1.0
notes:
  - The component is recorded in the session as soon as the module starts. If the module
    fails or is killed, the seal records the component as failed with the reason.
"""
