"""The execution environment definition builds: the collection, built and installed as AWX
would install it, carries its requirements (meta/execution-environment.yml, the controller's
Python requirements, bindep) and ansible-builder's own introspection finds them; the example
EE definition in docs/ee/ gives a complete build context with `ansible-builder create`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.support.modules import ROOT

BIN = Path(sys.executable).parent


def run(*argv, cwd):
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_collection_carries_its_ee_requirements_and_introspection_finds_them(tmp_path):
    run(BIN / "ansible-galaxy", "collection", "build", ROOT, "--output-path", tmp_path, cwd=tmp_path)
    [tarball] = tmp_path.glob("lifeboat-backup-*.tar.gz")
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    assert {"meta/execution-environment.yml", "requirements-controller.txt", "requirements.txt", "bindep.txt"} <= names
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)
    # --force: the test run's own collections path already holds lifeboat.backup (the working tree).
    run(BIN / "ansible-galaxy", "collection", "install", "--force", tarball, "-p", tmp_path / "collections", cwd=tmp_path)
    found = run(BIN / "ansible-builder", "introspect", tmp_path / "collections", cwd=tmp_path)
    python, _sep, system = found.partition("system:")
    for requirement in ("cryptography>=3.3", "zstandard>=0.15", "paramiko>=2.7", "smbprotocol>=1.10", "boto3>=1.26"):
        assert "%s  # from collection lifeboat.backup" % requirement in python, found
    for package in ("rsync [platform:rpm platform:dpkg]", "openssh-clients [platform:rpm]", "zstd [platform:rpm platform:dpkg]"):
        assert "%s  # from collection lifeboat.backup" % package in system, found
    # What the builder stage writes for pip and bindep: the same, checked by bindep's own parser.
    written = tmp_path / "pip.txt", tmp_path / "bindep.txt"
    run(BIN / "ansible-builder", "introspect", tmp_path / "collections", "--write-pip", written[0], "--write-bindep", written[1], cwd=tmp_path)
    assert "paramiko>=2.7" in (tmp_path / "pip.txt").read_text()
    profile = subprocess.run([str(BIN / "bindep"), "-b", "-f", str(tmp_path / "bindep.txt"), "platform:dpkg"], capture_output=True, text=True, check=False)
    assert profile.returncode in (0, 1) and "rsync" in (tmp_path / "bindep.txt").read_text(), profile.stderr


def test_the_example_definition_creates_a_build_context(tmp_path):
    for name in ("execution-environment.yml", "requirements.yml"):
        shutil.copy(ROOT / "docs" / "ee" / name, tmp_path / name)
    run(BIN / "ansible-builder", "create", "--file", "execution-environment.yml", "--context", "context", cwd=tmp_path)
    containerfile = (tmp_path / "context" / "Containerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="quay.io/centos/centos:stream9"' in containerfile
    assert 'ARG ANSIBLE_INSTALL_REFS="ansible-core>=2.19,<2.20 ansible-runner"' in containerfile
    assert "ansible-galaxy collection install" in containerfile and "introspect" in containerfile
    assert "lifeboat.backup" in (tmp_path / "context" / "_build" / "requirements.yml").read_text()
