"""Continuous archiving and point-in-time recovery against a real PostgreSQL 15.

One primary archives through postgresql_wal_archive (the program runs as the postgres
account on the system Python, as on a managed node); a base backup goes into an image; a
write load (pgbench and a table of timestamped rows) runs with two fingerprinted moments
and an outage of the archive target in between. The tests restore to each moment, to the
latest, and on the new timeline a first restore creates, and break copies of the archive
(a segment removed, one damaged) to see gaps reported and restores past them refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _wal
from tests.harness.process import chown_tree, free_port, service_account
from tests.harness.servers import PostgresServer
from tests.support.modules import run_module, run_playbook

BIN = Path("/usr/lib/postgresql/15/bin")
SYSTEM_PYTHON = "/usr/bin/python3"  # the postgres account cannot enter root's venv
FINGERPRINT = """
SELECT (SELECT count(*) || ':' || coalesce(md5(string_agg(id || '/' || at || '/' || note, ',' ORDER BY id)), '-') FROM events)
    || '|' || (SELECT sum(abalance) || ':' || count(*) FROM pgbench_accounts)
    || '|' || (SELECT count(*) FROM pgbench_history)
"""


# ---- the site: a key, a target, an archiving primary, a base backup, a history --------------------


class Site:
    def __init__(self, root):
        self.root = root
        identity, self.recipient = _age.generate_identity()
        self.key_file = root / "identity.txt"
        self.key_file.write_text(identity + "\n")
        self.key_file.chmod(0o600)
        self.archive_dir = root / "archive"
        self.images = root / "images"
        self.account = service_account("postgres")
        self.restored = []

    def target(self, path=None):
        return {"type": "local", "path": str(path or self.archive_dir)}

    def archiving(self, server, **extra):
        args = dict(
            login_unix_socket=str(server.socket_dir),
            port=server.port,
            login_password=server.password,
            target=self.target(),
            archive_prefix="db1",
            recipients=[self.recipient],
            settings_file=str(self.root / "etc" / "wal.json"),
            spool_dir=str(self.root / "spool"),
            program_path=str(self.root / "bin" / "lifeboat-wal"),
            interpreter=SYSTEM_PYTHON,
            push_timeout=20,
        )
        args.update(extra)
        return args

    def wal_info(self, server, **extra):
        """postgresql_wal_info on the archive, with the server and the pusher's status."""
        connection = dict(login_unix_socket=str(server.socket_dir), port=server.port, login_password=server.password)
        settings = str(self.root / "etc" / "wal.json")
        return run_module("postgresql_wal_info", target=self.target(), archive_prefix="db1", settings_file=settings, **connection, **extra)

    def pitr(self, name, check=False, archive=None, **extra):
        data_dir = self.root / "restored" / name
        data_dir.parent.mkdir(exist_ok=True)
        sockets = self.root / "restored" / (name + ".run")
        sockets.mkdir(exist_ok=True)
        chown_tree(sockets, self.account.pw_uid, self.account.pw_gid)
        port = free_port()
        args = dict(
            image=str(self.images),
            data_dir=str(data_dir),
            target=self.target(archive),
            archive_prefix="db1",
            identity_file=str(self.key_file),
            port=port,
            server_options={"unix_socket_directories": str(sockets), "listen_addresses": "127.0.0.1"},
            interpreter=SYSTEM_PYTHON,
            timeout=600,
        )
        args.update(extra)
        if not check:
            self.restored.append(data_dir)
        result = run_module("postgresql_pitr", check=check, **args)
        result.port = port
        result.data_dir = data_dir
        return result

    def stop_restored(self):
        for data_dir in self.restored:
            if (data_dir / "postmaster.pid").exists():
                subprocess.run(
                    ["runuser", "-u", "postgres", "--", str(BIN / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "stop"],
                    capture_output=True,
                    check=False,
                )


def psql(port, sql, password, dbname="postgres"):
    env = dict(os.environ, PGPASSWORD=password)
    done = subprocess.run(
        [str(BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", dbname, "-c", sql],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Load:
    """pgbench and timestamped rows, in the background, until stopped."""

    def __init__(self, server):
        self.server = server
        self.stop_event = threading.Event()
        self.threads = []
        self.errors = []

    def _pgbench(self):
        env = dict(os.environ, **self.server.env())
        while not self.stop_event.is_set():
            done = subprocess.run([str(BIN / "pgbench"), "-n", "-c", "2", "-T", "1", "postgres"], capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                self.errors.append(done.stderr)
                return

    def _rows(self):
        with self.server.connect(autocommit=True) as conn:
            while not self.stop_event.is_set():
                conn.execute("INSERT INTO events(note) SELECT md5(random()::text) FROM generate_series(1, 200)")

    def __enter__(self):
        self.stop_event.clear()
        self.threads = [threading.Thread(target=t) for t in (self._pgbench, self._rows)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for thread in self.threads:
            thread.join(60)
        assert not self.errors, self.errors


def moment(server):
    """(fingerprint, server time, LSN) at a quiet instant: no commit between them and a second after."""
    fingerprint = server.psql(FINGERPRINT)
    at = server.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    lsn = server.psql("SELECT pg_current_wal_lsn()")
    time.sleep(1.1)
    return {"fingerprint": fingerprint, "time": at, "lsn": lsn}


def archived(server, timeout=120):
    """Switch to a new segment and wait until everything up to it is archived."""
    segment = server.psql("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = server.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        if last[:24] >= segment:
            return segment
        time.sleep(0.2)
    raise AssertionError("%s not archived within %d s: %s" % (segment, timeout, server.psql("SELECT * FROM pg_stat_archiver")))


def ready_files(server):
    return sorted(p.name for p in (server.data_dir / "pg_wal" / "archive_status").glob("*.ready"))


@pytest.fixture(scope="module")
def site():
    root = Path(tempfile.mkdtemp(prefix="lifeboat-pitr-test-"))
    root.chmod(0o755)
    site = Site(root)
    yield site
    site.stop_restored()
    if not os.environ.get("LIFEBOAT_KEEP_SERVERS"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def primary(site):
    with PostgresServer(settings={"archive_mode": "on", "max_wal_size": "64MB"}) as server:
        first = run_module("postgresql_wal_archive", **site.archiving(server))
        assert not first.failed, first.get("msg")
        server.first_run = first
        yield server


@pytest.fixture(scope="module")
def history(site, primary):
    """Base backup, load, moment A, target down under load, moment B, more load, all archived."""
    server = primary
    server.psql("CREATE TABLE events(id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), note text)")
    env = dict(os.environ, **server.env())
    subprocess.run([str(BIN / "pgbench"), "-i", "-q", "-s", "1", "postgres"], env=env, check=True, capture_output=True)
    site.images.mkdir()
    started = run_module(
        "backup_session", state="started", destination=str(site.images), state_dir=str(site.root / "state"), recipients=[site.recipient], node="db1"
    )
    assert not started.failed, started.get("msg")
    taken = run_module(
        "postgresql_basebackup",
        session=started["session"]["work_dir"],
        login_unix_socket=str(server.socket_dir),
        port=server.port,
        login_password=server.password,
    )
    assert not taken.failed, taken.get("msg")
    sealed = run_module("backup_session", state="sealed", session=started["session"]["work_dir"])
    assert sealed["verdict"] == "success", sealed
    facts = {"basebackup": taken}
    with Load(server):
        time.sleep(4)
    facts["a"] = moment(server)
    outage = site.archive_dir.with_name("archive.away")
    with Load(server):
        time.sleep(2)
        os.rename(site.archive_dir, outage)  # the target is lost while the server writes
        time.sleep(6)
        facts["during_outage"] = {"ready": ready_files(server), "stats": server.psql("SELECT archived_count, failed_count FROM pg_stat_archiver")}
        facts["wal_info_during_outage"] = site.wal_info(server)
        os.rename(outage, site.archive_dir)
        time.sleep(3)
    server.psql("SELECT pg_create_restore_point('moment-b')")
    facts["b"] = moment(server)
    with Load(server):
        time.sleep(3)
    facts["latest"] = server.psql(FINGERPRINT)
    facts["last_segment"] = archived(server)
    facts["timeline_switch_segment"] = server.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    return facts


# ---- setting archiving up ------------------------------------------------------------------------------


def test_archiving_is_set_up_checked_and_idempotent(site, primary):
    first = primary.first_run
    assert first["changed"] and first["changed_settings"] == ["archive_command", "archive_timeout"]
    assert first["archiving_active"] and not first["restart_required"]
    assert first["check"]["segment"] and first["program_check"]["ok"]
    settings = site.root / "etc" / "wal.json"
    info = settings.stat()
    assert info.st_mode & 0o777 == 0o600 and info.st_uid == site.account.pw_uid
    assert _age.generate_identity()[0][:16] not in settings.read_text()  # public keys only
    assert json.loads(settings.read_text())["recipients"] == [site.recipient]
    assert primary.psql("SHOW archive_command") == first["archive_command"]
    again = run_module("postgresql_wal_archive", **site.archiving(primary))
    assert not again.failed and not again["changed"] and again["check"]
    checked = run_module("postgresql_wal_archive", check=True, diff=True, **site.archiving(primary, compression="gzip", archive_timeout=30))
    assert checked["changed"] and checked["changed_settings"] == ["archive_timeout"]
    assert checked["diff"]["before"]["archive_timeout"] == "60" and checked["diff"]["after"]["archive_timeout"] == "30"
    assert json.loads(settings.read_text())["compression"] == "zstd"  # check mode wrote nothing


def test_bad_input_is_refused_naming_the_option(site, primary):
    private = site.key_file.read_text().strip()
    refused = run_module("postgresql_wal_archive", **site.archiving(primary, recipients=[private]))
    assert refused.failed and refused["option"] == "recipients" and "public keys only" in refused["msg"]
    assert private not in json.dumps(refused)
    quoted = run_module("postgresql_wal_archive", **site.archiving(primary, spool_dir="/tmp/it's"))
    assert quoted.failed and quoted["option"] == "spool_dir"


# The module restarts the server with pg_ctl: the harness then sees its postmaster exit and warns.
@pytest.mark.filterwarnings("ignore:PostgreSQL 15. exited while the tests were using it:RuntimeWarning")
def test_a_server_without_archive_mode_is_restarted_only_when_told(site):
    with PostgresServer() as server:
        other = site.root / "other"
        args = site.archiving(server, settings_file=str(other / "wal.json"), spool_dir=str(other / "spool"), archive_prefix="other")
        told_nothing = run_module("postgresql_wal_archive", **args)
        assert not told_nothing.failed, told_nothing.get("msg")
        assert told_nothing["restart_required"] and not told_nothing["restarted"] and not told_nothing["archiving_active"]
        assert "restart" in json.dumps(told_nothing.get("warnings", []))
        assert server.psql("SHOW archive_mode") == "off"
        try:
            restarted = run_module("postgresql_wal_archive", restart=True, **args)
            assert not restarted.failed, restarted.get("msg")
            assert restarted["restarted"] and restarted["archiving_active"] and restarted["check"]
            assert not restarted["restart_required"]
        finally:
            subprocess.run(
                ["runuser", "-u", "postgres", "--", str(BIN / "pg_ctl"), "-D", str(server.data_dir), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                check=False,
            )


# ---- the outage, the archive's state ----------------------------------------------------------------------


def test_target_down_under_load_keeps_the_wal_then_catches_up_without_gap(site, primary, history):
    during = history["during_outage"]
    assert during["ready"], "PostgreSQL kept no WAL while the target was down"
    archived_count, failed_count = (int(x) for x in during["stats"].split("|"))
    assert failed_count > 0
    report = history["wal_info_during_outage"]
    assert report.failed and "does not exist" in report["msg"]
    info = site.wal_info(primary, images=[str(site.images)])
    assert not info.failed, info.get("msg")
    assert info["changed"] is False
    assert info["gaps"] == [] and info["conflicts"] == [] and info["problems"] == []
    assert info["server"]["failed_count"] >= failed_count and info["server"]["ready"] == 0 and info["server"]["same_system"]
    assert info["last_archived"]["file"] >= history["last_segment"]
    kinds = [a["kind"] for a in info["pusher"].get("alerts", [])]
    assert "wal_archive_failed" in kinds and kinds[-1] == "wal_archive_recovered"
    assert len(info["windows"]) == 1
    window = info["windows"][0]
    assert window["base_backup"]["start_lsn"] == history["basebackup"]["start_lsn"]
    assert window["ends_at"] == "end of archive" and window["end_segment"] >= history["last_segment"]


# ---- restores ----------------------------------------------------------------------------------------------


def test_restore_to_a_time_gives_that_moment_exactly(site, primary, history):
    done = site.pitr("moment-a", recovery_target_time=history["a"]["time"])
    assert not done.failed, done.get("msg")
    assert psql(done.port, FINGERPRINT, primary.password) == history["a"]["fingerprint"]
    assert done["reached"]["timeline"] == 2 and "recovery stopping before commit" in done["reached"]["stopping"]
    assert done["server"]["state"] == "running" and done["wal"]["error"] is None and done["wal"]["verified"] > 0
    assert done["recovery"]["recovery_target_timeline"] == "1"
    assert psql(done.port, "SHOW archive_mode", primary.password) == "off"  # a copy beside the primary does not archive
    progress = Path(str(done.data_dir) + ".pitr.log").read_text()
    assert "unpacked" in progress and "backup successfully verified" in progress and "reached" in progress
    assert not (done.data_dir / "lifeboat_prefetch").exists()


def test_restore_to_a_named_point_pausing_then_promoting(site, primary, history):
    paused = site.pitr("moment-b", recovery_target_name="moment-b", recovery_target_action="pause")
    assert not paused.failed, paused.get("msg")
    assert paused["server"]["state"] == "paused"
    socket_dir = paused["server"]["socket_dir"]
    looked = subprocess.run(
        ["runuser", "-u", "postgres", "--", str(BIN / "psql"), "-X", "-At", "-h", socket_dir, "-p", str(paused.port), "-c", "SELECT pg_is_in_recovery()"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert looked.stdout.strip() == "t", looked.stderr
    promoted = run_module(
        "postgresql_pitr",
        state="promoted",
        data_dir=str(paused.data_dir),
        target=site.target(),
        archive_prefix="db1",
        identity_file=str(site.key_file),
        port=paused.port,
        server_options={"unix_socket_directories": str(site.root / "restored" / "moment-b.run"), "listen_addresses": "127.0.0.1"},
    )
    assert not promoted.failed, promoted.get("msg")
    assert promoted["server"]["state"] == "running" and promoted["reached"]["timeline"] >= 2
    assert psql(paused.port, FINGERPRINT, primary.password) == history["b"]["fingerprint"]


PITR_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - lifeboat.backup.postgresql_pitr:
        image: "{{ image }}"
        data_dir: "{{ data_dir }}"
        target: {type: local, path: "{{ archive }}"}
        archive_prefix: db1
        identity: "{{ identity }}"
        port: "{{ port }}"
        final_state: stopped
        interpreter: /usr/bin/python3
"""


def test_restore_to_latest_loses_nothing_and_shows_no_key(site, primary, history, tmp_path):
    """Through ansible-playbook at -vvv with the key inline: the key is in no output and on
    no command line of any process while the restore runs."""
    identity = site.key_file.read_text().strip()
    data_dir = site.root / "restored" / "latest"
    sockets = site.root / "restored" / "latest.run"
    sockets.mkdir(parents=True)
    chown_tree(sockets, site.account.pw_uid, site.account.pw_gid)
    port = free_port()
    site.restored.append(data_dir)
    seen, stop = set(), threading.Event()

    def sample():
        while not stop.is_set():
            for entry in os.listdir("/proc"):
                with contextlib.suppress(OSError):
                    seen.add(Path("/proc", entry, "cmdline").read_bytes())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        values = {"image": str(site.images), "data_dir": str(data_dir), "archive": str(site.archive_dir), "identity": identity, "port": port}
        done = run_playbook(PITR_PLAY, tmp_path, extra_vars=values, verbosity=3, timeout=900)
    finally:
        stop.set()
        sampler.join()
    assert done.returncode == 0, done.stdout[-3000:]
    secret = identity.split("1", 1)[1]
    assert secret not in done.stdout
    # The sampler must have seen the restore itself (the recovering server runs with -D data_dir),
    # not merely a busy machine: a count of distinct command lines depends on the machine's load.
    assert any(str(data_dir).encode() in c for c in seen), "the sampler never saw the recovering server"
    assert not [c for c in seen if secret.encode() in c]
    start = subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            str(BIN / "pg_ctl"),
            "-D",
            str(data_dir),
            "-w",
            "-l",
            str(sockets / "server.log"),
            "-o",
            "-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s" % (port, sockets),
            "start",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert start.returncode == 0, start.stderr
    assert psql(port, FINGERPRINT, primary.password) == history["latest"]


DOC = Path(__file__).resolve().parents[2] / "docs" / "pitr.md"


def doc_blocks(heading):
    """The ```sh blocks of one section of docs/pitr.md, in order."""
    text = DOC.read_text()
    section = text[text.index(heading + "\n") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def test_the_by_hand_procedure_of_the_docs_runs_as_written(site, primary, history):
    """docs/pitr.md "The same by hand": an accidental DELETE, undone with unzip, age, zstd, tar,
    sha256sum and the server binaries only."""
    primary.psql("CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS item FROM generate_series(1, 1000) g")
    before = moment(primary)
    primary.psql("DELETE FROM orders")
    archived(primary)
    (image,) = site.images.glob("*.zip")
    root = site.root / "by-hand"  # like /var/lib/postgresql/15: the server's account owns it
    root.mkdir()
    sockets = root / "run"
    sockets.mkdir()
    chown_tree(root, site.account.pw_uid, site.account.pw_gid)
    port = free_port()
    values = {
        "IMAGE": image,
        "KEY": site.key_file,
        "ARCHIVE": site.archive_dir / "db1",
        "NEWDATA": root / "data",
        "PGBIN": BIN,
        "PORT": port,
        "SOCKETS": sockets,
        "TARGET": "'%s+00'" % before["time"].replace("T", " ").rstrip("Z"),
    }
    blocks = doc_blocks("## The same by hand, with stock tools")
    assert len(blocks) == 6, "the page's procedure changed shape"
    variables = blocks[0]
    for name, value in values.items():
        variables, count = re.subn(r"^%s=('[^']*'|\S+)" % name, "%s=%s" % (name, value), variables, flags=re.M)
        assert count == 1, name
    *steps, finish = blocks[1:]
    env = dict(os.environ, PGPASSWORD=primary.password)  # the cluster asks for a password on its socket
    site.restored.append(root / "data")
    done = subprocess.run(["bash", "-e", "-c", "\n".join([variables, *steps])], capture_output=True, text=True, timeout=900, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "recovery stopping before" in done.stdout
    count = subprocess.run(
        ["runuser", "-u", "postgres", "--", str(BIN / "psql"), "-X", "-At", "-h", str(sockets), "-p", str(port), "-c", "SELECT count(*) FROM orders"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert count.stdout.strip() == "1000", count.stderr
    done = subprocess.run(["bash", "-e", "-c", "\n".join([variables, finish])], capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not Path(str(root / "data") + ".key").exists()


def test_a_second_restore_follows_the_new_timeline(site, primary, history):
    # This restore replaces the primary: it keeps archiving, into the same archive.
    first = site.pitr("timeline-first", recovery_target_time=history["a"]["time"], archive_mode="preserve")
    assert not first.failed, first.get("msg")
    new_timeline = first["reached"]["timeline"]
    psql(first.port, "INSERT INTO events(note) VALUES ('written on the new timeline')", primary.password)
    expected = psql(first.port, FINGERPRINT, primary.password)
    segment = psql(first.port, "SELECT pg_walfile_name(pg_switch_wal())", primary.password)
    deadline = time.monotonic() + 60
    while psql(first.port, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", primary.password)[:24] < segment:
        assert time.monotonic() < deadline, "the restored server did not archive its new timeline"
        time.sleep(0.2)
    info = run_module("postgresql_wal_info", query_server=False, target=site.target(), archive_prefix="db1", images=[str(site.images)])
    assert new_timeline in [t["timeline"] for t in info["timelines"]]
    again = site.pitr("timeline-second", recovery_target_timeline="latest", recovery_target="latest")
    assert not again.failed, again.get("msg")
    assert int(again["recovery"]["recovery_target_timeline"]) >= new_timeline
    assert psql(again.port, FINGERPRINT, primary.password) == expected
    assert "written on the new timeline" in psql(again.port, "SELECT note FROM events ORDER BY id DESC LIMIT 1", primary.password)


def test_a_target_before_the_oldest_base_backup_is_refused(site, history):
    backup_time = history["basebackup"]
    refused = site.pitr("too-early", check=True, recovery_target_time="2020-01-01T00:00:00Z")
    assert refused.failed
    assert "before the oldest base backup" in refused["msg"] and "base backup lifeboat" in refused["msg"]
    assert len(refused["windows"]) >= 1 and backup_time["end_lsn"] in refused["msg"]
    assert not refused.data_dir.exists()


# ---- a broken archive ------------------------------------------------------------------------------------------


def broken_copy(site, name):
    copy = site.root / name
    shutil.copytree(site.archive_dir, copy)
    return copy


def segment_between(site, history):
    """An archived segment written after moment A and before moment B."""
    low = _wal.segno_of(_wal.parse_lsn(history["a"]["lsn"]))
    high = _wal.segno_of(_wal.parse_lsn(history["b"]["lsn"]))
    assert high > low + 1, "the load wrote too little WAL between the moments"
    return _wal.segment_name(1, low + 1)


@pytest.mark.fault("missing member", "a WAL segment removed from the archive: listed as a gap, a restore past it refused, one before it planned")
def test_a_removed_segment_is_a_gap_and_no_restore_goes_past_it(site, history, fault):
    copy = broken_copy(site, "archive.missing")
    victim = segment_between(site, history)
    (found,) = list(copy.glob("db1/wal/*/%s-*" % victim))
    found.unlink()
    info = run_module("postgresql_wal_info", query_server=False, target=site.target(copy), archive_prefix="db1", images=[str(site.images)])
    assert info["gaps"] == [{"timeline": 1, "first": victim, "last": victim, "count": 1}]
    window = [w for w in info["windows"] if w["timeline"] == 1][0]
    assert window["ends_at"] == "gap" and window["first_missing"] == victim
    refused = site.pitr("past-gap", check=True, archive=copy, recovery_target_time=history["b"]["time"], recovery_target_timeline="1")
    fault.observe(false_success=not refused.failed or info["gaps"] == [])
    assert refused.failed and "outside every recoverable window" in refused["msg"] and victim in refused["msg"]
    before = site.pitr("before-gap", check=True, archive=copy, recovery_target_time=history["a"]["time"], recovery_target_timeline="1")
    assert not before.failed, before.get("msg")


@pytest.mark.fault(
    "corrupt member", "a WAL segment altered (one bit) in the archive: reported damaged by verify=full, a restore past it refused before anything is written"
)
def test_a_damaged_segment_is_reported_and_no_restore_goes_past_it(site, history, fault):
    copy = broken_copy(site, "archive.damaged")
    victim = segment_between(site, history)
    (found,) = list(copy.glob("db1/wal/*/%s-*" % victim))
    blob = bytearray(found.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    found.write_bytes(bytes(blob))
    names_only = run_module("postgresql_wal_info", query_server=False, target=site.target(copy), archive_prefix="db1")
    assert names_only["gaps"] == []  # the listing cannot see it
    info = run_module(
        "postgresql_wal_info", query_server=False, target=site.target(copy), archive_prefix="db1", verify="full", identity_file=str(site.key_file)
    )
    assert [d["file"] for d in info["damaged"]] == [victim]
    assert info["gaps"] == [{"timeline": 1, "first": victim, "last": victim, "count": 1}]
    refused = site.pitr("past-damage", archive=copy, recovery_target_time=history["b"]["time"], recovery_target_timeline="1")
    fault.observe(false_success=not refused.failed or info["damaged"] == [] or refused.data_dir.exists())
    assert refused.failed and "is damaged" in refused["msg"] and victim in refused["msg"]
    assert not refused.data_dir.exists(), "nothing is restored before the WAL is checked"


def pushers(site):
    """Pids of the pusher processes of this site's settings file."""
    wanted = [b"daemon", str(site.root / "etc" / "wal.json").encode()]
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if all(w in argv for w in wanted):
                found.append(int(entry))
    return found


def test_the_archiver_killed_mid_segment_leaves_no_partial_under_a_final_name(site, primary, history):
    """The pusher is killed (SIGKILL) while it writes segments; afterwards every archived file
    checks out, and archiving completes."""
    outage = site.archive_dir.with_name("archive.paused")
    os.rename(site.archive_dir, outage)
    for _round in range(6):
        primary.psql("INSERT INTO events(note) SELECT md5(g::text) FROM generate_series(1, 40000) g; SELECT pg_switch_wal()")
    os.rename(outage, site.archive_dir)
    kills = 0
    deadline = time.monotonic() + 120
    while kills < 3 and time.monotonic() < deadline:
        if list(site.archive_dir.glob("db1/wal/*/.lifeboat-partial.*")):
            for pid in pushers(site):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
            time.sleep(0.3)
        time.sleep(0.01)
    assert kills >= 1, "never caught the pusher writing"
    archived(primary, timeout=180)
    info = run_module("postgresql_wal_info", query_server=False, target=site.target(), archive_prefix="db1", verify="full", identity_file=str(site.key_file))
    assert not info.failed, info.get("msg")
    assert info["damaged"] == [] and info["gaps"] == [] and info["conflicts"] == []


def test_retention_removes_what_no_kept_base_backup_needs(site, history):
    copy = broken_copy(site, "archive.pruned")
    histories = sorted(p.name for p in copy.glob("db1/history/*"))
    args = dict(state="pruned", target=site.target(copy), archive_prefix="db1", images=[str(site.images)])
    planned = run_module("postgresql_wal_archive", check=True, **args)
    assert not planned.failed, planned.get("msg")
    start = _wal.segno_of(_wal.parse_lsn(history["basebackup"]["start_lsn"]))
    expected = [_wal.segment_name(1, s) for s in range(1, start)]
    assert planned["changed"] and planned["removed"] == expected and planned["kept_from"] == _wal.segment_name(1, start)
    assert all(list(copy.glob("db1/wal/*/%s-*" % name)) for name in expected), "check mode removed something"
    pruned = run_module("postgresql_wal_archive", **args)
    assert pruned["removed"] == expected
    assert not any(list(copy.glob("db1/wal/*/%s-*" % name)) for name in expected)
    kept = sorted(p.name for p in copy.glob("db1/history/*"))
    assert [n for n in histories if ".history-" in n] == [n for n in kept if ".history-" in n], "timeline history files stay"
    again = run_module("postgresql_wal_archive", **args)
    assert not again["changed"] and again["removed"] == []
    still = site.pitr("after-pruning", check=True, archive=copy, recovery_target_time=history["a"]["time"], recovery_target_timeline="1")
    assert not still.failed, still.get("msg")
    empty = site.root / "no-images"
    empty.mkdir()
    refused = run_module("postgresql_wal_archive", state="pruned", target=site.target(copy), archive_prefix="db1", images=[str(empty)])
    assert refused.failed and "nothing removed" in refused["msg"]


# ---- the roles --------------------------------------------------------------------------------------------


def test_the_roles_archive_back_up_and_restore_a_pitr_component(site, primary, history, tmp_path):
    """backup.yml with a postgresql_pitr component (archiving ensured, a base backup in the
    image), then restore.yml to a named restore point made after it, on the backup's timeline."""
    destination = site.root / "role-images"
    destination.mkdir()
    restored = site.root / "restored" / "by-role"
    sockets = site.root / "restored" / "by-role.run"
    sockets.mkdir(parents=True)
    chown_tree(sockets, site.account.pw_uid, site.account.pw_gid)
    port = free_port()
    archiving = site.archiving(primary)
    component = {
        "name": "db1",
        "kind": "postgresql_pitr",
        **{k: archiving[k] for k in ("login_unix_socket", "port", "login_password", "target", "archive_prefix")},
        **{k: archiving[k] for k in ("settings_file", "spool_dir", "program_path", "interpreter", "push_timeout")},
        "restore_data_dir": str(restored),
        "restore_port": port,
        "server_options": {"unix_socket_directories": str(sockets), "listen_addresses": "127.0.0.1"},
    }
    common = {
        "backup_profile": {"name": "pitr", "platform": {"name": "db", "version": "15"}, "components": [component]},
        "backup_destination": str(destination),
        "backup_state_dir": str(site.root / "role-state"),
        "backup_facts_dir": str(site.root / "role-facts"),
        "backup_node": "db1",
        "backup_recipients": [site.recipient],
        "backup_quiesce": False,
        "backup_verify_level": "checksum",
    }
    play = "- hosts: localhost\n  gather_facts: false\n  roles:\n    - role: lifeboat.backup.%s\n"
    backed_up = run_playbook(play % "backup", tmp_path, extra_vars=common)
    assert backed_up.returncode == 0, backed_up.stdout[-4000:]
    assert len(list(destination.glob("*.zip"))) == 1
    primary.psql("INSERT INTO events(note) VALUES ('after the role backup')")
    primary.psql("SELECT pg_create_restore_point('after-role-backup')")
    wanted = moment(primary)
    primary.psql("INSERT INTO events(note) VALUES ('too late')")
    archived(primary)
    site.restored.append(restored)
    values = dict(common, restore_identity_file=str(site.key_file), restore_quiesce=False, restore_target_name="after-role-backup")
    values["restore_target_timeline"] = "current"
    done = run_playbook(play % "restore", tmp_path, extra_vars=values)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "db1 recovered to" in done.stdout
    assert psql(port, FINGERPRINT, primary.password) == wanted["fingerprint"]
    assert psql(port, "SELECT count(*) FROM events WHERE note = 'too late'", primary.password) == "0"
