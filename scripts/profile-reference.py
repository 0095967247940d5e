"""Write docs/profile-reference.md from the profile schema (plugins/plugin_utils/_profile_schema.py).
Run from the clone with the collection on the path: PYTHONPATH=.build/collections .venv/bin/python scripts/profile-reference.py"""

from __future__ import annotations

import pathlib

from ansible_collections.lifeboat.backup.plugins.plugin_utils._profile_schema import REFERENCE, reference_markdown

if __name__ == "__main__":
    path = pathlib.Path(__file__).resolve().parents[1] / REFERENCE
    path.write_text(reference_markdown(), encoding="utf-8")
    print("wrote", path)
