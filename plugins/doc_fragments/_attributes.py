# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations


class ModuleDocFragment:
    # The attribute descriptions; modules state their support and details.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    # Every module needs POSIX file locks and signals; the Linux-only ones (they read
    # /proc) say platforms: linux in their own attributes, which win over this default.
    platforms: posix
"""

    # Read-only modules (_info, verify).
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: This module is read-only and runs the same in check mode.
  diff_mode:
    support: N/A
    details: This module never changes anything.
"""
