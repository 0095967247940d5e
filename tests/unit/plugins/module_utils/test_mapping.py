"""_mapping: what a scan finds in text, the check of a filled-in mapping, the rewrite."""

from __future__ import annotations

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _mapping


def scanned(text, manifest=None):
    found = _mapping.Found()
    _mapping.manifest_values(manifest or {"node": "app1", "components": {"pg": {"details": {"databases": [{"name": "intel"}]}}}}, found)
    named = [(v, _mapping._word(v)) for v, e in found.values.items() if e["kind"] in ("node", "database", "index")]
    _mapping.text_values("config", "/etc/x.conf", text, named, found)
    return found


def test_scan_finds_hosts_addresses_endpoints_and_names_not_loopback_or_files():
    found = scanned("uri = postgresql://u@db1:5432/intel\nhosts = ['a.b.example.org', '10.0.0.12', '127.0.0.1', 'localhost']\nlog = x.y.conf\n")
    kinds = {v: e["kind"] for v, e in found.values.items()}
    assert kinds == {
        "app1": "node",
        "intel": "database",
        "db1": "host",
        "db1:5432": "endpoint",
        "a.b.example.org": "host",
        "10.0.0.12": "address",
        "u": "account",
    }
    assert found.values["intel"]["occurs"] == ["manifest: component pg, databases", "config: /etc/x.conf line 1"]


def test_check_names_every_value_left_including_hand_added_ones():
    found = scanned("host = a.b.example.org\n")
    mapping = {"values": [{"source": "intel", "target": "intel_b"}, {"source": "app1", "keep": "true"}, {"source": "/srv/a", "target": ""}]}
    with pytest.raises(_mapping.MappingError) as refused:
        _mapping.check(mapping, found)
    assert (
        "leaves 2 value(s)" in str(refused.value)
        and "host a.b.example.org" in str(refused.value)
        and "/srv/a (the mapping (added by hand))" in str(refused.value)
    )
    mapping["values"] += [{"source": "a.b.example.org", "target": "a.b.example.net"}]
    mapping["values"][2]["target"] = "/srv/b"
    assert _mapping.check(mapping, found) == {"intel": "intel_b", "a.b.example.org": "a.b.example.net", "/srv/a": "/srv/b"}
    with pytest.raises(_mapping.MappingError, match="database intel"):
        _mapping.check({"values": [{"source": "intel", "target": "intel"}]}, scanned(""))


def test_rewrite_whole_words_longest_first_mode_kept(tmp_path):
    path = tmp_path / "x.conf"
    path.write_text("a = db1:5432\nb = db1\nc = db10\nd = 10.0.0.1 10.0.0.12\n")
    path.chmod(0o640)
    made = _mapping.rewrite_file(str(path), {"db1": "db2", "db1:5432": "db2:6432", "10.0.0.1": "10.9.9.9"})
    assert path.read_text() == "a = db2:6432\nb = db2\nc = db10\nd = 10.9.9.9 10.0.0.12\n"
    assert sorted(made) == [("10.0.0.1", "10.9.9.9", 1), ("db1", "db2", 1), ("db1:5432", "db2:6432", 1)]
    assert path.stat().st_mode & 0o777 == 0o640
    (tmp_path / "bin").write_bytes(b"db1\0")
    assert _mapping.rewrite_file(str(tmp_path / "bin"), {"db1": "db2"}) == [] and (tmp_path / "bin").read_bytes() == b"db1\0"


def test_scan_finds_paths_accounts_and_subjects_where_they_occur():
    found = scanned(
        "data_dir = /srv/intel/data/\nlog = /var/log/intel/app.log\nbin = /usr/bin/python3\nurl = http://h.example.com:80/api/v1\n"
        "db_user = intel_svc\nUser=root\nrun_as: 'worker'\nuser_agent = curl\n"
        'tls_client = "CN=api.prod.example.com,O=Acme,C=DE"\nissuer = /C=DE/O=Acme/CN=Acme CA\n'
    )
    kinds = {v: e["kind"] for v, e in found.values.items() if e["kind"] in ("path", "account", "subject")}
    assert kinds == {
        "/srv/intel/data": "path",
        "/var/log/intel/app.log": "path",
        "intel_svc": "account",
        "worker": "account",
        "CN=api.prod.example.com,O=Acme,C=DE": "subject",
        "C=DE/O=Acme/CN=Acme CA": "subject",
    }, "no system path, no URL path, not root, not a user_agent"
    assert found.values["worker"]["occurs"] == ["config: /etc/x.conf line 7"]
    pem = scanned("-----BEGIN CERTIFICATE-----\n/MIIB/ab+c/CN=x\n-----END CERTIFICATE-----\nkey = /srv/k/x.pem\n")
    assert [v for v, e in pem.values.items() if e["kind"] not in ("node", "database")] == ["/srv/k/x.pem"], "base64 lines are not read"


def test_scan_reads_the_subjects_and_names_of_pem_certificates():
    x509 = pytest.importorskip("cryptography.x509")
    import datetime

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "api.prod.example.com"), x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Acme")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("api.prod.example.com"), x509.DNSName("api2.prod.example.com")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    found = _mapping.Found()
    _mapping.certificate_values("config", "/etc/tls/api.pem", certificate.public_bytes(serialization.Encoding.PEM).decode(), found)
    assert {v: e["kind"] for v, e in found.values.items()} == {
        "O=Acme,CN=api.prod.example.com": "subject",
        "api.prod.example.com": "host",
        "api2.prod.example.com": "host",
    }
    assert found.values["O=Acme,CN=api.prod.example.com"]["occurs"] == ["config: /etc/tls/api.pem certificate"]


def test_check_a_mapped_directory_covers_the_paths_under_it():
    found = scanned("a = /srv/intel/data\nb = /srv/intel/logs/x.log\nc = /srv/other/y\n")
    mapping = {"values": [{"source": v, "keep": True} for v in ("app1", "intel")] + [{"source": "/srv/intel", "target": "/data/intel"}]}
    with pytest.raises(_mapping.MappingError, match=r"leaves 1 value\(s\).*path /srv/other/y"):
        _mapping.check(mapping, found)
    mapping["values"].append({"source": "/srv/other/y", "keep": True})
    assert _mapping.check(mapping, found) == {"/srv/intel": "/data/intel"}


def test_replace_in_one_pass_accounts_only_where_they_are_accounts():
    text = "uri = postgresql://app:x@db1.prod.example.com/app\nowner = app\ndir = /etc/app/x\nsubject = CN=db1.prod.example.com,O=A\n"
    replacements = {"app": "app_b", "db1.prod.example.com": "db1.b.example.com", "CN=db1.prod.example.com,O=A": "CN=db1.b.example.com,O=B"}
    replaced, counts = _mapping.replace_text(text, replacements, accounts={"app"})
    assert replaced == ("uri = postgresql://app_b:x@db1.b.example.com/app\nowner = app_b\ndir = /etc/app/x\nsubject = CN=db1.b.example.com,O=B\n"), (
        "the database name app and the directory app are not the account"
    )
    assert counts == {"app": 2, "db1.prod.example.com": 1, "CN=db1.prod.example.com,O=A": 1}
    swapped = _mapping.replace_text("a = x.example.com y.example.com\n", {"x.example.com": "y.example.com", "y.example.com": "x.example.com"})
    assert swapped[0] == "a = y.example.com x.example.com\n", "a replacement is never replaced again"
