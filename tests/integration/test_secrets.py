"""Break-the-glass secrets end to end: a real PostgreSQL credentials table, files, a command and
variables, exported by the lifeboat.backup.secrets role at -vvv, then read back three ways
with stock tools and the standalone reader; refusals; where secrets must never appear."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _age
from tests.harness.storage import SshServer, store_account
from tests.support.leaks import CmdlineSampler, files_containing
from tests.support.modules import run_module, run_playbook
from tests.support.terminal import run_in_terminal
from tests.support.webhook import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
READER = ROOT / "roles" / "secrets" / "files" / "lifeboat-secrets-reader.py"
ROLE_PLAY = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: lifeboat.backup.secrets
"""


NEEDLES = []


def token(prefix):
    """A secret value; its random part is what the leak checks look for, in any escaping."""
    random_part = secrets.token_hex(10)
    NEEDLES.append(random_part)
    return "%s-%s" % (prefix, random_part)


class Platform:
    """The sources of one test: every secret value is random and listed in ``values``."""

    def __init__(self, pg_database, tmp_path):
        self.tmp = tmp_path
        self.pg = pg_database
        self.reader_password = token("pgreader")
        self.passphrase = token("master passphrase")
        self.cli_token = token("clitoken")
        self.rows = [
            ("db-superuser", "postgres", token("pg") + " 'quote\" $dollar \\back ünï", "db1", "rotate quarterly\nsecond line"),
            ("svc-api", "api", token("api"), "app1", None),
            ("smtp", "mailer", token("smtp"), None, "relay"),
        ]
        pg_database.psql(
            "CREATE TABLE credentials (id serial PRIMARY KEY, title text, login text, password text, hostname text, notes text);"
            "CREATE ROLE %(role)s LOGIN PASSWORD '%(pw)s'; GRANT SELECT ON credentials TO %(role)s;"
            % {"role": pg_database.name + "_reader", "pw": self.reader_password}
        )
        with pg_database.connect() as conn:
            for row in self.rows:
                conn.execute("INSERT INTO credentials (title, login, password, hostname, notes) VALUES (%s, %s, %s, %s, %s)", row)
        self.file_secret, self.env_secret, self.key_secret = token("yaml"), token("env"), token("tlskey")
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "service.yml").write_text("service-account:\n  user: svc\n  password: %s\n" % self.file_secret)
        (tmp_path / "src" / "app.env").write_text("export APP_SECRET='%s'\n" % self.env_secret)
        (tmp_path / "src" / "site.key").write_text("-----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----\n" % self.key_secret)
        self.cli_secret = token("kv")
        cli = tmp_path / "src" / "kv-cli"
        cli.write_text(
            '#!/bin/sh\n[ "$KV_TOKEN" = "%s" ] || { echo "permission denied" >&2; exit 2; }\n'
            'printf \'{"data": {"data": {"kv-entry": {"password": "%s", "user": "kvuser"}}}}\\n\'\n' % (self.cli_token, self.cli_secret)
        )
        cli.chmod(0o755)
        self.var_secret = token("var")
        self.values = [r[2] for r in self.rows] + [self.file_secret, self.env_secret, self.key_secret, self.cli_secret, self.var_secret]
        self.values += [self.reader_password, self.passphrase, self.cli_token]
        self.needles = [needle for needle in NEEDLES if any(needle in value for value in self.values)]
        self.role = pg_database.name + "_reader"
        self.officers = {}
        for name in ("alice", "bob", "carol"):
            identity, recipient = _age.generate_identity()
            (tmp_path / ("%s.key" % name)).write_text(identity + "\n")
            self.officers[name] = recipient
        self.inputs = [tmp_path / "src" / n for n in ("service.yml", "app.env", "site.key", "kv-cli")] + [tmp_path / ("%s.key" % n) for n in self.officers]

    def sources(self):
        server = self.pg.server
        return [
            {
                "name": "pam",
                "postgresql": {
                    "login_host": server.host,
                    "port": server.port,
                    "login_user": self.pg.name + "_reader",
                    "login_password": self.reader_password,
                    "login_db": self.pg.name,
                    "query": "SELECT title AS name, login AS username, password AS secret, hostname AS host, notes FROM credentials ORDER BY id",
                },
            },
            {"name": "service", "file": {"path": str(self.tmp / "src" / "service.yml")}},
            {"name": "app", "file": {"path": str(self.tmp / "src" / "app.env")}},
            {"name": "tls", "file": {"path": str(self.tmp / "src" / "site.key"), "format": "raw"}},
            {"name": "kv", "command": {"argv": [str(self.tmp / "src" / "kv-cli")], "environment": {"KV_TOKEN": self.cli_token}, "root": "data.data"}},
            {"name": "vars", "variables": {"backup-passphrase": self.var_secret}},
        ]

    def expected(self):
        """name -> secret, as the bundle must hold them."""
        found = {row[0]: row[2] for row in self.rows}
        found.update({"service-account": self.file_secret, "APP_SECRET": self.env_secret, "kv-entry": self.cli_secret, "backup-passphrase": self.var_secret})
        found[str(self.tmp / "src" / "site.key")] = (self.tmp / "src" / "site.key").read_text()
        return found

    def role_vars(self, name="vault", **extra):
        values = {
            "secrets_name": name,
            "secrets_sources": self.sources(),
            "secrets_destination": str(self.tmp / "bundles"),
            "secrets_state_dir": str(self.tmp / "state"),
            "secrets_passphrase": self.passphrase,
            "secrets_work_factor": 12,
            "secrets_stale_after": "1d",
            "secrets_custody": {
                "threshold": 2,
                "officers": [
                    {"name": "alice", "recipient": self.officers["alice"]},
                    {"name": "bob", "recipient": self.officers["bob"]},
                    {"name": "carol", "share_file": str(self.tmp / ("carol-%s.share" % name))},
                ],
            },
        }
        values.update(extra)
        return values

    def index(self, name="vault"):
        indexes = sorted((self.tmp / "bundles").glob("%s-*.json" % name))
        return json.loads(indexes[-1].read_text()), indexes[-1]


@pytest.fixture
def sftp_target(server_pool, tmp_path):
    """An SFTP storage target of the bundles' own (the harness's sshd), and its directory."""
    server = server_pool.get(("sshd",), SshServer)
    root = server.data_dir / ("secrets-" + secrets.token_hex(4))
    root.mkdir(mode=0o700)
    account = store_account()
    os.chown(root, account.pw_uid, account.pw_gid)
    return server.target("sftp", path=str(root), name="vault-site-b"), root


@pytest.fixture
def platform(pg_database, tmp_path):
    made = Platform(pg_database, tmp_path)
    yield made
    pg_database.psql("REVOKE ALL ON credentials FROM %s; DROP ROLE %s" % (made.role, made.role))


def entries_of(text):
    doc = json.loads(text)
    return {e["name"]: e["secret"] for e in doc["entries"]}, doc


def combine(shares, threshold=2):
    proc = subprocess.run(["ssss-combine", "-t", str(threshold), "-Q"], input="\n".join(shares) + "\n", capture_output=True, text=True, check=False)
    return proc.stderr.strip()


def age_decrypt_share(path, key):
    return subprocess.run(["age", "-d", "-i", str(key), str(path)], capture_output=True, text=True, check=True).stdout.strip()


def age_with_identity(identity, bundle):
    """age -d with the identity through a pipe (bash process substitution), as the page does."""
    script = 'age -d -i <(printf "%s\\n" "$IDENTITY") "$1"'
    return subprocess.run(["bash", "-c", script, "age", str(bundle)], env=dict(os.environ, IDENTITY=identity), capture_output=True, text=True, check=False)


def test_export_then_recover_three_ways_and_nothing_leaks(platform, sftp_target, tmp_path):
    started = time.time() - 1
    target, remote = sftp_target
    role_vars = platform.role_vars(secrets_storage=[target])
    with CmdlineSampler(platform.needles) as sampler:
        proc = run_playbook(ROLE_PLAY, tmp_path, extra_vars=role_vars, verbosity=3)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "ESTABLISH LOCAL CONNECTION" in proc.stdout, "the playbook ran with -vvv"
    assert sampler.samples > 5 and len(sampler.seen_pids) > 5
    assert sampler.hits == [], "a secret on a command line: %s" % sampler.hits[:2]
    leaked = [needle for needle in platform.needles if needle in proc.stdout]
    assert leaked == [], "secrets in the -vvv output"

    index, index_path = platform.index()
    assert index["entry_count"] == 8 and [s["entries"] for s in index["sources"]] == [3, 1, 1, 1, 1, 1]
    stem = str(index_path)[: -len(".json")]
    expected = platform.expected()

    # No value in any file written since the start (the bundle set's files are ciphertext,
    # the index and the state hold none), nor in a temporary file left behind.
    roots = [tmp_path, "/tmp", os.path.expanduser("~/.ansible"), str(ROOT / ".build" / "ansible-home")]
    # The sources themselves hold the values: the input files, the extra vars, the database.
    exclude = [*platform.inputs, tmp_path / "extra_vars.json", platform.pg.server.data_dir]
    assert files_containing(roots, platform.needles, since=started, exclude=exclude) == []
    audit = [json.loads(line) for line in (tmp_path / "state" / "vault" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["event"] == "exported" and audit[-1]["entry_count"] == 8 and audit[-1]["export_id"] == index["export_id"]
    assert (tmp_path / "bundles" / "lifeboat-secrets-reader.py").read_bytes() == READER.read_bytes()
    # The same set, and the reader, on the bundles' own SFTP target.
    assert sorted(p.name for p in remote.iterdir()) == sorted(os.listdir(tmp_path / "bundles"))
    for name in os.listdir(tmp_path / "bundles"):
        assert (remote / name).read_bytes() == (tmp_path / "bundles" / name).read_bytes()

    # (a) the master passphrase and age, on a terminal
    status, output = run_in_terminal('age -d -i "%s.key.age" "%s.secrets.age"' % (stem, stem), platform.passphrase)
    assert status == 0, output
    got, doc = entries_of(output[output.index("{") :].replace("\r\n", "\n"))
    assert got == expected and doc["export_id"] == index["export_id"]
    assert doc["entries"][0]["username"] == "postgres" and doc["entries"][0]["notes"] == "rotate quarterly\nsecond line"

    # (b) two of three officers' shares with ssss-combine, then age
    share_1 = age_decrypt_share(stem + ".share-1-alice.age", tmp_path / "alice.key")
    share_2 = age_decrypt_share(stem + ".share-2-bob.age", tmp_path / "bob.key")
    share_3 = (tmp_path / "carol-vault.share").read_text().strip()
    for pair in ([share_1, share_2], [share_2, share_3], [share_3, share_1]):
        identity = combine(pair)
        assert identity.startswith("AGE-SECRET-KEY-1")
        opened = age_with_identity(identity, stem + ".secrets.age")
        assert opened.returncode == 0, opened.stderr
        assert entries_of(opened.stdout)[0] == expected

    # (c) the standalone reader, alone (python -I), as it lies on the SFTP target, on the set
    # there, with the passphrase and with shares
    (tmp_path / "pass").write_text(platform.passphrase + "\n")
    env = {"PATH": os.environ["PATH"]}
    read = [sys.executable, "-I", str(remote / "lifeboat-secrets-reader.py"), str(remote / index_path.name)]
    out = subprocess.run([*read, "--passphrase-file", str(tmp_path / "pass"), "--json"], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert entries_of(out.stdout)[0] == expected
    by_share = [*read, "--share", stem + ".share-2-bob.age", "-i", str(tmp_path / "bob.key"), "--share", str(tmp_path / "carol-vault.share")]
    out = subprocess.run([*by_share, "--name", "db-superuser", "--secret"], capture_output=True, text=True, env=env, check=False)
    assert (out.returncode, out.stdout) == (0, expected["db-superuser"] + "\n"), out.stderr
    check = subprocess.run([*by_share, "--check"], capture_output=True, text=True, env=env, check=False)
    assert check.returncode == 0 and "8 entries" in check.stdout
    assert not [n for n in platform.needles if n in check.stdout]

    # An unchanged source exports nothing the second time.
    before = sorted(os.listdir(tmp_path / "bundles"))
    again = run_playbook(ROLE_PLAY, tmp_path, extra_vars=role_vars)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "changed=0" in again.stdout
    assert sorted(os.listdir(tmp_path / "bundles")) == before and sorted(p.name for p in remote.iterdir()) == before
    audit = [json.loads(line) for line in (tmp_path / "state" / "vault" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["event"] == "unchanged" and audit[-1]["content_digest"] == audit[-2]["content_digest"]


def export(platform, name="vault", **extra):
    args = platform.role_vars(name, **extra)
    params = dict(
        name=args["secrets_name"],
        sources=args["secrets_sources"],
        destination=args["secrets_destination"],
        state_dir=args["secrets_state_dir"],
        passphrase=args["secrets_passphrase"],
        custody=args["secrets_custody"],
        work_factor=12,
    )
    result = run_module("secrets_export", **params)
    assert not result.failed, result
    return result


@pytest.mark.fault(
    "corrupt member",
    "a secrets bundle opened with a wrong passphrase, too few shares, a share of another bundle, or damaged (one byte): stock tools and the reader refuse",
)
def test_refusals_with_stock_tools_and_the_reader(platform, tmp_path, fault):
    first = export(platform)
    other = export(platform, name="other")
    index, index_path = platform.index()
    stem = str(index_path)[: -len(".json")]
    other_stem = str(tmp_path / "bundles" / other["stem"])
    reader = [sys.executable, "-I", str(READER), str(index_path)]

    # Wrong passphrase
    status, output = run_in_terminal('age -d -i "%s.key.age" "%s.secrets.age"' % (stem, stem), "not the passphrase")
    assert status != 0 and "incorrect passphrase" in output
    (tmp_path / "wrong").write_text("not the passphrase\n")
    out = subprocess.run([*reader, "--passphrase-file", str(tmp_path / "wrong")], capture_output=True, text=True, check=False)
    fault.observe(false_success=out.returncode == 0)
    assert out.returncode == 1 and "refused: wrong passphrase" in out.stderr

    # Too few shares
    share_1 = age_decrypt_share(stem + ".share-1-alice.age", tmp_path / "alice.key")
    short = subprocess.run(["ssss-combine", "-t", "2", "-Q"], input=share_1 + "\n", capture_output=True, text=True, check=False)
    assert short.returncode == 1 and "I/O error while reading shares" in short.stderr
    out = subprocess.run([*reader, "--share", stem + ".share-1-alice.age", "-i", str(tmp_path / "alice.key")], capture_output=True, text=True, check=False)
    fault.observe(false_success=out.returncode == 0)
    assert out.returncode == 1 and "too few shares: custody %s needs 2 of its 3 shares, 1 given" % first["custody"]["id"] in out.stderr

    # A share of another bundle: ssss-combine makes something that is not a key, age refuses
    # it, and the reader names the custody it belongs to.
    foreign = age_decrypt_share(other_stem + ".share-2-bob.age", tmp_path / "bob.key")
    identity = combine([share_1, foreign])
    assert not identity.startswith("AGE-SECRET-KEY-1")
    assert age_with_identity(identity, stem + ".secrets.age").returncode != 0
    keys = ["-i", str(tmp_path / "alice.key"), "-i", str(tmp_path / "bob.key")]
    mixed = [*reader, "--share", stem + ".share-1-alice.age", "--share", other_stem + ".share-2-bob.age", *keys]
    out = subprocess.run(mixed, capture_output=True, text=True, check=False)
    fault.observe(false_success=out.returncode == 0)
    assert out.returncode == 1
    assert "belongs to custody %s" % other["custody"]["id"] in out.stderr and "cannot be combined" in out.stderr

    # A damaged bundle: sha256sum against the index, age and the reader all refuse it.
    bundle = Path(stem + ".secrets.age")
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x20
    bundle.write_bytes(bytes(data))
    line = "%s  %s\n" % (index["bundle"]["sha256"], bundle.name)
    check = subprocess.run(["sha256sum", "-c", "-"], input=line, cwd=str(bundle.parent), capture_output=True, text=True, check=False)
    assert check.returncode == 1 and "FAILED" in check.stdout
    share_2 = age_decrypt_share(stem + ".share-2-bob.age", tmp_path / "bob.key")
    opened = age_with_identity(combine([share_1, share_2]), str(bundle))
    assert opened.returncode != 0 and "age: error" in opened.stderr and opened.stdout == ""
    (tmp_path / "pass").write_text(platform.passphrase + "\n")
    out = subprocess.run([*reader, "--passphrase-file", str(tmp_path / "pass")], capture_output=True, text=True, check=False)
    fault.observe(false_success=out.returncode == 0)
    fault.scan([platform.passphrase], out)
    assert out.returncode == 1 and "is damaged" in out.stderr
    out = subprocess.run([*reader, "--check-stored"], capture_output=True, text=True, check=False)
    fault.observe(false_success=out.returncode == 0)
    assert out.returncode == 1 and "SHA-256 does not match the index" in out.stderr


@pytest.mark.fault("server down", "the secrets source (PostgreSQL) not listening, the secrets role at -vvv with an alert channel")
def test_source_down_fails_clearly_alerts_records_and_writes_nothing(platform, tmp_path, fault):
    assert not export(platform).failed
    vars_ = platform.role_vars()
    pam = vars_["secrets_sources"][0]["postgresql"]
    pam["port"] = pam["port"] + 1 if pam["port"] < 65000 else pam["port"] - 1  # nothing listens there
    before = sorted(os.listdir(tmp_path / "bundles"))
    time.sleep(1.2)  # the last success is now older than stale_after
    with WebhookReceiver(secret="hook-secret") as hook:
        channel = {"type": "webhook", "name": "on-call", "url": hook.url + "/alerts", "secret": "hook-secret", "retry_delay": 0.1}
        proc = run_playbook(ROLE_PLAY, tmp_path, extra_vars=dict(vars_, secrets_force=True, secrets_stale_after="1s", lifeboat_alerts=[channel]), verbosity=3)
    fault.observe(false_success=proc.returncode == 0, data_lost=sorted(os.listdir(tmp_path / "bundles")) != before)
    fault.scan(platform.needles, proc.stdout, *(request.body.decode() for request in hook.requests))
    assert proc.returncode != 0
    assert "secrets export vault failed on localhost: source pam: cannot connect to PostgreSQL" in proc.stdout
    assert not [n for n in platform.needles if n in proc.stdout]
    assert sorted(os.listdir(tmp_path / "bundles")) == before
    audit = [json.loads(line) for line in (tmp_path / "state" / "vault" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["event"] == "failed" and "source pam: cannot connect" in audit[-1]["reason"]
    events = [request.json() for request in hook.requests]
    assert [e["kind"] for e in events] == ["secrets_export_failed", "secrets_bundle_stale"]
    assert all(request.signature_ok for request in hook.requests)
    assert events[0]["node"] == "localhost" and "source pam: cannot connect to PostgreSQL" in events[0]["reason"]
    assert events[0]["details"]["bundle"] == "vault" and events[1]["details"]["last_exported"]
    assert not [n for n in platform.needles if any(n in request.body.decode() for request in hook.requests)]


def test_a_query_error_never_quotes_a_value(platform, tmp_path):
    """PostgreSQL quotes the offending value in data errors; the message must not carry it."""
    sources = platform.sources()[:1]
    sources[0]["postgresql"]["query"] = "SELECT title AS name, password::int AS secret FROM credentials"
    places = dict(destination=str(tmp_path / "b"), state_dir=str(tmp_path / "s"))
    result = run_module("secrets_export", name="vault", sources=sources, passphrase=platform.passphrase, **places)
    assert result.failed and "invalid input syntax for type integer" in result["msg"] and "(value hidden)" in result["msg"]
    assert not [n for n in platform.needles if n in json.dumps(result) + result.stderr]
    audit = (tmp_path / "s" / "vault" / "audit.jsonl").read_text()
    assert '"event": "failed"' in audit and not [n for n in platform.needles if n in audit]
