# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs lifeboat.backup.image_fetch, printing its progress on the controller while it runs."""

from __future__ import annotations

from ansible_collections.lifeboat.backup.plugins.plugin_utils._progress import ProgressAction


class ActionModule(ProgressAction):
    pass
