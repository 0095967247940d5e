"""PostgreSQL benchmark: postgresql_dump / postgresql_restore vs the native pipeline vs
community.postgresql.postgresql_db, on one database, in one run.

    python benchmarks/postgresql_bench/run.py [--scale 100] [--text-mib 700] [--small]

A private PostgreSQL 15 (the test harness's) gets one database: ``pgbench -i`` at the
given scale (pgbench_accounts: 100 000 rows per scale unit) plus a text-heavy table of
word-salad documents. Then, on that same database:

1. ``postgresql_dump`` with jobs 1 and jobs 2 (playbook tasks, timed by
   ansible.posix.profile_tasks; session encrypting to an age recipient);
2. the native pipelines ``pg_dump -Fc | zstd -3 -T0 | age -r R`` (pg_dump's default gzip,
   as the issue names it) and ``pg_dump -Fc -Z0 | zstd -3 -T0 | age -r R`` (the same work
   as the module: one compression, zstd);
3. ``community.postgresql.postgresql_db state=dump`` (custom format, no encryption).

Restores: ``postgresql_restore`` jobs 1 (streamed) and jobs 2 (via scratch), the native
``age -d | zstd -d | pg_restore``, and ``postgresql_db state=restore``, each into a new
database checked for its row count. Peak RSS of the dump module on a small and the big
database and on one a tenth its size (memory must not grow with the data). The machine is
shared with other work, so the dump paths run in alternating rounds (``--rounds``) and
each path's best time counts. ``--small`` is what CI runs: correctness only, its numbers
mean nothing.
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


def task_seconds(output, name):
    """Seconds of one task from ansible.posix.profile_tasks' recap."""
    match = re.search(r"^%s\s+-+\s+([0-9.]+)s" % re.escape(name), output, flags=re.M)
    if not match:
        raise SystemExit("profile_tasks printed no time for %s:\n%s" % (name, output[-3000:]))
    return float(match.group(1))


def playbook(text, work, task, extra):
    proc = run_playbook(text, work, extra_vars=extra, env={"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks", "PROFILE_TASKS_SORT_ORDER": "none"})
    if proc.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (task, proc.stdout[-4000:]))
    return task_seconds(proc.stdout, task)


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


def native_directory(server, db, out, jobs):
    """pg_dump -Fd -Z0 with ``jobs`` workers to a plain directory: what parallel pg_dump alone
    gains on this machine and data, before any compression or encryption."""
    target = out / ("native-dir-j%d" % jobs)
    shutil.rmtree(target, ignore_errors=True)
    start = time.time()
    subprocess.run([str(server.bin_dir / "pg_dump"), "-Fd", "-Z0", "-j", str(jobs), "-f", str(target)], env=dict(os.environ, **server.env(db)), check=True)
    seconds = time.time() - start
    shutil.rmtree(target, ignore_errors=True)
    return seconds, None


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


def module_peak_rss(server, db, recipient, base):
    """Peak RSS (KiB) of one postgresql_dump process, from GNU time."""
    work = base / "rss"
    shutil.rmtree(work, ignore_errors=True)
    (work / "dest").mkdir(parents=True)
    started = run_module("backup_session", state="started", destination=str(work / "dest"), state_dir=str(work / "state"), recipients=[recipient])
    session = started["session"]["work_dir"]
    report = work / "rss.txt"
    result = run_module(
        "postgresql_dump",
        session=session,
        databases=[db],
        login_host=server.host,
        port=server.port,
        login_password=server.password,
        prefix=["/usr/bin/time", "-f", "%M", "-o", str(report)],
    )
    run_module("backup_session", state="aborted", session=session)
    if result.failed:
        raise SystemExit("postgresql_dump failed: %s" % result.get("msg"))
    return int(report.read_text().split()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--scale", type=int, default=100, help="pgbench scale (100 is about 1.5 GB with indexes)")
    parser.add_argument("--text-mib", type=int, default=700, help="size of the text documents table")
    parser.add_argument("--rounds", type=int, default=2, help="dump rounds; the best time of each path counts")
    parser.add_argument("--small", action="store_true", help="CI mode: scale 1, 4 MiB of text, one round, correctness only")
    parser.add_argument("--workdir", default=os.environ.get("LIFEBOAT_BENCH_DIR"), help="where outputs go (default: a temp dir)")
    args = parser.parse_args()
    if args.small:
        args.scale, args.text_mib, args.rounds = 1, 4, 1

    base = Path(args.workdir or tempfile.mkdtemp(prefix="lifeboat-pg-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    out = base / "out"
    out.mkdir(exist_ok=True)
    keygen = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True)
    identity_file = base / "key.txt"
    identity_file.write_text(keygen.stdout)
    os.chmod(identity_file, 0o600)
    recipient = re.search(r"public key: (age1\S+)", keygen.stdout + keygen.stderr).group(1)

    with PostgresServer(settings={"shared_buffers": "256MB", "max_wal_size": "4GB", "checkpoint_timeout": "30min"}) as server:
        started = time.time()
        size = populate(server, "bench", args.scale, args.text_mib)
        # A second database a tenth the size: the module's peak RSS must not grow with the data.
        medium = populate(server, "medium", max(1, args.scale // 10), max(1, args.text_mib // 10))
        accounts = count_accounts(server, "bench")
        print(
            "database: %.1f MiB (pgbench scale %d, %d MiB of text), made in %.0f s; load average %s"
            % (size / 2**20, args.scale, args.text_mib, time.time() - started, os.getloadavg()),
            flush=True,
        )

        # The machine is shared: run the dump paths in alternating rounds and keep each one's
        # best time, so a burst of someone else's load does not land on one path only.
        best = {}
        outputs = {}
        for round_no in range(args.rounds):
            for label, run in (
                ("module j1", lambda: module_dump(server, "bench", recipient, base, 1)),
                ("native", lambda: native_dump(server, "bench", recipient, out, None)),
                ("module j1 full", lambda: module_dump(server, "bench", recipient, base, 1, "full")),
                ("module j2", lambda: module_dump(server, "bench", recipient, base, 2)),
                ("native -Z0", lambda: native_dump(server, "bench", recipient, out, 0)),
                ("peer", lambda: (peer(server, "dump", "bench", out / "peer.pgc", base), out / "peer.pgc")),
                ("pg_dump -Fd -j1", lambda: native_directory(server, "bench", out, 1)),
                ("pg_dump -Fd -j2", lambda: native_directory(server, "bench", out, 2)),
            ):
                seconds, produced = run()
                best[label] = min(seconds, best.get(label, seconds))
                outputs[label] = produced
            print("round %d: %s; load average %s" % (round_no + 1, ", ".join("%s %.1f s" % kv for kv in best.items()), os.getloadavg()), flush=True)
        dumps = {"module j1": (best["module j1"], outputs["module j1"]), "module j2": (best["module j2"], outputs["module j2"])}
        native_s, native_file = best["native"], outputs["native"]
        native0_s, native0_file = best["native -Z0"], outputs["native -Z0"]
        peer_s, peer_file = best["peer"], outputs["peer"]
        for label in ("module j1", "module j2"):
            checked = run_module("image_verify", image=str(outputs[label]), level="full", identity_file=str(identity_file))
            if not checked.get("valid"):
                raise SystemExit("benchmark image does not verify: %s" % checked.get("msg"))

        restores = {}
        for label, jobs, image in (("module j1 (streamed)", 1, dumps["module j1"][1]), ("module j2 (scratch)", 2, dumps["module j2"][1])):
            target = "r_module_j%d" % jobs
            restores[label] = module_restore(server, image, identity_file, "bench", target, jobs, base)
            assert count_accounts(server, target) == accounts, label
        restores["native age|zstd|pg_restore"] = native_restore(server, native0_file, identity_file, "r_native")
        assert count_accounts(server, "r_native") == accounts
        server.psql('CREATE DATABASE "r_peer"')
        restores["community.postgresql restore"] = peer(server, "restore", "r_peer", peer_file, base)
        assert count_accounts(server, "r_peer") == accounts

        rss_small = module_peak_rss(server, "medium", recipient, base)
        rss_big = module_peak_rss(server, "bench", recipient, base)

    mb = size / 1e6
    rows = [
        ("postgresql_dump jobs=1", dumps["module j1"][0], dumps["module j1"][1].stat().st_size),
        ("postgresql_dump jobs=1 verify=full", best["module j1 full"], outputs["module j1 full"].stat().st_size),
        ("postgresql_dump jobs=2", dumps["module j2"][0], dumps["module j2"][1].stat().st_size),
        ("pg_dump -Fc | zstd | age", native_s, native_file.stat().st_size),
        ("pg_dump -Fc -Z0 | zstd | age", native0_s, native0_file.stat().st_size),
        ("community.postgresql_db dump (-Fc)", peer_s, peer_file.stat().st_size),
    ]
    print("\n%-38s %9s %14s %12s" % ("dump (best of %d)" % args.rounds, "seconds", "DB MB/s", "output MB"))
    for name, seconds, produced in rows:
        print("%-38s %9.2f %14.1f %12.1f" % (name, seconds, mb / seconds, produced / 1e6))
    j1, j2 = dumps["module j1"][0], dumps["module j2"][0]
    print("\njobs=1 throughput vs pg_dump -Fc | zstd | age:      %.2fx   (target >= 0.9x)" % (native_s / j1))
    print("jobs=1 throughput vs pg_dump -Fc -Z0 | zstd | age:  %.2fx" % (native0_s / j1))
    print("jobs=2 vs jobs=1:                                   %.2fx   (target >= 1.5x on 2 cores)" % (j1 / j2))
    print("jobs=1 vs community.postgresql_db dump:             %.2fx   (target > 1x)" % (peer_s / j1))
    print(
        "for reference, plain pg_dump -Fd -Z0 to disk: -j1 %.1f s, -j2 %.1f s (%.2fx from a second worker on this machine and data)"
        % (best["pg_dump -Fd -j1"], best["pg_dump -Fd -j2"], best["pg_dump -Fd -j1"] / best["pg_dump -Fd -j2"])
    )
    print("\n%-38s %9s" % ("restore", "seconds"))
    for name, seconds in restores.items():
        print("%-38s %9.2f" % (name, seconds))
    print(
        "\npostgresql_dump peak RSS: %.1f MB on a %.0f MiB database, %.1f MB on the %.0f MiB one (target: flat)"
        % (rss_small / 1024, medium / 2**20, rss_big / 1024, size / 2**20)
    )
    print("load average after: %s" % (os.getloadavg(),))
    if not args.workdir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    os.environ.update({k: v for k, v in module_env().items() if k == "PYTHONPATH"})
    main()
