"""PostgreSQL benchmark: postgresql_dump / postgresql_restore vs the native pipelines vs
community.postgresql.postgresql_db, on one database, in one run.

    python benchmarks/postgresql_bench/run.py [--scale 100] [--text-mib 700] [--rounds 3] [--small]

A private PostgreSQL 15 (the test harness's) gets one database: ``pgbench -i`` at the
given scale (pgbench_accounts: 100 000 rows per scale unit) plus a text-heavy table of
word-salad documents. With the method of benchmarks/README.md (alternating rounds, best and
median, spread, load), on that same database:

1. dumps: ``postgresql_dump`` jobs 1, 2 and 4 (playbook tasks, timed by
   ansible.posix.profile_tasks; session encrypting to an age recipient; ``fingerprint:
   none``, since the native pipelines fingerprint nothing - its cost is in docs/drills.md;
   jobs above 1 is the parallel streams format of docs/postgresql.md); the native
   ``pg_dump -Fc -Z0 | zstd -3 -T0 | age`` (the same work: one compression, zstd), the
   parallel one an operator builds by hand (``pg_dump -Fd -Z0 -j2`` then
   ``tar | zstd | age``), ``pg_dump -Fc | zstd | age`` for reference, and
   ``community.postgresql.postgresql_db state=dump`` (custom format, not encrypted);
2. restores into a new database, row count checked: ``postgresql_restore`` jobs 1 and 2
   against ``age -d | zstd -dc | pg_restore``;
3. peak RSS of postgresql_dump and postgresql_restore on the database and on one a tenth
   its size (memory must not grow with the data).

The goals of issue #15 are printed with their verdicts. ``--small`` is what CI runs:
correctness only, its numbers mean nothing.
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

from benchmarks import common  # noqa: E402
from tests.harness.servers import PostgresServer  # noqa: E402
from tests.support.modules import module_env, run_module, run_playbook  # noqa: E402

# Word salad: compresses like real prose (about 3x with zstd), not like repeated blocks.
WORDS = [
    "indicator",
    "observable",
    "campaign",
    "malware",
    "actor",
    "report",
    "sighting",
    "incident",
    "ttp",
    "exploit",
    "target",
    "vulnerability",
    "domain",
    "address",
    "hash",
    "url",
    "email",
    "certificate",
    "registry",
    "mutex",
    "file",
    "process",
    "network",
    "beacon",
    "command",
    "control",
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "from",
    "at",
    "or",
    "an",
    "have",
    "not",
    "which",
    "but",
    "all",
    "analyst",
    "confidence",
    "severity",
    "source",
    "feed",
    "enrichment",
    "relationship",
    "entity",
    "timeline",
    "attribution",
]

DUMP_PLAYBOOK = """
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
      register: s
    - name: postgresql_dump
      lifeboat.backup.postgresql_dump:
        session: "{{ s.session.work_dir }}"
        login_host: "{{ host }}"
        port: "{{ port }}"
        login_password: "{{ password }}"
        databases: ["{{ db }}"]
        jobs: "{{ jobs }}"
        verify: "{{ verify }}"
        fingerprint: none
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

RESTORE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: postgresql_restore
      lifeboat.backup.postgresql_restore:
        image: "{{ image }}"
        identity_file: "{{ identity_file }}"
        login_host: "{{ host }}"
        port: "{{ port }}"
        login_password: "{{ password }}"
        rename: "{{ rename }}"
        globals: none
        jobs: "{{ jobs }}"
        analyze: false
"""

PEER_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: community.postgresql.postgresql_db
      community.postgresql.postgresql_db:
        name: "{{ target }}"
        state: "{{ state }}"
        target: "{{ file }}"
        login_host: "{{ host }}"
        port: "{{ port }}"
        login_password: "{{ password }}"
"""


def playbook(text, work, task, extra):
    proc = run_playbook(text, work, extra_vars=extra, env=common.PROFILE_ENV)
    if proc.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (task, proc.stdout[-4000:]))
    return common.task_seconds(proc.stdout, task)


def populate(server, db, scale, text_mib):
    """pgbench tables plus a table of text documents (about 2 KiB each)."""
    server.psql('CREATE DATABASE "%s"' % db)
    env = dict(os.environ, **server.env(db))
    subprocess.run([str(server.bin_dir / "pgbench"), "-i", "-q", "-s", str(scale), db], env=env, check=True, capture_output=True)
    rows = max(1, text_mib * 1024 // 2)
    words = "ARRAY[%s]" % ",".join("'%s'" % w for w in WORDS)
    server.psql(
        "CREATE TABLE documents (id bigint PRIMARY KEY, title text, body text, created timestamptz);"
        "INSERT INTO documents SELECT g, 'document ' || g, "
        "  (SELECT string_agg((%s)[1 + floor(random() * %d)::int], ' ') FROM generate_series(1, 280 + (g %% 7)) WHERE g > 0), "
        "  now() - g * interval '1 minute' FROM generate_series(1, %d) g;"
        "VACUUM ANALYZE documents;" % (words, len(WORDS), rows),
        dbname=db,
    )
    return int(server.psql("SELECT pg_database_size('%s')" % db))


def count_accounts(server, db):
    return int(server.psql("SELECT count(*) FROM pgbench_accounts", dbname=db))


def native_dump(server, db, recipient, out, compress):
    target = out / ("native%s.dump.zst.age" % ("-Z0" if compress == 0 else ""))
    flags = "-Fc" + (" -Z0" if compress == 0 else "")
    script = "%s/pg_dump %s | zstd -3 -T0 -q | age -r %s > %s" % (server.bin_dir, flags, recipient, target)
    start = time.time()
    subprocess.run(["bash", "-o", "pipefail", "-c", script], env=dict(os.environ, **server.env(db)), check=True)
    return time.time() - start, target


def native_restore(server, dump, identity_file, target):
    server.psql('CREATE DATABASE "%s"' % target)
    script = "age -d -i %s %s | zstd -dc | %s/pg_restore --exit-on-error -d %s" % (identity_file, dump, server.bin_dir, target)
    start = time.time()
    subprocess.run(["bash", "-o", "pipefail", "-c", script], env=dict(os.environ, **server.env(target)), check=True)
    return time.time() - start


def module_dump(server, db, recipient, base, jobs, verify="toc"):
    work = base / ("dump-j%d-%s" % (jobs, verify))
    shutil.rmtree(work, ignore_errors=True)
    (work / "dest").mkdir(parents=True)
    extra = {
        "dest": str(work / "dest"),
        "state": str(work / "state"),
        "recipient": recipient,
        "out": str(work),
        "host": server.host,
        "port": server.port,
        "password": server.password,
        "db": db,
        "jobs": jobs,
        "verify": verify,
    }
    seconds = playbook(DUMP_PLAYBOOK, work, "postgresql_dump", extra)
    sealed = json.loads((work / "sealed.json").read_text())
    return seconds, Path(sealed["image"])


def module_restore(server, image, identity_file, db, target, jobs, base):
    extra = {
        "image": str(image),
        "identity_file": str(identity_file),
        "host": server.host,
        "port": server.port,
        "password": server.password,
        "rename": {db: target},
        "jobs": jobs,
    }
    return playbook(RESTORE_PLAYBOOK, base, "postgresql_restore", extra)


def peer(server, state, db, path, base):
    extra = {"target": db, "state": state, "file": str(path), "host": server.host, "port": server.port, "password": server.password}
    return playbook(PEER_PLAYBOOK, base, "community.postgresql.postgresql_db", extra)


def native_directory_pipeline(server, db, out, jobs, recipient):
    """``pg_dump -Fd -Z0 -j N`` to disk, then ``tar | zstd -3 -T0 | age``: the parallel dump
    an operator builds by hand (it writes the plaintext tables to disk first)."""
    target = out / ("native-dir-j%d" % jobs)
    shutil.rmtree(target, ignore_errors=True)
    image = out / ("native-dir-j%d.tar.zst.age" % jobs)
    script = '"$1"/pg_dump -Fd -Z0 -j "$2" -f "$3" && tar -C "$3" -cf - . | zstd -3 -T0 -q | age -r "$4" > "$5"'
    subprocess.run(
        ["bash", "-o", "pipefail", "-c", script, "native", str(server.bin_dir), str(jobs), str(target), recipient, str(image)],
        env=dict(os.environ, **server.env(db)),
        check=True,
    )
    shutil.rmtree(target, ignore_errors=True)
    return {"bytes": image.stat().st_size}


def timed_module(name, report, **params):
    """Run one module under GNU time; its result and peak RSS (MB)."""
    result = run_module(name, prefix=["/usr/bin/time", "-f", "%M", "-o", str(report)], **params)
    if result.failed:
        raise SystemExit("%s failed: %s" % (name, result.get("msg")))
    return result, common.peak_rss_mb(report)


def peak_rss(server, db, recipient, identity_file, base):
    """Peak RSS (MB) of postgresql_dump and postgresql_restore on database ``db``."""
    work = base / "rss"
    shutil.rmtree(work, ignore_errors=True)
    (work / "dest").mkdir(parents=True)
    started = run_module("backup_session", state="started", destination=str(work / "dest"), state_dir=str(work / "state"), recipients=[recipient])
    session = started["session"]["work_dir"]
    login = {"login_host": server.host, "port": server.port, "login_password": server.password}
    try:
        _result, dump_rss = timed_module("postgresql_dump", work / "rss.txt", session=session, databases=[db], jobs=2, **login)
    finally:
        sealed = run_module("backup_session", state="sealed", session=session)
    target = "rss_%s" % db
    server.psql('DROP DATABASE IF EXISTS "%s"' % target)
    _result, restore_rss = timed_module(
        "postgresql_restore",
        work / "rss.txt",
        image=sealed["image"],
        identity_file=str(identity_file),
        rename={db: target},
        globals="none",
        analyze=False,
        **login,
    )
    server.psql('DROP DATABASE IF EXISTS "%s"' % target)
    return dump_rss, restore_rss


class Bench:
    def __init__(self, server, base, recipient, identity_file):
        self.server = server
        self.base = base
        self.out = base / "out"
        self.out.mkdir(exist_ok=True)
        self.recipient = recipient
        self.identity_file = identity_file
        self.images = {}
        self.accounts = count_accounts(server, "bench")

    def dump(self, jobs):
        def run():
            seconds, image = module_dump(self.server, "bench", self.recipient, self.base, jobs)
            self.images[jobs] = image
            return {"seconds": seconds, "bytes": image.stat().st_size}

        return run

    def native(self, compress):
        def run():
            _seconds, target = native_dump(self.server, "bench", self.recipient, self.out, compress)
            return {"bytes": target.stat().st_size}

        return run

    def peer(self):
        return {"seconds": peer(self.server, "dump", "bench", self.out / "peer.pgc", self.base), "bytes": (self.out / "peer.pgc").stat().st_size}

    def _fresh(self, target):
        self.server.psql('DROP DATABASE IF EXISTS "%s"' % target)

    def restore(self, jobs):
        def run():
            target = "r_module_j%d" % jobs
            self._fresh(target)
            seconds = module_restore(self.server, self.images[jobs], self.identity_file, "bench", target, jobs, self.base)
            if count_accounts(self.server, target) != self.accounts:
                raise SystemExit("postgresql_restore jobs=%d restored the wrong row count" % jobs)
            return {"seconds": seconds}

        return run

    def native_restore(self):
        self._fresh("r_native")
        seconds = native_restore(self.server, self.out / "native-Z0.dump.zst.age", self.identity_file, "r_native")
        if count_accounts(self.server, "r_native") != self.accounts:
            raise SystemExit("the native restore restored the wrong row count")
        return {"seconds": seconds}


def dump_goals(rounds):
    j1, j2, z0 = rounds["postgresql_dump jobs=1 (task)"], rounds["postgresql_dump jobs=2 (task)"], rounds["pg_dump -Fc -Z0 | zstd -3 -T0 | age"]
    fd2 = rounds["pg_dump -Fd -Z0 -j2, tar | zstd | age"]
    peer_path = rounds["community.postgresql_db dump (task)"]
    return [
        common.Goal("postgresql_dump jobs=1 vs pg_dump -Fc -Z0|zstd|age", common.ratio(j1, z0), 0.9, busy=common.busy(j1, z0)),
        common.Goal("postgresql_dump jobs=2 vs jobs=1", common.ratio(j2, j1), 1.3, busy=common.busy(j1, j2)),
        common.Goal("postgresql_dump jobs=2 vs pg_dump -Fd -j2 + tar|zstd|age", common.ratio(j2, fd2), 1.0, busy=common.busy(j2, fd2)),
        common.Goal("postgresql_dump jobs=1 vs community.postgresql_db (task)", common.ratio(j1, peer_path), 1.0, busy=common.busy(j1, peer_path)),
        common.Goal("postgresql_dump output size vs -Z0 pipeline", j1.last("bytes") / z0.last("bytes"), 1.05, higher=False),
    ]


def restore_goals(rounds):
    native = rounds["age -d | zstd -dc | pg_restore"]
    goals = []
    for jobs in (1, 2):
        path = rounds["postgresql_restore jobs=%d (task)" % jobs]
        goals.append(common.Goal("postgresql_restore jobs=%d vs age|zstd|pg_restore" % jobs, common.ratio(path, native), 0.9, busy=common.busy(path, native)))
    return goals


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--scale", type=int, default=100, help="pgbench scale (100 is about 1.5 GB with indexes)")
    parser.add_argument("--text-mib", type=int, default=700, help="size of the text documents table")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (at least 3 for a figure worth quoting)")
    parser.add_argument("--small", action="store_true", help="CI mode: scale 1, 4 MiB of text, one round, correctness only")
    parser.add_argument("--workdir", default=os.environ.get("LIFEBOAT_BENCH_DIR"), help="where outputs go (default: a temp dir)")
    args = parser.parse_args()
    if args.small:
        args.scale, args.text_mib, args.rounds = 1, 4, 1

    base = Path(args.workdir or tempfile.mkdtemp(prefix="lifeboat-pg-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    keygen = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True)
    identity_file = base / "key.txt"
    identity_file.write_text(keygen.stdout)
    os.chmod(identity_file, 0o600)
    recipient = re.search(r"public key: (age1\S+)", keygen.stdout + keygen.stderr).group(1)

    with PostgresServer(settings={"shared_buffers": "256MB", "max_wal_size": "4GB", "checkpoint_timeout": "30min"}) as server:
        started = time.time()
        size = populate(server, "bench", args.scale, args.text_mib)
        # A second database a tenth the size: peak RSS must not grow with the data.
        medium = populate(server, "medium", max(1, args.scale // 10), max(1, args.text_mib // 10))
        print(
            "postgresql benchmark, %s: database %.1f MiB (pgbench scale %d, %d MiB of text), made in %.0f s; load %s"
            % (time.strftime("%Y-%m-%d %H:%M"), size / 2**20, args.scale, args.text_mib, time.time() - started, common.load_text()),
            flush=True,
        )
        bench = Bench(server, base, recipient, identity_file)
        dumps = common.Rounds("dump of the %.0f MiB database" % (size / 2**20), args.rounds)
        dumps.add("postgresql_dump jobs=1 (task)", bench.dump(1))
        dumps.add("pg_dump -Fc -Z0 | zstd -3 -T0 | age", bench.native(0))
        dumps.add("postgresql_dump jobs=2 (task)", bench.dump(2))
        dumps.add("pg_dump -Fd -Z0 -j2, tar | zstd | age", lambda: native_directory_pipeline(server, "bench", bench.out, 2, recipient))
        dumps.add("postgresql_dump jobs=4 (task)", bench.dump(4))
        dumps.add("pg_dump -Fc | zstd -3 -T0 | age (gzip twice)", bench.native(None))
        dumps.add("community.postgresql_db dump (task)", bench.peer)
        dumps.run().table(size / 1e6)
        for jobs, image in bench.images.items():
            checked = run_module("image_verify", image=str(image), level="full", identity_file=str(identity_file))
            if not checked.get("valid"):
                raise SystemExit("the jobs=%d image does not verify: %s" % (jobs, checked.get("msg")))

        restores = common.Rounds("restore into a new database", args.rounds)
        restores.add("postgresql_restore jobs=1 (task)", bench.restore(1))
        restores.add("age -d | zstd -dc | pg_restore", bench.native_restore)
        restores.add("postgresql_restore jobs=2 (task)", bench.restore(2))
        restores.run().table(size / 1e6)

        rss_small = peak_rss(server, "medium", recipient, identity_file, base)
        rss_big = peak_rss(server, "bench", recipient, identity_file, base)

    goals = dump_goals(dumps) + restore_goals(restores)
    small_label, big_label = "%.0f MiB" % (medium / 2**20), "%.0f MiB" % (size / 2**20)
    goals += common.rss_goal("postgresql_dump", [(small_label, rss_small[0]), (big_label, rss_big[0])])
    goals += common.rss_goal("postgresql_restore", [(small_label, rss_small[1]), (big_label, rss_big[1])])
    common.summary("postgresql_bench", goals, args.small)
    if not args.workdir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    os.environ.update({k: v for k, v in module_env().items() if k == "PYTHONPATH"})
    main()
