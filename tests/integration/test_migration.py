"""Migration mapping (#17.3): mapping_template finds the environment-specific values of an
image; mapping_apply refuses a mapping that leaves one before anything is touched, then
rewrites the restored configuration files and gives the database names to restore under."""

from __future__ import annotations

import json
import re
import subprocess

import yaml

from ansible_collections.lifeboat.backup.plugins.module_utils import _age
from tests.support.modules import ROOT, run_module, run_playbook
from tests.support.search import conn as search_conn
from tests.support.search import doc_counts, make_indices, register

SOURCE = {
    "host": "db1.prod.example.com",
    "address": "10.20.30.40",
    "search": "search.prod.example.com",
    "subject": "CN=api.prod.example.com,O=Env A",
}


def certificate(common_name):
    """A self-signed PEM certificate for ``common_name`` (subject CN=<it>, the same DNS name)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    built = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
    built = built.not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
    built = built.add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
    return built.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def make_environment_a(root, database):
    (root / "etc" / "app" / "tls").mkdir(parents=True)
    (root / "etc" / "app" / "settings.py").write_text(
        "DATABASE_URI = 'postgresql://app@%s:5432/%s'\nSEARCH = ['http://%s:9200']\nALLOWED = ['%s', '127.0.0.1', 'localhost']\n"
        "DATA_DIR = '/srv/intel-a/data'\nSERVICE_USER = 'intel_a'\nTLS_PEER = '%s'\n"
        % (SOURCE["host"], database, SOURCE["search"], SOURCE["address"], SOURCE["subject"])
    )
    (root / "etc" / "app" / "tls" / "api.pem").write_bytes(certificate("api.prod.example.com"))
    (root / "etc" / "app" / "worker.conf").write_text(
        "broker = redis://%s:6379/0\ndb_name = %s\nlog = /var/log/app/worker.log\nspool = /srv/intel-a/spool/\n" % (SOURCE["address"], database)
    )
    (root / "etc" / "app" / "logo.png").write_bytes(b"\x89PNG\0\0" + SOURCE["host"].encode())
    (root / "etc" / "app" / "settings.py").chmod(0o640)


def test_template_refusal_and_rewrite(pg_database, opensearch_server, namespace, tmp_path):
    identity, recipient = _age.generate_identity()
    name = pg_database.name
    pg_database.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g")
    server = pg_database.server
    make_environment_a(tmp_path / "a", name)
    where = dict(destination=str(tmp_path), state_dir=str(tmp_path / "state"))
    started = run_module("backup_session", state="started", recipients=[recipient], node="app1.prod.example.com", **where)
    work_dir = started["session"]["work_dir"]
    assert not run_module("config_archive", session=work_dir, paths=[str(tmp_path / "a" / "etc")]).failed
    conn = {"login_host": server.host, "port": server.port, "login_password": server.password}
    assert not run_module("postgresql_dump", session=work_dir, databases=[name], globals=False, **conn).failed
    # A search component whose index is renamed too (#17.1), from the live repository.
    es = opensearch_server
    (index,), _alias = make_indices(es, namespace, {"stix": 12}, shards=1)
    register(es, f"{namespace}-repo", es.repo_dir / f"{namespace}-repo")
    taken = run_module("elasticsearch_snapshot", session=work_dir, name="search", repository=f"{namespace}-repo", indices=[index], **search_conn(es))
    assert not taken.failed, taken
    image = run_module("backup_session", state="sealed", session=work_dir)["image"]

    made = run_module("mapping_template", image=image, identity=identity, dest=str(tmp_path / "mapping.yml"))
    assert not made.failed, made
    values = {v["source"]: v for v in made["environment_values"]}
    assert values["app1.prod.example.com"]["kind"] == "node"
    assert values[name]["kind"] == "database" and any("worker.conf line 2" in w for w in values[name]["occurs"])
    assert values[index] == {"kind": "index", "source": index, "occurs": ["manifest: component search, indices"]}
    assert values[SOURCE["host"]]["kind"] == "host" and values[SOURCE["address"]]["kind"] == "address"
    assert "%s:5432" % SOURCE["host"] in values and "%s:9200" % SOURCE["search"] in values
    assert not {"127.0.0.1", "localhost", "worker.log", "settings.py"} & set(values), "not environment-specific"
    assert {v: values[v]["kind"] for v in ("/srv/intel-a/data", "/srv/intel-a/spool", "intel_a", "app", SOURCE["subject"])} == {
        "/srv/intel-a/data": "path",
        "/srv/intel-a/spool": "path",
        "intel_a": "account",
        "app": "account",
        SOURCE["subject"]: "subject",
    }
    assert values["CN=api.prod.example.com"]["occurs"] == ["config: %s/etc/app/tls/api.pem certificate" % (tmp_path / "a")]
    assert values["api.prod.example.com"]["kind"] == "host", "the certificate's DNS name"
    assert (tmp_path / "mapping.yml").stat().st_mode & 0o777 == 0o600
    mapping = yaml.safe_load((tmp_path / "mapping.yml").read_text())
    assert {v["source"] for v in mapping["values"]} == set(values) and all(v["target"] == "" for v in mapping["values"])
    again = run_module("mapping_template", image=image, identity=identity, dest=str(tmp_path / "mapping.yml"))
    assert again.failed and "force=true" in again["msg"], "a filled-in mapping is never replaced by default"

    # Environment B: every value mapped but one -> refused before anything is touched.
    targets = {
        "app1.prod.example.com": "app1.staging.example.com",
        name: name + "_b",
        SOURCE["host"]: "db1.staging.example.com",
        SOURCE["address"]: "10.99.0.1",
        SOURCE["address"] + ":6379": "10.99.0.1:6379",
        SOURCE["host"] + ":5432": "db1.staging.example.com:6432",
        SOURCE["search"]: "search.staging.example.com",
        SOURCE["search"] + ":9200": "search.staging.example.com:9201",
        "intel_a": "intel_b",
        SOURCE["subject"]: "CN=api.staging.example.com,O=Env B",
        "CN=api.prod.example.com": "CN=api.staging.example.com",
        "api.prod.example.com": "api.staging.example.com",
        "/srv/intel-a": "/srv/intel-b",
        index: index + "-b",
    }
    (cluster,) = [v for v, e in values.items() if e["kind"] == "cluster"]
    assert values[cluster]["occurs"] == ["manifest: component search, cluster_name"]
    kept = {"app", "/var/log/app/worker.log", cluster}  # the same account, log path and search cluster in B
    for entry in mapping["values"]:
        entry["target"] = targets.get(entry["source"], "")
        entry["keep"] = entry["source"] in kept
    # The paths under /srv/intel-a are mapped by their directory, added by hand.
    mapping["values"].append({"kind": "path", "source": "/srv/intel-a", "target": targets["/srv/intel-a"]})
    missing = next(e for e in mapping["values"] if e["source"] == SOURCE["address"])
    missing["target"] = ""
    refused = run_module("mapping_apply", image=image, identity=identity, mapping=mapping)
    assert refused.failed and "leaves 1 value(s)" in refused["msg"] and SOURCE["address"] in refused["msg"] and "worker.conf" in refused["msg"]
    missing["target"] = targets[SOURCE["address"]]
    for entry in mapping["values"]:
        if entry["source"] not in targets:  # anything the scan found beyond the known ones is kept
            entry["keep"] = True

    root = tmp_path / "b"
    assert not run_module("config_restore", image=image, identity=identity, root=str(root)).failed
    checked = run_module("mapping_apply", image=image, identity=identity, mapping=mapping)
    assert not checked.failed and checked["rename"] == {name: name + "_b"}, checked
    assert checked["renames"] == {"postgresql": {name: name + "_b"}, "search": {index: index + "-b"}}
    applied = run_module("mapping_apply", image=image, identity=identity, mapping=mapping, state="applied", root=str(root))
    assert not applied.failed and applied["changed"], applied
    restored = root / str(tmp_path / "a" / "etc").lstrip("/") / "app"
    text = (restored / "settings.py").read_text() + (restored / "worker.conf").read_text()
    assert "postgresql://app@db1.staging.example.com:6432/%s_b" % name in text and "redis://10.99.0.1:6379/0" in text
    assert "http://search.staging.example.com:9201" in text and "'127.0.0.1', 'localhost'" in text
    assert "DATA_DIR = '/srv/intel-b/data'\nSERVICE_USER = 'intel_b'\nTLS_PEER = 'CN=api.staging.example.com,O=Env B'" in text
    assert "spool = /srv/intel-b/spool/" in text and "postgresql://app@" in text and "log = /var/log/app/worker.log" in text
    assert applied["certificates"] == [
        {"path": str(restored / "tls" / "api.pem"), "subject": "CN=api.prod.example.com", "target": "CN=api.staging.example.com"}
    ], "a certificate cannot be rewritten: it is named, to be replaced"
    leftover = subprocess.run(
        ["grep", "-rlE", "prod\\.example\\.com|10\\.20\\.30\\.40|intel-a|intel_a|Env A", str(restored)], capture_output=True, text=True, check=False
    )
    assert leftover.stdout.split() == [str(restored / "logo.png")], "no value of A left in the text files (binary files are not rewritten)"
    assert (restored / "settings.py").stat().st_mode & 0o777 == 0o640
    assert {(r["path"].rsplit("/", 1)[1], r["source"]) for r in applied["replacements"]} >= {("settings.py", SOURCE["host"] + ":5432"), ("worker.conf", name)}

    # The restore role with restore_mapping: files rewritten, the database restored under its B
    # name (the data equal), every replacement reported.
    (tmp_path / "identity.txt").write_text(identity + "\n")
    (tmp_path / "identity.txt").chmod(0o600)
    etc = tmp_path / "a" / "etc"
    component = {"name": "postgresql", "kind": "postgresql", "databases": [name], "globals": False, **conn}
    search = {"name": "search", "kind": "elasticsearch", "repository": f"{namespace}-repo", "location": str(es.repo_dir / f"{namespace}-repo")}
    search.update(restore_include_aliases=False, **search_conn(es))
    host = {
        "ansible_connection": "local",
        "restore_image": image,
        "restore_identity_file": str(tmp_path / "identity.txt"),
        "restore_profile": {"name": "b", "platform": {}, "components": [{"name": "config", "kind": "config", "paths": [str(etc)]}, component, search]},
        "restore_force": True,
        "restore_quiesce": False,
        "restore_config_root": str(tmp_path / "b2"),
        "restore_mapping": mapping,
        "restore_destination": str(tmp_path),
        "restore_state_dir": str(tmp_path / "state"),
    }
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"app1": host}}}))
    inventory.chmod(0o600)
    # An index of B's name exists and replacing was not asked: refused before anything is touched.
    es.request("PUT", f"/{index}-b", json={"settings": {"number_of_shards": 1, "number_of_replicas": 0}})
    refused = run_playbook((ROOT / "playbooks" / "restore.yml").read_text(), tmp_path, inventory=str(inventory))
    assert refused.returncode != 0 and "renames indices of component search" in refused.stdout, refused.stdout[-4000:]
    assert f"these indices already exist: {index}-b" in refused.stdout and "Nothing was restored" in refused.stdout
    assert not (tmp_path / "b2").exists() and pg_database.psql("SELECT count(*) FROM pg_database WHERE datname = '%s_b'" % name).strip() == "0"
    es.request("DELETE", f"/{index}-b")

    run = run_playbook((ROOT / "playbooks" / "restore.yml").read_text(), tmp_path, inventory=str(inventory), env={"ANSIBLE_SHOW_CUSTOM_STATS": "true"})
    assert run.returncode == 0, run.stdout[-4000:]
    assert doc_counts(es, [index + "-b"]) == {index + "-b": 12}, "the index restored under its B name"
    stats = run.stdout[run.stdout.index("CUSTOM STATS") :]
    for source, target, kind in ((name, name + "_b", "database"), (index, index + "-b", "index")):
        assert re.search(r'"kind": "%s",\s*"source": "%s",\s*"target": "%s"' % (kind, source, target), stats), "every rename among the replacements"
    restored = tmp_path / "b2" / str(tmp_path / "a" / "etc").lstrip("/") / "app"
    assert "db1.staging.example.com:6432/%s_b" % name in (restored / "settings.py").read_text()
    assert '"replacements"' in run.stdout and "db1.staging.example.com:6432" in run.stdout[run.stdout.index("CUSTOM STATS") :]
    compared = run_module("postgresql_fingerprint", image=image, identity=identity, rename=applied["rename"], **conn)
    assert not compared.failed and compared["equal"], json.dumps(compared)[:2000]
    pg_database.psql('DROP DATABASE "%s_b" WITH (FORCE)' % name)
