"""Cluster benchmark: the backup and restore playbooks on three nodes in one run vs one node alone.

    python benchmarks/cluster_bench/run.py [--nodes 3] [--tree-mib 256] [--scale 20] [--rounds 3] [--small]

Each node has what a platform node has: a tree of configuration files (generated, text-like)
and its own PostgreSQL server (pgbench tables). The nodes are inventory hosts on this machine
(``ansible_connection: local``), each with its own destination, state directory and server,
so the roles run for them exactly as for remote nodes, in parallel (Ansible forks).

In alternating rounds (benchmarks/README.md), the whole ``playbooks/backup.yml`` and
``playbooks/restore.yml`` runs are timed (wall time of ansible-playbook), for the first node
alone and for all nodes in one run. Before a restore is timed, each node's tree is deleted
(the restore writes every file) and the restore replaces its database (``restore_clean``);
the files and the row counts are checked after every restore.

The goal (issue #15): N nodes in one run take at most 1.3x one node's time. On a real
cluster each node has its own cores; here the nodes (and the controller) share this
machine's, so the benchmark also prints the machine's CPU-seconds for each run and the least
time that work can take on these cores (CPU-seconds / cores). When the N nodes' floor is
above one node's whole run, the goal is "not judged": the machine sets the ratio, not the
roles; the run's time against its floor then tells how well the nodes overlap. ``--small`` is what CI runs: tiny data,
one round, correctness only; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
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

import yaml  # noqa: E402

from benchmarks import common  # noqa: E402
from tests.harness.servers import PostgresServer  # noqa: E402
from tests.support.modules import module_env, run_playbook  # noqa: E402

CORES = os.cpu_count() or 1


def snapshot(tree):
    """{relative path: (size, mtime)} of every file: what a restore must bring back."""
    found = {}
    for directory, _dirs, files in os.walk(tree):
        for name in files:
            stat = os.lstat(os.path.join(directory, name))
            found[os.path.relpath(os.path.join(directory, name), tree)] = (stat.st_size, int(stat.st_mtime))
    return found


class Node:
    def __init__(self, name, base, server, tree_mib, scale, seed):
        self.name = name
        self.root = base / name
        self.tree = self.root / "etc-app"
        self.server = server
        (self.root / "dest").mkdir(parents=True)
        common.gen_tree(self.tree, tree_mib, seed)
        self.files = snapshot(self.tree)
        server.psql('CREATE DATABASE "app"')
        env = dict(os.environ, **server.env("app"))
        subprocess.run([str(server.bin_dir / "pgbench"), "-i", "-q", "-s", str(scale), "app"], env=env, check=True, capture_output=True)
        self.rows = self.accounts()

    def accounts(self):
        return int(self.server.psql("SELECT count(*) FROM pgbench_accounts", dbname="app"))

    def host_vars(self, identity_file):
        login = {"login_host": self.server.host, "port": self.server.port, "login_password": self.server.password}
        profile = {
            "name": "bench",
            "platform": {"name": "bench", "version": "1.0"},
            "components": [
                {"name": "config", "kind": "config", "paths": [str(self.tree)]},
                dict({"name": "db", "kind": "postgresql", "databases": ["app"], "globals": False}, **login),
            ],
            "checks": [],
        }
        return {
            "backup_profile": profile,
            "restore_profile": profile,
            "backup_destination": str(self.root / "dest"),
            "backup_state_dir": str(self.root / "state"),
            "backup_facts_dir": str(self.root / "facts"),
            "restore_destination": str(self.root / "dest"),
            "restore_state_dir": str(self.root / "state"),
            "restore_identity_file": str(identity_file),
        }

    def check_restored(self):
        if snapshot(self.tree) != self.files:
            raise SystemExit("%s: the restored tree differs from the backed-up one" % self.name)
        if self.accounts() != self.rows:
            raise SystemExit("%s: the restored database has other row counts" % self.name)


class Bench:
    def __init__(self, base, nodes, recipient, identity_file):
        self.base = base
        self.nodes = nodes
        self.recipient = recipient
        self.identity_file = identity_file

    def _inventory(self, count):
        hosts = {n.name: n.host_vars(self.identity_file) for n in self.nodes[:count]}
        shared = {
            "ansible_connection": "local",
            "backup_recipients": [self.recipient],
            "backup_quiesce": False,
            "backup_retention": {"keep_last": 2},
            "restore_quiesce": False,
            "restore_clean": True,
        }
        path = self.base / ("inventory-%d.yml" % count)
        path.write_text(yaml.safe_dump({"all": {"hosts": hosts, "vars": shared}}))
        return str(path)

    def _playbook(self, name, count):
        started = time.time()
        cpu0 = common.machine_cpu_seconds()
        proc = run_playbook((ROOT / "playbooks" / name).read_text(), self.base, inventory=self._inventory(count), env={"ANSIBLE_FORKS": str(max(5, count))})
        seconds = time.time() - started
        cpu = common.machine_cpu_seconds() - cpu0
        if proc.returncode != 0:
            raise SystemExit("%s on %d node(s) failed:\n%s" % (name, count, proc.stdout[-4000:]))
        return {"seconds": seconds, "cpu": cpu}

    def backup(self, count):
        return lambda: self._playbook("backup.yml", count)

    def restore(self, count):
        def run():
            for node in self.nodes[:count]:
                shutil.rmtree(node.tree)
            timed = self._playbook("restore.yml", count)
            for node in self.nodes[:count]:
                node.check_restored()
            return timed

        return run


def cpu_floor(path):
    """(machine CPU-seconds of the median run, the least time they take on these cores)."""
    cpu = sorted(s.extra["cpu"] for s in path.samples)[len(path.samples) // 2]
    return cpu, cpu / CORES


def goal(kind, one, many, count):
    _cpu, floor = cpu_floor(many)
    reason = None
    if floor > one.median:
        # Even packed perfectly on these cores, the nodes' work takes longer than one node's
        # whole run: the machine, not the roles, sets the ratio.
        reason = "the %d nodes' work needs %.1f s of this machine's %d cores, more than one node's whole run (%.1f s)" % (count, floor, CORES, one.median)
    return common.Goal(
        "%s: %d nodes in one run vs one node" % (kind, count), many.median / one.median, 1.3, higher=False, busy=common.busy(one, many), not_judged=reason
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--tree-mib", type=int, default=256, help="configuration files per node (MiB)")
    parser.add_argument("--scale", type=int, default=20, help="pgbench scale of each node's database (20 is about 300 MB)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (at least 3 for a figure worth quoting)")
    parser.add_argument("--small", action="store_true", help="CI mode: 2 nodes together, 4 MiB and scale 1 each, one round, correctness only")
    parser.add_argument("--workdir", default=os.environ.get("LIFEBOAT_BENCH_DIR"), help="where trees and images go (default: a temp dir)")
    args = parser.parse_args()
    if args.small:
        args.nodes, args.tree_mib, args.scale, args.rounds = 2, 4, 1, 1
    if args.nodes < 2:
        parser.error("--nodes must be at least 2")

    base = Path(args.workdir or tempfile.mkdtemp(prefix="lifeboat-cluster-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    identity_file, recipient = common.make_key(base)
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(PostgresServer()) for _node in range(args.nodes)]
        nodes = [Node("node%d" % (i + 1), base, server, args.tree_mib, args.scale, 40 + i) for i, server in enumerate(servers)]
        print(
            "cluster benchmark, %s: %d nodes, each %d MiB of configuration files and a %.0f MiB database (pgbench scale %d); %d cores; load %s"
            % (
                time.strftime("%Y-%m-%d %H:%M"),
                args.nodes,
                args.tree_mib,
                int(nodes[0].server.psql("SELECT pg_database_size('app')")) / 2**20,
                args.scale,
                CORES,
                common.load_text(),
            ),
            flush=True,
        )
        bench = Bench(base, nodes, recipient, identity_file)
        rounds = common.Rounds("backup and restore playbooks", args.rounds)
        # --small checks the runs, not the ratio (small numbers mean nothing): the nodes
        # together only, which keeps make test's time down.
        backup_one = None if args.small else rounds.add("backup.yml, node1 alone", bench.backup(1))
        backup_many = rounds.add("backup.yml, %d nodes" % args.nodes, bench.backup(args.nodes))
        restore_one = None if args.small else rounds.add("restore.yml, node1 alone", bench.restore(1))
        restore_many = rounds.add("restore.yml, %d nodes" % args.nodes, bench.restore(args.nodes))
        rounds.run().table()
        print("\nCPU (the whole machine's, median run)")
        for path in rounds.paths.values():
            cpu, floor = cpu_floor(path)
            line = "%-36s machine CPU %6.1f s, floor on %d cores %6.1f s, median run %6.1f s = %.2fx its floor"
            print("  " + line % (path.label, cpu, CORES, floor, path.median, path.median / floor if floor else 0.0))
        goals = [] if args.small else [goal("backup", backup_one, backup_many, args.nodes), goal("restore", restore_one, restore_many, args.nodes)]
        common.summary("cluster_bench", goals, args.small)
    if not args.workdir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    os.environ.update({k: v for k, v in module_env().items() if k == "PYTHONPATH"})
    main()
