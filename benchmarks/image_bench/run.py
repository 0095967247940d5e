"""Image benchmark: config_archive vs the native pipeline vs community.general.archive.

    python benchmarks/image_bench/run.py [--size-mib 1024] [--rss-sizes 256,1024] [--rounds 3] [--small]

On one generated tree (text-like, mixed sizes, about 17 000 files per GiB), the cache
warmed by reading every file, in alternating rounds (benchmarks/README.md):

1. ``config_archive`` as a module process (what runs on the managed node), into a session
   encrypting to an age recipient; fsyncs its member, as the native side does;
2. the native pipeline ``tar -cf - TREE | zstd -3 -T0 | age -r RECIPIENT > out && sync out``;
3. ``config_archive`` and ``community.general.archive`` (gz) as ansible-playbook tasks
   (timed by ansible.posix.profile_tasks): the peer comparison, task against task.

The images are verified (image_verify level=full). Peak RSS of config_archive,
config_restore and image_verify at two tree sizes. ``--small`` is what CI runs: a small
tree, one round, for correctness only; its numbers mean nothing.
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
    - name: config_archive
      lifeboat.backup.config_archive:
        session: "{{ s.session.work_dir }}"
        paths: ["{{ tree }}"]
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
        path: "{{ tree }}"
        dest: "{{ out }}/peer.tar.gz"
        format: gz
        mode: "0600"
"""


class Bench:
    def __init__(self, base, tree, recipient, identity_file):
        self.base = base
        self.tree = tree
        self.recipient = recipient
        self.identity_file = identity_file
        self.out = base / "out"
        self.out.mkdir(exist_ok=True)
        self.image = None

    def _session(self, name):
        work = self.base / name
        shutil.rmtree(work, ignore_errors=True)
        (work / "dest").mkdir(parents=True)
        started = run_module(
            "backup_session", state="started", destination=str(work / "dest"), state_dir=str(work / "state"), recipients=[self.recipient], facts_dir=""
        )
        if started.failed:
            raise SystemExit("backup_session failed: %s" % started.get("msg"))
        return started["session"]["work_dir"]

    def module(self, tree=None, prefix=(), digests=True):
        """config_archive as one module process; the session around it is not timed. Without
        ``digests`` (diagnostic: benchmarks/no_digests), its SHA-256 digests are no-ops and
        its session is aborted, never sealed."""
        session = self._session("module" if digests else "no-digests")
        env = None if digests else common.no_digests_env(module_env()["PYTHONPATH"])
        start, cpu = time.time(), common.children_cpu_seconds()
        result = run_module("config_archive", env=env, session=session, paths=[str(tree or self.tree)], prefix=prefix)
        seconds, cpu = time.time() - start, common.children_cpu_seconds() - cpu
        if result.failed or not digests:
            run_module("backup_session", state="aborted", session=session)
        if result.failed:
            raise SystemExit("config_archive failed: %s" % result.get("msg"))
        if not digests:
            return {"seconds": seconds, "cpu_seconds": cpu}
        sealed = run_module("backup_session", state="sealed", session=session)
        if self.image and os.path.exists(self.image):
            os.unlink(self.image)
        self.image = sealed["image"]
        return {"seconds": seconds, "cpu_seconds": cpu, "bytes": result["stored_bytes"], "file_bytes": result["total_bytes"]}

    def native(self):
        target = self.out / "native.tar.zst.age"
        # `sync FILE` (fsync): the module fsyncs each member before it journals it.
        script = 'tar -C / -cf - "$1" | zstd -3 -T0 -q | age -r "$2" > "$3" && sync "$3"'
        subprocess.run(["bash", "-o", "pipefail", "-c", script, "native", str(self.tree).lstrip("/"), self.recipient, str(target)], check=True)
        return {"bytes": target.stat().st_size}

    def module_task(self):
        work = self.base / "task"
        shutil.rmtree(work, ignore_errors=True)
        (work / "dest").mkdir(parents=True)
        extra = {"dest": str(work / "dest"), "state": str(work / "state"), "recipient": self.recipient, "tree": str(self.tree)}
        proc = run_playbook(PLAYBOOK_MODULE, work, extra_vars=extra, env=common.PROFILE_ENV)
        if proc.returncode != 0:
            raise SystemExit("config_archive playbook failed:\n" + proc.stdout[-3000:])
        return {"seconds": common.task_seconds(proc.stdout, "config_archive")}

    def peer_task(self):
        proc = run_playbook(PLAYBOOK_PEER, self.base, extra_vars={"tree": str(self.tree), "out": str(self.out)}, env=common.PROFILE_ENV)
        if proc.returncode != 0:
            raise SystemExit("community.general.archive failed:\n" + proc.stdout[-3000:])
        return {"seconds": common.task_seconds(proc.stdout, "community.general.archive"), "bytes": (self.out / "peer.tar.gz").stat().st_size}

    def verify(self):
        checked = run_module("image_verify", image=self.image, level="full", identity_file=str(self.identity_file))
        if not checked.get("valid"):
            raise SystemExit("the benchmark image does not verify: %s" % checked.get("msg"))

    def peak_rss(self, tree):
        """Peak RSS (MB) of config_archive, image_verify and config_restore on ``tree``."""
        report = self.base / "rss.txt"
        timed = ["/usr/bin/time", "-f", "%M", "-o", str(report)]
        self.module(tree, prefix=timed)
        archive = common.peak_rss_mb(report)
        checked = run_module("image_verify", image=self.image, level="full", identity_file=str(self.identity_file), prefix=timed)
        if not checked.get("valid"):
            raise SystemExit("image_verify failed: %s" % checked.get("msg"))
        verify = common.peak_rss_mb(report)
        root = self.base / "restored"
        shutil.rmtree(root, ignore_errors=True)
        restored = run_module("config_restore", image=self.image, identity_file=str(self.identity_file), root=str(root), prefix=timed)
        if restored.failed:
            raise SystemExit("config_restore failed: %s" % restored.get("msg"))
        shutil.rmtree(root, ignore_errors=True)
        return {"config_archive": archive, "image_verify": verify, "config_restore": common.peak_rss_mb(report)}


def rss_at_sizes(bench, base, sizes, main_size):
    rss = {}
    for mib in sizes:
        tree = bench.tree if mib == main_size else base / ("tree-%d" % mib)
        if not tree.exists():
            common.gen_tree(tree, mib, 7)
        common.warm_tree(tree)
        for module, mb in bench.peak_rss(tree).items():
            rss.setdefault(module, []).append(("%d MiB" % mib, mb))
    return rss


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rss-sizes", default="256,1024", help="two tree sizes (MiB) for the peak-RSS comparison")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (at least 3 for a figure worth quoting)")
    parser.add_argument("--small", action="store_true", help="CI mode: 32 MiB, one round, correctness only")
    parser.add_argument("--keep", action="store_true", help="keep the generated trees")
    parser.add_argument("--workdir", default=os.environ.get("LIFEBOAT_BENCH_DIR"), help="where trees and outputs go (default: a temp dir)")
    args = parser.parse_args()
    if args.small:
        args.size_mib, args.rss_sizes, args.rounds = 32, "8,32", 1
    rss_sizes = [int(s) for s in args.rss_sizes.split(",")]

    base = Path(args.workdir or tempfile.mkdtemp(prefix="lifeboat-image-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    identity_file, recipient = common.make_key(base)
    tree = base / ("tree-%d" % args.size_mib)
    if not tree.exists():
        common.gen_tree(tree, args.size_mib, 42)
    files, size = common.tree_size(tree)
    print(
        "image benchmark, %s: tree %s, %d files, %.1f MiB; load %s" % (time.strftime("%Y-%m-%d %H:%M"), tree, files, size / 2**20, common.load_text()),
        flush=True,
    )
    bench = Bench(base, tree, recipient, identity_file)

    rounds = common.Rounds("config archive of %.0f MiB" % (size / 2**20), args.rounds, warm=lambda: common.warm_tree(tree))
    module = rounds.add("config_archive (module process)", bench.module)
    bare = rounds.add("config_archive, digests skipped (diagnostic)", lambda: bench.module(digests=False))
    native = rounds.add("tar | zstd -3 -T0 | age && sync", bench.native)
    task = rounds.add("config_archive (playbook task)", bench.module_task)
    peer = rounds.add("community.general.archive gz (task)", bench.peer_task)
    rounds.run().table(size / 1e6)
    print(common.digest_cost("config_archive", module, native, module.last("file_bytes"), module.last("bytes")))
    print(common.without_digests("config_archive", bare, native))
    bench.verify()

    rss = rss_at_sizes(bench, base, rss_sizes, args.size_mib)
    goals = [
        common.Goal("config_archive vs tar|zstd|age (throughput)", common.ratio(module, native), 0.9, busy=common.busy(module, native)),
        common.Goal("config_archive vs community.general.archive (task vs task)", common.ratio(task, peer), 8, busy=common.busy(task, peer)),
        common.Goal("config_archive output size vs native", module.last("bytes") / native.last("bytes"), 1.05, higher=False),
    ]
    for name, sizes in rss.items():
        goals += common.rss_goal(name, sizes)
    common.summary("image_bench", goals, args.small)
    if not args.keep and not args.workdir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    os.environ.update({k: v for k, v in module_env().items() if k == "PYTHONPATH"})
    main()
