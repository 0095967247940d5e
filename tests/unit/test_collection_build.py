"""The built collection holds what its users need and nothing of the test bench.

Builds the tarball with ``ansible-galaxy collection build`` (galaxy.yml's build_ignore)
from a copy of the tracked files, as a release from a clean clone would be, and checks its
listing."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Never shipped: the test bench, the demo, the benchmarks, developer tooling.
LEFT_OUT = ("tests/", "demo/", "benchmarks/", "extensions/", "scripts/", "requirements/", "changelogs/fragments/")
# Shipped: the content, its documentation and the released changelog.
KEPT = (
    *("plugins/", "roles/", "playbooks/", "meta/runtime.yml", "docs/", "README.md", "COPYING"),
    *("CHANGELOG.rst", "changelogs/changelog.yaml", "requirements.txt"),
)


def tracked_files():
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    source = tmp_path_factory.mktemp("source")
    for name in tracked_files():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / name).read_bytes())
    # A file a developer's run leaves behind, ignored by git: must not ship either.
    (source / ".build").mkdir()
    (source / ".build" / "junk.txt").write_text("x")
    out = tmp_path_factory.mktemp("out")
    galaxy = Path(sys.executable).with_name("ansible-galaxy")
    proc = subprocess.run([str(galaxy), "collection", "build", str(source), "--output-path", str(out)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tarball,) = out.glob("lifeboat-backup-*.tar.gz")
    with tarfile.open(tarball) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_nothing_of_the_test_bench_is_shipped(members):
    shipped = [name for name in members if name.startswith(LEFT_OUT) or name.rstrip("/") + "/" in LEFT_OUT]
    assert shipped == []
    assert "Makefile" not in members and "ruff.toml" not in members


def test_no_dot_file_at_any_depth(members):
    assert [name for name in members if any(part.startswith(".") for part in name.split("/"))] == []


def test_every_shipped_file_is_a_tracked_file(members):
    tracked = set(tracked_files()) | {"MANIFEST.json", "FILES.json"}
    files = [name for name, member in members.items() if member.isfile()]
    assert sorted(set(files) - tracked) == []


def test_content_and_docs_are_shipped(members):
    for prefix in KEPT:
        assert any(name == prefix or name.startswith(prefix) for name in members), prefix
    modules = sorted(p.name for p in (ROOT / "plugins" / "modules").glob("*.py"))
    assert sorted(Path(n).name for n in members if n.startswith("plugins/modules/") and n.endswith(".py")) == modules
