#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: elasticsearch_snapshot_info
short_description: List Elasticsearch or OpenSearch snapshot repositories and snapshots
version_added: 0.1.0
description:
  - Lists the registered snapshot repositories and their snapshots, oldest first, with state,
    indices, shard counts, failures and metadata, and optionally their sizes.
  - O(query) filters or reshapes the result with a JMESPath expression, for example to find the
    newest successful snapshot.
  - Read-only - never changes anything and never reports a change.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._attributes.info_module
  - lifeboat.backup._elasticsearch
options:
  repository:
    description:
      - Repositories to list (names or C(*) patterns). Default is every registered repository.
      - A name without a pattern that is not registered is an error.
    type: list
    elements: str
    default: []
  snapshot:
    description:
      - Snapshots to list, by name, C(*) pattern or date math (C(<nightly-{now/d}>)). Default is all.
    type: list
    elements: str
    default: ["_all"]
  verbose:
    description:
      - Full details. V(false) lists only name, UUID, state and indices, which is much faster on
        repositories with many snapshots (and drops metadata, so C(created_by_collection) is false and
        O(only_collection_snapshots) finds nothing).
    type: bool
    default: true
  sizes:
    description:
      - Add each snapshot's sizes (total and incremental bytes and files, and bytes per index) from
        the C(_status) API. This reads the repository and takes a while on big ones.
    type: bool
    default: false
  only_collection_snapshots:
    description:
      - List only snapshots made by this collection (metadata C(lifeboat.created_by)).
    type: bool
    default: false
  query:
    description:
      - JMESPath expression applied to C({server, repositories, snapshots}); the answer is
        returned in RV(query_result).
    type: str
requirements:
  - jmespath (Python library, on the managed node) when O(query) is used.
seealso:
  - module: lifeboat.backup.elasticsearch_snapshot
  - module: lifeboat.backup.elasticsearch_restore
  - name: JMESPath
    description: The query language of O(query).
    link: https://jmespath.org/
"""

EXAMPLES = r"""
- name: Everything in the backup repository
  lifeboat.backup.elasticsearch_snapshot_info:
    repository: [backup]
  register: es_snapshots

- name: Newest successful snapshot made by this collection
  lifeboat.backup.elasticsearch_snapshot_info:
    repository: [backup]
    only_collection_snapshots: true
    query: "snapshots[?state=='SUCCESS'] | [-1]"
  register: newest

- name: Restore it
  lifeboat.backup.elasticsearch_restore:
    repository: backup
    snapshot: "{{ newest.query_result.name }}"

- name: Names of failed or partial snapshots, with sizes
  lifeboat.backup.elasticsearch_snapshot_info:
    sizes: true
    query: "snapshots[?state!='SUCCESS'].{name: name, state: state, bytes: sizes.total_bytes}"
"""

RETURN = r"""
repositories:
  description: The repositories listed (name, type, settings, and for fs repositories the absolute location).
  returned: always
  type: list
  elements: dict
  sample: [{name: backup, type: fs, settings: {location: /db-backup/elasticsearch}, location: /db-backup/elasticsearch}]
snapshots:
  description:
    - The snapshots, oldest first (name, uuid, repository, state, indices, data_streams,
      include_global_state, start_time, end_time, start_time_in_millis, end_time_in_millis,
      duration_in_millis, shards, failures, metadata, version, created_by_collection; sizes
      with O(sizes)).
  returned: always
  type: list
  elements: dict
  sample:
    - name: nightly-2026.11.22
      uuid: dEiLpf8EQWSo3JR9f2bMwA
      repository: backup
      state: SUCCESS
      indices: [audit_v2, stix_v4]
      shards: {total: 4, successful: 4, failed: 0}
      created_by_collection: true
query_result:
  description: What O(query) selected.
  returned: when query is given
  type: raw
  sample: {name: nightly-2026.11.22, state: SUCCESS}
server:
  description: Engine, version and cluster name of the cluster.
  returned: always
  type: dict
  sample: {engine: elasticsearch, version: 8.19.21, cluster_name: production}
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

from ansible_collections.lifeboat.backup.plugins.module_utils import _elasticsearch as es
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule


def select_repositories(client, wanted):
    registered = es.list_repositories(client)
    if not wanted:
        return registered
    chosen = {}
    for pattern in wanted:
        if "*" in pattern or "?" in pattern:
            chosen.update({name: repo for name, repo in registered.items() if fnmatch.fnmatchcase(name, pattern)})
        elif pattern in registered:
            chosen[pattern] = registered[pattern]
        else:
            raise es.SearchError("repository %s is not registered (registered: %s)" % (pattern, ", ".join(sorted(registered)) or "none"))
    return chosen


def list_snapshots(client, params, repositories, names):
    """(repository entries, snapshot summaries oldest first) of the selected repositories."""
    entries = []
    snapshots = []
    for name, repo in sorted(repositories.items()):
        entry = {"name": name, "type": repo.get("type"), "settings": repo.get("settings") or {}}
        if repo.get("type") == "fs":
            entry["location"] = es.repository_location(client, name, repo)
        entries.append(entry)
        for raw in es.get_snapshots(client, name, names, verbose=params["verbose"]):
            if params["only_collection_snapshots"] and not es.is_own(raw):
                continue
            snapshot = es.summary(raw, name)
            if params["sizes"] and raw.get("state") in es.FINISHED_STATES:
                snapshot["sizes"] = es.sizes(es.snapshot_status(client, name, raw["snapshot"]))
            snapshots.append((raw.get("start_time_in_millis") or 0, name, snapshot))
    return entries, [s for _t, _r, s in sorted(snapshots, key=lambda item: (item[0], item[1]))]


def describe(module):
    params = module.params
    if params["only_collection_snapshots"] and not params["verbose"]:
        raise OptionError(
            "only_collection_snapshots",
            "only_collection_snapshots needs verbose=true: the collection's marker is in the snapshot metadata, which verbose=false omits",
        )
    es.check_libraries(jmespath_needed=bool(params["query"]))
    client = es.Client.from_params(params)
    result = module.keep(dict(changed=False, server=client.server().as_dict(), repositories=[], snapshots=[]))
    try:
        names = [es.resolve_date_math(n) for n in params["snapshot"]] or ["_all"]
    except ValueError as exc:
        raise OptionError("snapshot", "snapshot: %s" % exc) from None
    result["repositories"], result["snapshots"] = list_snapshots(client, params, select_repositories(client, params["repository"]), names)
    if params["query"]:
        try:
            result["query_result"] = es.jmespath_search(
                params["query"], {"server": result["server"], "repositories": result["repositories"], "snapshots": result["snapshots"]}
            )
        except ValueError as exc:
            raise OptionError("query", str(exc)) from None
    return result


def main():
    module = LifeboatModule(
        **es.module_kwargs(
            dict(
                repository=dict(type="list", elements="str", default=[]),
                snapshot=dict(type="list", elements="str", default=["_all"]),
                verbose=dict(type="bool", default=True),
                sizes=dict(type="bool", default=False),
                only_collection_snapshots=dict(type="bool", default=False),
                query=dict(type="str"),
            )
        )
    )
    module.run(describe)


if __name__ == "__main__":
    main()
