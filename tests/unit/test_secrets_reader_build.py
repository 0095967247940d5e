"""The standalone secrets reader (roles/secrets/files/lifeboat-secrets-reader.py) is generated
by scripts/build-secrets-reader.py from module_utils; the file in the tree must be its output.

Here, not under tests/unit/plugins/module_utils: the build script is development tooling (it
formats with ruff, from the main venv), while the node-Python stages of make test-matrix
run the module_utils tests on venvs that have only what a managed node has."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_reader_is_up_to_date():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build-secrets-reader.py"), "--check"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
