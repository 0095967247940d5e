"""The Elasticsearch/OpenSearch component against real servers from the harness.

Every module runs as a real process (``run_module``) against OpenSearch 2.19 and
Elasticsearch 7.17 and 8.19 (the ``search_server`` fixture runs a test on each);
authentication goes through a real reverse proxy in front of the real engine.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import struct
import time
import zipfile

import pytest
import yaml

from tests.support.authproxy import AuthProxy, ProxyPKI
from tests.support.modules import ROOT, run_module, run_playbook
from tests.support.search import (
    PASSPHRASE,
    bulk,
    closed_port,
    conn,
    doc_counts,
    documents,
    make_indices,
    make_red_index,
    manifest_of,
    register,
    seal,
    snapshot_names,
    start_session,
)

# ---- round trip, on every engine --------------------------------------------------------------


def test_round_trip_snapshot_delete_restore(search_server, namespace, tmp_path):
    es = search_server
    indices, alias = make_indices(es, namespace, {"alpha": 120, "beta": 80, "gamma": 45})
    counts = doc_counts(es, indices)
    sample_ids = ["0", "7", "44"]
    samples = {index: documents(es, index, sample_ids) for index in indices}
    repository, location = f"{namespace}-repo", es.repo_dir / namespace

    first = run_module("elasticsearch_repository", name=repository, location=str(location), diff=True, **conn(es))
    assert first.rc == 0 and first["changed"], first
    assert first["diff"] == {"before": {}, "after": {"type": "fs", "settings": {"location": str(location)}}}
    assert [n["name"] for n in first["verified_nodes"]] == ["node-1"]
    assert first["server"]["engine"] == es.engine and first["server"]["version"] == es.version
    again = register(es, repository, location)
    assert not again["changed"]

    work_dir = start_session(tmp_path)
    planned = run_module("elasticsearch_snapshot", check=True, repository=repository, indices=[f"{namespace}-*"], session=work_dir, **conn(es))
    assert planned.rc == 0 and planned["changed"] and snapshot_names(es, repository) == []

    taken = run_module("elasticsearch_snapshot", repository=repository, indices=[f"{namespace}-*"], session=work_dir, include_repository_files=True, **conn(es))
    assert taken.rc == 0, taken
    snapshot = taken["snapshot"]
    assert snapshot["state"] == "SUCCESS" and snapshot["indices"] == sorted(indices)
    assert snapshot["created_by_collection"] and snapshot["name"].startswith("lifeboat-")
    assert taken["sizes"]["total_bytes"] > 0 and set(taken["sizes"]["index_bytes"]) == set(indices)
    assert taken["progress"] and taken["progress"][-1]["shards_total"] == 6
    assert taken["repository_files"]["file_count"] > 0

    sealed = seal(work_dir)
    assert sealed["verdict"] == "success" and sealed["components"] == {"elasticsearch": "success"}
    component = manifest_of(sealed["image"])["components"]["elasticsearch"]
    assert component["kind"] == "elasticsearch" and component["status"] == "success"
    assert component["markers"] == {"snapshot_uuid": snapshot["uuid"]}
    details = component["details"]
    assert details["snapshot"]["name"] == snapshot["name"] and details["snapshot"]["state"] == "SUCCESS"
    assert details["snapshot"]["indices"] == sorted(indices)
    assert details["sizes"]["total_bytes"] == taken["sizes"]["total_bytes"]
    assert details["engine"] == es.engine and details["server_version"] == es.version
    assert sorted(component["members"]) == sorted(taken["members"])

    # The disaster: the indices are gone.
    es.request("DELETE", "/" + ",".join(indices))
    restored = run_module("elasticsearch_restore", repository=repository, snapshot=snapshot["name"], **conn(es))
    assert restored.rc == 0, restored
    assert restored["doc_counts"] == counts
    assert not restored["timed_out"]
    # The wait watched the snapshot recoveries of every primary, bytes included.
    for index in indices:
        recovery = restored["recovery"][index]
        assert recovery["primaries_active"] == recovery["primaries_total"] == 2
        assert 0 < recovery["bytes_total"] == recovery["bytes_recovered"]
    assert {e["target"]: e["docs"] for e in restored["indices"]} == counts
    for index in indices:
        assert documents(es, index, sample_ids) == samples[index]
    assert es.request("GET", f"/{alias}/_count").json()["count"] == sum(counts.values())

    # The image travels: restore from it alone, into a fresh repository, under other names.
    unpack_to = es.repo_dir / f"{namespace}-unpacked"
    from_image = run_module(
        "elasticsearch_restore",
        repository=f"{namespace}-from-image",
        image=sealed["image"],
        passphrase=PASSPHRASE,
        repository_location=str(unpack_to),
        rename_pattern=f"{namespace}-(.+)",
        rename_replacement=f"{namespace}-copy-$1",
        include_aliases=False,
        **conn(es),
    )
    assert from_image.rc == 0, from_image
    assert from_image["unpacked"]["file_count"] == taken["repository_files"]["file_count"]
    assert from_image["doc_counts"] == {index.replace(f"{namespace}-", f"{namespace}-copy-", 1): count for index, count in counts.items()}
    assert documents(es, f"{namespace}-copy-alpha", sample_ids) == samples[f"{namespace}-alpha"]
    assert unpack_to.stat().st_uid == es.repo_dir.stat().st_uid  # readable by the server's account


# ---- restore choices ------------------------------------------------------------------------


def test_restore_renames_refuses_existing_and_replaces(elasticsearch_server, namespace):
    es = elasticsearch_server
    indices, _alias = make_indices(es, namespace, {"alpha": 40, "beta": 25})
    alpha, beta = f"{namespace}-alpha", f"{namespace}-beta"
    repository = f"{namespace}-repo"
    register(es, repository, es.repo_dir / namespace)
    taken = run_module("elasticsearch_snapshot", repository=repository, snapshot="<before-change-{now/d}>", **conn(es))
    assert taken.rc == 0, taken
    name = taken["snapshot"]["name"]
    assert name == time.strftime("before-change-%Y.%m.%d", time.gmtime())
    original = documents(es, alpha, ["0"])

    # Live data moves on after the snapshot.
    es.request("PUT", f"/{alpha}/_doc/0", params={"refresh": "true"}, json={"changed": True})
    es.request("DELETE", f"/{beta}/_doc/1", params={"refresh": "true"})

    renamed = run_module(
        "elasticsearch_restore",
        repository=repository,
        snapshot=name,
        rename_pattern=f"{namespace}-(.+)",
        rename_replacement=f"{namespace}-restored-$1",
        include_aliases=False,
        **conn(es),
    )
    assert renamed.rc == 0, renamed
    assert renamed["doc_counts"] == {f"{namespace}-restored-alpha": 40, f"{namespace}-restored-beta": 25}
    assert documents(es, f"{namespace}-restored-alpha", ["0"]) == original
    assert documents(es, alpha, ["0"]) == [{"changed": True}]

    # #17.1: renamed by name, each index to a name of its own (as a migration mapping does):
    # one restore request per renamed index; every target checked before anything starts.
    by_name = {alpha: f"{namespace}-staging-a", beta: f"{namespace}-b2"}
    unknown = run_module("elasticsearch_restore", repository=repository, snapshot=name, rename={f"{namespace}-gamma": "x-y"}, **conn(es))
    assert unknown.rc != 0 and f"rename: {namespace}-gamma not among the indices of the snapshot" in unknown["msg"], unknown
    clash = run_module("elasticsearch_restore", repository=repository, snapshot=name, rename={alpha: f"{namespace}-staging-a", beta: alpha}, **conn(es))
    assert clash.rc != 0 and clash["msg"].startswith(f"these indices already exist: {alpha};"), clash
    mapped = run_module("elasticsearch_restore", repository=repository, snapshot=name, rename=by_name, include_aliases=False, **conn(es))
    assert mapped.rc == 0, mapped
    assert mapped["doc_counts"] == {by_name[alpha]: 40, by_name[beta]: 25}
    assert sorted((e["source"], e["target"]) for e in mapped["indices"]) == sorted(by_name.items())
    assert documents(es, by_name[alpha], ["0"]) == original and documents(es, alpha, ["0"]) == [{"changed": True}]
    es.request("DELETE", "/%s" % ",".join(by_name.values()))

    refused = run_module("elasticsearch_restore", repository=repository, snapshot=name, indices=[alpha, beta], **conn(es))
    assert refused.rc != 0
    assert refused["msg"] == (
        f"these indices already exist: {alpha}, {beta}; set replace=true (replace_method close or delete) to overwrite them, "
        "or restore under other names (rename, or rename_pattern and rename_replacement)"
    )
    assert documents(es, alpha, ["0"]) == [{"changed": True}] and doc_counts(es, [beta]) == {beta: 24}

    predicted = run_module("elasticsearch_restore", check=True, repository=repository, snapshot=name, indices=[alpha, beta], replace=True, **conn(es))
    assert predicted.rc == 0 and predicted["changed"]
    assert [(e["target"], e["replaced"]) for e in predicted["indices"]] == [(alpha, "close"), (beta, "close")]
    assert documents(es, alpha, ["0"]) == [{"changed": True}]

    closed = run_module("elasticsearch_restore", repository=repository, snapshot=name, indices=[alpha, beta], replace=True, **conn(es))
    assert closed.rc == 0, closed
    assert closed["doc_counts"] == indices
    assert documents(es, alpha, ["0"]) == original

    es.request("DELETE", f"/{beta}/_doc/2", params={"refresh": "true"})
    deleted = run_module("elasticsearch_restore", repository=repository, snapshot="_latest", indices=[beta], replace=True, replace_method="delete", **conn(es))
    assert deleted.rc == 0, deleted
    assert deleted["doc_counts"] == {beta: 25}
    assert [(e["target"], e["replaced"]) for e in deleted["indices"]] == [(beta, "delete")]


# ---- retention --------------------------------------------------------------------------------


def test_retention_keeps_the_right_snapshots(opensearch_server, namespace):
    es = opensearch_server
    make_indices(es, namespace, {"data": 20}, shards=1)
    data, red = f"{namespace}-data", f"{namespace}-red"
    make_red_index(es, red)
    repository = f"{namespace}-repo"
    register(es, repository, es.repo_dir / namespace)

    # Someone else's snapshot: retention leaves it alone.
    es.request("PUT", f"/_snapshot/{repository}/foreign", params={"wait_for_completion": "true"}, json={"indices": data})

    def take(name, **options):
        return run_module("elasticsearch_snapshot", repository=repository, snapshot=name, indices=[data], **conn(es), **options)

    for name in ("s1", "s2", "s3"):
        assert take(name).rc == 0
    partial = run_module("elasticsearch_snapshot", repository=repository, snapshot="s4", indices=[data, red], partial=True, **conn(es))
    assert partial.rc != 0 and partial["snapshot"]["state"] == "PARTIAL"

    plan = run_module("elasticsearch_snapshot", check=True, repository=repository, state="pruned", retention={"max_count": 1}, **conn(es))
    assert plan.rc == 0 and plan["changed"]
    assert [d["name"] for d in plan["deleted"]] == ["s2", "s1"]
    assert [k["name"] for k in plan["kept"]] == ["s4", "s3"]
    assert snapshot_names(es, repository) == ["foreign", "s1", "s2", "s3", "s4"]

    pruned = run_module("elasticsearch_snapshot", repository=repository, state="pruned", retention={"max_count": 1}, **conn(es))
    assert pruned.rc == 0 and [d["name"] for d in pruned["deleted"]] == ["s2", "s1"]
    # The newest good one (s3) survives the newer PARTIAL one.
    assert snapshot_names(es, repository) == ["foreign", "s3", "s4"]

    newest = take("s5", retention={"max_count": 1})
    assert newest.rc == 0, newest
    assert {d["name"]: d["reason"] for d in newest["deleted"]} == {
        "s4": "partial, superseded by the newer successful s5",
        "s3": "not selected by keep_last 1",
    }
    assert snapshot_names(es, repository) == ["foreign", "s5"]

    info = run_module(
        "elasticsearch_snapshot_info",
        repository=[repository],
        only_collection_snapshots=True,
        query="snapshots[?state=='SUCCESS'] | [-1].name",
        **conn(es),
    )
    assert info.rc == 0 and not info["changed"]
    assert info["query_result"] == "s5"
    assert [s["name"] for s in info["snapshots"]] == ["s5"]
    everything = run_module("elasticsearch_snapshot_info", repository=[f"{namespace}-*"], sizes=True, **conn(es))
    assert [s["name"] for s in everything["snapshots"]] == ["foreign", "s5"]
    assert everything["snapshots"][1]["sizes"]["total_bytes"] > 0
    assert everything["repositories"][0]["location"] == str(es.repo_dir / namespace)

    deleted = run_module("elasticsearch_snapshot", repository=repository, snapshot="foreign", state="absent", **conn(es))
    assert deleted.rc == 0 and deleted["changed"]
    gone = run_module("elasticsearch_snapshot", repository=repository, snapshot="foreign", state="absent", **conn(es))
    assert gone.rc == 0 and not gone["changed"]


# ---- failures ---------------------------------------------------------------------------------


def test_repository_outside_path_repo_says_what_to_add_where(elasticsearch_server, namespace, tmp_path):
    es = elasticsearch_server
    outside = tmp_path / "db-backup"
    repository = f"{namespace}-repo"
    expected = (
        f'repository location {outside} is not under path.repo on 1 node(s) (node-1: path.repo ["{es.repo_dir}"]). '
        f'On every node of the cluster: add the directory to path.repo in /etc/elasticsearch/elasticsearch.yml (path.repo: ["{outside}"], '
        "or append it to the existing list), create it and give it to the account the server runs as "
        f"(mkdir -p {outside} && chown elasticsearch:elasticsearch {outside}), then restart the node; "
        "on a cluster of several nodes the location must be a shared filesystem mounted at the same path on each. Then run this task again."
    )
    for check in (True, False):
        result = run_module("elasticsearch_repository", check=check, name=repository, location=str(outside), **conn(es))
        assert result.rc != 0
        assert result["msg"] == expected
    assert es.request("GET", f"/_snapshot/{repository}", check=False).status_code == 404


@pytest.mark.fault("server down", "nothing listens at the search server's port: snapshot, repository, info, restore")
def test_unreachable_server_is_a_failed_component(tmp_path, fault):
    url = f"http://127.0.0.1:{closed_port()}"
    work_dir = start_session(tmp_path)
    result = run_module("elasticsearch_snapshot", hosts=[url], repository="backup", session=work_dir, retries=1, retry_delay=0.1)
    assert result.rc != 0
    message = (
        f"cannot reach the search server at {url}: connection refused (2 attempts over 1 host); "
        "check hosts, that the server is running and listening there, and firewalls"
    )
    assert result["msg"] == message
    sealed = seal(work_dir, verdict="failed")
    fault.observe(false_success=result.rc == 0 or not sealed.get("failures"))
    assert sealed["failures"] == {"elasticsearch": message}
    others = {
        "elasticsearch_repository": {"name": "r", "location": "/x"},
        "elasticsearch_snapshot_info": {},
        "elasticsearch_restore": {"repository": "r", "snapshot": "s"},
    }
    for module, args in others.items():
        other = run_module(module, hosts=[url], retries=0, **args)
        fault.observe(false_success=other.rc == 0)
        assert other.rc != 0 and other["msg"].startswith(f"cannot reach the search server at {url}: connection refused"), other


@pytest.mark.parametrize("elasticsearch_server", ["8.19.21"], indirect=True)
@pytest.mark.fault("partial snapshot", "a red index (primary unallocated) in the snapshot, with and without partial=true")
def test_snapshot_of_a_red_index_is_a_failed_component(elasticsearch_server, namespace, tmp_path, fault):
    es = elasticsearch_server
    make_indices(es, namespace, {"data": 30})
    data, red = f"{namespace}-data", f"{namespace}-red"
    make_red_index(es, red)
    repository = f"{namespace}-repo"
    register(es, repository, es.repo_dir / namespace)
    work_dir = start_session(tmp_path)

    good = run_module("elasticsearch_snapshot", repository=repository, indices=[data], session=work_dir, name="search-good", snapshot="good", **conn(es))
    assert good.rc == 0, good
    refused = run_module("elasticsearch_snapshot", repository=repository, indices=[data, red], session=work_dir, name="search-red", snapshot="red", **conn(es))
    assert refused.rc != 0
    assert refused["msg"].startswith("snapshot red could not start: ") and red in refused["msg"]
    assert "partial=true" in refused["msg"]
    partial = run_module(
        "elasticsearch_snapshot",
        repository=repository,
        indices=[data, red],
        partial=True,
        session=work_dir,
        name="search-partial",
        snapshot="partial",
        **conn(es),
    )
    assert partial.rc != 0
    assert partial["msg"] == f"snapshot partial ended PARTIAL: 1 of 3 shards failed: {red}[0]: primary shard is not allocated"
    assert partial["shard_failures"] == [{"index": red, "shard_id": 0, "reason": "primary shard is not allocated", "status": "INTERNAL_SERVER_ERROR"}]

    sealed = seal(work_dir, verdict="partial")
    fault.observe(false_success=refused.rc == 0 or partial.rc == 0 or sealed.get("components", {}).get("search-partial") != "failed")
    assert sealed["components"] == {"search-good": "success", "search-red": "failed", "search-partial": "failed"}
    components = manifest_of(sealed["image"])["components"]
    assert components["search-partial"]["error"] == partial["msg"]
    assert components["search-partial"]["details"]["shard_failures"][0]["index"] == red
    assert components["search-partial"]["details"]["snapshot"]["state"] == "PARTIAL"
    assert components["search-red"]["error"] == refused["msg"]


@pytest.mark.parametrize("elasticsearch_server", ["8.19.21"], indirect=True)
@pytest.mark.fault("timeout", "a snapshot, then a restore, throttled to 20 kB/s with wait_timeout=3")
def test_snapshot_timeout_is_a_failed_component_with_the_last_state(elasticsearch_server, namespace, tmp_path, fault):
    es = elasticsearch_server
    index = f"{namespace}-slow"
    es.request("PUT", f"/{index}", json={"settings": {"number_of_shards": 2, "number_of_replicas": 0}})
    # About 2 MB that does not compress, written at 20 kB/s: minutes, unless aborted.
    bulk(es, index, [(n, {"blob": secrets.token_hex(512)}) for n in range(2000)])
    es.request("POST", f"/{index}/_flush")
    repository = f"{namespace}-repo"
    register(es, repository, es.repo_dir / namespace, max_snapshot_bytes_per_sec="20kb")
    work_dir = start_session(tmp_path)

    started = time.monotonic()
    result = run_module("elasticsearch_snapshot", repository=repository, snapshot="slow", indices=[index], wait_timeout=3, session=work_dir, **conn(es))
    fault.observe(false_success=result.rc == 0)
    assert result.rc != 0
    assert time.monotonic() - started < 60
    assert result["timed_out"] and result["aborted"]
    assert result["snapshot"]["state"] == "IN_PROGRESS"
    last = result["progress"][-1]
    assert last["shards_total"] == 2 and last["shards_done"] < 2
    expected = f"snapshot slow did not finish within 3 s: last known state IN_PROGRESS, {last['shards_done']} of 2 shards done; it was aborted"
    assert result["msg"].startswith(expected)
    # Aborted: it does not hold the repository.
    deadline = time.monotonic() + 30
    while "slow" in snapshot_names(es, repository) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "slow" not in snapshot_names(es, repository)

    sealed = seal(work_dir, verdict="failed")
    assert sealed["failures"] == {"elasticsearch": result["msg"]}

    # A restore that cannot finish in time says how far it got.
    throttled = f"{namespace}-restore-throttled"
    register(es, throttled, es.repo_dir / throttled, max_restore_bytes_per_sec="20kb")
    assert run_module("elasticsearch_snapshot", repository=throttled, snapshot="quick", indices=[index], **conn(es)).rc == 0
    restore = run_module(
        "elasticsearch_restore", repository=throttled, snapshot="quick", rename_pattern="(.+)", rename_replacement="$1-copy", wait_timeout=3, **conn(es)
    )
    fault.observe(false_success=restore.rc == 0)
    assert restore.rc != 0 and restore["timed_out"]
    assert restore["msg"].startswith("restore of snapshot quick did not finish within 3 s: ")
    assert re.search(r"[01] of 2 primary shards active, \d+ of \d+ bytes recovered", restore["msg"]), restore["msg"]
    assert restore["recovery"][f"{index}-copy"]["primaries_total"] == 2


# ---- credentials and TLS, through a real reverse proxy --------------------------------------


@pytest.mark.fault("wrong key", "wrong password, API key and token for the search server (a real proxy), at -vvv")
def test_wrong_credentials_fail_clearly_without_showing_secrets(opensearch_server, namespace, tmp_path, fault):
    es = opensearch_server
    secret = {
        "good_password": secrets.token_urlsafe(18),
        "wrong_password": secrets.token_urlsafe(18),
        "good_key": "keyid:" + secrets.token_urlsafe(18),
        "wrong_key": "keyid:" + secrets.token_urlsafe(18),
        "good_token": secrets.token_urlsafe(24),
        "wrong_token": secrets.token_urlsafe(24),
    }
    playbook = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/lifeboat.backup.elasticsearch:
      hosts: ["{{ proxy }}"]
      retries: 0
  tasks:
    - name: Wrong password
      lifeboat.backup.elasticsearch_snapshot_info:
        username: backup
        password: "{{ wrong_password }}"
      register: by_password
      ignore_errors: true
    - name: Wrong API key
      lifeboat.backup.elasticsearch_snapshot_info:
        api_key: "{{ wrong_key }}"
      register: by_key
      ignore_errors: true
    - name: Wrong token
      lifeboat.backup.elasticsearch_snapshot_info:
        bearer_token: "{{ wrong_token }}"
      register: by_token
      ignore_errors: true
    - name: Right password, through to the real server
      lifeboat.backup.elasticsearch_repository:
        username: backup
        password: "{{ good_password }}"
        name: "{{ repository }}"
        location: "{{ location }}"
    - name: Right API key
      lifeboat.backup.elasticsearch_snapshot_info:
        api_key: "{{ good_key }}"
    - name: Right token
      lifeboat.backup.elasticsearch_snapshot_info:
        bearer_token: "{{ good_token }}"
      register: with_token
    - name: The wrong ones failed and said why
      ansible.builtin.assert:
        that:
          - by_password is failed
          - by_key is failed
          - by_token is failed
          - by_password.msg is search('authentication failed at http://127.0.0.1:[0-9]+ \\(HTTP 401\\)')
          - by_key.msg is search('check username and password \\(or api_key / bearer_token\\)')
          - with_token.repositories | map(attribute='name') | list == [repository]
"""
    with AuthProxy(es.url, basic=("backup", secret["good_password"]), api_key=secret["good_key"], bearer=secret["good_token"]) as proxy:
        variables = dict(secret, proxy=proxy.url, repository=f"{namespace}-repo", location=str(es.repo_dir / namespace))
        ran = run_playbook(playbook, tmp_path, extra_vars=variables, verbosity=3)
        anonymous = run_module("elasticsearch_snapshot_info", hosts=[proxy.url], retries=0)
        assert anonymous["msg"] == f"the search server at {proxy.url} requires authentication (HTTP 401): give username and password, api_key or bearer_token"
    output = ran.stdout
    basic = base64.b64encode(("backup:" + secret["good_password"]).encode()).decode()
    # The playbook's assert task fails (and so the run) if a wrong credential did not fail.
    fault.observe(false_success=ran.returncode != 0 or anonymous.rc == 0)
    fault.scan([*secret.values(), *(base64.b64encode(v.encode()).decode() for v in secret.values()), basic], output, anonymous)
    assert ran.returncode == 0, output[-6000:]
    assert "authentication failed at" in output
    assert proxy.refused >= 3 and proxy.forwarded >= 3
    assert es.request("GET", f"/_snapshot/{namespace}-repo").status_code == 200  # the real server got it
    for name, value in secret.items():
        assert value not in output, name
        assert base64.b64encode(value.encode()).decode() not in output, name
    assert basic not in output


def test_tls_with_a_ca_bundle_and_a_client_certificate(opensearch_server, tmp_path):
    es = opensearch_server
    pki = ProxyPKI(tmp_path)
    password = secrets.token_urlsafe(12)
    with AuthProxy(es.url, basic=("backup", password), tls=pki) as proxy:
        tls = {"ca_path": str(pki.ca_path), "client_cert": str(pki.client_cert), "client_key": str(pki.client_key)}
        good = run_module("elasticsearch_snapshot_info", hosts=[proxy.url], username="backup", password=password, **tls)
        assert good.rc == 0, good
        assert good["server"]["engine"] == "opensearch"
        untrusted = run_module("elasticsearch_snapshot_info", hosts=[proxy.url], username="backup", password=password, retries=0)
        assert untrusted.rc != 0
        assert untrusted["msg"].startswith(f"TLS certificate verification failed for {proxy.url}")
        assert "give the CA bundle that signed the server certificate in ca_path" in untrusted["msg"]
        no_client_cert = run_module("elasticsearch_snapshot_info", hosts=[proxy.url], username="backup", password=password, ca_path=str(pki.ca_path), retries=0)
        assert no_client_cert.rc != 0
        assert no_client_cert["msg"].startswith(f"TLS handshake with {proxy.url} failed") or "cannot reach" in no_client_cert["msg"], no_client_cert["msg"]


@pytest.mark.fault("corrupt member", "a byte of the image's repository member flipped, elasticsearch_restore from the image", item="18.2")
def test_a_corrupt_image_restores_nothing(opensearch_server, namespace, tmp_path, fault):
    es = opensearch_server
    indices, _alias = make_indices(es, namespace, {"alpha": 300}, shards=1)
    repository = f"{namespace}-repo"
    register(es, repository, es.repo_dir / namespace)
    work_dir = start_session(tmp_path)
    taken = run_module("elasticsearch_snapshot", repository=repository, indices=list(indices), session=work_dir, include_repository_files=True, **conn(es))
    assert taken.rc == 0, taken
    image = seal(work_dir)["image"]
    member = taken["repository_files"]["data_member"]
    with zipfile.ZipFile(image) as archive:
        info = archive.getinfo(member)
    with open(image, "r+b") as handle:
        handle.seek(info.header_offset)
        name_len, extra_len = struct.unpack("<HH", handle.read(30)[26:30])
        middle = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
        handle.seek(middle)
        byte = handle.read(1)
        handle.seek(middle)
        handle.write(bytes([byte[0] ^ 0xFF]))

    location = es.repo_dir / f"{namespace}-unpacked"
    result = run_module(
        "elasticsearch_restore",
        repository=f"{namespace}-from-image",
        image=image,
        passphrase=PASSPHRASE,
        repository_location=str(location),
        rename_pattern="(.+)",
        rename_replacement="$1-copy",
        **conn(es),
    )
    restored = es.request("GET", f"/{namespace}-alpha-copy", check=False).status_code != 404
    fault.observe(false_success=result.rc == 0 or restored, data_lost=doc_counts(es, list(indices)) != indices)
    fault.scan([PASSPHRASE], result)
    assert result.rc != 0, result.stderr[-3000:]
    # Where the flipped byte is found first depends on the read size: the zip CRC-32 or age's authentication.
    assert result["msg"].startswith(f"unpacking the repository into {location} failed: "), result.stderr[-3000:]
    assert f"member {member}: CRC-32 of the stored bytes does not match" in result["msg"] or f"member {member}: age payload chunk" in result["msg"], result[
        "msg"
    ]
    assert result["msg"].endswith("nothing was registered or restored, and the partly unpacked files were removed")
    assert not location.exists()
    assert es.request("GET", f"/_snapshot/{namespace}-from-image", check=False).status_code == 404
    assert es.request("GET", f"/{namespace}-alpha-copy", check=False).status_code == 404
    assert doc_counts(es, list(indices)) == indices


@pytest.mark.fault("corrupt member", "a file of an earlier run's unpacked repository altered, then restore with replace", item="18.2")
def test_a_repository_unpacked_earlier_is_checked_before_an_index_is_replaced(opensearch_server, namespace, tmp_path, fault):
    """#18.2: with image, nothing in the cluster changes before every repository file is
    authenticated - an earlier run's unpacked copy too."""
    es = opensearch_server
    indices, _alias = make_indices(es, namespace, {"alpha": 120}, shards=1)
    repository = f"{namespace}-repo"
    register(es, repository, es.repo_dir / namespace)
    work_dir = start_session(tmp_path)
    taken = run_module("elasticsearch_snapshot", repository=repository, indices=list(indices), session=work_dir, include_repository_files=True, **conn(es))
    assert taken.rc == 0, taken
    image = seal(work_dir)["image"]
    location = es.repo_dir / f"{namespace}-unpacked"
    args = dict(
        repository=f"{namespace}-from-image",
        image=image,
        passphrase=PASSPHRASE,
        repository_location=str(location),
        rename_pattern="(.+)",
        rename_replacement="$1-copy",
        **conn(es),
    )
    first = run_module("elasticsearch_restore", **args)
    assert first.rc == 0, first
    copy = f"{namespace}-alpha-copy"
    assert doc_counts(es, [copy]) == {copy: 120}

    # Someone (or a disk) alters a file of the unpacked repository; the next run reuses it.
    victim = max((p for p in location.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    refused = run_module("elasticsearch_restore", replace=True, replace_method="delete", **args)
    fault.observe(false_success=refused.rc == 0, data_lost=doc_counts(es, [copy]) != {copy: 120})
    fault.scan([PASSPHRASE], refused)
    assert refused.rc != 0 and str(victim) in refused["msg"] and "differs from the image" in refused["msg"], refused
    assert not refused["changed"] and "done" not in refused
    assert doc_counts(es, [copy]) == {copy: 120}, "an index was replaced before the repository was checked"


@pytest.mark.fault("failed step", "the search component's repository outside path.repo, in playbooks/backup.yml", item="18.5")
def test_a_failed_repository_step_is_recorded_with_its_reason(opensearch_server, namespace, tmp_path, fault):
    """#18.5: playbooks/backup.yml with a search component whose repository step fails (its
    location is outside path.repo): the image and the audit say why, not "did not run"; with
    backup_halt the components after it do not run."""
    es = opensearch_server
    source = tmp_path / "etc"
    source.mkdir()
    (source / "app.conf").write_text("x = 1\n")
    (tmp_path / "dest").mkdir()
    profile = {
        "name": "search",
        "platform": {"name": "search", "version": "1"},
        "components": [
            {"name": "search", "kind": "elasticsearch", "hosts": [es.url], "repository": f"{namespace}-repo", "location": str(tmp_path / "outside")},
            {"name": "config", "kind": "config", "paths": [str(source)]},
        ],
    }
    node = {
        "ansible_connection": "local",
        "backup_destination": str(tmp_path / "dest"),
        "backup_state_dir": str(tmp_path / "state"),
        "backup_facts_dir": str(tmp_path / "facts"),
        "backup_passphrase": PASSPHRASE,
        "backup_work_factor": 10,
        "backup_profile": profile,
    }
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"node1": node}}}))
    backup = (ROOT / "playbooks" / "backup.yml").read_text()
    partial = run_playbook(backup, tmp_path, inventory=str(inventory))
    assert partial.returncode == 0, partial.stdout[-4000:]
    (image,) = (tmp_path / "dest").glob("*.zip")
    reason = manifest_of(str(image))["components"]["search"]["error"]
    assert reason.startswith("snapshot repository: ") and "path.repo" in reason, reason
    audit = [json.loads(line) for line in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    fault.observe(false_success=audit[-1].get("verdict") == "success")
    assert audit[-1]["verdict"] == "partial" and audit[-1]["failures"]["search"] == reason

    halted = run_playbook(backup, tmp_path, inventory=str(inventory), extra_vars={"backup_halt": True})
    fault.observe(false_success=halted.returncode == 0)
    fault.scan([PASSPHRASE], partial.stdout, halted.stdout)
    assert halted.returncode != 0
    audit = [json.loads(line) for line in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["verdict"] == "failed" and "snapshot repository: " in audit[-1]["reason"], audit[-1]
    assert "config" not in audit[-1]["components"], "with backup_halt, the component after the failed one ran"
    assert len(list((tmp_path / "dest").glob("*.zip"))) == 1
