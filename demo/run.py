"""make demo: back up a sandbox platform, break it, restore it, check it.

The sandbox is a small threat-intel-like platform on this machine, on loopback ports:
PostgreSQL with data, Redis with a work queue, OpenSearch (when a JDK is available),
a tree of configuration files, and two services started by command (an api that
produces work and a worker that consumes it). It is backed up with playbooks/backup.yml,
verified, damaged (database dropped, index deleted, configuration files removed),
restored with playbooks/restore.yml and compared with what it held before.

Nothing is left running. The playbook logs are kept (their path is printed at the end).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.process import ServerError  # noqa: E402
from tests.harness.servers import PostgresServer, RedisServer, SearchServer, java_home  # noqa: E402

TOY = ROOT / "tests" / "support" / "toy_service.py"
# Random unless given: the demo's own test sets them to find them in -vvv logs (it must not).
PASSPHRASE = os.environ.get("LIFEBOAT_DEMO_PASSPHRASE") or "demo-" + secrets.token_urlsafe(12)
PG_PASSWORD = os.environ.get("LIFEBOAT_DEMO_PG_PASSWORD") or None
REDIS_PASSWORD = os.environ.get("LIFEBOAT_DEMO_REDIS_PASSWORD") or secrets.token_urlsafe(12)
# LIFEBOAT_DEMO_VERBOSITY=3 runs the playbooks with -vvv (their logs are kept).
VERBOSITY = int(os.environ.get("LIFEBOAT_DEMO_VERBOSITY") or 0)
QUEUE = "enrichers"
BOLD, DIM, GREEN, RED, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") if sys.stdout.isatty() else ("",) * 5


def step(number, total, text):
    print("\n%s==> %d/%d %s%s" % (BOLD, number, total, text, RESET), flush=True)


def note(text):
    print("    " + text, flush=True)


# ---- the sandbox ----------------------------------------------------------------------------


def seed_postgres(pg):
    pg.psql("CREATE DATABASE intel")
    pg.psql(
        """
        CREATE TABLE entity (id serial PRIMARY KEY, kind text NOT NULL, title text NOT NULL, data jsonb);
        INSERT INTO entity (kind, title, data)
            SELECT (ARRAY['indicator','malware','actor','campaign'])[1 + g % 4], 'entity ' || g, jsonb_build_object('score', g % 100)
            FROM generate_series(1, 5000) g;
        CREATE TABLE blob (id serial PRIMARY KEY, name text, processing_status text NOT NULL);
        INSERT INTO blob (name, processing_status)
            SELECT 'package-' || g || '.xml', CASE WHEN g % 10 = 0 THEN 'pending' ELSE 'success' END FROM generate_series(1, 300) g;
        CREATE TABLE audit_log (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), event text);
        INSERT INTO audit_log (event) SELECT 'login ' || g FROM generate_series(1, 2000) g;
        """,
        dbname="intel",
    )


def postgres_facts(pg):
    counts = pg.psql("SELECT (SELECT count(*) FROM entity) || '+' || (SELECT count(*) FROM blob)", dbname="intel")
    digest = pg.psql("SELECT md5(string_agg(id || kind || title || data::text, ',' ORDER BY id)) FROM entity", dbname="intel")
    return {"rows": counts.strip(), "md5": digest.strip()[:12]}


def audit_rows(pg):
    return int(pg.psql("SELECT count(*) FROM audit_log", dbname="intel"))


def seed_search(search):
    search.request("PUT", "/stix-v4", json={"settings": {"number_of_shards": 1, "number_of_replicas": 0}, "aliases": {"stix": {}}})
    lines = []
    for n in range(2000):
        lines.append(json.dumps({"index": {"_index": "stix-v4", "_id": str(n)}}))
        lines.append(json.dumps({"type": "indicator", "value": "198.51.100.%d" % (n % 250), "n": n}))
    search.request("POST", "/_bulk?refresh=true", data="\n".join(lines) + "\n", headers={"Content-Type": "application/x-ndjson"})


def search_facts(search):
    try:
        count = search.request("GET", "/stix-v4/_count").json()["count"]
        aliases = sorted(search.request("GET", "/stix-v4/_alias").json().get("stix-v4", {}).get("aliases", {}))
        sample = search.request("GET", "/stix-v4/_doc/1234").json()["_source"]
    except ServerError as exc:  # the index is gone after the disaster
        return {"error": str(exc).splitlines()[0][:80]}
    return {"documents": count, "aliases": aliases, "doc 1234": sample["value"]}


def make_config(etc):
    (etc / "eclecticiq").mkdir(parents=True)
    (etc / "default").mkdir()
    (etc / "eclecticiq" / "platform_settings.py").write_text(
        "SQLALCHEMY_DATABASE_URI = 'postgresql://intel@localhost/intel'\nSECRET_KEY = 'not-for-production'\n"
    )
    (etc / "eclecticiq" / "opentaxii.yml").write_text("domain: localhost:9000\npersistence_api: sqldb\n")
    (etc / "default" / "eclecticiq-platform").write_text("EIQ_PLATFORM_SETTINGS=/etc/eclecticiq/platform_settings.py\n")
    (etc / "default" / "eclecticiq-platform-backend-worker-common").write_text("CELERY_CONCURRENCY=2\n")
    os.chmod(etc / "eclecticiq" / "platform_settings.py", 0o640)


def tree_digest(path):
    digest = hashlib.sha256()
    for dirpath, _dirs, files in sorted(os.walk(path)):
        for name in sorted(files):
            full = Path(dirpath) / name
            digest.update(str(full.relative_to(path)).encode() + b"\0" + full.read_bytes() + oct(full.stat().st_mode).encode())
    return digest.hexdigest()[:16]


def config_facts(etc):
    files = sorted(str(p.relative_to(etc)) for p in etc.rglob("*") if p.is_file())
    return {"files": len(files), "digest": tree_digest(etc) if files else "-"}


class Services:
    """The api (produces work) and the worker (consumes the queue), started by command."""

    def __init__(self, state, redis):
        self.state = state
        password_file = state / "redis.password"
        password_file.write_text(redis.password)
        password_file.chmod(0o600)
        self.port = free_port()
        python = sys.executable
        self.commands = {
            "api": "%s %s api %s --port %d" % (python, TOY, state, self.port),
            "worker": "%s %s worker %s --consume %s --redis-port %d --redis-password-file %s --delay 0.02"
            % (python, TOY, state, QUEUE, redis.port, password_file),
        }

    def spec(self, name, **extra):
        pid = self.state / ("%s.pid" % name)
        spec = {
            "name": name,
            "start_command": "setsid -f %s </dev/null >>%s/%s.out 2>&1" % (self.commands[name], self.state, name),
            "stop_command": "kill $(cat %s)" % pid,
            "status_command": "test -f %s && kill -0 $(cat %s)" % (pid, pid),
            "pid_files": [str(pid)],
            "stop_timeout": 30,
            "start_timeout": 30,
        }
        if name == "api":
            spec["health_port"] = self.port
        spec.update(extra)
        return spec

    def start(self):
        for name in ("worker", "api"):
            subprocess.run(["/bin/sh", "-c", self.spec(name)["start_command"]], check=True)
        deadline = time.time() + 30
        while not all((self.state / ("%s.pid" % n)).exists() for n in ("api", "worker")):
            if time.time() > deadline:
                raise RuntimeError("the demo services did not start")
            time.sleep(0.1)

    def stop(self):
        for name in ("api", "worker"):
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                os.kill(int((self.state / ("%s.pid" % name)).read_text()), 15)


def free_port():
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- ansible ----------------------------------------------------------------------------


def run_playbook(name, inventory, logs, extra=None, log_name=None):
    log = logs / ("%s.log" % (log_name or os.path.basename(name).replace(".yml", "")))
    playbook = name if os.path.isabs(name) else str(ROOT / "playbooks" / name)
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), playbook, "-i", str(inventory)]
    if extra:
        cmd += ["-e", json.dumps(extra)]
    if VERBOSITY:
        cmd.append("-" + "v" * VERBOSITY)
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_DISPLAY_SKIPPED_HOSTS="false", ANSIBLE_SHOW_CUSTOM_STATS="true", ANSIBLE_LOCALHOST_WARNING="false")
    started = time.time()
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT), check=False)
    text = log.read_text()
    return proc.returncode, text, time.time() - started, log


def table_from(output, title):
    """The summary table the roles print, as lines."""
    at = output.find(title)
    if at < 0:
        return []
    block = output[at : output.find("]", output.find('"msg": [', at))]
    return [json.loads(line.strip().rstrip(",")) for line in block.splitlines() if line.strip().startswith('"') and not line.strip().startswith('"msg"')]


def failure_lines(output):
    return sorted(set(re.findall(r"(?:fatal|FAILED).*?\"msg\": \"([^\"]{0,300})", output)))


# ---- the run --------------------------------------------------------------------------------


def main():
    total = 9
    print("%slifeboat.backup demo%s: a sandbox platform on this machine, backed up, broken and restored" % (BOLD, RESET))
    base = Path(tempfile.mkdtemp(prefix="lifeboat-demo-"))
    logs = Path(tempfile.mkdtemp(prefix="lifeboat-demo-logs-"))
    ok = False
    with contextlib.ExitStack() as stack:
        step(1, total, "Starting the sandbox platform")
        pg = stack.enter_context(PostgresServer(password=PG_PASSWORD))
        seed_postgres(pg)
        note("PostgreSQL %s on %s:%d - database intel: 5000 entities, 300 blobs, 2000 audit rows" % (pg.version, pg.host, pg.port))
        redis = stack.enter_context(RedisServer(password=REDIS_PASSWORD))
        redis.client().rpush(QUEUE, *["task-%d" % n for n in range(200)])
        note("Redis on %s:%d - queue %s: 200 items waiting" % (redis.host, redis.port, QUEUE))
        search = None
        try:
            if os.environ.get("LIFEBOAT_DEMO_SEARCH", "on") == "off":
                raise ServerError("LIFEBOAT_DEMO_SEARCH=off")
            java_home()
            search = stack.enter_context(SearchServer("opensearch"))
            seed_search(search)
            note("OpenSearch %s at %s - index stix-v4 (alias stix): 2000 documents" % (search.version, search.url))
        except ServerError as exc:
            note("%sOpenSearch left out: %s%s" % (DIM, str(exc).splitlines()[0], RESET))
        etc = base / "etc"
        make_config(etc)
        note("configuration files under %s" % etc)
        state = base / "services"
        state.mkdir()
        services = Services(state, redis)
        stack.callback(services.stop)
        services.start()
        note("services api and worker running (started by command, as in a container); the worker drains %s" % QUEUE)

        dest = base / "backups"
        dest.mkdir()
        components = [
            {"name": "config", "kind": "config", "paths": [str(etc)]},
            {
                "name": "postgresql",
                "kind": "postgresql",
                "login_host": pg.host,
                "port": pg.port,
                "login_user": pg.user,
                "login_password": pg.password,
                "databases": ["intel"],
                "audit_tables": ["audit_log"],
            },
        ]
        if search:
            components.append(
                {
                    "name": "search",
                    "kind": "elasticsearch",
                    "hosts": [search.url],
                    "repository": "lifeboat",
                    "location": str(search.repo_dir / "lifeboat"),
                    "indices": ["stix-*"],
                    # The snapshot's files travel in the image: it restores with the repository gone.
                    "include_repository_files": True,
                }
            )
        profile = {
            "name": "sandbox",
            "platform": {"name": "sandbox", "version": "1.0"},
            "components": components,
            "quiesce": {"services": [services.spec("api", drain_after=True), services.spec("worker")], "queues": [QUEUE]},
            "checks": [
                {
                    "name": "no half-processed packages",
                    "sql": "SELECT id, processing_status FROM blob WHERE processing_status NOT IN ('success', 'pending')",
                    "component": "postgresql",
                    "database": "intel",
                },
                {"name": "platform settings present", "command": "test -s %s/eclecticiq/platform_settings.py" % etc},
            ],
        }
        inventory = base / "inventory.json"
        inventory.write_text(
            json.dumps(
                {
                    "all": {
                        "hosts": {"sandbox": {}},
                        "vars": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                            "backup_profile": profile,
                            "backup_destination": str(dest),
                            "backup_state_dir": str(base / "state"),
                            "backup_facts_dir": "",
                            "backup_passphrase": PASSPHRASE,
                            "quiesce_redis": {"host": redis.host, "port": redis.port},
                            "quiesce_redis_password": redis.password,
                            "quiesce_poll_interval": 1,
                        },
                    }
                }
            )
        )
        os.chmod(inventory, 0o600)
        before = {"configuration": config_facts(etc), "postgresql": postgres_facts(pg)}
        audit_before = audit_rows(pg)
        if search:
            before["search"] = search_facts(search)

        step(2, total, "Plan: what a backup would capture (playbooks/plan.yml, changes nothing)")
        rc, out, seconds, log = run_playbook("plan.yml", inventory, logs)
        for line in re.findall(r'"(capture: [^"]+|skip: [^"]+)"', out):
            note(line)
        if rc:
            raise SystemExit("plan failed, see %s" % log)

        step(3, total, "Backup: quiesce, capture, resume, seal, verify (playbooks/backup.yml)")
        rc, out, seconds, log = run_playbook("backup.yml", inventory, logs)
        for line in table_from(out, "Backup summary"):
            note(line)
        note(
            "%s%.0f s; queue %s at the cut: %d items; services running again: %s%s"
            % (DIM, seconds, QUEUE, redis.client().llen(QUEUE), (state / "api.pid").exists(), RESET)
        )
        if rc:
            for line in failure_lines(out):
                note("%s%s%s" % (RED, line, RESET))
            raise SystemExit("backup failed, see %s" % log)
        image = sorted(dest.glob("*.zip"))[-1]
        members = subprocess.run(["unzip", "-l", str(image)], capture_output=True, text=True, check=True).stdout
        note("image %s (%d bytes), members:" % (image.name, image.stat().st_size))
        for line in members.splitlines()[3:-2]:
            note("  " + line.split()[-1])

        step(4, total, "Verify: decrypt and check every member (playbooks/verify.yml)")
        rc, out, seconds, log = run_playbook("verify.yml", inventory, logs)
        for line in re.findall(r'"msg": "([^"]*members verified[^"]*)"', out):
            note(line)
        if rc:
            raise SystemExit("verification failed, see %s" % log)

        step(5, total, "Disaster")
        pg.psql("DROP DATABASE intel WITH (FORCE)")
        note("PostgreSQL: DROP DATABASE intel")
        if search:
            search.request("DELETE", "/stix-v4")
            search.request("DELETE", "/_snapshot/lifeboat")
            shutil.rmtree(search.repo_dir / "lifeboat")
            note("OpenSearch: DELETE /stix-v4, snapshot repository lifeboat unregistered and its files removed")
        shutil.rmtree(etc / "eclecticiq")
        (etc / "default" / "eclecticiq-platform").write_text("garbage\n")
        note("configuration: %s/eclecticiq removed, default/eclecticiq-platform overwritten" % etc)

        step(6, total, "Restore: verify, version rule, quiesce, restore in order, resume, checks (playbooks/restore.yml)")
        rc, out, seconds, log = run_playbook("restore.yml", inventory, logs)
        for line in table_from(out, "Restore summary"):
            note(line)
        checks = re.findall(r"'name': '([^']+)', 'rc': (\d+), 'passed': (True|False)", out) or re.findall(
            r'"name": "([^"]+)",\s*"output": "[^"]*",\s*"passed": (true|false)', out
        )
        note("%spost-restore checks passed: %s%s" % (DIM, ", ".join(sorted({c[0] for c in checks})) or "see the log", RESET))
        if rc:
            for line in failure_lines(out):
                note("%s%s%s" % (RED, line, RESET))
            raise SystemExit("restore failed, see %s" % log)

        step(7, total, "Checks: the platform holds what it held before the disaster")
        after = {"configuration": config_facts(etc), "postgresql": postgres_facts(pg)}
        if search:
            after["search"] = search_facts(search)
        ok = True
        print("    %-15s %-48s %-48s %s" % ("component", "before", "after", ""))
        for name in before:
            same = before[name] == after[name]
            ok = ok and same
            print("    %-15s %-48s %-48s %s" % (name, _short(before[name]), _short(after[name]), (GREEN + "same" if same else RED + "DIFFERENT") + RESET))
        audit_after = audit_rows(pg)
        ok = ok and audit_after == 0
        note(
            "%saudit_log: %d rows before, %d after - audit tables keep their definition but not their rows in a standard"
            " backup (backup_include_audits: true keeps them)%s" % (DIM, audit_before, audit_after, RESET)
        )

        step(8, total, "Drill: the image just made, restored into a throw-away sandbox, compared and timed (playbooks/drill.yml)")
        ok = drill(inventory, logs) and ok

        step(9, total, "Migration: the image restored as environment B, with one generated file filled in (docs/migration.md)")
        ok = migrate(inventory, logs, base, pg, search) and ok
    shutil.rmtree(base, ignore_errors=True)
    if ok:
        print("\n%sThe platform was restored. Nothing is left running; playbook logs: %s%s" % (GREEN, logs, RESET))
        print("Next: docs/operator-guide.md (your own inventory and profile), docs/recovery-by-hand.md (no Ansible needed).")
        return 0
    print("\n%sThe restored platform differs from the original; playbook logs: %s%s" % (RED, logs, RESET))
    return 1


def drill(inventory, logs):
    """The drill of the image the demo made: its table, and where its HTML report is."""
    rc, out, seconds, log = run_playbook("drill.yml", inventory, logs, extra={"drill_report_dir": str(logs / "drill"), "drill_search_heap": "256m"})
    for line in table_from(out, "Drill report"):
        note(line)
    note("%s%.0f s; the drill touched nothing of the platform: its servers ran in a sandbox, removed afterwards%s" % (DIM, seconds, RESET))
    html = re.search(r'"report: (\S+\.html)"', out)
    if rc or not html:
        for line in failure_lines(out):
            note("%s%s%s" % (RED, line, RESET))
        note("%sthe drill failed, see %s%s" % (RED, log, RESET))
        return False
    note("drill report: %s" % html.group(1))
    return True


# What the operator writes into the generated mapping for environment B; every other value
# found is kept (keep: true): B runs on the same machine, under these names.
B_NAMES = {"sandbox": "sandbox-b", "intel": "intel_b", "stix-v4": "stix-v4-b"}

TEMPLATE_PLAY = """- name: The values of environment A in the newest image
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the template
      lifeboat.backup.mapping_template:
        image: "{{ (query('ansible.builtin.fileglob', backup_destination ~ '/*.zip') | sort | last) }}"
        passphrase: "{{ backup_passphrase }}"
        dest: "{{ mapping_file }}"
"""


def fill_in(mapping_file):
    """The operator's part: B's name for each value of A that B names otherwise, keep the rest."""
    import yaml

    mapping = yaml.safe_load(mapping_file.read_text())
    for entry in mapping["values"]:
        entry["target"] = B_NAMES.get(entry["source"], "")
        entry["keep"] = entry["source"] not in B_NAMES
    mapping_file.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return [(e["kind"], e["source"], e["target"] or "kept") for e in mapping["values"]]


def migrate(inventory, logs, base, pg, search):
    """mapping_template, the file filled in, restore.yml with restore_mapping into B's names."""
    mapping_file = base / "mapping-sandbox.yml"
    play = base / "mapping_template.yml"
    play.write_text(TEMPLATE_PLAY)
    rc, out, _seconds, log = run_playbook(str(play), inventory, logs, extra={"mapping_file": str(mapping_file)})
    if rc:
        note("%smapping_template failed, see %s%s" % (RED, log, RESET))
        return False
    for kind, source, target in fill_in(mapping_file):
        note("%-9s %-40s -> %s" % (kind, source, target))
    b_root = base / "environment-b"
    extra = {"restore_mapping_file": str(mapping_file), "restore_config_root": str(b_root), "restore_quiesce": False, "restore_checks": []}
    extra["restore_mapping"] = "{{ lookup('ansible.builtin.file', restore_mapping_file) | from_yaml }}"
    # Its own log: the first restore's stays whole (the demo's test reads every log).
    rc, out, seconds, log = run_playbook("restore.yml", inventory, logs, extra=extra, log_name="migration-restore")
    if rc:
        for line in failure_lines(out):
            note("%s%s%s" % (RED, line, RESET))
        note("%sthe migration restore failed, see %s%s" % (RED, log, RESET))
        return False
    rows = pg.psql("SELECT count(*) FROM entity", dbname="intel_b")
    left = subprocess.run(["grep", "-rlw", "intel", str(b_root)], capture_output=True, text=True, check=False).stdout.split()
    docs = search.request("GET", "/stix-v4-b/_count").json()["count"] if search else None
    note(
        "%.0f s; B: database intel_b %s entities%s; configuration under %s, files still naming intel: %s"
        % (seconds, rows, ", index stix-v4-b %s documents" % docs if search else "", b_root, ", ".join(left) or "none")
    )
    return rows == "5000" and not left and (docs in (None, 2000))


def _short(facts):
    text = ", ".join("%s=%s" % (k, v) for k, v in facts.items())
    return text if len(text) <= 48 else text[:45] + "..."


if __name__ == "__main__":
    sys.exit(main())
