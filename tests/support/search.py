"""Helpers for the Elasticsearch/OpenSearch integration tests: data sets, sessions, repositories."""

from __future__ import annotations

import json
import socket

from ansible_collections.lifeboat.backup.plugins.module_utils import _image
from tests.support.modules import run_module

PASSPHRASE = "lifeboat search passphrase"


def conn(server):
    return {"hosts": [server.url]}


def bulk(es, index, docs):
    lines = []
    for doc_id, doc in docs:
        lines.append(json.dumps({"index": {"_id": str(doc_id)}}))
        lines.append(json.dumps(doc))
    ndjson = {"Content-Type": "application/x-ndjson"}
    answer = es.request("POST", f"/{index}/_bulk", params={"refresh": "true"}, data="\n".join(lines) + "\n", headers=ndjson).json()
    assert not answer["errors"], answer


def make_indices(es, namespace, spec, shards=2):
    """Indices ``<namespace>-<name>`` with ``count`` documents each, all under one alias."""
    alias = f"{namespace}-all"
    for name, count in spec.items():
        index = f"{namespace}-{name}"
        es.request("PUT", f"/{index}", json={"settings": {"number_of_shards": shards, "number_of_replicas": 0}, "aliases": {alias: {}}})
        bulk(es, index, [(n, {"n": n, "name": name, "text": f"{name} document {n}", "tags": [name, str(n % 7)]}) for n in range(count)])
    return {f"{namespace}-{name}": count for name, count in spec.items()}, alias


def make_red_index(es, index):
    """An index whose only primary shard can never be allocated: a red index."""
    settings = {"number_of_shards": 1, "number_of_replicas": 0, "index.routing.allocation.require._name": "no-such-node"}
    es.request("PUT", f"/{index}", params={"wait_for_active_shards": "0"}, json={"settings": settings})
    health = es.request("GET", f"/_cluster/health/{index}").json()
    assert health["status"] == "red"


def doc_counts(es, indices):
    return {index: es.request("GET", f"/{index}/_count").json()["count"] for index in indices}


def documents(es, index, ids):
    return [es.request("GET", f"/{index}/_doc/{doc_id}").json()["_source"] for doc_id in ids]


def snapshot_names(es, repository):
    answer = es.request("GET", f"/_snapshot/{repository}/_all").json()
    return sorted(s["snapshot"] for s in answer["snapshots"])


def register(es, repository, location, **options):
    result = run_module("elasticsearch_repository", name=repository, location=str(location), **conn(es), **options)
    assert result.rc == 0, result
    return result


def start_session(tmp_path):
    destination = tmp_path / "images"
    destination.mkdir(exist_ok=True)
    state_dir = str(tmp_path / "state")
    started = run_module("backup_session", state="started", destination=str(destination), state_dir=state_dir, passphrase=PASSPHRASE, work_factor=10)
    assert started.rc == 0, started
    return started["session"]["work_dir"]


def seal(work_dir, verdict="success"):
    sealed = run_module("backup_session", state="sealed", session=work_dir)
    assert sealed["verdict"] == verdict, sealed
    assert (sealed.rc == 0) == (verdict != "failed"), sealed
    return sealed


def manifest_of(image):
    with _image.Image(image, passphrase=PASSPHRASE) as opened:
        return opened.manifest


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
