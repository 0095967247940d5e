"""The collection version lives in galaxy.yml; module code carries one copy (managed nodes
have no galaxy.yml) that must say the same."""

from __future__ import annotations

import re
from pathlib import Path

from ansible_collections.lifeboat.backup.plugins.module_utils import _elasticsearch, _session, _version

ROOT = Path(__file__).resolve().parents[4]


def galaxy(key):
    text = (ROOT / "galaxy.yml").read_text()
    return re.search(r"^%s:\s*(\S+)\s*$" % key, text, re.M).group(1)


def test_code_version_is_galaxy_version():
    assert galaxy("version") == _version.COLLECTION_VERSION
    assert "%s.%s" % (galaxy("namespace"), galaxy("name")) == _version.COLLECTION


def test_no_second_copy_in_plugins():
    """Every module_utils takes the version from _version; none spells it out again."""
    copies = []
    for path in (ROOT / "plugins").rglob("*.py"):
        if path.name == "_version.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""COLLECTION_VERSION\s*=|["']%s["']""" % re.escape(galaxy("version")), line):
                copies.append("%s:%d" % (path.relative_to(ROOT), number))
    assert copies == []


def test_users_share_the_one_copy():
    assert _session.COLLECTION_VERSION is _version.COLLECTION_VERSION
    assert _elasticsearch.COLLECTION_VERSION is _version.COLLECTION_VERSION
