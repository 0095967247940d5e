# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""The collection's name and version, for what the modules write (manifests, snapshot
metadata). galaxy.yml is the source: modules run on managed nodes, where galaxy.yml is
not, so the version is kept here once, and tests/unit/test_version.py fails when the two
disagree. Change both together when releasing."""

from __future__ import annotations

COLLECTION = "lifeboat.backup"
COLLECTION_VERSION = "0.2.0"
