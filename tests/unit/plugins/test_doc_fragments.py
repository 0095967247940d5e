"""Doc fragments that must be string literals (ansible-test's yamllint reads them so) but say
the same thing twice."""

from __future__ import annotations

import yaml

from ansible_collections.lifeboat.backup.plugins.doc_fragments import _retention, _storage


def _renamed(value):
    if isinstance(value, dict):
        return {k: _renamed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v) for v in value]
    if isinstance(value, str):
        assert "O(target." not in value, "a list of targets must refer to O(targets[].x): %s" % value
        return value.replace("O(targets[].", "O(target.")
    return value


def test_one_target_and_a_list_of_targets_document_the_same_options():
    one = yaml.safe_load(_storage.ModuleDocFragment.DOCUMENTATION)["options"]["target"]["suboptions"]
    many = yaml.safe_load(_storage.ModuleDocFragment.TARGETS)["options"]["targets"]["suboptions"]
    assert _renamed(many) == one


def test_required_and_optional_retention_document_the_same_policy():
    required = yaml.safe_load(_retention.ModuleDocFragment.DOCUMENTATION)["options"]["retention"]
    optional = yaml.safe_load(_retention.ModuleDocFragment.OPTIONAL)["options"]["retention"]
    assert required.pop("required") is True and "required" not in optional
    assert optional["description"].pop() == "Without it, nothing is removed."
    assert optional == required
