"""Continuous archiving and point-in-time recovery benchmark, in one run on one server.

    python benchmarks/pitr_bench/run.py [--segments 64] [--scale 130] [--minutes 30] [--small]

1. **Archiving throughput.** A private PostgreSQL 15 with ``archive_mode = on`` writes a
   backlog of ``--segments`` WAL segments (archiving paused: an empty ``archive_command``)
   with pgbench-style updates and inserts of text rows, then one archive command drains it, timed until
   ``pg_stat_archiver`` has the last one. Three commands drain equal backlogs of the same
   load, in alternating rounds (the best time of each counts: the machine is shared):

   - ``lifeboat-wal`` as ``postgresql_wal_archive`` installs it (asynchronous, ``parallel: 2``,
     zstd level 3, age to one recipient, durable: written aside, fsynced, read back, renamed);
   - the native pipeline ``zstd -q -c %p | age -r R > dir/%f.zst.age`` (no fsync, no check
     of an existing file);
   - pgBackRest 2.x, the peer tool (``archive-async``, ``process-max=2``, zstd level 3,
     AES-256 repository encryption).

   Peak RSS of the pusher is sampled from /proc.
2. **Recovery.** A database of ``--scale`` pgbench units (130 is about 2 GB), a base backup
   into an image, then ``--minutes`` of pgbench at ``--tps`` transactions per second,
   archived; ``postgresql_pitr`` restores it to the end of that load ("30 minutes after the
   base backup"). Reported: the whole restore, its stages (WAL check, unpack, replay), the
   WAL replayed and the replay rate, the module's peak RSS (GNU time).

``--small`` is what CI runs (``make bench-small``): a few segments, a tiny database, 12 s of
load; correctness only, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.process import chown_tree, free_port, service_account  # noqa: E402
from tests.harness.servers import PostgresServer  # noqa: E402
from tests.support.modules import run_module  # noqa: E402

BIN = Path("/usr/lib/postgresql/15/bin")
SYSTEM_PYTHON = "/usr/bin/python3"
SEGMENT = 16 * 1024 * 1024


# ---- helpers ------------------------------------------------------------------------------


def set_command(server, command):
    server.psql("ALTER SYSTEM SET archive_command = %s; SELECT pg_reload_conf();" % quote(command))
    time.sleep(0.3)


def quote(text):
    return "'" + text.replace("'", "''") + "'"


def ready(server):
    return sorted(p.name[: -len(".ready")] for p in (server.data_dir / "pg_wal" / "archive_status").glob("*.ready"))


def backlog(server, segments):
    """Pause archiving and write until ``segments`` segments wait: pgbench-style updates (full
    page images, index entries) mixed with inserts of text rows, as a busy server writes."""
    set_command(server, "")
    while len(ready(server)) < segments:
        server.psql(
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid %% 7 = %d; "
            "INSERT INTO filler(note) SELECT md5(random()::text) || repeat(' event', 8) FROM generate_series(1, 50000); CHECKPOINT" % (time.monotonic_ns() % 7)
        )
    server.psql("SELECT pg_switch_wal()")
    time.sleep(0.5)
    return ready(server)


def drain(server, command, segments):
    """Seconds ``command`` takes to archive a fresh backlog."""
    waiting = backlog(server, segments)
    last = max(n for n in waiting if len(n) == 24)
    started = time.monotonic()
    set_command(server, command)
    while True:
        done = server.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        if done[:24] >= last and not ready(server):
            break
        if time.monotonic() - started > 3600:
            raise SystemExit("archiving with %s did not finish within an hour" % command)
        time.sleep(0.05)
    return time.monotonic() - started, len(waiting)


def peak_rss(words, peak):
    """Sample into ``peak`` the peak RSS (KiB, VmHWM) of processes whose command line holds
    all of ``words``: the process itself, not the servers or tools it starts."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")
            if all(any(w in a for a in argv) for w in words):
                status = Path("/proc", entry, "status").read_text()
                peak[0] = max(peak[0], int(re.search(r"VmHWM:\s+(\d+)", status).group(1)))
        except (OSError, AttributeError):
            continue


class Sampler:
    """peak_rss every 50 ms in a thread, while a ``with`` block runs."""

    def __init__(self, *words):
        self.words = [w.encode() for w in words]
        self.peak = [0]
        self.stop = threading.Event()

    def __enter__(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop.is_set():
            peak_rss(self.words, self.peak)
            time.sleep(0.05)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def pgbackrest_setup(server, base, account):
    """A pgBackRest stanza on ``server``: async push, 2 processes, zstd 3, AES-256 repository."""
    root = base / "pgbackrest"
    for sub in ("repo", "spool", "log", "lock"):
        (root / sub).mkdir(parents=True)
    conf = root / "pgbackrest.conf"
    conf.write_text(
        "[global]\nrepo1-path=%s\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=%s\ncompress-type=zst\ncompress-level=3\n"
        "archive-async=y\nspool-path=%s\nprocess-max=2\nlog-level-console=warn\nlog-level-file=warn\nlog-path=%s\nlock-path=%s\n"
        "[bench]\npg1-path=%s\npg1-socket-path=%s\npg1-port=%d\n"
        % (root / "repo", secrets.token_hex(24), root / "spool", root / "log", root / "lock", server.data_dir, server.socket_dir, server.port)
    )
    conf.chmod(0o600)
    chown_tree(root, account.pw_uid, account.pw_gid)
    env = dict(os.environ, PGPASSWORD=server.password)
    made = subprocess.run(
        ["runuser", "-u", "postgres", "--", "pgbackrest", "--config=%s" % conf, "--stanza=bench", "stanza-create"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        raise SystemExit("pgbackrest stanza-create failed: %s" % (made.stderr or made.stdout))
    return "pgbackrest --config=%s --stanza=bench archive-push %%p" % conf


def rate(seconds, count):
    return count * SEGMENT / seconds / 2**20


# ---- 1. archiving ---------------------------------------------------------------------------


def wal_archive(server, base, recipient, name, **extra):
    """Set archiving up with postgresql_wal_archive; its archive command."""
    setup = run_module(
        "postgresql_wal_archive",
        login_unix_socket=str(server.socket_dir),
        port=server.port,
        login_password=server.password,
        target={"type": "local", "path": str(base / "archive")},
        archive_prefix=name,
        recipients=[recipient],
        name=name,
        settings_file=str(base / "etc" / (name + ".json")),
        spool_dir=str(base / "spool" / name),
        program_path=str(base / "bin" / "lifeboat-wal"),
        interpreter=SYSTEM_PYTHON,
        archive_timeout=0,
        **extra,
    )
    if setup.failed:
        raise SystemExit("postgresql_wal_archive failed: %s" % setup.get("msg"))
    return setup["archive_command"]


def archiving(server, base, args, recipient, account):
    commands = {"lifeboat-wal": wal_archive(server, base, recipient, "bench")}
    if not args.small:
        # The same at zstd level 3, the native pipeline's level: what the default level buys.
        commands["lifeboat zstd3"] = wal_archive(server, base, recipient, "level3", compression_level=3)
    native_dir = base / "native"
    native_dir.mkdir()
    chown_tree(native_dir, account.pw_uid, account.pw_gid)
    commands["zstd | age"] = "zstd -q -c %%p | age -r %s > %s/%%f.zst.age" % (recipient, native_dir)
    if shutil.which("pgbackrest"):
        commands["pgbackrest"] = pgbackrest_setup(server, base, account)
    best, pusher = {}, Sampler("daemon", str(base / "etc" / "bench.json"))
    for round_no in range(args.rounds):
        for label, command in commands.items():
            with pusher:
                seconds, count = drain(server, command, args.segments)
            best[label] = min(best.get(label, (1e9, 0)), (seconds, count))
            print("round %d %-12s %3d segments in %6.2f s  %7.1f MB/s" % (round_no + 1, label, count, seconds, rate(seconds, count)), flush=True)
    set_command(server, commands["lifeboat-wal"])
    return best, pusher.peak[0], stored_sizes(base)


def stored_sizes(base):
    """Bytes each way of archiving wrote, per segment, to compare what the levels cost."""
    sizes = {}
    for label, folder, pattern in (
        ("lifeboat-wal", base / "archive" / "bench", "wal/*/*.age"),
        ("lifeboat zstd3", base / "archive" / "level3", "wal/*/*.age"),
        ("zstd | age", base / "native", "*.age"),
    ):
        files = list(folder.glob(pattern))
        if files:
            sizes[label] = sum(f.stat().st_size for f in files) / len(files)
    return sizes


# ---- 2. recovery -----------------------------------------------------------------------------


def recovery(server, base, args, recipient, identity_file):
    env = dict(os.environ, **server.env())
    size = int(server.psql("SELECT pg_database_size('postgres')"))
    images = base / "images"
    images.mkdir()
    started = run_module("backup_session", state="started", destination=str(images), state_dir=str(base / "state"), recipients=[recipient], node="bench")
    work = started["session"]["work_dir"]
    taken = run_module("postgresql_basebackup", session=work, login_unix_socket=str(server.socket_dir), port=server.port, login_password=server.password)
    if taken.failed:
        raise SystemExit("postgresql_basebackup failed: %s" % taken.get("msg"))
    sealed = run_module("backup_session", state="sealed", session=work)
    lsn_before = server.psql("SELECT pg_current_wal_lsn()")
    load = subprocess.run(
        [str(BIN / "pgbench"), "-n", "-c", "2", "-j", "2", "-R", str(args.tps), "-T", str(int(args.minutes * 60)), "postgres"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    target = server.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    wal_bytes = int(server.psql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '%s')" % lsn_before))
    # A time target is reached at the first commit after it: one more transaction, a second later.
    time.sleep(1.1)
    server.psql("INSERT INTO filler(note) VALUES ('after the target')")
    segment = server.psql("SELECT pg_walfile_name(pg_switch_wal())")
    while server.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")[:24] < segment:
        time.sleep(0.2)
    tps = re.search(r"tps = ([\d.]+)", load.stdout)
    print(
        "recovery data: %.0f MiB database (scale %d), image %s, then %.1f min of pgbench at %s tps: %.0f MiB of WAL"
        % (size / 2**20, args.scale, Path(sealed["image"]).name, args.minutes, tps.group(1) if tps else "?", wal_bytes / 2**20),
        flush=True,
    )
    restored = base / "restored"
    restored.mkdir()
    began = time.monotonic()
    module = Sampler("postgresql_pitr")
    with module:
        done = run_module(
            "postgresql_pitr",
            run_timeout=7200,
            image=str(images),
            data_dir=str(restored / "data"),
            target={"type": "local", "path": str(base / "archive")},
            archive_prefix="bench",
            identity_file=str(identity_file),
            recovery_target_time=target,
            port=free_port(),
            final_state="stopped",
            interpreter=SYSTEM_PYTHON,
            timeout=7200,
        )
    total = time.monotonic() - began
    if done.failed:
        raise SystemExit("postgresql_pitr failed: %s" % done.get("msg"))
    stages = stage_times(done["progress"])
    replayed = done["wal"]["delivered_bytes"]
    return {
        "size": size,
        "wal_bytes": wal_bytes,
        "total": total,
        "stages": stages,
        "replayed": replayed,
        "rss": module.peak[0],
        "reached": done["reached"],
    }


def stage_times(samples):
    """Seconds spent per stage, from the progress samples' elapsed times."""
    marks = {}
    for sample in samples:
        marks.setdefault(sample["stage"], [sample["elapsed"], sample["elapsed"]])
        marks[sample["stage"]][1] = sample["elapsed"]
    order = [s for s in ("plan", "verify", "restore", "recover", "done") if s in marks]
    return {stage: round(marks[nxt][0] - marks[stage][0], 1) for stage, nxt in zip(order, order[1:])}


# ---- main ---------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--segments", type=int, default=64, help="WAL segments per archiving backlog (16 MB each)")
    parser.add_argument("--rounds", type=int, default=2, help="archiving rounds; the best time of each command counts")
    parser.add_argument("--scale", type=int, default=130, help="pgbench scale of the restored database (130 is about 2 GB)")
    parser.add_argument("--minutes", type=float, default=30, help="minutes of load after the base backup")
    parser.add_argument("--tps", type=int, default=300, help="pgbench rate during that load")
    parser.add_argument("--small", action="store_true", help="CI mode: 4 segments, scale 2, 12 s of load; correctness only")
    parser.add_argument("--workdir", default=os.environ.get("LIFEBOAT_BENCH_DIR"), help="where outputs go (default: a temp dir)")
    args = parser.parse_args()
    if args.small:
        args.segments, args.rounds, args.scale, args.minutes, args.tps = 4, 1, 2, 0.2, 100
    base = Path(args.workdir or tempfile.mkdtemp(prefix="lifeboat-pitr-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    account = service_account("postgres")
    keygen = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True)
    identity_file = base / "key.txt"
    identity_file.write_text(keygen.stdout)
    identity_file.chmod(0o600)
    recipient = re.search(r"public key: (age1\S+)", keygen.stdout + keygen.stderr).group(1)
    settings = {"archive_mode": "on", "max_wal_size": "16GB", "checkpoint_timeout": "30min", "shared_buffers": "256MB"}
    print("load average at start: %s" % (os.getloadavg(),), flush=True)
    with PostgresServer(settings=settings) as server:
        # One database for both parts: the archiving backlogs are its pgbench load.
        made = time.monotonic()
        subprocess.run(
            [str(BIN / "pgbench"), "-i", "-q", "-s", str(args.scale), "postgres"], env=dict(os.environ, **server.env()), capture_output=True, check=True
        )
        server.psql("CREATE TABLE filler(id bigserial PRIMARY KEY, note text)")
        print("pgbench -i -s %d in %.0f s" % (args.scale, time.monotonic() - made), flush=True)
        best, pusher_peak, sizes = archiving(server, base, args, recipient, account)
        result = recovery(server, base, args, recipient, identity_file)
    ours = best["lifeboat-wal"]
    print("\narchiving %d segments (%d MiB of WAL), best of %d round(s):" % (ours[1], ours[1] * 16, args.rounds))
    for label, (seconds, count) in best.items():
        stored = " %5.2f MB per segment" % (sizes[label] / 1e6) if label in sizes else ""
        print("  %-14s %6.2f s  %7.1f MB/s  lifeboat-wal is %.2fx%s" % (label, seconds, rate(seconds, count), seconds / ours[0], stored))
    print("  pusher peak RSS: %.1f MB" % (pusher_peak / 1024.0))
    replay = result["stages"].get("recover")
    print(
        "\nrestore of a %.0f MiB database to %.1f min after its base backup (%.0f MiB of WAL): %.1f s in all - %s"
        % (result["size"] / 2**20, args.minutes, result["wal_bytes"] / 2**20, result["total"], ", ".join("%s %.1f s" % kv for kv in result["stages"].items()))
    )
    if replay:
        print("  replay rate: %.1f MB/s of WAL (%.0f MiB delivered to the server)" % (result["replayed"] / replay / 2**20, result["replayed"] / 2**20))
    print("  postgresql_pitr peak RSS: %.1f MB; reached %s" % (result["rss"] / 1024.0, json.dumps(result["reached"])))
    ratio = best["zstd | age"][0] / ours[0]
    if not args.small and ratio < 1.5:
        print("\nTARGET MISSED: lifeboat-wal archives %.2fx as fast as zstd | age (target 1.5x)" % ratio)
    if not args.workdir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
