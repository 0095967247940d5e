# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# PRIVATE doc fragment of lifeboat.backup.

from __future__ import annotations


class ModuleDocFragment:
    # The node_exporter textfile (module_utils/_status.py TEXTFILE_SPEC).
    DOCUMENTATION = r"""
options:
  textfile_dir:
    description:
      - The node_exporter textfile collector directory (its C(--collector.textfile.directory)).
        When given, C(lifeboat_backup.prom) is rewritten there from the node's status - last
        success time and size, duration and verdict of the last attempt, last verified copy
        per storage target - atomically, mode 0644.
      - A file that cannot be written gives a warning, never a failure; the metrics are
        described in C(docs/operations.md).
    type: path
    version_added: 0.2.0
"""
