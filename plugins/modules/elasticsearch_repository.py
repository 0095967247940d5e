#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: elasticsearch_repository
short_description: Register and verify an Elasticsearch or OpenSearch snapshot repository
version_added: 0.1.0
description:
  - Ensures a snapshot repository is registered with exactly the given settings (an C(fs)
    repository by default), and verifies it with the C(_verify) API so that every node can
    write to it.
  - Idempotent - the repository is written only when its type or settings differ; the diff
    shows the settings before and after.
  - For an C(fs) repository the location must lie under C(path.repo) on every node. The module
    checks that first (also in check mode) and, when it is not, fails with a message that says
    which setting to add to which file, as the operator would do by hand.
  - When the new registration fails verification it is taken back (a new repository is
    unregistered, a changed one gets its previous settings again), so a failed run leaves the
    cluster as it was.
  - O(state=absent) unregisters the repository. The snapshot files stay on disk.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._elasticsearch
attributes:
  check_mode:
    support: full
    details: Reports whether the repository would be registered, changed or removed; the path.repo check runs, nothing is written.
  diff_mode:
    support: full
    details: Type and settings before and after.
options:
  name:
    description:
      - Name of the repository.
    type: str
    required: true
  state:
    description:
      - V(present) registers (or updates) and verifies the repository, V(absent) unregisters it.
    type: str
    choices: [present, absent]
    default: present
  type:
    description:
      - Repository type. C(fs) is built in; other types (C(s3), C(azure), C(gcs), C(url), ...)
        need their plugin on every node and take their options in O(settings).
    type: str
    default: fs
  location:
    description:
      - Directory of an C(fs) repository, as seen by the nodes. Must be under C(path.repo) on
        every node; a relative location is resolved against the first C(path.repo) entry.
      - Required for O(type=fs) with O(state=present).
    type: str
  compress:
    description:
      - Compress the metadata files of the repository (the data files are compressed by Lucene already).
    type: bool
  chunk_size:
    description:
      - Split big files into chunks of this size, for example C(1gb).
    type: str
  max_snapshot_bytes_per_sec:
    description:
      - Throttle for writing snapshots, per node, for example C(40mb); C(0) means no limit.
    type: str
  max_restore_bytes_per_sec:
    description:
      - Throttle for restores, per node; C(0) means no limit.
    type: str
  readonly:
    description:
      - Register the repository read-only, for example on a second cluster that restores
        snapshots written by another one. Only one cluster may write to a repository.
    type: bool
  settings:
    description:
      - More repository settings, merged with the options above (which win).
    type: dict
    default: {}
  verify:
    description:
      - Run C(POST _snapshot/<name>/_verify) after registering, and also when nothing changed.
    type: bool
    default: true
seealso:
  - module: lifeboat.backup.elasticsearch_snapshot
  - module: lifeboat.backup.elasticsearch_restore
  - name: Elasticsearch shared file system repository
    description: path.repo and the fs repository settings.
    link: https://www.elastic.co/guide/en/elasticsearch/reference/current/snapshots-filesystem-repository.html
"""

EXAMPLES = r"""
- name: Register the backup repository (path.repo must already list /db-backup/elasticsearch)
  lifeboat.backup.elasticsearch_repository:
    hosts: ["http://localhost:9200"]
    name: backup
    location: /db-backup/elasticsearch

- name: Same, with credentials and a throttle, on an HTTPS cluster
  lifeboat.backup.elasticsearch_repository:
    hosts: ["https://es1.example.com:9200", "https://es2.example.com:9200"]
    username: backup
    password: "{{ vault_es_backup_password }}"
    ca_path: /etc/pki/es-ca.pem
    name: backup
    location: /db-backup/elasticsearch
    max_snapshot_bytes_per_sec: 100mb

- name: Another cluster reads the same repository, read-only
  lifeboat.backup.elasticsearch_repository:
    name: backup
    location: /db-backup/elasticsearch
    readonly: true

- name: Unregister (the files stay)
  lifeboat.backup.elasticsearch_repository:
    name: old-backup
    state: absent
"""

RETURN = r"""
name:
  description: Repository name.
  returned: always
  type: str
  sample: backup
repository:
  description: Type and settings of the repository as registered now (after the change; as it would be in check mode).
  returned: when state=present
  type: dict
  sample: {type: fs, settings: {location: /db-backup/elasticsearch, compress: "true"}}
location:
  description: Absolute location of an fs repository (a relative one resolved against path.repo).
  returned: when state=present and type=fs
  type: str
  sample: /db-backup/elasticsearch
verified_nodes:
  description: Nodes that verified the repository (id and name).
  returned: when verify is true, state=present and not check mode
  type: list
  elements: dict
  sample: [{id: YPKfl6c3Qz6DX3inqizWDA, name: node-1}]
server:
  description: Engine, version and cluster name of the cluster.
  returned: always
  type: dict
  sample: {engine: elasticsearch, version: 7.17.29, cluster_name: production}
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

import posixpath

from ansible_collections.lifeboat.backup.plugins.module_utils import _elasticsearch as es
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule

PATH_REPO_REJECTED = "doesn't match any of the locations specified by path.repo"


def as_setting(value):
    """Repository settings come back as strings: compare in that form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def desired_settings(params):
    settings = {k: as_setting(v) for k, v in (params["settings"] or {}).items() if v is not None}
    for key in ("location", "compress", "chunk_size", "max_snapshot_bytes_per_sec", "max_restore_bytes_per_sec", "readonly"):
        if params[key] is not None:
            settings[key] = as_setting(params[key])
    return settings


def normalized(repository):
    if not repository:
        return None
    settings = {k: as_setting(v) for k, v in (repository.get("settings") or {}).items()}
    if repository.get("type") == "fs" and "location" in settings:
        settings["location"] = posixpath.normpath(settings["location"])
    return {"type": repository.get("type"), "settings": settings}


def put_repository(client, server, name, repository):
    client.request(
        "PUT",
        "/_snapshot/%s" % es.path_segment(name),
        params=dict(server.master_timeout(client.request_timeout), verify="false"),
        body=repository,
        idempotent=True,
    )


def verify_repository(client, name):
    data = client.request("POST", "/_snapshot/%s/_verify" % es.path_segment(name), idempotent=True).data or {}
    return [{"id": node_id, "name": node.get("name")} for node_id, node in sorted((data.get("nodes") or {}).items())]


def unregister(module, client, server, name, existing, result):
    """state=absent."""
    if not existing:
        return result
    result["changed"] = True
    if module._diff:
        result["diff"] = {"before": existing, "after": {}}
    if not module.check_mode:
        try:
            client.request("DELETE", "/_snapshot/%s" % es.path_segment(name), params=server.master_timeout(client.request_timeout), idempotent=True)
        except es.SearchError as exc:
            raise es.SearchError("cannot unregister repository %s: %s" % (name, exc)) from None
    return result


def wanted_repository(client, server, params, result):
    """The repository as it should be registered; an fs location is checked against path.repo."""
    settings = desired_settings(params)
    if params["type"] == "fs":
        if not settings.get("location"):
            raise OptionError("location", "location is required for an fs repository: the directory (under path.repo) where the snapshots go")
        absolute, problem = es.check_location(client, server, settings["location"])
        result["location"] = absolute
        if problem:
            raise es.SearchError(problem)
        settings["location"] = posixpath.normpath(settings["location"])
    return {"type": params["type"], "settings": settings}


def register(client, server, name, wanted):
    try:
        put_repository(client, server, name, wanted)
    except es.SearchError as exc:
        if PATH_REPO_REJECTED in str(exc) and wanted["type"] == "fs":
            # A node's path.repo differs from what its settings API reported (being restarted?).
            _absolute, problem = es.check_location(client, server, wanted["settings"]["location"])
            raise es.SearchError(problem or str(exc)) from None
        raise es.SearchError("cannot register repository %s: %s" % (name, exc)) from None


def verify(client, server, params, existing, changed, result):
    """Ask every node to write to the repository; a change that does not verify is taken back."""
    name = params["name"]
    try:
        result["verified_nodes"] = verify_repository(client, name)
        return
    except es.SearchError as exc:
        message = "repository %s does not verify: %s." % (name, exc.reason or exc)
    if params["type"] == "fs":
        message += (
            " Every node must be able to write to %s: create it, give it to the account the server runs as "
            "(chown %s:%s), and on several nodes use a filesystem shared by all of them." % (result.get("location"), server.service_user, server.service_user)
        )
    if changed:
        try:
            if existing:
                put_repository(client, server, name, existing)
                message += " Its previous settings were put back."
            else:
                client.request("DELETE", "/_snapshot/%s" % es.path_segment(name), idempotent=True)
                message += " It was unregistered again."
        except es.SearchError as undo:
            message += " Taking the change back failed too: %s" % undo
    raise es.SearchError(message)


def repository(module):
    params = module.params
    es.check_libraries()
    client = es.Client.from_params(params)
    server = client.server()
    name = params["name"]
    result = module.keep(dict(changed=False, name=name, server=server.as_dict()))
    existing = normalized(es.get_repository(client, name))
    if params["state"] == "absent":
        return unregister(module, client, server, name, existing, result)
    wanted = wanted_repository(client, server, params, result)
    result["repository"] = wanted
    result["changed"] = changed = existing != wanted
    if module._diff and changed:
        result["diff"] = {"before": existing or {}, "after": wanted}
    if module.check_mode:
        return result
    if changed:
        register(client, server, name, wanted)
    if params["verify"]:
        verify(client, server, params, existing, changed, result)
    return result


def main():
    module = LifeboatModule(
        **es.module_kwargs(
            dict(
                name=dict(type="str", required=True),
                state=dict(type="str", choices=["present", "absent"], default="present"),
                type=dict(type="str", default="fs"),
                location=dict(type="str"),
                compress=dict(type="bool"),
                chunk_size=dict(type="str"),
                max_snapshot_bytes_per_sec=dict(type="str"),
                max_restore_bytes_per_sec=dict(type="str"),
                readonly=dict(type="bool"),
                settings=dict(type="dict", default={}),
                verify=dict(type="bool", default=True),
            )
        )
    )
    module.run(repository)


if __name__ == "__main__":
    main()
