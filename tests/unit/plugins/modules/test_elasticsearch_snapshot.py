"""Names and request bodies of elasticsearch_snapshot, decided before the server is asked."""

from __future__ import annotations

import time

from ansible_collections.lifeboat.backup.plugins.modules import elasticsearch_snapshot as snapshot


class FakeSession:
    data = {"backup_id": "20261122T201654Z-7c31de8f", "node": "search1"}


def params(**overrides):
    base = {
        "snapshot": None,
        "indices": [],
        "ignore_unavailable": False,
        "include_global_state": True,
        "partial": False,
        "feature_states": None,
        "metadata": {},
    }
    base.update(overrides)
    return base


def test_names_resolve_or_say_why_not():
    assert snapshot.resolve_name(params(snapshot="nightly"), None) == ("nightly", None)
    assert snapshot.resolve_name(params(), FakeSession()) == ("lifeboat-20261122t201654z-7c31de8f", None)
    name, problem = snapshot.resolve_name(params(snapshot="<n-{now/d}>"), None)
    assert name == time.strftime("n-%Y.%m.%d", time.gmtime()) and problem is None
    assert snapshot.resolve_name(params(snapshot="Nightly"), None) == (None, "snapshot: the name 'Nightly' must be lower case")
    assert "cannot resolve the date math" in snapshot.resolve_name(params(snapshot="<n-{then}>"), None)[1]


def test_body_marks_the_snapshot_as_the_collections():
    body = snapshot.create_body(params(indices=["a*", "-a2"], metadata={"ticket": "OPS-1"}), None, FakeSession())
    assert body["indices"] == "a*,-a2"
    assert body["metadata"]["ticket"] == "OPS-1"
    marker = body["metadata"]["lifeboat"]
    assert marker["created_by"] == "lifeboat.backup" and marker["backup_id"] == FakeSession.data["backup_id"] and marker["node"] == "search1"
    assert "feature_states" not in body and body["partial"] is False
    assert snapshot.create_body(params(feature_states=["none"]), None, None)["feature_states"] == ["none"]
