# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations


class ModuleDocFragment:
    # Progress of long modules (module_utils/_progress.py PROGRESS_SPEC, plugin_utils/_progress.py).
    DOCUMENTATION = r"""
options:
  progress_interval:
    description:
      - While the module runs, the controller prints a progress line every this many seconds -
        bytes done, rate, the current step and item, shards done of total, and the time left
        when the total is known (docs/progress.md). The first line comes after one interval,
        so a step shorter than that prints nothing more than before.
      - C(0) turns progress off. When not set, the variable C(lifeboat_progress_interval) is
        used, and without it C(30).
      - Read by the action plugin on the controller; the module result is the same with or
        without progress. Not used in check mode or when the task has C(async).
    type: int
    version_added: 0.2.0
"""
