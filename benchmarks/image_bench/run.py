"""Image benchmark: config_archive vs the native pipeline vs community.general.archive.

    python benchmarks/image_bench/run.py [--size-mib 1024] [--rss-sizes 256,1024] [--small]

On one generated tree (text-like, mixed sizes, >= 10 000 files per GiB), in one run:

1. ``config_archive`` through ansible-playbook (session started with an age recipient,
   the archive task timed by ansible.posix.profile_tasks, then sealed);
2. the native pipeline ``tar -cf - TREE | zstd -3 -T0 | age -r RECIPIENT > out && sync out``;
3. ``community.general.archive`` (format gz) through ansible-playbook.

Prints throughput, ratios, output sizes and the module's peak RSS at two tree sizes
(memory must stay flat as data grows). ``--small`` is what CI runs: a small tree, for
correctness only; its numbers mean nothing.
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
        path: "{{ tree }}"
        dest: "{{ out }}/peer.tar.gz"
        format: gz
        mode: "0600"
"""


def gen_tree(path, size_mib, seed):
    subprocess.run([sys.executable, str(HERE / "gen_tree.py"), str(path), str(size_mib), str(seed)], check=True, stdout=subprocess.DEVNULL)
    files = sum(len(f) for _d, _s, f in os.walk(path))
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _s, fs in os.walk(path) for n in fs)
    return files, size


def task_seconds(output, name):
    """Seconds of one task from ansible.posix.profile_tasks' recap."""
    match = re.search(r"^%s\s+-+\s+([0-9.]+)s" % re.escape(name), output, flags=re.M)
    if not match:
        raise SystemExit("profile_tasks printed no time for %s:\n%s" % (name, output[-2000:]))
    return float(match.group(1))


def drop_caches():
    """Start each run from the same cache state: the whole tree in the page cache."""
    subprocess.run(["sync"], check=False)


def warm(tree):
    subprocess.run(["tar", "-C", "/", "-cf", "/dev/null", str(tree).lstrip("/")], check=True)


def native(tree, recipient, out):
    drop_caches()
    warm(tree)
    target = out / "native.tar.zst.age"
    # `sync FILE` (fsync): the module fsyncs what it writes before it journals a member.
    script = "tar -C / -cf - %s | zstd -3 -T0 -q | age -r %s > %s && sync %s" % (str(tree).lstrip("/"), recipient, target, target)
    start = time.time()
    subprocess.run(["bash", "-o", "pipefail", "-c", script], check=True)
    return time.time() - start, target.stat().st_size


def module_via_playbook(tree, recipient, out, work):
    drop_caches()
    warm(tree)
    for name in ("dest", "state"):
        shutil.rmtree(work / name, ignore_errors=True)
    (work / "dest").mkdir(parents=True)
    proc = run_playbook(
        PLAYBOOK_MODULE,
        work,
        extra_vars={"dest": str(work / "dest"), "state": str(work / "state"), "recipient": recipient, "tree": str(tree), "out": str(out)},
        env={"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks", "PROFILE_TASKS_SORT_ORDER": "none"},
    )
    if proc.returncode != 0:
        raise SystemExit("config_archive playbook failed:\n" + proc.stdout[-3000:])
    sealed = json.loads((out / "sealed.json").read_text())
    return task_seconds(proc.stdout, "config_archive"), sealed["size"], sealed["image"]


def peer_via_playbook(tree, out, work):
    drop_caches()
    warm(tree)
    proc = run_playbook(
        PLAYBOOK_PEER,
        work,
        extra_vars={"tree": str(tree), "out": str(out)},
        env={"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"},
    )
    if proc.returncode != 0:
        raise SystemExit("community.general.archive failed:\n" + proc.stdout[-3000:])
    return task_seconds(proc.stdout, "community.general.archive"), (out / "peer.tar.gz").stat().st_size


def module_peak_rss(tree, recipient, work):
    """Peak RSS (KiB) of one config_archive process on ``tree``, from GNU time."""
    for name in ("dest-rss", "state-rss"):
        shutil.rmtree(work / name, ignore_errors=True)
    (work / "dest-rss").mkdir(parents=True)
    started = run_module(
        "backup_session", state="started", destination=str(work / "dest-rss"), state_dir=str(work / "state-rss"), recipients=[recipient], facts_dir=""
    )
    session = started["session"]["work_dir"]
    report = work / "rss.txt"
    result = run_module("config_archive", session=session, paths=[str(tree)], prefix=["/usr/bin/time", "-f", "%M", "-o", str(report)])
    run_module("backup_session", state="aborted", session=session)
    if result.failed:
        raise SystemExit("config_archive failed: %s" % result.get("msg"))
    return int(report.read_text().split()[-1])


def verify(image, identity_file):
    checked = run_module("image_verify", image=image, level="full", identity_file=str(identity_file))
    if not checked.get("valid"):
        raise SystemExit("the benchmark image does not verify: %s" % checked.get("msg"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rss-sizes", default="256,1024", help="two tree sizes (MiB) for the peak-RSS comparison")
    parser.add_argument("--small", action="store_true", help="CI mode: 32 MiB, correctness only")
    parser.add_argument("--keep", action="store_true", help="keep the generated trees")
    parser.add_argument("--workdir", default=os.environ.get("LIFEBOAT_BENCH_DIR"), help="where trees and outputs go (default: a temp dir)")
    args = parser.parse_args()
    if args.small:
        args.size_mib, args.rss_sizes = 32, "8,32"
    rss_sizes = [int(s) for s in args.rss_sizes.split(",")]

    base = Path(args.workdir or tempfile.mkdtemp(prefix="lifeboat-image-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    out = base / "out"
    out.mkdir(exist_ok=True)
    keygen = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True)
    identity_file = base / "key.txt"
    identity_file.write_text(keygen.stdout)
    os.chmod(identity_file, 0o600)
    recipient = re.search(r"public key: (age1\S+)", keygen.stdout + keygen.stderr).group(1)

    tree = base / ("tree-%d" % args.size_mib)
    if not tree.exists():
        files, size = gen_tree(tree, args.size_mib, 42)
    else:
        files = sum(len(f) for _d, _s, f in os.walk(tree))
        size = sum(os.path.getsize(os.path.join(d, n)) for d, _s, fs in os.walk(tree) for n in fs)
    print("tree: %s, %d files, %.1f MiB; load average %s" % (tree, files, size / 2**20, os.getloadavg()), flush=True)

    native_s, native_bytes = native(tree, recipient, out)
    module_s, module_bytes, image = module_via_playbook(tree, recipient, out, base)
    verify(image, identity_file)
    peer_s, peer_bytes = peer_via_playbook(tree, out, base)

    rss = []
    for mib in rss_sizes:
        rss_tree = tree if mib == args.size_mib else base / ("tree-%d" % mib)
        if not rss_tree.exists():
            gen_tree(rss_tree, mib, 7)
        rss.append((mib, module_peak_rss(rss_tree, recipient, base)))

    mb = size / 1e6
    rows = [
        ("lifeboat config_archive (playbook task)", module_s, module_bytes),
        ("native tar | zstd -3 -T0 | age", native_s, native_bytes),
        ("community.general.archive (gz)", peer_s, peer_bytes),
    ]
    print("\n%-42s %9s %10s %12s" % ("path", "seconds", "MB/s", "output MB"))
    for name, seconds, produced in rows:
        print("%-42s %9.2f %10.1f %12.1f" % (name, seconds, mb / seconds, produced / 1e6))
    print("\nthroughput vs native pipeline: %.2fx   (target >= 0.8x)" % (native_s / module_s))
    print("throughput vs community.general.archive: %.2fx   (target >= 5x)" % (peer_s / module_s))
    print("output size vs native pipeline: %.3fx   (target <= 1.05x)" % (module_bytes / native_bytes))
    print("module peak RSS: %s   (target < 150 MB, flat)" % ", ".join("%d MiB tree: %.1f MB" % (m, kib / 1024) for m, kib in rss))
    print("load average after: %s" % (os.getloadavg(),))
    if not args.keep and not args.workdir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    env = module_env()
    os.environ.update({k: v for k, v in env.items() if k == "PYTHONPATH"})
    main()
