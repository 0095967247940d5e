# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Where secrets bundle sets are kept: the node's ``destination`` and storage targets.

Every location is a storage backend (``_storage.open_target``): the ``destination``
directory is a ``local`` target. A set is put file by file (each atomic and verified by
the backend, never overwriting), its index last; if a file fails, what was put of the set
is removed again, so a location holds whole sets or nothing of an export. Retention
(``_retention``) works on whole sets of this node and this bundle name, read from their
indexes; it never touches another node's sets on a shared target.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os

from ansible_collections.lifeboat.backup.plugins.module_utils import _retention, _secrets, _storage
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError

SET_SUFFIXES = (_secrets.BUNDLE_SUFFIX, _secrets.INDEX_SUFFIX, _secrets.KEY_SUFFIX)


class StoreError(LifeboatError):
    """A location that could not take, show or prune bundle sets."""


def _local_target(path):
    target = {key: spec.get("default") for key, spec in _storage.TARGET_OPTIONS.items()}
    target.update(type="local", path=path, name="destination %s" % path)
    return target


def location_specs(request):
    """[(option, target options)] in order: the destination, then each target."""
    specs = []
    if request.get("destination"):
        specs.append(("destination", _local_target(request["destination"])))
    for position, target in enumerate(request.get("targets") or []):
        specs.append(("targets[%d]" % position, target))
    return specs


def validate_locations(request):
    """OptionError naming the target option at fault, before any connection."""
    for option, target in location_specs(request):
        _storage.validate(target, option)


@contextlib.contextmanager
def opened(option, target, create=False):
    """An open backend; the destination directory is created (0700) when asked."""
    if option == "destination" and create:
        os.makedirs(target["path"], mode=0o700, exist_ok=True)
    backend = _storage.open_target(target, option)
    try:
        yield backend
    finally:
        backend.close()


def stem_of(name):
    """The stem of a set's file name, or None for other files."""
    for suffix in SET_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    if ".share-" in name and name.endswith(".age"):
        return name[: name.index(".share-")]
    return None


def publish(backend, files):
    """Put ``files`` ([(name, bytes)], the index last). Returns the names; on failure removes
    what it put and raises StoreError."""
    written = []
    try:
        for name, data in files:
            backend.put(name, io.BytesIO(data), size=len(data))
            written.append(name)
    except _storage.StorageError as exc:
        for name in reversed(written):
            with contextlib.suppress(LifeboatError):
                backend.delete(name)
        raise StoreError("cannot write the bundle set to %s: %s; nothing of this export was kept there" % (backend.label, exc.msg)) from None
    return written


def missing(backend, names):
    """The ``names`` absent from the location (StorageError when it cannot be asked)."""
    return [name for name in names if backend.stat(name) is None]


def _sha256_on(backend, name):
    sink = _Digest()
    backend.get(name, sink)
    return sink.hash.hexdigest()


class _Digest:
    def __init__(self):
        self.hash = hashlib.sha256()

    def write(self, data):
        self.hash.update(data)
        return len(data)


def place_reader(backend, path):
    """Keep the standalone reader beside the sets: put it when absent, replace it when it
    differs (it is the collection's own file, not a bundle). Returns what was done."""
    with open(path, "rb") as handle:
        data = handle.read()
    name = _secrets.READER_NAME
    found = backend.stat(name)
    if found is not None:
        if found["size"] == len(data) and _sha256_on(backend, name) == hashlib.sha256(data).hexdigest():
            return None
        backend.delete(name)
    backend.put(name, io.BytesIO(data), size=len(data))
    return "replaced" if found is not None else "added"


def _own_sets(backend, name, node):
    """{stem: {"files": [...], "index": dict or None}} of this bundle name and node."""
    sets = {}
    for entry in backend.list(name + "-"):
        stem = stem_of(entry["name"])
        if stem is not None:
            sets.setdefault(stem, {"files": [], "index": None})["files"].append(entry["name"])
    for stem, found in sets.items():
        if stem + _secrets.INDEX_SUFFIX in found["files"]:
            sink = io.BytesIO()
            backend.get(stem + _secrets.INDEX_SUFFIX, sink)
            with contextlib.suppress(ValueError):
                found["index"] = json.loads(sink.getvalue().decode("utf-8"))
    return {stem: found for stem, found in sets.items() if found["index"] and found["index"].get("node") == node}


def retention_plan(backend, name, node, policy, now):
    """Retention decisions over this node's complete sets of ``name`` on the location."""
    sets = _own_sets(backend, name, node)
    items = [{"name": stem, "time": found["index"].get("created"), "verdict": "success", "files": found["files"]} for stem, found in sets.items()]
    return _retention.plan(items, policy, now) if items else []


def apply_retention(backend, decisions):
    """Remove the sets retention lets go, the index first (a set without it is incomplete
    for every reader). Returns [{stem, rule}] removed."""
    removed = []
    for decision in decisions:
        if decision.action != "remove":
            continue
        files = sorted(decision.item["files"], key=lambda n: not n.endswith(_secrets.INDEX_SUFFIX))
        for file_name in files:
            backend.delete(file_name)
        removed.append({"stem": decision.name, "rule": decision.rule})
    return removed
