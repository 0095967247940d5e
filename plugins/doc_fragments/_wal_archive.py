# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations


class ModuleDocFragment:
    # Where a WAL archive lives on its storage target (module_utils._walarchive.ARCHIVE_SPEC),
    # used with the lifeboat.backup._storage fragment (the target itself).
    DOCUMENTATION = r"""
options:
  archive_prefix:
    description:
      - Folder of the WAL archive inside the storage target O(target), so one target can
        hold images and the archives of several clusters (for example C(wal/db1-main)).
        Empty means the target's top.
      - One archive belongs to one database system (one C(initdb)); its descriptor
        C(archive.json) records the system identifier and every writer checks it.
    type: str
    default: ''
    version_added: 0.2.0
"""
