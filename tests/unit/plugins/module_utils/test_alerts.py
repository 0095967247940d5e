"""Alerts without a network: message texts, RFC 5424 fields, secret scrubbing, channel
checks, and send() never raising whatever it is given (the receivers are tested for real in
tests/integration/test_alerts.py)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.lifeboat.backup.plugins.module_utils import _alerts as a

EVENT = {
    "kind": "copy_failed",
    "node": "app1",
    "backup_id": "20261129T020000Z-3fa2c1d0",
    "verdict": "partial",
    "target": "offsite-sftp",
    "reason": 'upload to sftp://backup:hunter2@vault.example.com/x failed: "quota" ] exceeded',
    "image": "/var/backups/lifeboat/20261129T020000Z-app1.zip",
    "failures": {"offsite-sftp": "quota exceeded"},
    "details": {"passphrase": "correct horse", "bytes": 10, "nested": {"smtp_password": "x", "ok": "y"}},
    "time": "2026-11-29T02:03:04Z",
}


def test_scrub_masks_secret_keys_and_url_credentials():
    event = a.normalise(EVENT)
    assert event["details"]["passphrase"] == "********" and event["details"]["nested"] == {"smtp_password": "********", "ok": "y"}
    assert "hunter2" not in event["reason"] and "sftp://vault.example.com/x" in event["reason"]
    assert event["severity"] == "error" and event["time"] == "2026-11-29T02:03:04Z"
    # The caller's dict is left as it was.
    assert EVENT["details"]["passphrase"] == "correct horse"


def test_texts_name_node_backup_id_verdict_components_and_image():
    event = a.normalise(EVENT)
    assert a.subject(event) == "[lifeboat] app1: copy to storage failed (20261129T020000Z-3fa2c1d0)"
    line = a.summary_line(event)
    assert "\n" not in line and "verdict partial" in line and "offsite-sftp: failed - quota exceeded" in line
    body = a.text_body(event)
    assert "image:     /var/backups/lifeboat/20261129T020000Z-app1.zip" in body
    assert "correct horse" not in body and "hunter2" not in body


def test_rfc5424_fields_and_escaping():
    channel = a.check_channel({"type": "syslog", "host": "siem", "facility": "local0"})
    raw = a.syslog_message(channel, a.normalise(EVENT)).decode("utf-8")
    header, _sep, rest = raw.partition(" [")
    assert header.startswith("<131>1 2026-11-29T02:03:04Z app1 lifeboat ")  # local0 (16) * 8 + error (3)
    assert header.endswith(" copy_failed")
    structured = "[" + rest.split("] \ufeff", 1)[0] + "]"
    assert structured.startswith('[lifeboat@32473 kind="copy_failed" node="app1"')
    assert 'target="offsite-sftp"' in structured
    message = rest.split("] \ufeff", 1)[1]
    assert '"quota" ] exceeded' in message  # the message part needs no escaping
    assert a._sd_value('a"b]c\\') == 'a\\"b\\]c\\\\'


def test_severity_and_ping_state():
    assert a.severity_of({"kind": "run_partial"}) == "warning"
    assert a.severity_of({"kind": "wal_archive_failed"}) == "error"  # unknown kinds are problems
    assert a.severity_of({"kind": "export_done", "severity": "info"}) == "info"
    channel = a.check_channel({"type": "ping", "url": "https://hc.example.com/ping/uuid/"})
    assert a.ping_url(channel, {"kind": "run_started", "severity": "info"}) == "https://hc.example.com/ping/uuid/start"
    assert a.ping_url(channel, {"kind": "run_succeeded", "severity": "info"}) == "https://hc.example.com/ping/uuid/"
    assert a.ping_url(channel, a.normalise({"kind": "run_partial"})) == "https://hc.example.com/ping/uuid/fail"


def test_subscriptions():
    problems = a.check_channel({"type": "webhook", "url": "https://h.example.com/x"})
    assert problems["events"] == ["problems"] and problems["retries"] == 3
    assert a.wants(problems, a.normalise({"kind": "run_failed"}))
    assert a.wants(problems, a.normalise({"kind": "run_partial"}))
    assert not a.wants(problems, a.normalise({"kind": "run_succeeded"}))
    ping = a.check_channel({"type": "ping", "url": "https://h.example.com/x"})
    assert a.wants(ping, a.normalise({"kind": "run_started"})) and not a.wants(ping, a.normalise({"kind": "backup_stale"}))
    everything = a.check_channel({"type": "syslog", "host": "h", "events": ["all"]})
    assert a.wants(everything, a.normalise({"kind": "restore_finished"}))


@pytest.mark.parametrize(
    "channel, message",
    [
        ({"type": "pager"}, "alerts[0].type must be one of email, syslog, webhook, ping"),
        ({"type": "email", "host": "h", "to": ["x@y"]}, "alerts[0].sender is required for a email channel"),
        ({"type": "webhook", "url": "ftp://h/x"}, "alerts[0].url must be an http:// or https:// URL"),
        ({"type": "email", "host": "h", "sender": "a@b", "to": ["c@d"], "username": "u"}, "username and password go together"),
        ({"type": "email", "host": "h", "sender": "a@b", "to": ["c@d"], "username": "u", "password": "p", "security": "none"}, "clear text"),
        ({"type": "syslog", "host": "h", "retries": 0}, "retries must be at least 1"),
    ],
)
def test_channel_checks_name_the_key(channel, message):
    with pytest.raises(a.ChannelError) as err:
        a.check_channels([channel])
    assert message in str(err.value)


def test_default_ports():
    assert a.check_channel({"type": "email", "host": "h", "sender": "a@b", "to": ["c@d"]})["port"] == 587
    assert a.check_channel({"type": "email", "host": "h", "sender": "a@b", "to": ["c@d"], "security": "tls"})["port"] == 465
    assert a.check_channel({"type": "syslog", "host": "h", "protocol": "tls"})["port"] == 6514


def test_labels_never_show_a_url():
    assert a.label_of({"type": "webhook", "url": "https://hooks.example.com/T0/B0/secret"}, 2) == "webhook hooks.example.com #2"
    assert a.label_of({"type": "webhook", "name": "chat", "url": "https://x/secret"}, 2) == "chat"


def test_signature_is_hmac_sha256_of_the_body():
    body = a.webhook_body(a.normalise(EVENT))
    assert a.sign("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert json.loads(body)["message"] == a.summary_line(a.normalise(EVENT))


def test_failures_are_retried_with_backoff_and_reported():
    pauses = []
    channel = {"type": "syslog", "host": "127.0.0.1", "port": 9, "protocol": "tcp", "retries": 3, "retry_delay": 0.5, "timeout": 1}
    [outcome] = a.send({"kind": "run_failed"}, [channel], sleep=pauses.append)
    assert not outcome["ok"] and outcome["attempts"] == 3 and pauses == [0.5, 1.0]
    assert a.summarise([outcome]).startswith("alerts failed on syslog 127.0.0.1 #0")


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(st.none(), st.text(), st.dictionaries(st.text(), st.one_of(st.none(), st.text(), st.integers(), st.lists(st.text())))),
    st.one_of(
        st.none(),
        st.lists(
            st.one_of(
                st.none(),
                st.integers(),
                st.dictionaries(st.sampled_from(["type", "url", "port", "retries", "events", "to"]), st.one_of(st.none(), st.text(), st.integers())),
            ),
            max_size=4,
        ),
    ),
)
def test_send_never_raises(event, channels):
    outcomes = a.send(event, channels, sleep=lambda _s: None)
    assert isinstance(outcomes, list)
    for outcome in outcomes:
        assert set(outcome) >= {"channel", "ok"}
        assert outcome["ok"] or outcome.get("error")


def test_notify_with_a_broken_config_file(tmp_path):
    config = tmp_path / "alerts.json"
    config.write_text('[{"type": "syslog", "host": "127.0.0.1", "port": 9, "protocol": "tcp"}]')
    config.chmod(0o644)
    [outcome] = a.notify({"kind": "run_failed"}, str(config))
    assert not outcome["ok"] and "open to other users (mode 0644)" in outcome["error"] and "chmod 600" in outcome["error"]
    config.chmod(0o600)
    config.write_text("{not json")
    [outcome] = a.notify({"kind": "run_failed"}, str(config))
    assert not outcome["ok"] and "cannot read the alert channels" in outcome["error"]
