"""Every module's DOCUMENTATION, EXAMPLES and RETURN parse as YAML. ansible-test sanity and
ansible-lint catch a bad one too, but they run rarely; a ': ' in a plain continuation line
broke ansible-doc for everyone twice, so the unit tests check it on every run."""

from __future__ import annotations

import ast
import pathlib

import pytest
import yaml

MODULES = sorted((pathlib.Path(__file__).parents[3] / "plugins" / "modules").glob("*.py"))


def _doc_strings(path):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
            yield node.targets[0].id, node.value.value


@pytest.mark.parametrize("path", MODULES, ids=[p.stem for p in MODULES])
def test_module_docs_parse_as_yaml(path):
    found = dict(_doc_strings(path))
    assert set(found) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}, "%s lacks one of DOCUMENTATION, EXAMPLES, RETURN" % path.name
    for name, text in found.items():
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as exc:
            pytest.fail("%s %s is not valid YAML: %s" % (path.name, name, exc))
