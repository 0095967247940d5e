"""_mapping: what a scan finds in text, the check of a filled-in mapping, the rewrite."""

from __future__ import annotations

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _mapping


def scanned(text, manifest=None):
    found = _mapping.Found()
    _mapping.manifest_values(manifest or {"node": "app1", "components": {"pg": {"details": {"databases": [{"name": "intel"}]}}}}, found)
    named = [(v, _mapping._word(v)) for v, e in found.values.items() if e["kind"] in ("node", "database", "index")]
    _mapping.text_values("config", "/etc/x.conf", text, named, found)
    return found


def test_scan_finds_hosts_addresses_endpoints_and_names_not_loopback_or_files():
    found = scanned("uri = postgresql://u@db1:5432/intel\nhosts = ['a.b.example.org', '10.0.0.12', '127.0.0.1', 'localhost']\nlog = x.y.conf\n")
    kinds = {v: e["kind"] for v, e in found.values.items()}
    assert kinds == {"app1": "node", "intel": "database", "db1": "host", "db1:5432": "endpoint", "a.b.example.org": "host", "10.0.0.12": "address"}
    assert found.values["intel"]["occurs"] == ["manifest: component pg, databases", "config: /etc/x.conf line 1"]


def test_check_names_every_value_left_including_hand_added_ones():
    found = scanned("host = a.b.example.org\n")
    mapping = {"values": [{"source": "intel", "target": "intel_b"}, {"source": "app1", "keep": "true"}, {"source": "/srv/a", "target": ""}]}
    with pytest.raises(_mapping.MappingError) as refused:
        _mapping.check(mapping, found)
    assert (
        "leaves 2 value(s)" in str(refused.value)
        and "host a.b.example.org" in str(refused.value)
        and "/srv/a (the mapping (added by hand))" in str(refused.value)
    )
    mapping["values"] += [{"source": "a.b.example.org", "target": "a.b.example.net"}]
    mapping["values"][2]["target"] = "/srv/b"
    assert _mapping.check(mapping, found) == {"intel": "intel_b", "a.b.example.org": "a.b.example.net", "/srv/a": "/srv/b"}
    with pytest.raises(_mapping.MappingError, match="database intel"):
        _mapping.check({"values": [{"source": "intel", "target": "intel"}]}, scanned(""))


def test_rewrite_whole_words_longest_first_mode_kept(tmp_path):
    path = tmp_path / "x.conf"
    path.write_text("a = db1:5432\nb = db1\nc = db10\nd = 10.0.0.1 10.0.0.12\n")
    path.chmod(0o640)
    made = _mapping.rewrite_file(str(path), {"db1": "db2", "db1:5432": "db2:6432", "10.0.0.1": "10.9.9.9"})
    assert path.read_text() == "a = db2:6432\nb = db2\nc = db10\nd = 10.9.9.9 10.0.0.12\n"
    assert sorted(made) == [("10.0.0.1", "10.9.9.9", 1), ("db1", "db2", 1), ("db1:5432", "db2:6432", 1)]
    assert path.stat().st_mode & 0o777 == 0o640
    (tmp_path / "bin").write_bytes(b"db1\0")
    assert _mapping.rewrite_file(str(tmp_path / "bin"), {"db1": "db2"}) == [] and (tmp_path / "bin").read_bytes() == b"db1\0"
