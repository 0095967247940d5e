# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The documented options of this collection's modules, read on the controller without
importing the modules: the module_options filter passes a profile component's keys by them,
the profile schema (_profile_schema) accepts and documents a component's keys by them.
ansible-test sanity keeps each module's DOCUMENTATION equal to its argument spec."""

from __future__ import annotations

import ast
import functools
import importlib
import os

import yaml
from ansible.errors import AnsibleFilterError

COLLECTION = "lifeboat.backup"
MODULES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "modules")


def _doc_strings(path):
    """DOCUMENTATION of a module file, read without importing it."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DOCUMENTATION":
            return yaml.safe_load(node.value.value) or {}
    raise AnsibleFilterError("module %s has no DOCUMENTATION" % path)


def _fragment_options(name):
    """The options of doc fragment ``name`` (``lifeboat.backup._postgresql`` or
    ``lifeboat.backup._decryption.image``); fragments of other collections add none."""
    if not name.startswith(COLLECTION + "."):
        return {}
    parts = name[len(COLLECTION) + 1 :].split(".")
    fragment = importlib.import_module("ansible_collections.lifeboat.backup.plugins.doc_fragments." + parts[0])
    text = getattr(fragment.ModuleDocFragment, parts[1].upper() if len(parts) > 1 else "DOCUMENTATION")
    return (yaml.safe_load(text) or {}).get("options") or {}


def _merge(base, extra):
    """A module's own entry for an option refines the fragment's (``name: {default: config}``)."""
    merged = dict(base)
    for name, spec in extra.items():
        merged[name] = dict(merged.get(name) or {}, **(spec or {}))
    return merged


@functools.cache
def documented_options(module):
    """(every option {name: documented spec}, the names the module documents itself) of a
    module of this collection; the others come from shared doc fragments."""
    short = module[len(COLLECTION) + 1 :] if module.startswith(COLLECTION + ".") else module
    path = os.path.join(MODULES_DIR, short + ".py")
    if "." in short or os.sep in short or not os.path.isfile(path):
        raise AnsibleFilterError("module_options: %s is not a module of %s" % (module, COLLECTION))
    doc = _doc_strings(path)
    options = {}
    for fragment in doc.get("extends_documentation_fragment") or []:
        options = _merge(options, _fragment_options(fragment))
    own = doc.get("options") or {}
    return _merge(options, own), frozenset(own)
