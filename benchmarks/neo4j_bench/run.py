"""Neo4j benchmark: neo4j_archive vs the native pipelines vs community.general.archive.

    python benchmarks/neo4j_bench/run.py [--nodes 1000000] [--small]

On one real Neo4j 5 community store (tests/harness/neo4j.py: nodes with a text property,
a relationship chain), with Neo4j stopped, in one run:

1. ``neo4j_archive`` method=files through ansible-playbook (session with an age recipient,
   the task timed by ansible.posix.profile_tasks);
2. the native pipeline ``tar -C DATA -cf - . | zstd -3 -T0 | age -r RECIPIENT > out``;
3. ``community.general.archive`` (format gz) of the data directory, the peer module;
4. ``neo4j_archive`` method=dump (database neo4j) against the native
   ``neo4j-admin database dump neo4j --to-stdout | zstd -3 -T0 | age -r RECIPIENT``.

The image is then verified (image_verify level=full). ``--small`` is what CI runs: a small
store, for correctness only; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.neo4j import Neo4jServer  # noqa: E402
from tests.support.modules import run_module, run_playbook  # noqa: E402

PLAYBOOK_MODULE = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: start
      lifeboat.backup.backup_session:
        state: started
        destination: "{{ dest }}"
        state_dir: "{{ state }}"
        recipients: ["{{ recipient }}"]
        node: bench
        facts_dir: ""
      register: s
    - name: neo4j_archive files
      lifeboat.backup.neo4j_archive:
        session: "{{ s.session.work_dir }}"
        home: "{{ home }}"
    - name: neo4j_archive dump
      lifeboat.backup.neo4j_archive:
        session: "{{ s.session.work_dir }}"
        name: neo4j-dump
        home: "{{ home }}"
        method: dump
        databases: [neo4j]
    - name: seal
      lifeboat.backup.backup_session:
        state: sealed
        session: "{{ s.session.work_dir }}"
      register: sealed
    - name: result
      ansible.builtin.copy:
        content: "{{ sealed | to_json }}"
        dest: "{{ out }}/sealed.json"
        mode: "0600"
"""

PLAYBOOK_PEER = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: community.general.archive
      community.general.archive:
        path: "{{ data }}"
        dest: "{{ out }}/peer.tar.gz"
        format: gz
        mode: "0600"
"""

BATCH = 50_000


def task_seconds(output, name):
    """Seconds of one task from ansible.posix.profile_tasks' recap."""
    match = re.search(r"^%s\s+-+\s+([0-9.]+)s" % re.escape(name), output, flags=re.M)
    if not match:
        raise SystemExit("profile_tasks printed no time for %s:\n%s" % (name, output[-2000:]))
    return float(match.group(1))


def fill(server, nodes):
    """Nodes with a text property in batches, then a chain of relationships."""
    for start in range(0, nodes, BATCH):
        server.query(
            "UNWIND range($start, $end) AS i CREATE (:Indicator {id: i, value: 'indicator-' + toString(i) + '-' + toString(i * 7919 % 104729)})",
            start=start,
            end=min(start + BATCH, nodes) - 1,
        )
    server.query("CREATE INDEX indicator_id IF NOT EXISTS FOR (n:Indicator) ON (n.id)")
    server.query("CALL db.awaitIndexes(600)")
    for start in range(0, nodes - 1, BATCH):
        server.query(
            "MATCH (a:Indicator) WHERE a.id >= $start AND a.id < $end MATCH (b:Indicator {id: a.id + 1}) CREATE (a)-[:NEXT]->(b)",
            start=start,
            end=min(start + BATCH, nodes - 1),
        )


def tree_size(path):
    files = sum(len(f) for _d, _s, f in os.walk(path))
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _s, fs in os.walk(path) for n in fs)
    return files, size


def warm(path):
    subprocess.run(["tar", "-C", str(path), "-cf", "/dev/null", "."], check=True)


def timed_shell(script, env=None):
    start = time.time()
    subprocess.run(["bash", "-o", "pipefail", "-c", script], check=True, env=env, stderr=subprocess.DEVNULL)
    return time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--small", action="store_true", help="CI mode: 5000 nodes, correctness only")
    parser.add_argument("--workdir", default=os.environ.get("LIFEBOAT_BENCH_DIR"), help="where outputs go (default: a temp dir)")
    args = parser.parse_args()
    if args.small:
        args.nodes = 5000

    base = Path(args.workdir or tempfile.mkdtemp(prefix="lifeboat-neo4j-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    out = base / "out"
    out.mkdir(exist_ok=True)
    keygen = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True)
    identity_file = base / "key.txt"
    identity_file.write_text(keygen.stdout)
    os.chmod(identity_file, 0o600)
    recipient = re.search(r"public key: (age1\S+)", keygen.stdout + keygen.stderr).group(1)

    with Neo4jServer(heap="512m", pagecache="256m") as server:
        started = time.time()
        fill(server, args.nodes)
        counts = server.query("MATCH (n) WITH count(n) AS nodes MATCH ()-[r]->() RETURN nodes, count(r) AS relationships")[0]
        print("store: %(nodes)d nodes, %(relationships)d relationships" % counts, "(filled in %.1f s)" % (time.time() - started), flush=True)
        server.halt()
        data = server.data_dir
        files, size = tree_size(data)
        print("data directory: %s, %d files, %.1f MiB; load average %s" % (data, files, size / 2**20, os.getloadavg()), flush=True)
        admin_env = dict(os.environ, NEO4J_HOME=str(server.home), NEO4J_CONF=str(server.conf_file.parent))

        warm(data)
        native_s = timed_shell("tar -C %s -cf - . | zstd -3 -T0 -q | age -r %s > %s/native.tar.zst.age" % (data, recipient, out))
        native_bytes = (out / "native.tar.zst.age").stat().st_size
        native_dump_s = timed_shell(
            "%s database dump neo4j --to-stdout | zstd -3 -T0 -q | age -r %s > %s/native.dump.zst.age" % (server.neo4j_admin, recipient, out), env=admin_env
        )
        native_dump_bytes = (out / "native.dump.zst.age").stat().st_size

        warm(data)
        for name in ("dest", "state"):
            shutil.rmtree(base / name, ignore_errors=True)
        (base / "dest").mkdir()
        proc = run_playbook(
            PLAYBOOK_MODULE,
            base,
            extra_vars={"dest": str(base / "dest"), "state": str(base / "state"), "recipient": recipient, "home": str(server.home), "out": str(out)},
            env={"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks", "PROFILE_TASKS_SORT_ORDER": "none"},
        )
        if proc.returncode != 0:
            raise SystemExit("neo4j_archive playbook failed:\n" + proc.stdout[-3000:])
        sealed = json.loads((out / "sealed.json").read_text())
        module_s = task_seconds(proc.stdout, "neo4j_archive files")
        module_dump_s = task_seconds(proc.stdout, "neo4j_archive dump")
        checked = run_module("image_verify", image=sealed["image"], level="full", identity_file=str(identity_file))
        if not checked.get("valid"):
            raise SystemExit("the benchmark image does not verify: %s" % checked.get("msg"))
        members = run_module("image_info", image=sealed["image"])["manifest"]["members"]
        stored = {m["component"]: 0 for m in members}
        for member in members:
            stored[member["component"]] += member["stored_size"]

        warm(data)
        profile = {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}
        proc = run_playbook(PLAYBOOK_PEER, base, extra_vars={"data": str(data), "out": str(out)}, env=profile)
        if proc.returncode != 0:
            raise SystemExit("community.general.archive failed:\n" + proc.stdout[-3000:])
        peer_s = task_seconds(proc.stdout, "community.general.archive")
        peer_bytes = (out / "peer.tar.gz").stat().st_size

    mib = size / 2**20
    rows = [
        ("neo4j_archive files (module)", module_s, stored["neo4j"]),
        ("tar | zstd -3 -T0 | age (native)", native_s, native_bytes),
        ("community.general.archive gz (peer)", peer_s, peer_bytes),
        ("neo4j_archive dump (module)", module_dump_s, stored["neo4j-dump"]),
        ("neo4j-admin dump | zstd | age (native)", native_dump_s, native_dump_bytes),
    ]
    print("\n%-42s %9s %10s %12s" % ("", "seconds", "MiB/s", "output MiB"))
    for label, seconds, output in rows:
        print("%-42s %9.2f %10.1f %12s" % (label, seconds, mib / seconds if seconds else 0, "%.1f" % (output / 2**20) if output else "-"))
    print("\nfiles: module / native = %.2f x the time; module / peer = %.2f x the time" % (module_s / native_s, module_s / peer_s))
    print("dump:  module / native = %.2f x the time" % (module_dump_s / native_dump_s))
    print("image verified (full): %s" % sealed["image"])
    if args.small:
        print("(--small: correctness only; the numbers mean nothing)")
    if not args.workdir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
