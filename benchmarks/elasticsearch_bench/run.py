"""Elasticsearch/OpenSearch benchmark: snapshot + restore through the modules vs the same REST calls with curl.

    python benchmarks/elasticsearch_bench/run.py [--engine opensearch] [--version V] [--size-mib 1024] [--rounds 2] [--small]

One server from the test harness (its own heap, port and temp dir), one data set of
text-like documents (>= 1 GiB of JSON source by default, in 4 indices of 2 shards).
Each round, on a fresh repository every time (so each snapshot is a full copy):

1. curl: ``PUT _snapshot/R/S?wait_for_completion=true``, delete the indices,
   ``POST _snapshot/R/S/_restore?wait_for_completion=true``, ``_count`` each index;
2. the modules as processes (what runs on the managed node): ``elasticsearch_snapshot``,
   delete, ``elasticsearch_restore`` (which waits for the recovery and counts documents);
3. the same two modules as ansible-playbook tasks, timed by ansible.posix.profile_tasks,
   and the peer - ``ansible.builtin.uri`` making the curl calls - in the same way.

The best of the rounds is kept (the machine is shared: the load average is printed).
The modules' overhead over curl must stay under 5 % of the wall time. ``--small``
(what CI runs) uses 16 MiB: correctness only, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from tests.harness.servers import SearchServer  # noqa: E402
from tests.support.modules import module_env, run_module, run_playbook  # noqa: E402

INDICES = 4
SHARDS = 2
BULK_BYTES = 8 * 2**20
WORDS = [
    "alert",
    "indicator",
    "malware",
    "campaign",
    "actor",
    "sighting",
    "observable",
    "domain",
    "address",
    "hash",
    "network",
    "traffic",
    "report",
    "analyst",
    "enrichment",
    "feed",
    "source",
    "confidence",
    "severity",
    "tlp",
    "green",
    "amber",
    "red",
    "white",
    "relation",
    "entity",
    "incident",
    "response",
    "ticket",
    "vulnerability",
    "exploit",
    "patch",
    "vendor",
    "product",
    "version",
    "kernel",
    "service",
    "process",
    "registry",
    "file",
    "path",
    "user",
    "group",
    "login",
    "failure",
    "success",
    "session",
    "token",
    "certificate",
    "issuer",
    "subject",
    "country",
    "region",
    "city",
]

PLAYBOOK_MODULES = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/lifeboat.backup.elasticsearch:
      hosts: ["{{ url }}"]
  tasks:
    - name: module snapshot
      lifeboat.backup.elasticsearch_snapshot:
        repository: "{{ repository }}"
        snapshot: bench
        indices: ["{{ pattern }}"]
        wait_timeout: 7200
    - name: delete indices
      ansible.builtin.uri:
        url: "{{ url }}/{{ names }}"
        method: DELETE
    - name: module restore
      lifeboat.backup.elasticsearch_restore:
        repository: "{{ repository }}"
        snapshot: bench
        wait_timeout: 7200
      register: restored
    - name: result
      ansible.builtin.copy:
        content: "{{ restored.doc_counts | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""

PLAYBOOK_URI = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: uri snapshot
      ansible.builtin.uri:
        url: "{{ url }}/_snapshot/{{ repository }}/bench?wait_for_completion=true"
        method: PUT
        body_format: json
        body: {indices: "{{ pattern }}"}
        timeout: 7200
    - name: delete indices
      ansible.builtin.uri:
        url: "{{ url }}/{{ names }}"
        method: DELETE
    - name: uri restore
      ansible.builtin.uri:
        url: "{{ url }}/_snapshot/{{ repository }}/bench/_restore?wait_for_completion=true"
        method: POST
        body_format: json
        body: {indices: "{{ pattern }}"}
        timeout: 7200
    - name: uri count
      ansible.builtin.uri:
        url: "{{ url }}/{{ item }}/_count"
      loop: "{{ names.split(',') }}"
      register: counted
    - name: result
      ansible.builtin.copy:
        content: "{{ dict(counted.results | map(attribute='item') | zip(counted.results | map(attribute='json.count'))) | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


def log(text):
    print(text, flush=True)


def make_documents(rng, target_bytes):
    """Bulk bodies (ndjson) of text-like documents, about ``BULK_BYTES`` each, until ``target_bytes``."""
    produced = 0
    n = 0
    while produced < target_bytes:
        lines = []
        size = 0
        while size < BULK_BYTES and produced + size < target_bytes:
            words = rng.choices(WORDS, k=rng.randint(60, 220))
            doc = {
                "n": n,
                "title": " ".join(words[:8]),
                "body": " ".join(words),
                "severity": rng.randint(1, 10),
                "tags": rng.sample(WORDS, 3),
                "seen": "2026-%02d-%02dT%02d:%02d:00Z" % (rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59)),
                # Observables do not compress: hashes and addresses, as in threat-intel data.
                "sha256": "%064x" % rng.getrandbits(256),
                "md5": "%032x" % rng.getrandbits(128),
                "address": "%d.%d.%d.%d" % (rng.randint(1, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254)),
            }
            line = '{"index":{}}\n' + json.dumps(doc) + "\n"
            lines.append(line)
            size += len(line)
            n += 1
        produced += size
        yield "".join(lines), size


def load(server, names, target_bytes):
    """Index the data set with two bulk writers; returns JSON source bytes written."""
    for name in names:
        settings = {"number_of_shards": SHARDS, "number_of_replicas": 0, "refresh_interval": "-1"}
        server.request("PUT", "/" + name, json={"settings": settings})
    rng = random.Random(42)
    batches = make_documents(rng, target_bytes)
    lock = threading.Lock()
    written = [0, 0]
    errors = []

    def writer():
        while True:
            with lock:
                try:
                    body, size = next(batches)
                except StopIteration:
                    return
                index = names[written[1] % len(names)]
                written[1] += 1
            try:
                answer = server.request("POST", "/%s/_bulk" % index, data=body.encode(), headers={"Content-Type": "application/x-ndjson"}, timeout=600).json()
                if answer.get("errors"):
                    errors.append(json.dumps(answer)[:500])
                    return
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(str(exc))
                return
            with lock:
                written[0] += size

    threads = [threading.Thread(target=writer) for _writer in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit("indexing failed: %s" % errors[0])
    joined = ",".join(names)
    server.request("PUT", "/%s/_settings" % joined, json={"index": {"refresh_interval": "1s"}})
    server.request("POST", "/%s/_refresh" % joined, timeout=600)
    server.request("POST", "/%s/_flush" % joined, timeout=600)
    return written[0]


def counts(server, names):
    return {name: server.request("GET", "/%s/_count" % name).json()["count"] for name in names}


def store_bytes(server, names):
    rows = server.request("GET", "/_cat/indices/%s" % ",".join(names), params={"format": "json", "bytes": "b", "h": "index,pri.store.size"}).json()
    return sum(int(r["pri.store.size"]) for r in rows)


def fresh_repository(server, name):
    """A new, empty fs repository (the previous run's files are removed first)."""
    for old in server.repo_dir.iterdir():
        server.request("DELETE", "/_snapshot/%s" % old.name, check=False)
        shutil.rmtree(old, ignore_errors=True)
    server.request("PUT", "/_snapshot/%s" % name, json={"type": "fs", "settings": {"location": str(server.repo_dir / name)}})


def curl(*args):
    """curl -sS --fail-with-body; returns the body."""
    proc = subprocess.run(["curl", "-sS", "--fail-with-body", "-H", "Content-Type: application/json", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit("curl %s failed: %s %s" % (" ".join(args), proc.stdout[-500:], proc.stderr[-500:]))
    return proc.stdout


def run_curl(server, names, repository):
    pattern = ",".join(names)
    start = time.monotonic()
    snap = json.loads(curl("-X", "PUT", "%s/_snapshot/%s/bench?wait_for_completion=true" % (server.url, repository), "-d", json.dumps({"indices": pattern})))
    snapshot_s = time.monotonic() - start
    if snap["snapshot"]["state"] != "SUCCESS":
        raise SystemExit("curl snapshot ended %s" % snap["snapshot"]["state"])
    server.request("DELETE", "/" + pattern)
    start = time.monotonic()
    curl("-X", "POST", "%s/_snapshot/%s/bench/_restore?wait_for_completion=true" % (server.url, repository), "-d", json.dumps({"indices": pattern}))
    restored = {name: json.loads(curl("%s/%s/_count" % (server.url, name)))["count"] for name in names}
    restore_s = time.monotonic() - start
    return snapshot_s, restore_s, restored


def run_modules(server, names, repository):
    hosts = {"hosts": [server.url]}
    start = time.monotonic()
    snap = run_module("elasticsearch_snapshot", repository=repository, snapshot="bench", indices=[",".join(names)], wait_timeout=7200, **hosts)
    snapshot_s = time.monotonic() - start
    if snap.failed:
        raise SystemExit("elasticsearch_snapshot failed: %s" % snap.get("msg"))
    server.request("DELETE", "/" + ",".join(names))
    start = time.monotonic()
    restored = run_module("elasticsearch_restore", repository=repository, snapshot="bench", wait_timeout=7200, **hosts)
    restore_s = time.monotonic() - start
    if restored.failed:
        raise SystemExit("elasticsearch_restore failed: %s" % restored.get("msg"))
    return snapshot_s, restore_s, restored["doc_counts"]


def run_playbook_timed(playbook, server, names, repository, work, tasks):
    out = work / "counts.json"
    variables = {"url": server.url, "repository": repository, "pattern": ",".join(names), "names": ",".join(names), "out": str(out)}
    proc = run_playbook(playbook, work, extra_vars=variables, env=common.PROFILE_ENV)
    if proc.returncode != 0:
        raise SystemExit("playbook failed:\n" + proc.stdout[-3000:])
    return [common.task_seconds(proc.stdout, t) for t in tasks], json.loads(out.read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--engine", default="opensearch", choices=["opensearch", "elasticsearch"])
    parser.add_argument("--version", default=None, help="a version of the harness table (default: the engine's first line)")
    parser.add_argument("--size-mib", type=int, default=1024, help="JSON source to index (MiB)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--heap", default="1g")
    parser.add_argument("--small", action="store_true", help="CI mode: 16 MiB, one round, correctness only")
    args = parser.parse_args()
    if args.small:
        args.size_mib, args.rounds, args.heap = 16, 1, "256m"
    if not shutil.which("curl"):
        raise SystemExit("curl is needed for the baseline (Debian package curl)")

    with SearchServer(args.engine, args.version, heap=args.heap, start_timeout=300) as server:
        log("%s %s at %s, heap %s; load average %s" % (server.engine, server.version, server.url, args.heap, os.getloadavg()))
        names = ["bench-%d" % i for i in range(INDICES)]
        start = time.monotonic()
        source = load(server, names, args.size_mib * 2**20)
        expected = counts(server, names)
        log(
            "indexed %.1f MiB of JSON source, %d documents, %.1f MiB on disk (primaries) in %.0f s"
            % (source / 2**20, sum(expected.values()), store_bytes(server, names) / 2**20, time.monotonic() - start)
        )
        work = Path(server.root) / "bench-work"
        work.mkdir()
        results = {"curl": [], "modules": [], "playbook modules": [], "playbook uri": []}
        for round_no in range(1, args.rounds + 1):
            for label in results:
                repository = "bench-%s-%d" % (label.replace(" ", "-"), round_no)
                fresh_repository(server, repository)
                if label == "curl":
                    snapshot_s, restore_s, restored = run_curl(server, names, repository)
                elif label == "modules":
                    snapshot_s, restore_s, restored = run_modules(server, names, repository)
                elif label == "playbook modules":
                    (snapshot_s, restore_s), restored = run_playbook_timed(
                        PLAYBOOK_MODULES, server, names, repository, work, ["module snapshot", "module restore"]
                    )
                else:
                    (snapshot_s, restore_s, *count_s), restored = run_playbook_timed(
                        PLAYBOOK_URI, server, names, repository, work, ["uri snapshot", "uri restore", "uri count"]
                    )
                    restore_s += sum(count_s)
                if restored != expected:
                    raise SystemExit("%s: documents after restore %s differ from before %s" % (label, restored, expected))
                results[label].append((snapshot_s, restore_s))
                log("round %d %-17s snapshot %7.2f s  restore+count %7.2f s  (load %.1f)" % (round_no, label, snapshot_s, restore_s, os.getloadavg()[0]))
        fresh_repository(server, "bench-cleanup")

    best = {label: min(runs, key=sum) for label, runs in results.items()}
    mib = source / 2**20
    log("\n%-18s %10s %10s %10s %10s" % ("path", "snapshot s", "restore s", "total s", "MiB/s"))
    for label, (snapshot_s, restore_s) in best.items():
        log("%-18s %10.2f %10.2f %10.2f %10.1f" % (label, snapshot_s, restore_s, snapshot_s + restore_s, mib / (snapshot_s + restore_s)))
    base = sum(best["curl"])
    for label in ("modules", "playbook modules"):
        overhead = (sum(best[label]) - base) / sum(best[label])
        log("%s overhead vs curl: %+.1f %% of wall time   (target < 5 %%)" % (label, overhead * 100))
    log("playbook modules vs playbook uri (peer): %.2fx the time" % (sum(best["playbook modules"]) / sum(best["playbook uri"])))
    log("load average after: %s" % (os.getloadavg(),))
    if args.small:
        log("(--small: correctness only; the numbers mean nothing)")


if __name__ == "__main__":
    os.environ.update({k: v for k, v in module_env().items() if k == "PYTHONPATH"})
    main()
