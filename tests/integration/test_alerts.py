"""Alerts against real receivers on loopback: aiosmtpd (STARTTLS, implicit TLS, AUTH),
rsyslogd with a private configuration (RFC 5424 over UDP, TCP and TLS), a local HTTP receiver
that checks the HMAC signature, ping URLs. Failure paths: SMTP down, wrong SMTP password,
STARTTLS missing, webhook answering 500, syslog unreachable - the task never fails, the
outcome says what went wrong, and no secret is in any message or output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.harness.process import free_port
from tests.harness.receivers import SmtpServer, SyslogServer
from tests.support.authproxy import ProxyPKI
from tests.support.modules import COLLECTIONS, run_module, run_playbook
from tests.support.webhook import WebhookReceiver

EVENT = {
    "kind": "run_failed",
    "node": "db1",
    "backup_id": "20261129T020000Z-3fa2c1d0",
    "verdict": "failed",
    "reason": "every component failed: postgresql: pg_dump exited 1",
    "components": {"postgresql": {"status": "failed", "error": "pg_dump exited 1"}, "config": "success"},
    "image": None,
    "details": {"api_token": "tok-do-not-leak", "duration": 12.5},
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return ProxyPKI(tmp_path_factory.mktemp("alerts-pki"))


@pytest.fixture(scope="module")
def smtp(pki):
    with SmtpServer(pki, mode="starttls") as server:
        yield server


@pytest.fixture(scope="module")
def syslog(pki):
    with SyslogServer(pki) as server:
        yield server


def email_channel(server, pki, **extra):
    channel = dict(
        type="email",
        name="on-call mail",
        host=server.host,
        port=server.port,
        security=server.mode if server.mode != "plain" else "none",
        username=server.user,
        password=server.password,
        sender="lifeboat@example.com",
        to=["oncall@example.com", "dba@example.com"],
        ca_file=str(pki.ca_path),
        retry_delay=0.1,
    )
    channel.update(extra)
    return channel


def assert_no_secret(result, *secrets):
    text = json.dumps(result) + result.stdout + result.stderr
    for secret in secrets:
        assert secret not in text


# ---- e-mail ---------------------------------------------------------------------------------


def test_email_over_starttls_with_authentication(smtp, pki):
    smtp.clear()
    result = run_module("alert", event=EVENT, alerts=[email_channel(smtp, pki)])
    assert result.rc == 0 and result["changed"] and result["delivered"], result
    assert result["outcomes"][0]["ok"] and result["outcomes"][0]["channel"] == "on-call mail"
    [(envelope, message)] = smtp.messages()
    assert envelope["tls"] and envelope["authenticated"] and envelope["login"] == "alerts"
    assert envelope["rcpt_tos"] == ["oncall@example.com", "dba@example.com"]
    assert message["Subject"] == "[lifeboat] db1: backup failed (20261129T020000Z-3fa2c1d0)"
    assert message["X-Lifeboat-Event"] == "run_failed"
    body = message.get_content()
    assert "postgresql: failed - pg_dump exited 1" in body and "config: success" in body
    assert "backup id: 20261129T020000Z-3fa2c1d0" in body
    assert "tok-do-not-leak" not in body and "api_token: ********" in body
    assert_no_secret(result, smtp.password)


def test_email_over_implicit_tls(pki):
    with SmtpServer(pki, mode="tls") as server:
        result = run_module("alert", event=EVENT, alerts=[email_channel(server, pki)])
        assert result["delivered"], result
        [(envelope, _message)] = server.messages()
        assert envelope["tls"] and envelope["authenticated"]


def test_wrong_smtp_password_is_reported_not_raised(smtp, pki):
    smtp.clear()
    result = run_module("alert", event=EVENT, alerts=[email_channel(smtp, pki, password="wrong-password", retries=1)])
    assert result.rc == 0 and not result.failed
    outcome = result["outcomes"][0]
    assert not outcome["ok"] and "authentication refused" in outcome["error"]
    assert not result["delivered"] and "on-call mail" in result["summary"]
    assert "alerts failed on on-call mail" in json.dumps(result.get("warnings"))
    assert smtp.messages() == []
    assert_no_secret(result, "wrong-password", smtp.password)


def test_starttls_required_but_not_offered(pki):
    with SmtpServer(pki, mode="plain", user=None) as server:
        channel = email_channel(server, pki, security="starttls", username=None, password=None, retries=1)
        result = run_module("alert", event=EVENT, alerts=[channel])
        assert "does not offer STARTTLS" in result["outcomes"][0]["error"]
        assert server.messages() == []
        # security=none, as asked explicitly, works against the same server.
        result = run_module("alert", event=EVENT, alerts=[dict(channel, security="none")])
        assert result["delivered"] and len(server.messages()) == 1


@pytest.mark.fault(
    "server down", "the SMTP receiver not listening: the alert is reported undelivered (refused, 2 attempts) in bounded time, the module does not fail"
)
def test_smtp_down_costs_a_bounded_time_and_is_reported(pki, fault):
    port = free_port()  # nothing listens there
    channel = dict(type="email", host="127.0.0.1", port=port, security="starttls", sender="a@example.com", to=["b@example.com"], retries=2, retry_delay=0.2)
    started = time.monotonic()
    result = run_module("alert", event=EVENT, alerts=[channel])
    fault.observe(false_success=result.get("delivered") is not False or result["outcomes"][0].get("ok"))
    assert result.rc == 0 and not result["delivered"]
    outcome = result["outcomes"][0]
    assert outcome["attempts"] == 2 and "refused" in outcome["error"].lower()
    assert time.monotonic() - started < 30


# ---- syslog ------------------------------------------------------------------------------

RFC5424 = re.compile(r"^<(?P<pri>\d+)>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<pid>\d+) (?P<msgid>\S+) (?P<sd>\[.*?[^\\]\]) (?P<msg>.*)$")


@pytest.mark.parametrize("protocol", ["udp", "tcp", "tls"])
def test_syslog_rfc5424(syslog, pki, protocol):
    port = {"udp": syslog.udp_port, "tcp": syslog.tcp_port, "tls": syslog.tls_port}[protocol]
    backup_id = "20261129T020000Z-%s" % protocol
    channel = dict(type="syslog", host="127.0.0.1", port=port, protocol=protocol, facility="local3", ca_file=str(pki.ca_path))
    result = run_module("alert", event=dict(EVENT, backup_id=backup_id), alerts=[channel])
    assert result["delivered"], result
    [line] = syslog.wait_for(backup_id)
    match = RFC5424.match(line)
    assert match, line
    assert int(match["pri"]) == 19 * 8 + 3  # local3, error
    assert match["host"] == "db1" and match["app"] == "lifeboat" and match["msgid"] == "run_failed"
    assert 'backup_id="%s"' % backup_id in match["sd"] and match["sd"].startswith("[lifeboat@32473 ")
    assert "db1: backup failed" in match["msg"] and "postgresql: failed - pg_dump exited 1" in match["msg"]
    assert "tok-do-not-leak" not in line


def test_syslog_over_tls_refuses_an_unknown_certificate(syslog):
    channel = dict(type="syslog", host="127.0.0.1", port=syslog.tls_port, protocol="tls", retries=1)
    result = run_module("alert", event=dict(EVENT, backup_id="untrusted-cert"), alerts=[channel])
    assert not result["delivered"] and "certificate verify failed" in result["outcomes"][0]["error"]
    assert syslog.wait_for("untrusted-cert", timeout=2) == []


def test_syslog_unreachable_is_reported():
    channel = dict(type="syslog", host="127.0.0.1", port=free_port(), protocol="tcp", retries=2, retry_delay=0.1)
    result = run_module("alert", event=EVENT, alerts=[channel])
    assert result.rc == 0 and not result["delivered"]
    assert result["outcomes"][0]["attempts"] == 2 and "refused" in result["outcomes"][0]["error"].lower()


# ---- webhook and ping ----------------------------------------------------------------------


def test_webhook_signed_json():
    secret = "hmac-secret-\\&!'\" $"
    with WebhookReceiver(secret=secret) as hook:
        result = run_module("alert", event=EVENT, alerts=[dict(type="webhook", url=hook.url + "/hooks/backup", secret=secret)])
        assert result["delivered"], result
        [request] = hook.requests
    assert request.signature_ok is True and request.path == "/hooks/backup"
    body = request.json()
    assert body["kind"] == "run_failed" and body["node"] == "db1" and body["severity"] == "error"
    assert body["components"]["postgresql"]["error"] == "pg_dump exited 1"
    assert body["details"]["api_token"] == "********"
    assert request.headers["X-Lifeboat-Event"] == "run_failed"
    assert_no_secret(result, secret, hook.url)  # the URL may be a credential: never echoed


def test_webhook_with_a_wrong_secret_fails_the_receivers_check():
    with WebhookReceiver(secret="the-right-one") as hook:
        run_module("alert", event=EVENT, alerts=[dict(type="webhook", url=hook.url, secret="another-one")])
        assert [r.signature_ok for r in hook.requests] == [False]


def test_webhook_retries_after_500_then_succeeds():
    with WebhookReceiver(statuses=[500, 503]) as hook:
        result = run_module("alert", event=EVENT, alerts=[dict(type="webhook", url=hook.url, retry_delay=0.1)])
        assert [r.status for r in hook.requests] == [500, 503, 200]
    assert result["delivered"] and result["outcomes"][0]["attempts"] == 3


@pytest.mark.fault("server error", "a webhook answering HTTP 500 to every attempt: reported undelivered by name, the email channel still gets the alert")
def test_webhook_answering_500_is_reported_and_the_other_channels_still_get_it(smtp, pki, fault):
    smtp.clear()
    with WebhookReceiver(statuses=[500] * 10) as hook:
        result = run_module(
            "alert",
            event=EVENT,
            alerts=[dict(type="webhook", name="chat", url=hook.url, retries=2, retry_delay=0.1), email_channel(smtp, pki)],
        )
        assert len(hook.requests) == 2
    fault.observe(false_success=result.get("delivered") is not False or result["outcomes"][0].get("ok"))
    assert result.rc == 0 and not result["delivered"]
    webhook, mail = result["outcomes"]
    assert not webhook["ok"] and webhook["error"] == "HTTP 500 Internal Server Error" and webhook["attempts"] == 2
    assert mail["ok"] and len(smtp.messages()) == 1
    assert result["summary"] == "alerts failed on chat (HTTP 500 Internal Server Error); sent to on-call mail"


def test_ping_start_success_failure():
    with WebhookReceiver() as hook:
        channel = dict(type="ping", url=hook.url + "/ping/5f1c")
        for kind in ("run_started", "run_succeeded", "run_partial", "run_failed", "backup_stale"):
            result = run_module("alert", event=dict(EVENT, kind=kind), alerts=[channel])
            assert result["delivered"], result
        paths = [r.path for r in hook.requests]
    # backup_stale is a problem, but a ping check hears runs only unless told otherwise.
    assert paths == ["/ping/5f1c/start", "/ping/5f1c", "/ping/5f1c/fail", "/ping/5f1c/fail"]


def test_events_filter_and_check_mode(smtp, pki):
    smtp.clear()
    channel = email_channel(smtp, pki, events=["copy_failed"])
    result = run_module("alert", event=EVENT, alerts=[channel])
    assert result["outcomes"][0]["skipped"] and not result["changed"] and smtp.messages() == []
    result = run_module("alert", check=True, event=dict(EVENT, kind="copy_failed"), alerts=[channel])
    assert result["summary"] == "would send to on-call mail" and not result["changed"] and smtp.messages() == []


def test_bad_channel_names_the_option():
    result = run_module("alert", event=EVENT, alerts=[dict(type="webhook")])
    assert result.failed and result["msg"] == "alerts[0].url is required for a webhook channel"
    result = run_module("alert", event={"node": "db1"}, alerts=[])
    assert result.failed and "event.kind is required" in result["msg"]


# ---- outside Ansible, and through a playbook -------------------------------------------------


def test_standalone_program_sends_with_a_config_file(tmp_path):
    """What a program run by PostgreSQL's archive_command does: no Ansible, a 0600 JSON file."""
    with WebhookReceiver(secret="standalone-secret") as hook:
        config = tmp_path / "alerts.json"
        config.touch(mode=0o600)
        config.write_text(json.dumps({"alerts": [{"type": "webhook", "url": hook.url, "secret": "standalone-secret"}]}))
        code = (
            "import json, sys\n"
            "from ansible_collections.lifeboat.backup.plugins.module_utils import _alerts\n"
            "out = _alerts.notify({'kind': 'wal_archive_failed', 'node': 'db1', 'reason': 'disk full'}, sys.argv[1])\n"
            "bad = _alerts.notify({'kind': 'wal_archive_failed'}, sys.argv[1] + '.missing')\n"
            "print(json.dumps([out, bad, 'ansible' in sys.modules]))\n"
        )
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(COLLECTIONS)}
        proc = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, env=env, check=True)
        [request] = hook.requests
    out, bad, imported_ansible = json.loads(proc.stdout)
    assert out[0]["ok"] and request.signature_ok and request.json()["severity"] == "error"
    assert not bad[0]["ok"] and "cannot read the alert channels" in bad[0]["error"]
    assert not imported_ansible


def test_playbook_at_vvv_shows_no_secret(tmp_path, smtp, pki):
    smtp.clear()
    secret = "whsec-playbook-\\&!'\" $"
    with WebhookReceiver(secret=secret) as hook:
        channels = [email_channel(smtp, pki), dict(type="webhook", url=hook.url + "/token-in-path-xyz", secret=secret)]
        playbook = """
- hosts: localhost
  gather_facts: false
  tasks:
    - lifeboat.backup.alert:
        event: "{{ event }}"
        alerts: "{{ channels }}"
      register: sent
    - ansible.builtin.assert:
        that: sent.delivered
"""
        proc = run_playbook(playbook, tmp_path, extra_vars={"event": EVENT, "channels": channels}, verbosity=3)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert hook.requests[0].signature_ok
    for leaked in (smtp.password, secret, "token-in-path-xyz"):
        assert leaked not in proc.stdout
