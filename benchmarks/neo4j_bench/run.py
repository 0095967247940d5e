"""Neo4j benchmark: neo4j_archive vs the native pipelines vs community.general.archive.

    python benchmarks/neo4j_bench/run.py [--nodes 1000000] [--rounds 3] [--small]

On one real Neo4j 5 community store (tests/harness/neo4j.py: nodes with a text property,
a relationship chain), with Neo4j stopped, the cache warmed by reading every file, in
alternating rounds (benchmarks/README.md):

1. ``neo4j_archive`` method=files as a module process (what runs on the managed node), into
   a session encrypting to an age recipient, against the native pipeline
   ``tar -C DATA -cf - . | zstd -3 -T0 | age -r RECIPIENT > out && sync out``;
2. ``neo4j_archive`` method=dump (database neo4j) against the native
   ``neo4j-admin database dump neo4j --to-stdout | zstd -3 -T0 | age -r RECIPIENT``.

Then, once, ``neo4j_archive`` files and ``community.general.archive`` (gz) as playbook tasks
(the peer takes about 30 times as long: one run reads that ratio). The images are verified
(image_verify level=full); peak RSS of each module run. ``--small`` is what CI runs: a small
store, one round, for correctness only; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from tests.harness.neo4j import Neo4jServer  # noqa: E402
from tests.support.modules import module_env, run_module, run_playbook  # noqa: E402

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
    - name: abort
      lifeboat.backup.backup_session:
        state: aborted
        session: "{{ s.session.work_dir }}"
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


def shell(script, *args, env=None):
    subprocess.run(["bash", "-o", "pipefail", "-c", script, "bench", *map(str, args)], check=True, env=env, stderr=subprocess.DEVNULL)


class Bench:
    """The paths, each a callable for common.Rounds; the modules run as processes (what runs
    on the managed node), each into its own session, with peak RSS from GNU time."""

    def __init__(self, server, base, recipient):
        self.server = server
        self.base = base
        self.out = base / "out"
        self.out.mkdir(exist_ok=True)
        self.recipient = recipient
        self.admin_env = dict(os.environ, NEO4J_HOME=str(server.home), NEO4J_CONF=str(server.conf_file.parent))
        self.images = {}

    def module(self, method, digests=True):
        """neo4j_archive as one module process; the session around it is not timed. Without
        ``digests`` (diagnostic), its SHA-256 digests are no-ops and its session is aborted."""

        def run():
            work = self.base / ("module-%s%s" % (method, "" if digests else "-no-digests"))
            shutil.rmtree(work, ignore_errors=True)
            (work / "dest").mkdir(parents=True)
            started = run_module(
                "backup_session", state="started", destination=str(work / "dest"), state_dir=str(work / "state"), recipients=[self.recipient], facts_dir=""
            )
            session = started["session"]["work_dir"]
            options = {"databases": ["neo4j"]} if method == "dump" else {}
            report = work / "rss.txt"
            start, cpu = time.time(), common.children_cpu_seconds()
            result = run_module(
                "neo4j_archive",
                prefix=["/usr/bin/time", "-f", "%M", "-o", str(report)],
                env=None if digests else common.no_digests_env(module_env()["PYTHONPATH"]),
                session=session,
                home=str(self.server.home),
                method=method,
                **options,
            )
            seconds, cpu = time.time() - start, common.children_cpu_seconds() - cpu
            if result.failed or not digests:
                run_module("backup_session", state="aborted", session=session)
            if result.failed:
                raise SystemExit("neo4j_archive method=%s failed: %s" % (method, result.get("msg")))
            if not digests:
                return {"seconds": seconds, "cpu_seconds": cpu}
            sealed = run_module("backup_session", state="sealed", session=session)
            self.images[method] = sealed["image"]
            return {"seconds": seconds, "cpu_seconds": cpu, "bytes": os.path.getsize(sealed["image"]), "rss": common.peak_rss_mb(report)}

        return run

    def native_files(self):
        target = self.out / "native.tar.zst.age"
        shell('tar -C "$1" -cf - . | zstd -3 -T0 -q | age -r "$2" > "$3" && sync "$3"', self.server.data_dir, self.recipient, target)
        return {"bytes": target.stat().st_size}

    def native_dump(self):
        target = self.out / "native.dump.zst.age"
        script = '"$1" database dump neo4j --to-stdout | zstd -3 -T0 -q | age -r "$2" > "$3" && sync "$3"'
        shell(script, self.server.neo4j_admin, self.recipient, target, env=self.admin_env)
        return {"bytes": target.stat().st_size}

    def tasks(self):
        """neo4j_archive files and community.general.archive as playbook tasks: (module s, peer s)."""
        for name in ("dest", "state"):
            shutil.rmtree(self.base / name, ignore_errors=True)
        (self.base / "dest").mkdir()
        extra = {"dest": str(self.base / "dest"), "state": str(self.base / "state"), "recipient": self.recipient, "home": str(self.server.home)}
        proc = run_playbook(PLAYBOOK_MODULE, self.base, extra_vars=extra, env=common.PROFILE_ENV)
        if proc.returncode != 0:
            raise SystemExit("neo4j_archive playbook failed:\n" + proc.stdout[-3000:])
        module_s = common.task_seconds(proc.stdout, "neo4j_archive files")
        common.warm_tree(self.server.data_dir)
        proc = run_playbook(PLAYBOOK_PEER, self.base, extra_vars={"data": str(self.server.data_dir), "out": str(self.out)}, env=common.PROFILE_ENV)
        if proc.returncode != 0:
            raise SystemExit("community.general.archive failed:\n" + proc.stdout[-3000:])
        return module_s, common.task_seconds(proc.stdout, "community.general.archive")

    def verify(self, identity_file):
        for method, image in self.images.items():
            checked = run_module("image_verify", image=image, level="full", identity_file=str(identity_file))
            if not checked.get("valid"):
                raise SystemExit("the %s image does not verify: %s" % (method, checked.get("msg")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (at least 3 for a figure worth quoting)")
    parser.add_argument("--small", action="store_true", help="CI mode: 5000 nodes, one round, correctness only")
    parser.add_argument("--workdir", default=os.environ.get("LIFEBOAT_BENCH_DIR"), help="where outputs go (default: a temp dir)")
    args = parser.parse_args()
    if args.small:
        args.nodes, args.rounds = 5000, 1

    base = Path(args.workdir or tempfile.mkdtemp(prefix="lifeboat-neo4j-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    identity_file, recipient = common.make_key(base)

    with Neo4jServer(heap="512m", pagecache="256m") as server:
        started = time.time()
        fill(server, args.nodes)
        counts = server.query("MATCH (n) WITH count(n) AS nodes MATCH ()-[r]->() RETURN nodes, count(r) AS relationships")[0]
        print("store: %(nodes)d nodes, %(relationships)d relationships" % counts, "(filled in %.1f s)" % (time.time() - started), flush=True)
        server.halt()
        data = server.data_dir
        files, size = common.tree_size(data)
        print(
            "neo4j benchmark, %s: data directory %s, %d files, %.1f MiB; load %s"
            % (time.strftime("%Y-%m-%d %H:%M"), data, files, size / 2**20, common.load_text()),
            flush=True,
        )
        bench = Bench(server, base, recipient)
        rounds = common.Rounds("Neo4j store of %.0f MiB, Neo4j stopped" % (size / 2**20), args.rounds, warm=lambda: common.warm_tree(data))
        files_module = rounds.add("neo4j_archive files (module process)", bench.module("files"))
        files_bare = rounds.add("neo4j_archive files, digests skipped (diagnostic)", bench.module("files", digests=False))
        files_native = rounds.add("tar | zstd -3 -T0 | age && sync", bench.native_files)
        dump_module = rounds.add("neo4j_archive dump (module process)", bench.module("dump"))
        dump_native = rounds.add("neo4j-admin dump | zstd | age && sync", bench.native_dump)
        rounds.run().table(size / 1e6)
        print(common.digest_cost("neo4j_archive files", files_module, files_native, size, files_module.last("bytes")))
        print(common.without_digests("neo4j_archive files", files_bare, files_native))
        bench.verify(identity_file)
        # Once: the peer takes about 30 times as long, so its ratio does not need rounds to be read.
        task_s, peer_s = bench.tasks()
        print("\nplaybook tasks, one run: neo4j_archive files %.2f s, community.general.archive gz %.2f s" % (task_s, peer_s))

    goals = [
        common.Goal(
            "neo4j_archive files vs tar|zstd|age (throughput)", common.ratio(files_module, files_native), 0.9, busy=common.busy(files_module, files_native)
        ),
        common.Goal("neo4j_archive dump vs neo4j-admin dump|zstd|age", common.ratio(dump_module, dump_native), 0.9, busy=common.busy(dump_module, dump_native)),
        common.Goal("neo4j_archive files vs community.general.archive (task, one run)", peer_s / task_s, 8),
        common.Goal("neo4j_archive files output size vs native", files_module.last("bytes") / files_native.last("bytes"), 1.05, higher=False),
    ]
    rss = max(s.extra["rss"] for s in files_module.samples)
    goals.append(common.Goal("neo4j_archive files peak RSS", rss, 150, higher=False, unit="MB", note="one store size, %.0f MiB" % (size / 2**20)))
    # GNU time reports the largest process of the tree: for dump, neo4j-admin's JVM, not the module.
    print("\nneo4j_archive dump: largest process %.0f MB (neo4j-admin's JVM, -Xmx256m)" % max(s.extra["rss"] for s in dump_module.samples))
    common.summary("neo4j_bench", goals, args.small)
    if not args.workdir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    os.environ.update({k: v for k, v in module_env().items() if k == "PYTHONPATH"})
    main()
