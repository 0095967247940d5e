"""Index selection and renaming of elasticsearch_restore, decided before the server is asked."""

from __future__ import annotations

import pytest

from ansible_collections.lifeboat.backup.plugins.modules import elasticsearch_restore as restore

INDICES = [".geoip_databases", "audit_v2", "logstash-2026.11.21", "logstash-2026.11.22", "stix_v4"]


def test_default_selection_leaves_dot_indices_out():
    assert restore.select_indices(INDICES, []) == INDICES[1:]


def test_patterns_apply_in_order_with_exclusions():
    assert restore.select_indices(INDICES, ["logstash-*", "-*.21"]) == ["logstash-2026.11.22"]
    assert restore.select_indices(INDICES, ["*", "-logstash-*"]) == ["audit_v2", "stix_v4"]
    assert restore.select_indices(INDICES, ["*", ".geo*"]) == INDICES


def test_unknown_names_and_empty_selections_are_refused():
    with pytest.raises(restore.RestoreError, match="documents_v2 is not in the snapshot"):
        restore.select_indices(INDICES, ["documents_v2"])
    with pytest.raises(restore.RestoreError, match="nothing in the snapshot matches"):
        restore.select_indices(INDICES, ["nope-*"])


def test_java_style_replacement():
    mapping = restore.targets_of(["audit_v2", "stix_v4"], "(.+)_v(\\d+)", "restored-$1-v$2")
    assert mapping == {"audit_v2": "restored-audit-v2", "stix_v4": "restored-stix-v4"}
    assert restore.targets_of(["a"], "(?P<n>a)", "x-${n}-\\$") == {"a": "x-a-$"}
    assert restore.targets_of(["a", "b"], None, None) == {"a": "a", "b": "b"}


def test_renames_that_collide_or_make_invalid_names_are_refused():
    with pytest.raises(restore.RestoreError, match="maps both"):
        restore.targets_of(["logs-1", "logs-2"], "logs-\\d", "logs")
    with pytest.raises(restore.RestoreError, match="lower case"):
        restore.targets_of(["a"], "a", "A")
    with pytest.raises(restore.RestoreError, match="rename_pattern"):
        restore.targets_of(["a"], "(", "x")
