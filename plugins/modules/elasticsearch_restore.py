#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: elasticsearch_restore
short_description: Restore indices from an Elasticsearch or OpenSearch snapshot, or from a backup image
version_added: 0.1.0
description:
  - Restores indices of a snapshot - all regular ones or those selected by O(indices) - under
    their own names or renamed (O(rename_pattern)/O(rename_replacement), or O(rename) by name), with or without the
    cluster's global state, and waits until every restored primary shard has recovered
    (watching C(_recovery) and the indices' health) up to O(wait_timeout) seconds. Returns the
    document count of each restored index.
  - An index that already exists is never overwritten unless O(replace=true); it is then closed
    (restored in place) or deleted first, as O(replace_method) says. If the restore cannot start,
    indices closed for it are opened again.
  - With O(image), restores from a backup image whose snapshot component carried the repository
    files (M(lifeboat.backup.elasticsearch_snapshot) with C(include_repository_files)) - the files
    are unpacked, checked against their SHA-256, into O(repository_location) under C(path.repo),
    registered read-only as O(repository), and the snapshot restored from there. This restores a
    snapshot on a cluster that never saw the original repository.
  - With O(image), nothing in the cluster is changed before every repository file has been
    authenticated - unpacked and checked against the image, or, when an earlier run already
    unpacked it, re-read and checked against the image's index (O(authenticate)). A failure after
    an existing index was closed or deleted names it in C(done) and says how to go on.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._elasticsearch
  - lifeboat.backup._decryption
  - lifeboat.backup._restore
  - lifeboat.backup._progress
attributes:
  check_mode:
    support: full
    details:
      - Finds the snapshot, selects and renames the indices and reports which would be restored and
        which existing ones replaced (or refuses, as the real run would); nothing is written or unpacked.
  diff_mode:
    support: none
options:
  repository:
    description:
      - Repository holding the snapshot. With O(image), the name under which the unpacked
        repository is registered (read-only); an existing registration must point at O(repository_location).
    type: str
    required: true
  snapshot:
    description:
      - Snapshot name (date math allowed), or V(_latest) for the newest successful snapshot of the repository.
      - Required unless O(image) is given (the image names its snapshot).
    type: str
  indices:
    description:
      - Indices of the snapshot to restore - names and C(*) patterns, C(-pattern) excludes (applied
        in order). Default is every index of the snapshot whose name does not start with a dot.
      - Names starting with a dot (system and hidden indices) are selected only by a name or pattern
        that starts with a dot.
    type: list
    elements: str
    default: []
  rename_pattern:
    description:
      - Regular expression applied to each restored index name; matches are replaced with
        O(rename_replacement) (as the server does, C($1) refers to a group).
    type: str
  rename_replacement:
    description:
      - Replacement for O(rename_pattern), for example C(restored-$1).
    type: str
  rename:
    description:
      - Index names of the snapshot to the names to restore them as, for example
        C(stix_v4) as C(stix_v4_staging) and C(documents_v2) as C(docs_staging) (the restore role passes the index
        names of its C(restore_mapping)). Selected indices not named keep their names.
      - The snapshot restore API takes one rename pattern per request - the indices keeping their
        names are restored by one request, each renamed index by one of its own, all started before
        the wait. Every target name is checked (valid, not twice, not an existing index unless
        O(replace), not an existing alias) before anything changes.
    type: dict
    default: {}
    version_added: 0.2.0
  include_global_state:
    description:
      - Also restore the cluster state of the snapshot (templates, persistent settings, and in
        Elasticsearch the feature states). This overwrites the cluster's own.
    type: bool
    default: false
  include_aliases:
    description:
      - Restore the aliases of the restored indices.
    type: bool
    default: true
  partial:
    description:
      - Allow restoring from a C(PARTIAL) snapshot; shards missing from it come back empty.
    type: bool
    default: false
  index_settings:
    description:
      - Index settings to change on the restored indices, for example C(index.number_of_replicas=0)
        on a single-node cluster.
    type: dict
    default: {}
  ignore_index_settings:
    description:
      - Index settings not to restore, for example C([index.refresh_interval]).
    type: list
    elements: str
    default: []
  feature_states:
    description:
      - Elasticsearch 7.12 and later only - feature states to restore with O(include_global_state).
    type: list
    elements: str
  replace:
    description:
      - Replace indices that already exist (under their target names). Without it, existing
        indices make the task fail before anything changes.
    type: bool
    default: false
  replace_method:
    description:
      - How an existing index is replaced. V(close) closes it and the snapshot is restored into it
        (it must have the same number of shards). V(delete) deletes it first.
    type: str
    choices: [close, delete]
    default: close
  wait:
    description:
      - Wait for the restored primary shards to recover, then count the documents.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the recovery.
    type: int
    default: 3600
  image:
    description:
      - Backup image (on the managed node) whose Elasticsearch component holds the repository
        files. Give the decryption options O(passphrase), O(identity) or O(identity_file).
    type: path
  component:
    description:
      - Name of the Elasticsearch component in O(image).
    type: str
    default: elasticsearch
  repository_location:
    description:
      - With O(image) - the directory, under C(path.repo) on every node, to unpack the repository
        into. It must not exist, be empty, or already hold the image's snapshot (unpacked by an
        earlier run). The files get the owner of the nearest existing parent directory (the account
        the server runs as, if the path.repo set-up was followed).
    type: str
requirements:
  - cryptography (Python library, on the managed node) with O(image) when the image is encrypted.
  - zstandard (Python library, on the managed node) with O(image) when its members are zstd-compressed.
notes:
  - Replica shards are not waited for - they recover from the primaries afterwards, as usual;
    on a single node they stay unassigned unless O(index_settings) sets C(index.number_of_replicas=0).
  - O(rename_pattern) is applied here too, to know the target names before the restore; it uses
    Python regular expressions, which agree with Java's for the usual patterns.
seealso:
  - module: lifeboat.backup.elasticsearch_snapshot
  - module: lifeboat.backup.elasticsearch_snapshot_info
  - module: lifeboat.backup.image_verify
"""

EXAMPLES = r"""
- name: Restore the newest snapshot's indices, replacing what is there (closed, then restored in place)
  lifeboat.backup.elasticsearch_restore:
    hosts: ["http://localhost:9200"]
    repository: backup
    snapshot: _latest
    replace: true
  register: restored

- name: Restore two indices next to the live ones, to compare
  lifeboat.backup.elasticsearch_restore:
    repository: backup
    snapshot: nightly-2026.11.22
    indices: [stix_v4, documents_v2]
    rename_pattern: "(.+)"
    rename_replacement: "restored-$1"
    include_aliases: false

- name: Rebuild a cluster from an image that travelled off-site
  lifeboat.backup.elasticsearch_restore:
    image: /restore/20261122T194512Z-search1.zip
    passphrase: "{{ vault_backup_passphrase }}"
    repository: from-image
    repository_location: /db-backup/elasticsearch/from-image
    index_settings:
      index.number_of_replicas: 0
"""

RETURN = r"""
snapshot:
  description: The snapshot restored from (name, uuid, repository, state, indices, ...).
  returned: always, once found
  type: dict
  sample: {name: nightly-2026.11.22, uuid: dEiLpf8EQWSo3JR9f2bMwA, repository: backup, state: SUCCESS}
indices:
  description:
    - One entry per restored index - source name, target name, whether an existing index was replaced
      (and how), primary shards and, after the wait, the document count.
  returned: always, once the indices are selected
  type: list
  elements: dict
  sample: [{source: stix_v4, target: restored-stix_v4, replaced: null, shards: 2, docs: 120345}]
doc_counts:
  description: Document count of each restored index (target name), from C(_count).
  returned: when waited
  type: dict
  sample: {restored-stix_v4: 120345}
recovery:
  description: Last recovery state per target index - primaries active of total, bytes recovered of total.
  returned: when waited
  type: dict
  sample: {restored-stix_v4: {primaries_active: 2, primaries_total: 2, bytes_recovered: 1048576, bytes_total: 1048576}}
timed_out:
  description: Whether O(wait_timeout) passed before the primaries recovered.
  returned: when waited
  type: bool
  sample: false
unpacked:
  description: With O(image) - where the repository files went, how many, and whether an earlier unpack was reused.
  returned: with image
  type: dict
  sample: {location: /db-backup/elasticsearch/from-image, file_count: 120, total_bytes: 1073741824, reused: false}
done:
  description: On a failure after existing indices were closed or deleted, what had been changed.
  returned: failure after a change
  type: list
  elements: str
  sample: ["deleted existing indices stix_v4 (replace_method=delete)"]
duration:
  description: Seconds from the restore request to the end of the wait.
  returned: when the restore ran
  type: float
  sample: 12.5
server:
  description: Engine, version and cluster name of the cluster.
  returned: always
  type: dict
  sample: {engine: opensearch, version: 2.19.6, cluster_name: production}
lifeboat_succeeded:
  description:
    - C(true) in every successful result of a lifeboat.backup module, absent from every failure.
    - The roles run modules with C(failed_when) false and count every result without it (a failure, a crash,
      a timeout) as failed; see docs/architecture.md, section Module result contract.
  returned: success
  type: bool
  sample: true
  version_added: 0.2.0
"""

import fnmatch
import os
import re
import shutil
import tarfile
import time
import zipfile

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image, _progress, _tree
from ansible_collections.lifeboat.backup.plugins.module_utils import _elasticsearch as es
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


class RestoreError(LifeboatError):
    pass


# ---- which indices, under which names --------------------------------------------------------


def _chosen(name, patterns):
    """Whether the last pattern matching ``name`` includes it (``-x`` excludes); a hidden
    index (``.name``) is matched only by a pattern that starts with a dot."""
    chosen = False
    for pattern in patterns:
        exclude = pattern.startswith("-")
        bare = pattern[1:] if exclude else pattern
        if name.startswith(".") and not bare.startswith("."):
            continue
        if fnmatch.fnmatchcase(name, bare):
            chosen = not exclude
    return chosen


def select_indices(available, patterns):
    """Indices of the snapshot selected by ``patterns`` (in order; ``-x`` excludes)."""
    if not patterns:
        return [name for name in available if not name.startswith(".")]
    for pattern in patterns:
        if not pattern.startswith("-") and not any(c in pattern for c in "*?[") and pattern not in available:
            raise RestoreError("indices: %s is not in the snapshot (it has: %s)" % (pattern, ", ".join(available) or "no indices"))
    selected = [name for name in available if _chosen(name, patterns)]
    if not selected:
        raise RestoreError("indices: nothing in the snapshot matches %s (it has: %s)" % (", ".join(patterns), ", ".join(available) or "no indices"))
    return selected


def java_replacement(replacement):
    """A re.sub callable that expands a Java-style replacement ($1, ${name}, \\$)."""

    def expand(match):
        out = []
        i = 0
        while i < len(replacement):
            char = replacement[i]
            if char == "\\" and i + 1 < len(replacement):
                out.append(replacement[i + 1])
                i += 2
            elif char == "$" and i + 1 < len(replacement) and replacement[i + 1].isdigit():
                j = i + 1
                while j < len(replacement) and replacement[j].isdigit():
                    j += 1
                out.append(match.group(int(replacement[i + 1 : j])) or "")
                i = j
            elif char == "$" and replacement.startswith("{", i + 1) and "}" in replacement[i + 2 :]:
                end = replacement.index("}", i + 2)
                out.append(match.group(replacement[i + 2 : end]) or "")
                i = end + 1
            else:
                out.append(char)
                i += 1
        return "".join(out)

    return expand


def targets_of(sources, pattern, replacement, rename=None, available=()):
    """{source: target} of the selected indices: renamed by ``pattern`` or by the ``rename``
    dict (whose names must be indices of the snapshot); refuses invalid or clashing targets."""
    if rename:
        unknown = sorted(name for name in rename if name not in available)
        if unknown:
            raise RestoreError("rename: %s not among the indices of the snapshot (it has: %s)" % (", ".join(unknown), ", ".join(available) or "no indices"))
        mapping = {name: str(rename.get(name, name)) for name in sources}
    elif not pattern:
        return {name: name for name in sources}
    else:
        try:
            regex = re.compile(pattern)
            expand = java_replacement(replacement or "")
            mapping = {name: regex.sub(expand, name) for name in sources}
        except (re.error, IndexError) as exc:
            raise RestoreError("rename_pattern/rename_replacement: %s" % exc) from None
    seen = {}
    for source, target in mapping.items():
        problem = es.validate_snapshot_name(target) or ("must not start with - or +" if target[:1] in "-+" else None)
        if problem:
            raise RestoreError("rename turns %s into %r, which is not a valid index name: it %s" % (source, target, problem))
        if target in seen:
            raise RestoreError("rename maps both %s and %s to %s; adjust %s" % (seen[target], source, target, "rename" if rename else "rename_pattern"))
        seen[target] = source
    return mapping


def literal_rename(source, target):
    """(rename_pattern, rename_replacement) turning the index ``source`` into ``target`` and nothing
    else (Java's literal quoting; an index name cannot hold a backslash)."""
    return "\\Q%s\\E" % source, target.replace("$", "\\$")


def restore_groups(params, mapping):
    """[(sources, rename_pattern, rename_replacement)]: one restore request each. With the
    ``rename`` option, the indices keeping their names go together, each renamed one alone."""
    if not params["rename"]:
        return [(sorted(mapping), params["rename_pattern"], params["rename_replacement"])]
    kept = sorted(s for s, t in mapping.items() if s == t)
    groups = [(kept, None, None)] if kept else []
    for source, target in sorted(mapping.items()):
        if source != target:
            groups.append(([source],) + literal_rename(source, target))
    return groups


# ---- the image -------------------------------------------------------------------------------


def image_component(image, name):
    """The details of an Elasticsearch component that holds the repository's files."""
    component = _image.restorable_component(image, name, "elasticsearch", "Elasticsearch")
    files = (component.get("details") or {}).get("repository_files")
    if not files:
        raise RestoreError(
            "component %s holds no repository files (the snapshot was taken without include_repository_files); "
            "restore from the repository instead (leave image out)" % name
        )
    return component["details"]


def existing_parent(path):
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def empty_directory(path):
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            os.unlink(full)


def chown_tree(root, uid, gid):
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def unpack(image, files, location):
    """Extract the repository tar into ``location``, checking every file against the index."""
    with image.open_member(files["index_member"]) as stream:
        index = _tree.read_index(stream)
    owner = os.stat(existing_parent(location))
    os.makedirs(location, mode=0o755, exist_ok=True)
    extractor = _tree.Extractor(location, same_owner=False)
    count = 0
    total = 0
    try:
        with image.open_member(files["data_member"]) as member:
            with tarfile.open(fileobj=member, mode="r|", errorlevel=2) as tar:
                for info in _tree.read_entries(tar):
                    source = _image.HashingReader(tar.extractfile(info)) if info.isreg() else None
                    extractor.extract(info, source)
                    if source is not None:
                        record = index.get(info.name) or {}
                        if record.get("sha256") and record["sha256"] != source.sha.hexdigest():
                            raise RestoreError("%s: the unpacked file does not match the SHA-256 in the image's index" % info.name)
                        count += 1
                        total += info.size
            member.read()  # to the end: the member's own SHA-256 is checked against the manifest
    finally:
        extractor.close()
    if os.geteuid() == 0:
        chown_tree(location, owner.st_uid, owner.st_gid)
    return {"location": location, "file_count": count, "total_bytes": total, "reused": False}


def check_unpacked(image, files, location):
    """An earlier run's unpacked repository, re-read and checked against the image's index
    before it is used: every file there, with its SHA-256."""
    with image.open_member(files["index_member"]) as stream:
        index = _tree.read_index(stream)
    for path, record in sorted(index.items()):
        if record.get("type") != "file" or not record.get("sha256"):
            continue
        full = os.path.join(location, path)
        try:
            digest = _tree.file_sha256(full)
        except OSError as exc:
            raise RestoreError("%s, unpacked by an earlier run, cannot be read: %s" % (full, exc.strerror)) from None
        if digest != record["sha256"]:
            raise RestoreError("%s, unpacked by an earlier run, differs from the image (SHA-256); empty %s and run again to unpack it anew" % (full, location))


def require_libraries(module, image, files):
    """cryptography and zstandard, when the repository members need them."""
    for member in (files["data_member"], files["index_member"]):
        record = image.members.get(member) or {}
        if record.get("encryption") == "age":
            module.require("cryptography", _age.HAS_CRYPTOGRAPHY, _age.CRYPTOGRAPHY_IMPORT_ERROR)
        if record.get("compression") == "zstd":
            module.require("zstandard", _image.HAS_ZSTANDARD, _image.ZSTANDARD_IMPORT_ERROR)


def unpack_target(client, server, params, snapshot):
    """(location, registered repository or None, reuse): where the repository goes, refused
    when another repository or other files are there."""
    location, problem = es.check_location(client, server, params["repository_location"])
    if problem:
        raise RestoreError(problem)
    registered = es.get_repository(client, params["repository"])
    if registered is not None:
        current = (registered.get("settings") or {}).get("location")
        if registered.get("type") != "fs" or es.resolve_location(current or "", es.node_repo_paths(client)) != location:
            raise RestoreError(
                "repository %s is already registered (type %s, location %s); give another repository name for the unpacked copy"
                % (params["repository"], registered.get("type"), current)
            )
    reuse = bool(os.path.isdir(location) and os.listdir(location) and es.repository_holds(location, snapshot["uuid"]))
    if os.path.isdir(location) and os.listdir(location) and not reuse:
        raise RestoreError(
            "repository_location %s is not empty and does not hold snapshot %s; give a new or empty directory under path.repo" % (location, snapshot["name"])
        )
    return location, registered, reuse


def unpack_or_reuse(image, files, location, reuse, authenticate, result):
    """Check an earlier run's unpacked copy, or unpack; a failed unpack leaves nothing behind."""
    if reuse:
        if authenticate:
            try:
                check_unpacked(image, files, location)
            except (LifeboatError, ValueError) as exc:
                raise RestoreError("cannot check the repository unpacked in %s against the image: %s" % (location, exc)) from None
        return
    created = not os.path.exists(location)
    try:
        result["unpacked"] = unpack(image, files, location)
    except (OSError, LifeboatError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        # Half a repository must not be mistaken for a good one by the next run.
        if created:
            shutil.rmtree(location, ignore_errors=True)
        else:
            empty_directory(location)
        reason = getattr(exc, "strerror", None) or exc
        if isinstance(exc, zipfile.BadZipFile):
            reason = "the image is damaged: %s" % exc
        raise RestoreError(
            "unpacking the repository into %s failed: %s; nothing was registered or restored, and the partly unpacked files were removed" % (location, reason)
        ) from None


def prepare_image_repository(module, client, server, params, result):
    """Open the image, unpack its repository (not in check mode) and register it. Returns
    (the snapshot name, the component's details)."""
    with _image.open_image(params["image"], params) as image:
        details = image_component(image, params["component"])
        files = details["repository_files"]
        require_libraries(module, image, files)
        snapshot = details["snapshot"]
        location, registered, reuse = unpack_target(client, server, params, snapshot)
        result["unpacked"] = {"location": location, "file_count": files.get("file_count"), "total_bytes": files.get("total_bytes"), "reused": reuse}
        if module.check_mode:
            return snapshot["name"], details
        unpack_or_reuse(image, files, location, reuse, params["authenticate"], result)
    if registered is None:
        client.request(
            "PUT",
            "/_snapshot/%s" % es.path_segment(params["repository"]),
            params=server.master_timeout(client.request_timeout),
            body={"type": "fs", "settings": {"location": location, "readonly": "true"}},
            idempotent=True,
        )
        result["changed"] = True
    return snapshot["name"], details


# ---- the restore -----------------------------------------------------------------------------


def find_snapshot(client, repository, wanted):
    if wanted == "_latest":
        good = [s for s in es.get_snapshots(client, repository) if s.get("state") == "SUCCESS"]
        if not good:
            raise RestoreError("repository %s has no successful snapshot" % repository)
        return max(good, key=lambda s: s.get("start_time_in_millis") or 0)
    try:
        name = es.resolve_date_math(wanted)
    except ValueError as exc:
        raise RestoreError("snapshot: %s" % exc) from None
    raw = es.get_snapshot(client, repository, name)
    if raw is None:
        names = [s.get("snapshot") for s in es.get_snapshots(client, repository, verbose=False)]
        raise RestoreError("snapshot %s is not in repository %s (newest there: %s)" % (name, repository, ", ".join(names[-5:]) or "none"))
    return raw


def existing_indices(client):
    rows = client.get("/_cat/indices", params={"format": "json", "h": "index,status,health", "expand_wildcards": "all"}) or []
    return {row["index"]: row for row in rows}


def existing_aliases(client):
    rows = client.get("/_cat/aliases", params={"format": "json", "h": "alias,index"}) or []
    return {row["alias"]: row["index"] for row in rows}


def close_or_delete(client, server, names, method):
    for group in es.chunks(names):
        path = "/" + es.path_list(group)
        if method == "close":
            client.request("POST", path + "/_close", params=server.master_timeout(client.request_timeout), idempotent=True)
        else:
            client.request("DELETE", path, params=server.master_timeout(client.request_timeout), idempotent=True)


def reopen(client, names):
    for group in es.chunks(names):
        client.request("POST", "/%s/_open" % es.path_list(group), idempotent=True)


def primary_counts(client, targets):
    counts = {}
    for group in es.chunks(targets):
        data = client.get("/%s/_settings/index.number_of_shards" % es.path_list(group), params={"expand_wildcards": "all"}) or {}
        for index, body in data.items():
            counts[index] = int(((body.get("settings") or {}).get("index") or {}).get("number_of_shards") or 0)
    return counts


def _add_recovery(entry, shards, repository, snapshot):
    """Add the snapshot recovery of one index's primary shards to its ``entry``."""
    for shard in shards:
        source = shard.get("source") or {}
        if not shard.get("primary") or shard.get("type") != "SNAPSHOT" or source.get("snapshot") != snapshot or source.get("repository") != repository:
            continue
        size = (shard.get("index") or {}).get("size") or {}
        entry["bytes_recovered"] += size.get("recovered_in_bytes") or 0
        entry["bytes_total"] += size.get("total_in_bytes") or 0
        stage = shard.get("stage")
        entry["stages"][stage] = entry["stages"].get(stage, 0) + 1


def recovery_state(client, targets, shards, repository, snapshot):
    """Per target: primaries active (health) and the snapshot recovery's bytes (``_recovery``)."""
    state = {t: {"primaries_active": 0, "primaries_total": shards.get(t), "bytes_recovered": 0, "bytes_total": 0, "stages": {}} for t in targets}
    for group in es.chunks(targets):
        names = es.path_list(group)
        health = client.get("/_cluster/health/%s" % names, params={"level": "indices", "expand_wildcards": "all"}) or {}
        for index, info in (health.get("indices") or {}).items():
            if index in state:
                state[index]["primaries_active"] = info.get("active_primary_shards", 0)
                state[index]["status"] = info.get("status")
        recovery = client.get("/%s/_recovery" % names, params={"expand_wildcards": "all"}) or {}
        for index, info in recovery.items():
            if index in state:
                _add_recovery(state[index], info.get("shards") or [], repository, snapshot)
    return state


def recovered(state):
    return all(s["primaries_total"] and s["primaries_active"] >= s["primaries_total"] for s in state.values())


def unassigned_reasons(client, targets, limit=10):
    reasons = []
    for group in es.chunks(targets):
        rows = (
            client.get("/_cat/shards/%s" % es.path_list(group), params={"format": "json", "h": "index,shard,prirep,state,unassigned.reason,unassigned.details"})
            or []
        )
        for row in rows:
            if row.get("prirep") == "p" and row.get("state") != "STARTED":
                reasons.append(
                    "%s[%s] %s%s"
                    % (
                        row.get("index"),
                        row.get("shard"),
                        row.get("state"),
                        " (%s%s)" % (row.get("unassigned.reason"), ": %s" % row["unassigned.details"] if row.get("unassigned.details") else "")
                        if row.get("unassigned.reason")
                        else "",
                    )
                )
    return reasons[:limit]


def report_recovery(reporter, state):
    """Primary shards active of total and bytes recovered, for the progress on the controller."""
    reporter.shards(
        sum(s["primaries_active"] for s in state.values()),
        sum(s["primaries_total"] or 0 for s in state.values()),
        sum(s["bytes_recovered"] for s in state.values()),
        sum(s["bytes_total"] for s in state.values()) or None,
    )


def wait_for_recovery(client, targets, repository, snapshot, timeout, result):
    shards = primary_counts(client, targets)
    poller = es.Poller(timeout)
    reporter = _progress.reporter()
    reporter.phase("recovery", item=snapshot)
    while True:
        state = recovery_state(client, targets, shards, repository, snapshot)
        report_recovery(reporter, state)
        if recovered(state):
            result["timed_out"] = False
            return state
        if poller.expired:
            result["timed_out"] = True
            result["recovery"] = state
            active = sum(s["primaries_active"] for s in state.values())
            total = sum(s["primaries_total"] or 0 for s in state.values())
            done = sum(s["bytes_recovered"] for s in state.values())
            size = sum(s["bytes_total"] for s in state.values())
            waiting = unassigned_reasons(client, targets)
            raise RestoreError(
                "restore of snapshot %s did not finish within %d s: %d of %d primary shards active, %d of %d bytes recovered%s; "
                "the restore goes on in the cluster: watch GET _recovery, or run again with a longer wait_timeout and replace=true"
                % (snapshot, timeout, active, total, done, size, "; not started: %s" % "; ".join(waiting) if waiting else "")
            )
        poller.pause()


def count_documents(client, targets):
    counts = {}
    for target in targets:
        counts[target] = (client.get("/%s/_count" % es.path_segment(target)) or {}).get("count")
    return counts


def restore_body(params, server, sources, rename_pattern=None, rename_replacement=None):
    body = {
        "indices": ",".join(sources),
        "ignore_unavailable": False,
        "include_global_state": params["include_global_state"],
        "include_aliases": params["include_aliases"],
        "partial": params["partial"],
    }
    if rename_pattern:
        body["rename_pattern"] = rename_pattern
        body["rename_replacement"] = rename_replacement or ""
    if params["index_settings"]:
        body["index_settings"] = params["index_settings"]
    if params["ignore_index_settings"]:
        body["ignore_index_settings"] = ",".join(params["ignore_index_settings"])
    if params["feature_states"] is not None:
        body["feature_states"] = params["feature_states"]
    return body


def validate(params):
    """Options that cannot work together; raises OptionError naming them."""
    combinations = (
        (
            params["repository_location"] and not params["image"],
            "repository_location",
            "repository_location is only used with image (where to unpack the image's repository files)",
        ),
        (
            params["image"] and not params["repository_location"],
            "image",
            "image needs repository_location: the directory under path.repo to unpack the repository into",
        ),
        (params["image"] and params["snapshot"], "snapshot", "snapshot and image are mutually exclusive: the image names its snapshot"),
        (not params["image"] and not params["snapshot"], "snapshot", "snapshot is required (a name, date math, or _latest) unless image is given"),
        (params["wait_timeout"] < 1, "wait_timeout", "wait_timeout must be at least 1 second"),
    )
    for wrong, option, message in combinations:
        if wrong:
            raise OptionError(option, message)


def choose_snapshot(module, client, server, params, result):
    """The snapshot record to restore: from the image's unpacked repository, or the repository's."""
    repository = params["repository"]
    if params["image"]:
        wanted, details = prepare_image_repository(module, client, server, params, result)
        if not module.check_mode:
            return find_snapshot(client, repository, wanted)
        # Nothing is unpacked or registered in check mode: plan from the manifest.
        recorded = details["snapshot"]
        return {"snapshot": wanted, "uuid": recorded.get("uuid"), "state": recorded.get("state"), "indices": recorded.get("indices")}
    if es.get_repository(client, repository) is None:
        raise RestoreError("repository %s is not registered; register it with lifeboat.backup.elasticsearch_repository" % repository)
    return find_snapshot(client, repository, params["snapshot"])


def check_state(snapshot, partial):
    if snapshot["state"] == "SUCCESS" or (snapshot["state"] == "PARTIAL" and partial):
        return
    advice = "set partial=true to restore what it holds" if snapshot["state"] == "PARTIAL" else "choose another snapshot"
    raise RestoreError("snapshot %s is %s, not SUCCESS; %s" % (snapshot["name"], snapshot["state"], advice))


def plan_targets(client, params, snapshot, result):
    """(source indices, {source: target}, existing targets to replace); refuses clashes."""
    sources = select_indices(snapshot["indices"], params["indices"])
    mapping = targets_of(sources, params["rename_pattern"], params["rename_replacement"], params["rename"], snapshot["indices"])
    present = existing_indices(client)
    aliases = existing_aliases(client)
    clashes = sorted(t for t in mapping.values() if t in aliases)
    if clashes:
        raise RestoreError(
            "target names are aliases of existing indices: %s; restore under other names (rename or rename_pattern)"
            % ", ".join("%s (alias of %s)" % (c, aliases[c]) for c in clashes)
        )
    existing = sorted(t for t in mapping.values() if t in present)
    result["indices"] = [{"source": s, "target": t, "replaced": params["replace_method"] if t in present else None} for s, t in sorted(mapping.items())]
    if existing and not params["replace"]:
        raise RestoreError(
            "these indices already exist: %s; set replace=true (replace_method close or delete) to overwrite them, "
            "or restore under other names (rename, or rename_pattern and rename_replacement)" % ", ".join(existing)
        )
    return sources, mapping, existing


class Restore:
    """Replace what must be replaced, start the restore, wait for the recovery, count the
    documents. Every change is appended to ``done``."""

    def __init__(self, client, server, params, snapshot, result):
        self.client = client
        self.server = server
        self.params = params
        self.snapshot = snapshot
        self.result = result
        self.closed = []
        self.done = []
        self.started = False

    def run(self, groups, targets, existing):
        started = time.time()
        try:
            self.replace(existing)
            for sources, pattern, replacement in groups:
                self.start(sources, pattern, replacement, existing)
            if not self.params["wait"]:
                return self.result
            state = wait_for_recovery(self.client, targets, self.params["repository"], self.snapshot["name"], self.params["wait_timeout"], self.result)
            self.result["recovery"] = {t: {k: v for k, v in s.items() if k != "stages"} for t, s in state.items()}
            counts = count_documents(self.client, targets)
        except LifeboatError as exc:
            self.result["duration"] = round(time.time() - started, 3)
            message = str(exc) if isinstance(exc, RestoreError) else "restore of snapshot %s: %s" % (self.snapshot["name"], exc)
            extra = {k: v for k, v in self.result.items() if k != "changed"}
            raise LifeboatError(message, changed=bool(self.done), done=self.done, **extra) from None
        self.result["duration"] = round(time.time() - started, 3)
        self.result["doc_counts"] = counts
        for entry in self.result["indices"]:
            entry["docs"] = counts.get(entry["target"])
            entry["shards"] = (self.result["recovery"].get(entry["target"]) or {}).get("primaries_total")
        return self.result

    def replace(self, existing):
        if not existing:
            return
        method = self.params["replace_method"]
        close_or_delete(self.client, self.server, existing, method)
        if method == "close":
            self.closed = existing
        self.done.append("%s existing indices %s (replace_method=%s)" % ("closed" if method == "close" else "deleted", ", ".join(existing), method))

    def start(self, sources, pattern, replacement, existing):
        name = self.snapshot["name"]
        path = "/_snapshot/%s/%s/_restore" % (es.path_segment(self.params["repository"]), es.path_segment(name))
        query = dict(self.server.master_timeout(self.client.request_timeout), wait_for_completion="false")
        targets = [entry["target"] for entry in self.result["indices"] if entry["source"] in sources]
        try:
            self.client.request("POST", path, params=query, body=restore_body(self.params, self.server, sources, pattern, replacement))
        except es.SearchError as exc:
            raise RestoreError("restore of snapshot %s could not start: %s%s" % (name, exc.reason or exc, self.start_hint(exc, existing))) from None
        self.done.append("started the restore of snapshot %s into %s" % (name, ", ".join(targets)))
        self.started = True

    def start_hint(self, exc, existing):
        """What to do about a restore that did not start; closed indices are opened again
        unless an earlier request already restores into them."""
        hint = ""
        if self.started:
            return "; restores already started go on in the cluster (see done): run again with replace=true once the cause is fixed"
        if "with same name already exists" in (exc.reason or ""):
            hint = "; set replace=true to overwrite existing indices"
        elif "shards" in (exc.reason or "") and self.closed:
            hint = "; the existing index has a different number of shards: use replace_method=delete"
        if self.closed:
            try:
                reopen(self.client, self.closed)
                hint += " (the indices closed for the restore were opened again)"
                self.done.pop()
            except es.SearchError as undo:
                hint += " (opening the closed indices again failed too: %s; open them with POST /%s/_open)" % (undo, ",".join(self.closed))
        elif existing:
            hint += "; the deleted indices are gone: restore them from this snapshot once the cause is fixed (replace is no longer needed)"
        return hint


def restore(module):
    params = module.params
    validate(params)
    es.check_libraries()
    client = es.Client.from_params(params)
    server = client.server()
    result = module.keep(dict(changed=False, server=server.as_dict()))
    if params["feature_states"] is not None and not server.feature_states:
        where = "%s %s" % (server.label, server.version)
        raise OptionError("feature_states", "feature_states: %s has no feature states (Elasticsearch 7.12 and later only); leave the option out" % where)
    snapshot = es.summary(choose_snapshot(module, client, server, params, result), params["repository"])
    result["snapshot"] = snapshot
    check_state(snapshot, params["partial"])
    _sources, mapping, existing = plan_targets(client, params, snapshot, result)
    result["changed"] = True
    if module.check_mode:
        return result
    return Restore(client, server, params, snapshot, result).run(restore_groups(params, mapping), sorted(mapping.values()), existing)


def main():
    module = LifeboatModule(
        specs=[_image.DECRYPTION_SPEC, _image.RESTORE_SPEC, _progress.PROGRESS_SPEC],
        **es.module_kwargs(
            dict(
                repository=dict(type="str", required=True),
                snapshot=dict(type="str"),
                indices=dict(type="list", elements="str", default=[]),
                rename_pattern=dict(type="str"),
                rename_replacement=dict(type="str"),
                rename=dict(type="dict", default={}),
                include_global_state=dict(type="bool", default=False),
                include_aliases=dict(type="bool", default=True),
                partial=dict(type="bool", default=False),
                index_settings=dict(type="dict", default={}),
                ignore_index_settings=dict(type="list", elements="str", default=[]),
                feature_states=dict(type="list", elements="str"),
                replace=dict(type="bool", default=False),
                replace_method=dict(type="str", choices=["close", "delete"], default="close"),
                wait=dict(type="bool", default=True),
                wait_timeout=dict(type="int", default=3600),
                image=dict(type="path"),
                component=dict(type="str", default="elasticsearch"),
                repository_location=dict(type="str"),
            ),
            required_together=[["rename_pattern", "rename_replacement"]],
            mutually_exclusive=[["rename", "rename_pattern"]],
        ),
    )
    module.run(restore)


if __name__ == "__main__":
    main()
