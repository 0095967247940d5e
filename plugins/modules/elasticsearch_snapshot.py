#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: elasticsearch_snapshot
short_description: Take, delete and prune Elasticsearch or OpenSearch snapshots
version_added: 0.1.0
description:
  - O(state=present) takes a snapshot into a registered repository and waits for it, up to
    O(wait_timeout) seconds, recording the progress (shards done of total). Only a snapshot
    that ends C(SUCCESS) succeeds; C(PARTIAL) and C(FAILED) fail the task with the per-shard
    reasons, and so does a timeout, with the snapshot's last known state (the snapshot is then
    aborted unless O(abort_on_timeout=false)).
  - Within a backup session (O(session)) the snapshot is a component of the node's image - its
    name, UUID, state, indices and sizes go into the manifest, the UUID as the component's
    consistency marker. With O(include_repository_files) the files of the repository are copied
    into the image as well, so the image can travel off-site and be restored elsewhere with
    M(lifeboat.backup.elasticsearch_restore).
  - O(retention) prunes old snapshots after a successful one (or alone, with O(state=pruned)), by
    count and age, always keeping the newest O(retention.min_count) successful snapshots, and by
    default only snapshots this collection made (they carry C(metadata.lifeboat.created_by)).
  - O(state=absent) deletes one snapshot.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._elasticsearch
  - lifeboat.backup._session
  - lifeboat.backup._progress
attributes:
  check_mode:
    support: full
    details:
      - Resolves the name, checks the repository and reports what would be taken and which snapshots
        retention would delete (counting the new one as successful); nothing is written.
  diff_mode:
    support: none
options:
  repository:
    description:
      - Name of the registered repository (see M(lifeboat.backup.elasticsearch_repository)).
    type: str
    required: true
  snapshot:
    description:
      - Snapshot name. Date math is resolved here, in UTC unless a zone is given, the way the
        server would, for example C(<nightly-{now/d}>) or C(<backup-{now{yyyy.MM.dd-HH.mm}}>), so
        the task knows the name at once.
      - When omitted with O(state=present) the name is generated - C(lifeboat-<backup id>) in a
        session, else C(lifeboat-<UTC time>).
      - Required with O(state=absent).
    type: str
  state:
    description:
      - V(present) takes the snapshot (then applies O(retention) if given), V(absent) deletes
        O(snapshot), V(pruned) only applies O(retention).
      - With V(present), an existing successful snapshot of the same name is left as it is
        (changed=false) - except within a session, which must capture now and therefore fails.
    type: str
    choices: [present, absent, pruned]
    default: present
  indices:
    description:
      - Indices, data streams and patterns to snapshot (C(-pattern) excludes). Default is all of them.
    type: list
    elements: str
    default: []
  ignore_unavailable:
    description:
      - Skip listed indices that do not exist instead of failing.
    type: bool
    default: false
  include_global_state:
    description:
      - Include the cluster state (templates, persistent settings, and in Elasticsearch the feature states).
    type: bool
    default: true
  partial:
    description:
      - Allow a snapshot of indices whose primary shards are not all available. Such a snapshot
        ends C(PARTIAL), which this module still reports as a failure (it is not a complete backup).
    type: bool
    default: false
  feature_states:
    description:
      - Elasticsearch 7.12 and later only - feature states to include (C(none) for none). Default
        is the server's (all, when O(include_global_state) is true).
    type: list
    elements: str
  metadata:
    description:
      - Your own metadata stored with the snapshot. The key C(lifeboat) is reserved - it marks the
        snapshot as made by this collection (collection version, session backup id and node).
    type: dict
    default: {}
  wait:
    description:
      - Wait for the snapshot to finish. With V(false) the task returns once the snapshot has
        started (not allowed with O(session) or O(retention)).
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the snapshot to finish.
    type: int
    default: 3600
  abort_on_timeout:
    description:
      - Abort (delete) the snapshot when O(wait_timeout) passes, so that it does not hold the
        repository. With V(false) it is left running; the task fails either way.
    type: bool
    default: true
  retention:
    description:
      - Which snapshots of O(repository) to delete, after a successful snapshot
        (O(state=present)) or alone (O(state=pruned)), in the collection's retention vocabulary
        (the restic C(forget) model, the same as M(lifeboat.backup.image_retention); see
        C(docs/operations.md)). Give at least one C(keep_*) rule, O(retention.keep_within) or
        O(retention.max_age).
      - Snapshots still running are never deleted. Unsuccessful ones (C(PARTIAL), C(FAILED))
        are counted apart from the successful ones, and deleted once a newer successful snapshot
        exists, or when older than O(retention.max_age).
    type: dict
    suboptions:
      keep_last:
        description:
          - Keep the newest N successful snapshots.
          - The alias C(max_count) is deprecated and will be removed in 1.0.0.
        type: int
        aliases: [max_count]
        version_added: 0.2.0
      keep_hourly:
        description:
          - Keep the newest successful snapshot of each of the last N hours that have one (UTC).
        type: int
        version_added: 0.2.0
      keep_daily:
        description:
          - Keep the newest successful snapshot of each of the last N days that have one (UTC).
        type: int
        version_added: 0.2.0
      keep_weekly:
        description:
          - Keep the newest successful snapshot of each of the last N ISO weeks that have one.
        type: int
        version_added: 0.2.0
      keep_monthly:
        description:
          - Keep the newest successful snapshot of each of the last N months that have one.
        type: int
        version_added: 0.2.0
      keep_yearly:
        description:
          - Keep the newest successful snapshot of each of the last N years that have one.
        type: int
        version_added: 0.2.0
      keep_within:
        description:
          - Keep every successful snapshot younger than this duration, for example C(2d).
        type: str
        version_added: 0.2.0
      max_age:
        description:
          - Delete snapshots older than this, for example C(30d), C(12h), C(2w), C(90m), C(1y), even
            when a C(keep_*) rule selects them. Given alone, every younger snapshot is kept.
        type: str
      min_count:
        description:
          - Always keep at least this many of the newest successful snapshots, whatever the other
            rules say. At least 1 - the newest successful snapshot is never deleted.
        type: int
        default: 1
      only_collection_snapshots:
        description:
          - Consider only snapshots made by this collection (metadata C(lifeboat.created_by)).
            Set to V(false) to prune every snapshot in the repository.
        type: bool
        default: true
      pattern:
        description:
          - Consider only snapshots whose name matches this shell pattern, for example C(nightly-*).
        type: str
  session:
    required: false
    description:
      - Work area of a backup session (RV(lifeboat.backup.backup_session#module:session.work_dir)). The
        snapshot is then recorded as a component of the node's image. Only with O(state=present).
  name:
    default: elasticsearch
  include_repository_files:
    description:
      - Copy the files of the repository (every snapshot in it - snapshots share files) into
        the image, as a tar member with a per-file SHA-256 index, so that the image holds
        everything needed to restore. Needs O(session) and an C(fs) repository whose location is
        readable where the task runs.
      - Keep the repository lean with O(retention), which runs before the copy; a repository per
        cluster and purpose keeps the copy small.
    type: bool
    default: false
  fingerprint:
    description:
      - Within a session, what a restore must reproduce, recorded for the restore drill and
        M(lifeboat.backup.elasticsearch_fingerprint) (C(docs/drills.md)), for every index of the
        snapshot whose name does not start with a dot.
      - C(full) - the document count, the aliases and a digest of every document's id and source
        (read once with a scroll), or above O(fingerprint_max_docs) the ids and source digests of
        a fixed sample of O(fingerprint_sample) documents. C(counts) - the counts and aliases only.
        C(none) - nothing.
      - The counts go into the manifest; digests and sample ids into the encrypted member
        C(fingerprint.json) of the component.
      - Taken right after the snapshot; the documents are counted before the snapshot and after
        the fingerprint, and a difference (the indices were written to, not quiesced) is recorded
        as a warning, because a restore will then not match the fingerprint exactly.
    type: str
    choices: [full, counts, none]
    default: full
    version_added: 0.2.0
  fingerprint_max_docs:
    description:
      - Indices with more documents than this are fingerprinted by a sample. 0 reads every index whole.
    type: int
    default: 100000
    version_added: 0.2.0
  fingerprint_sample:
    description:
      - Number of documents in the sample of a large index.
    type: int
    default: 1000
    version_added: 0.2.0
requirements:
  - cryptography (Python library, on the managed node) with O(include_repository_files) when the session encrypts.
  - zstandard (Python library, on the managed node) with O(include_repository_files) when the session compresses with zstd.
notes:
  - While the snapshot runs, the controller prints its progress (shards done of total, bytes,
    time left) every O(progress_interval) seconds; the history is also returned in
    RV(progress) and recorded in the component's details.
  - Concurrent snapshot or delete operations on the same repository while
    O(include_repository_files) copies it are not supported.
seealso:
  - module: lifeboat.backup.elasticsearch_repository
  - module: lifeboat.backup.elasticsearch_snapshot_info
  - module: lifeboat.backup.elasticsearch_restore
  - module: lifeboat.backup.backup_session
"""

EXAMPLES = r"""
- name: Nightly snapshot of the platform indices, keep two weeks (at least 3)
  lifeboat.backup.elasticsearch_snapshot:
    hosts: ["http://localhost:9200"]
    repository: backup
    snapshot: "<nightly-{now/d}>"
    indices: [audit*, documents*, stix*, extracts*]
    wait_timeout: 7200
    retention:
      max_age: 14d
      min_count: 3

- name: Snapshot as a component of this node's backup image, repository files included
  lifeboat.backup.elasticsearch_snapshot:
    session: "{{ backup.session.work_dir }}"
    repository: backup
    include_repository_files: true
  register: search_snapshot

- name: Delete one snapshot
  lifeboat.backup.elasticsearch_snapshot:
    repository: backup
    snapshot: nightly-2026.11.01
    state: absent

- name: What would retention delete?
  lifeboat.backup.elasticsearch_snapshot:
    repository: backup
    state: pruned
    retention:
      keep_daily: 7
      keep_weekly: 4
  check_mode: true
  register: would_prune
"""

RETURN = r"""
snapshot:
  description:
    - The snapshot (name, uuid, repository, state, indices, data_streams, include_global_state,
      start_time, end_time, duration_in_millis, shards, failures, metadata, version,
      created_by_collection). On a timeout, the last known state.
  returned: when a snapshot was taken, found or attempted
  type: dict
  sample:
    name: nightly-2026.11.22
    uuid: dEiLpf8EQWSo3JR9f2bMwA
    state: SUCCESS
    indices: [audit_v2, stix_v4]
    shards: {total: 4, successful: 4, failed: 0}
sizes:
  description: Bytes and files in the snapshot (total and incremental), and total bytes per index.
  returned: when the snapshot succeeded
  type: dict
  sample: {total_bytes: 1073741824, total_files: 130, incremental_bytes: 2048, incremental_files: 2, index_bytes: {stix_v4: 1073741824}}
progress:
  description: Progress samples while waiting (seconds elapsed, state, shards done/failed/total, bytes done/total), at most 60.
  returned: when waited
  type: list
  elements: dict
  sample: [{elapsed: 0.1, state: STARTED, shards_done: 2, shards_total: 4, shards_failed: 0, bytes_done: 1024, bytes_total: 4096}]
shard_failures:
  description: Per-shard failures of a PARTIAL or FAILED snapshot (index, shard_id, node_id, reason, status).
  returned: when the snapshot did not succeed
  type: list
  elements: dict
  sample: [{index: red, shard_id: 0, reason: primary shard is not allocated, status: INTERNAL_SERVER_ERROR}]
timed_out:
  description: Whether O(wait_timeout) passed before the snapshot finished.
  returned: when waited
  type: bool
  sample: false
aborted:
  description: Whether the snapshot was aborted after a timeout.
  returned: on a timeout
  type: bool
  sample: true
deleted:
  description: Snapshots deleted (or, in check mode, that would be), with the reason.
  returned: with state=absent, or when retention was applied
  type: list
  elements: dict
  sample: [{name: nightly-2026.10.01, uuid: xQWH3A86SxGQDnJWbEB3jg, state: SUCCESS, reason: older than max_age (51d > 30d)}]
kept:
  description: Snapshots retention considered and kept, with the reason.
  returned: when retention was applied
  type: list
  elements: dict
  sample: [{name: nightly-2026.11.22, uuid: dEiLpf8EQWSo3JR9f2bMwA, state: SUCCESS, reason: the newest successful item of its series (never removed)}]
component:
  description: Component name in the image.
  returned: with session
  type: str
  sample: elasticsearch
members:
  description: Image members written (repository files and their index, the fingerprint).
  returned: in a session with include_repository_files or a fingerprint, on success
  type: list
  elements: str
  sample: [elasticsearch/repository.tar.zst.age, elasticsearch/repository-index.jsonl.zst.age]
repository_files:
  description: What was copied into the image - location, file_count, total_bytes, stored_bytes, members.
  returned: with include_repository_files, on success
  type: dict
  sample: {location: /db-backup/elasticsearch, file_count: 120, total_bytes: 1073741824, stored_bytes: 1000000000}
server:
  description: Engine, version and cluster name of the cluster.
  returned: always
  type: dict
  sample: {engine: opensearch, version: 2.19.6, cluster_name: production}
fingerprint:
  description:
    - In a session with O(fingerprint) other than C(none) - the member written, the level, per index
      its document count, method (C(full), C(sample), C(counts)) and aliases, whether the indices
      kept their document count through the backup (C(stable)), and the seconds taken.
  returned: in a session, on success
  type: dict
  version_added: 0.2.0
  sample: {member: search/fingerprint.json.zst.age, level: full, indices: {stix-v4: {docs: 2000, method: full, aliases: [stix]}}, stable: true, seconds: 0.8}
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

import contextlib
import copy
import os
import socket
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _elasticsearch as es
from ansible_collections.lifeboat.backup.plugins.module_utils import _fingerprint, _image, _progress, _retention, _session, _tree
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule

# _status states of a snapshot still being written (ABORTED: being aborted).
RUNNING = ("IN_PROGRESS", "STARTED", "INIT", "WAITING", "ABORTED")


class SnapshotFailed(LifeboatError):
    """The snapshot did not succeed; ``details`` go to the result and the component record."""

    def __init__(self, message, details=None):
        super().__init__(message)
        self.details = details or {}


def entry_line(raw, reason):
    return {"name": raw.get("snapshot"), "uuid": raw.get("uuid"), "state": raw.get("state"), "start_time": raw.get("start_time"), "reason": reason}


def resolve_name(params, session):
    """(name, None) or (None, the reason the name is not usable)."""
    if params["snapshot"]:
        try:
            name = es.resolve_date_math(params["snapshot"])
        except ValueError as exc:
            return None, "snapshot: cannot resolve the date math name %r: %s" % (params["snapshot"], exc)
    else:
        name = es.generated_name(session.data.get("backup_id") if session else None)
    problem = es.validate_snapshot_name(name)
    if problem:
        return None, "snapshot: the name %r %s" % (name, problem)
    return name, None


def create_body(params, server, session):
    marker = {}
    if session:
        marker = {"backup_id": session.data.get("backup_id"), "node": session.data.get("node")}
    metadata = dict(params["metadata"] or {})
    metadata[es.OWNER_KEY] = es.owner_metadata(dict(marker, host=socket.gethostname()))
    body = {
        "ignore_unavailable": params["ignore_unavailable"],
        "include_global_state": params["include_global_state"],
        "partial": params["partial"],
        "metadata": metadata,
    }
    if params["indices"]:
        body["indices"] = ",".join(params["indices"])
    if params["feature_states"] is not None:
        body["feature_states"] = params["feature_states"]
    return body


def wait_for(client, repository, name, poller, samples):
    """Poll until the snapshot ends or the poller expires. Returns (raw snapshot record, last _status).

    Each round asks ``_status`` only (cheap while the snapshot runs, and it carries the
    progress); once it no longer says running, ``GET _snapshot`` gives the real final state
    (``_status`` reports a PARTIAL snapshot as SUCCESS)."""
    status = None
    reporter = _progress.reporter()
    reporter.phase("snapshot", item=name)
    while True:
        current = es.snapshot_status(client, repository, name)
        if current:
            status = current
            samples.append(es.progress(current, poller.elapsed))
            sample = samples[-1]
            reporter.shards(sample["shards_done"], sample["shards_total"], sample["bytes_done"], sample["bytes_total"])
        if current and current.get("state") not in RUNNING:
            raw = es.get_snapshot(client, repository, name)
            if raw is not None and raw.get("state") in es.FINISHED_STATES:
                return raw, status
        if poller.expired:
            return es.get_snapshot(client, repository, name), status
        poller.pause()


def timed_out(client, server, params, name, raw, samples, result):
    """The SnapshotFailed for a snapshot still running after wait_timeout (aborted unless told not to)."""
    repository = params["repository"]
    last = es.summary(raw or {"snapshot": name, "state": "unknown"}, repository)
    last_progress = samples[-1] if samples else {}
    details = {"snapshot": last, "last_progress": last_progress, "aborted": False}
    message = "snapshot %s did not finish within %d s: last known state %s, %s of %s shards done" % (
        name,
        params["wait_timeout"],
        last["state"],
        last_progress.get("shards_done", "?"),
        last_progress.get("shards_total", "?"),
    )
    if params["abort_on_timeout"]:
        try:
            es.delete_snapshots(client, server, repository, [name], client.request_timeout)
            details["aborted"] = True
            message += "; it was aborted (raise wait_timeout, or set abort_on_timeout=false to let it run on)"
        except es.SearchError as exc:
            message += "; aborting it failed: %s" % exc
    else:
        message += "; it is still running (abort_on_timeout=false)"
    result["aborted"] = details["aborted"]
    return SnapshotFailed(message, details)


def take_snapshot(client, server, params, name, body, result):
    """Start the snapshot and wait for it. Returns the finished raw record; raises SnapshotFailed."""
    repository = params["repository"]
    path = "/_snapshot/%s/%s" % (es.path_segment(repository), es.path_segment(name))
    query = dict(server.master_timeout(client.request_timeout), wait_for_completion="false")
    try:
        client.request("PUT", path, params=query, body=body)
    except es.SearchError as exc:
        hint = ""
        if exc.error_type == "concurrent_snapshot_execution_exception":
            hint = "; another snapshot or delete is running on this repository: wait for it, or raise the server's snapshot.max_concurrent_operations"
        elif "primary shard" in (exc.reason or ""):
            hint = (
                "; some indices are red (primary shards unassigned): fix them, leave them out with indices, "
                "or allow a PARTIAL snapshot with partial=true (which still fails this task)"
            )
        raise SnapshotFailed(
            "snapshot %s could not start: %s%s" % (name, exc.reason or exc, hint), {"snapshot": {"name": name, "repository": repository, "state": None}}
        ) from None
    if not params["wait"]:
        return es.get_snapshot(client, repository, name) or {"snapshot": name, "state": "IN_PROGRESS"}
    samples = []
    poller = es.Poller(params["wait_timeout"])
    raw, status = wait_for(client, repository, name, poller, samples)
    result["progress"] = es.keep_samples(samples)
    result["sizes"] = es.sizes(status) if (raw or {}).get("state") == "SUCCESS" else {}
    state = (raw or {}).get("state")
    result["timed_out"] = state not in es.FINISHED_STATES
    if result["timed_out"]:
        raise timed_out(client, server, params, name, raw, samples, result)
    if state != "SUCCESS":
        snap = es.summary(raw, repository)
        result["shard_failures"] = snap["failures"]
        shards = snap["shards"]
        reasons = es.shard_failure_text(snap["failures"]) or (raw.get("reason") or "no reason given")
        raise SnapshotFailed(
            "snapshot %s ended %s: %s of %s shards failed: %s" % (name, state, shards.get("failed", "?"), shards.get("total", "?"), reasons),
            {"snapshot": snap, "shard_failures": snap["failures"]},
        )
    return raw


def repository_entries(location):
    """The repository tree as tar entries with names relative to ``location``."""

    def fail(exc):
        raise exc

    for dirpath, dirnames, filenames in os.walk(location, onerror=fail):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, location)
        if rel_dir != ".":
            entry = _tree.Entry(dirpath, os.lstat(dirpath))
            entry.arcname = rel_dir
            yield entry
        for filename in sorted(filenames):
            path = os.path.join(dirpath, filename)
            entry = _tree.Entry(path, os.lstat(path))
            entry.arcname = os.path.normpath(os.path.join(rel_dir, filename))
            yield entry


def copy_repository(component, location, uuid):
    """Stream the repository files into the image; check the copy holds snapshot ``uuid``."""
    index = _tree.IndexBuffer()
    totals = _tree.Totals()
    root_files = []
    with component.appender() as appender:
        with component.member(appender, "repository.tar", "application/x-tar", threads=-1) as data:
            tar = _tree.TarWriter(data)
            for entry in repository_entries(location):
                record, warning = tar.add(entry)
                if warning:
                    raise _tree.TreeError("%s (the repository changed while it was copied: another snapshot or delete ran)" % warning)
                record["path"] = entry.arcname
                totals.add(entry)
                index.add(record)
                if "/" not in entry.arcname:
                    root_files.append(entry.arcname)
            tar.close()
            generation, root = es.root_index(location, root_files)
            listed = [s.get("uuid") for s in (root or {}).get("snapshots") or []]
            if uuid not in listed:
                raise _tree.TreeError(
                    "the copied repository does not list snapshot %s (root index-%s): copy it again when no other snapshot runs" % (uuid, generation)
                )
        component.add_member_record(data.record)
        with component.member(appender, "repository-index.jsonl", "application/x-ndjson") as index_member:
            index.write_to(index_member)
        component.add_member_record(index_member.record)
    return {
        "location": location,
        "root_generation": generation,
        "data_member": data.record["name"],
        "index_member": index_member.record["name"],
        "members": [data.record["name"], index_member.record["name"]],
        "file_count": totals.file_count,
        "total_bytes": totals.total_bytes,
        "stored_bytes": data.record["stored_size"] + index_member.record["stored_size"],
    }


def readable_location(client, repository, repo_record):
    if repo_record.get("type") != "fs":
        raise SnapshotFailed("include_repository_files needs an fs repository; %s is of type %s" % (repository, repo_record.get("type")))
    location = es.repository_location(client, repository, repo_record)
    if not location or not os.path.isdir(location) or not os.access(location, os.R_OK | os.X_OK):
        raise SnapshotFailed(
            "include_repository_files: the location %s of repository %s is not a readable directory on %s; run this task on a node that mounts it"
            % (location, repository, socket.gethostname())
        )
    return location


def apply_retention(client, server, params, result, check_mode, pretend=None):
    try:
        policy = _retention.parse_policy(params["retention"])
    except _retention.PolicyError as exc:
        raise SnapshotFailed(exc.msg) from None
    snapshots = es.get_snapshots(client, params["repository"])
    if pretend:
        snapshots = snapshots + [pretend]
    delete, keep = es.plan_retention(snapshots, time.time(), policy, only_own=params["retention"]["only_collection_snapshots"])
    result["deleted"] = [entry_line(raw, reason) for raw, reason in delete]
    result["kept"] = [entry_line(raw, reason) for raw, reason in keep]
    if delete:
        result["changed"] = True
        if not check_mode:
            es.delete_snapshots(
                client, server, params["repository"], [raw["snapshot"] for raw, _r in delete], max(params["wait_timeout"], client.request_timeout)
            )


def retention_options():
    """The collection's retention vocabulary, plus what only snapshots need."""
    options = copy.deepcopy(_retention.POLICY_OPTIONS)
    options["keep_last"].update(aliases=["max_count"], deprecated_aliases=[dict(name="max_count", version="1.0.0", collection_name="lifeboat.backup")])
    options["only_collection_snapshots"] = dict(type="bool", default=True)
    return options


def validate(params):
    """Options that cannot work together; raises OptionError naming them."""
    retention = params["retention"]
    if retention is not None:
        _retention.parse_policy(retention)  # PolicyError (an OptionError) names the key at fault
    combinations = (
        (params["state"] == "absent" and not params["snapshot"], "snapshot", "state=absent needs snapshot: the name of the snapshot to delete"),
        (params["state"] == "pruned" and retention is None, "retention", "state=pruned needs retention (keep_last, keep_daily ..., keep_within or max_age)"),
        (params["session"] and params["state"] != "present", "session", "session is only used with state=present (a snapshot captured into the image)"),
        (
            not params["wait"] and (params["session"] or retention is not None),
            "wait",
            "wait=false cannot be combined with session or retention: both need the finished snapshot",
        ),
        (
            params["include_repository_files"] and not params["session"],
            "include_repository_files",
            "include_repository_files needs session: the files are copied into the session's image",
        ),
        (params["wait_timeout"] < 1, "wait_timeout", "wait_timeout must be at least 1 second"),
        (
            es.OWNER_KEY in (params["metadata"] or {}),
            "metadata",
            "metadata: the key %r is reserved for the collection's own marker; use another key" % es.OWNER_KEY,
        ),
    )
    for wrong, option, message in combinations:
        if wrong:
            raise OptionError(option, message)


def state_absent(module, client, server, params, result):
    try:
        name = es.resolve_date_math(params["snapshot"])
    except ValueError as exc:
        raise OptionError("snapshot", "snapshot: %s" % exc) from None
    raw = es.get_snapshot(client, params["repository"], name)
    if raw is None:
        result["deleted"] = []
        return result
    result.update(changed=True, deleted=[entry_line(raw, "requested (state=absent)")], snapshot=es.summary(raw, params["repository"]))
    if not module.check_mode:
        es.delete_snapshots(client, server, params["repository"], [name], max(params["wait_timeout"], client.request_timeout))
    return result


def state_pruned(module, client, server, params, result):
    if not es.get_repository(client, params["repository"]):
        raise SnapshotFailed("repository %s is not registered" % params["repository"])
    apply_retention(client, server, params, result, module.check_mode)
    return result


def snapshot_targets(params):
    """The multi-target expression of the snapshot's indices, dot-names left out."""
    patterns = [es.path_segment(p) for p in params["indices"]] or ["*"]
    return ",".join(patterns + ["-.*"])


def total_docs(client, params):
    """Documents in the snapshot's indices (open ones), or None when it cannot be told."""
    try:
        reply = client.request("GET", "/%s/_count" % snapshot_targets(params), params={"expand_wildcards": "open", "ignore_unavailable": "true"})
        return int(reply.data["count"])
    except (es.SearchError, KeyError, TypeError, ValueError):
        return None


def take_fingerprint(client, params, snapshot):
    """{index: fingerprint} of the snapshot's indices (dot-names left out)."""
    indices = [i for i in snapshot.get("indices") or [] if not i.startswith(".")]
    taken = {}
    for index in indices:
        taken[index] = _fingerprint.es_index(client, index, params["fingerprint"], params["fingerprint_max_docs"], params["fingerprint_sample"])
    return taken


def write_fingerprint(component, params, taken, stable, seconds):
    """The fingerprint member, and the manifest's summary of it (counts, no digests)."""
    data = _fingerprint.document("elasticsearch", {"level": params["fingerprint"], "indices": taken, "stable": stable})
    with component.appender() as appender:
        with component.member(appender, _fingerprint.MEMBER, _fingerprint.MEDIA_TYPE) as out:
            out.write(data)
        component.add_member_record(out.record)
    return {
        "member": out.record["name"],
        "level": params["fingerprint"],
        "indices": {name: {"docs": entry["docs"], "method": entry["method"], "aliases": entry["aliases"]} for name, entry in taken.items()},
        "stable": stable,
        "seconds": seconds,
    }


def fail_component(component, error, details=None):
    """``error``, recorded with ``details`` in the component first (when there is one)."""
    if component is not None:
        component.fail(str(error), details)
    return error


class Capture:
    """state=present: one new snapshot, waited for, optionally copied into the session's image."""

    def __init__(self, module, client, server, session, component, result):
        self.module = module
        self.params = module.params
        self.repository = module.params["repository"]
        self.client = client
        self.server = server
        self.session = session
        self.component = component
        self.result = result
        self.docs_before = None

    def inspect(self):
        """Name, repository record and readable location (when copied); the existing snapshot."""
        name, problem = resolve_name(self.params, self.session)
        if problem:
            raise OptionError("snapshot", problem)
        self.name = name
        self.repo_record = es.get_repository(self.client, self.repository)
        if self.repo_record is None:
            raise SnapshotFailed("repository %s is not registered; register it first with lifeboat.backup.elasticsearch_repository" % self.repository)
        self.location = None
        if self.params["include_repository_files"]:
            self.location = readable_location(self.client, self.repository, self.repo_record)
        return es.get_snapshot(self.client, self.repository, name)

    def already_there(self, existing):
        """A snapshot of that name exists: fine when it succeeded and no session wants a new one."""
        self.result["snapshot"] = es.summary(existing, self.repository)
        if self.session:
            raise SnapshotFailed(
                "snapshot %s already exists in repository %s (started %s); a backup session captures a new one: "
                "give another name, or leave snapshot out to get a generated one" % (self.name, self.repository, existing.get("start_time"))
            )
        if existing.get("state") != "SUCCESS":
            raise SnapshotFailed(
                "snapshot %s exists in repository %s in state %s; delete it (state=absent) or use another name"
                % (self.name, self.repository, existing.get("state"))
            )
        if self.params["retention"] is not None:
            apply_retention(self.client, self.server, self.params, self.result, self.module.check_mode)
        return self.result

    def plan(self, body):
        """Check mode: what would be taken, and what retention would delete then."""
        self.result["snapshot"] = {"name": self.name, "repository": self.repository, "state": None, "metadata": body["metadata"]}
        if self.params["retention"] is not None:
            pretend = {"snapshot": self.name, "uuid": None, "state": "SUCCESS", "start_time_in_millis": int(time.time() * 1000), "metadata": body["metadata"]}
            apply_retention(self.client, self.server, self.params, self.result, True, pretend=pretend)
        return self.result

    def take(self, body):
        """Start the snapshot and wait for it; failures are recorded with what is known."""
        result, name, repository = self.result, self.name, self.repository
        try:
            with self.session.heartbeat() if self.session else contextlib.nullcontext():
                return take_snapshot(self.client, self.server, self.params, name, body, result)
        except SnapshotFailed as exc:
            result.update({k: v for k, v in exc.details.items() if k in ("snapshot", "shard_failures")})
            raise fail_component(self.component, exc, dict(exc.details, repository=repository, progress=result.get("progress", []))) from None
        except es.SearchError as exc:
            result["snapshot"] = {"name": name, "repository": repository, "state": "unknown"}
            details = {"repository": repository, "snapshot": result["snapshot"], "progress": result.get("progress", [])}
            raise fail_component(self.component, SnapshotFailed("snapshot %s: %s" % (name, exc)), details) from None

    def retention_after(self):
        """Retention before the copy (what it deletes need not travel in the image); its
        failure does not undo the snapshot: the reason is returned, and reported at the end."""
        if self.params["retention"] is None:
            return None
        try:
            apply_retention(self.client, self.server, self.params, self.result, False)
        except (es.SearchError, SnapshotFailed) as exc:
            return "snapshot %s succeeded, but retention failed: %s" % (self.name, exc)
        return None

    def record(self, snapshot, started, retention_error):
        """Record the snapshot (and copy the repository files) in the session component."""
        result, server = self.result, self.server
        details = {
            "engine": server.engine,
            "server_version": server.version,
            "cluster_name": server.cluster_name,
            "repository": self.repository,
            "repository_type": self.repo_record.get("type"),
            "repository_settings": self.repo_record.get("settings") or {},
            "snapshot": snapshot,
            "sizes": result["sizes"],
            "progress": result.get("progress", []),
            "retention_deleted": [d["name"] for d in result.get("deleted", [])],
            "repository_files": None,
        }
        if self.params["include_repository_files"]:
            try:
                with self.session.heartbeat():
                    copied = copy_repository(self.component, self.location, snapshot["uuid"])
            except (OSError, LifeboatError, ValueError) as exc:
                message = "snapshot %s succeeded, but copying repository %s into the image failed: %s" % (
                    self.name,
                    self.location,
                    getattr(exc, "strerror", None) or exc,
                )
                raise fail_component(self.component, SnapshotFailed(message), details) from None
            details["repository_files"] = copied
            result["members"] = copied["members"]
            result["repository_files"] = copied
        if self.params["fingerprint"] != "none":
            details["fingerprint"] = self.fingerprint(snapshot, details)
            result["fingerprint"] = details["fingerprint"]
            result["members"] = result.get("members", []) + [details["fingerprint"]["member"]]
        if retention_error:
            self.component.warn(retention_error)
        self.component.marker("snapshot_uuid", snapshot["uuid"])
        details["duration"] = round(time.time() - started, 3)
        self.component.succeed(details)

    def fingerprint(self, snapshot, details):
        """Fingerprint the snapshot's indices and write the member; a failure fails the component."""
        started = time.time()
        try:
            with self.session.heartbeat():
                taken = take_fingerprint(self.client, self.params, snapshot)
                after = total_docs(self.client, self.params)
                stable = self.docs_before is not None and after == self.docs_before
                if not stable:
                    self.component.warn(
                        "the snapshot's indices held %s documents before the snapshot and %s after its fingerprint: they were written to "
                        "meanwhile (quiesce the platform), so a restore will not match the fingerprint exactly" % (self.docs_before, after)
                    )
                return write_fingerprint(self.component, self.params, taken, stable, round(time.time() - started, 3))
        except (OSError, LifeboatError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            message = "snapshot %s succeeded, but its fingerprint failed: %s (fingerprint=none leaves it out)" % (self.name, reason)
            raise fail_component(self.component, SnapshotFailed(message), details) from None

    def run(self):
        existing = self.inspect()
        if existing is not None:
            return self.already_there(existing)
        self.result["changed"] = True
        body = create_body(self.params, self.server, self.session)
        if self.module.check_mode:
            return self.plan(body)
        started = time.time()
        self.docs_before = total_docs(self.client, self.params) if self.session and self.params["fingerprint"] != "none" else None
        snapshot = es.summary(self.take(body), self.repository)
        self.result["snapshot"] = snapshot
        if not self.params["wait"]:
            return self.result
        retention_error = self.retention_after()
        if self.session:
            self.record(snapshot, started, retention_error)
        if retention_error:
            # The snapshot itself is good (and recorded); say what retention could not do.
            raise SnapshotFailed(retention_error)
        return self.result


def snapshot_module(module):
    params = module.params
    validate(params)
    es.check_libraries()
    session = component = None
    if params["session"]:
        session = module.open_session(params["session"], writes_members=params["include_repository_files"] or params["fingerprint"] != "none")
        if not module.check_mode:
            # Recorded at once, so that a failure from here on (the server down included) is in the manifest.
            component = module.start_component(session, params["name"], "elasticsearch")
    result = module.keep(dict(changed=False))
    if session:
        result["component"] = _image.safe_name(params["name"])
    client = es.Client.from_params(params)
    server = client.server()
    result["server"] = server.as_dict()
    if params["feature_states"] is not None and not server.feature_states:
        where = "%s %s" % (server.label, server.version)
        raise OptionError("feature_states", "feature_states: %s has no feature states (Elasticsearch 7.12 and later only); leave the option out" % where)
    if params["state"] == "absent":
        return state_absent(module, client, server, params, result)
    if params["state"] == "pruned":
        return state_pruned(module, client, server, params, result)
    return Capture(module, client, server, session, component, result).run()


def main():
    module = LifeboatModule(
        **es.module_kwargs(
            dict(
                repository=dict(type="str", required=True),
                snapshot=dict(type="str"),
                state=dict(type="str", choices=["present", "absent", "pruned"], default="present"),
                indices=dict(type="list", elements="str", default=[]),
                ignore_unavailable=dict(type="bool", default=False),
                include_global_state=dict(type="bool", default=True),
                partial=dict(type="bool", default=False),
                feature_states=dict(type="list", elements="str"),
                metadata=dict(type="dict", default={}),
                wait=dict(type="bool", default=True),
                wait_timeout=dict(type="int", default=3600),
                abort_on_timeout=dict(type="bool", default=True),
                retention=dict(type="dict", options=retention_options()),
                include_repository_files=dict(type="bool", default=False),
                fingerprint=dict(type="str", choices=list(_fingerprint.LEVELS), default="full"),
                fingerprint_max_docs=dict(type="int", default=100000),
                fingerprint_sample=dict(type="int", default=1000),
                **_session.component_spec("elasticsearch", required=False),
            )
        ),
        specs=[_progress.PROGRESS_SPEC],
    )
    module.run(snapshot_module)


if __name__ == "__main__":
    main()
