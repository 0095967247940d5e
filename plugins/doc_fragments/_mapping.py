# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations


class ModuleDocFragment:
    # What a migration mapping scan reads (module_utils/_mapping.py SCAN_SPEC):
    # mapping_template and mapping_apply must find the same values.
    DOCUMENTATION = r"""
options:
  components:
    description:
      - Configuration components whose files are scanned (and, for M(lifeboat.backup.mapping_apply),
        rewritten). Default is every configuration component of the image.
    type: list
    elements: str
    default: []
  max_file_bytes:
    description:
      - Files larger than this are neither scanned nor rewritten.
    type: int
    default: 1048576
"""
