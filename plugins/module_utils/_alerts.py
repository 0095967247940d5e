# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Alerts: tell someone when a backup, a copy, a target or a restore goes wrong.

    outcomes = send(event, channels)

``event`` is a dict: ``kind`` (see KINDS; other kinds are accepted), ``node``, ``backup_id``,
``verdict``, ``reason``, ``image``, ``components`` (name -> status, or name -> {status, error}),
``failures`` (name -> reason), ``target``, ``time`` and any ``details``. ``channels`` is a list
of dicts, one per destination (CHANNEL_OPTIONS): e-mail over SMTP (STARTTLS, TLS or plain,
with authentication), syslog / SIEM (RFC 5424 over UDP, TCP with newline framing, or TLS
with octet counting, RFC 5425), a webhook (JSON POST, optional HMAC-SHA256 signature header,
retries) and a ping URL on start / success / failure (the healthchecks.io model).

``send`` never raises and never decides anything: it returns one outcome per channel
(``ok``, ``error``, ``attempts``), which the caller reports beside its own verdict. A
channel that is down costs at most its ``timeout`` times its attempts; channels are served
in parallel.

No Ansible import and nothing but the standard library, so a program that runs outside
Ansible (the WAL archiver run by PostgreSQL's ``archive_command``) sends the same alerts:
``notify(event, "/etc/lifeboat/alerts.json")`` reads the channels from a JSON file (mode
0600: it may hold an SMTP password or a webhook secret) and never raises either.

No secret leaves through an alert: keys that name a secret are masked in the event, user
information in URLs inside texts is removed, and an outcome names a channel by its
``name`` or its host, never by its URL (a webhook or ping URL often is a credential).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

# kind -> (severity, ping state, words for a subject). Severity as in syslog: error, warning, info.
KINDS = {
    "run_started": ("info", "start", "backup started"),
    "run_succeeded": ("info", "success", "backup succeeded"),
    "run_partial": ("warning", "fail", "backup partial"),
    "run_failed": ("error", "fail", "backup failed"),
    "storage_unreachable": ("error", "fail", "storage target unreachable"),
    "mount_lost": ("error", "fail", "storage mount lost"),
    "target_full": ("error", "fail", "storage target full"),
    "copy_failed": ("error", "fail", "copy to storage failed"),
    "backup_stale": ("error", "fail", "backup stale"),
    "verification_failed": ("error", "fail", "verification failed"),
    "restore_finished": ("info", "success", "restore finished"),
    "restore_failed": ("error", "fail", "restore failed"),
    "drill_passed": ("info", "success", "restore drill passed"),
    "drill_failed": ("error", "fail", "restore drill failed"),
    "secrets_export_failed": ("error", "fail", "break-the-glass secrets export failed"),
    "secrets_bundle_stale": ("error", "fail", "break-the-glass secrets bundle stale"),
}
SEVERITIES = {"error": 3, "warning": 4, "info": 6}  # RFC 5424 severity codes
TYPES = ("email", "syslog", "webhook", "ping")
# What a channel hears when it does not list ``events``: every problem; a ping URL also hears
# the start and the success of runs (a healthchecks.io check needs both to know it is alive).
PROBLEMS = "problems"
PING_DEFAULT = ("run_started", "run_succeeded", "run_partial", "run_failed")
FACILITIES = dict(
    kern=0, user=1, mail=2, daemon=3, auth=4, syslog=5, lpr=6, news=7, uucp=8, cron=9, authpriv=10, ftp=11,
    local0=16, local1=17, local2=18, local3=19, local4=20, local5=21, local6=22, local7=23,
)  # fmt: skip
SIGNATURE_HEADER = "X-Lifeboat-Signature"
# An SD-ID needs an enterprise number; 32473 is the one reserved for documentation (RFC 5612).
SD_ID = "lifeboat@32473"
SECRET_KEY = re.compile(r"pass(word|phrase)?|secret|token|api_?key|private|credential|identity", re.I)
URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@]+@", re.I)

# The options of one channel (doc fragment lifeboat.backup._alerts). Everything a channel may
# need is here once; each type uses its part and check_channel names what is missing.
CHANNEL_OPTIONS = dict(
    type=dict(type="str", required=True, choices=list(TYPES)),
    name=dict(type="str"),
    events=dict(type="list", elements="str"),
    timeout=dict(type="float", default=10.0),
    retries=dict(type="int"),
    retry_delay=dict(type="float", default=2.0),
    validate_certs=dict(type="bool", default=True),
    ca_file=dict(type="path"),
    # email
    host=dict(type="str"),
    port=dict(type="int"),
    security=dict(type="str", choices=["starttls", "tls", "none"], default="starttls"),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    sender=dict(type="str"),
    to=dict(type="list", elements="str"),
    subject_prefix=dict(type="str", default="[lifeboat]"),
    # syslog
    protocol=dict(type="str", choices=["udp", "tcp", "tls"], default="udp"),
    facility=dict(type="str", default="daemon", choices=sorted(FACILITIES)),
    app_name=dict(type="str", default="lifeboat"),
    client_cert_file=dict(type="path"),
    client_key_file=dict(type="path", no_log=False),
    # webhook and ping
    url=dict(type="str", no_log=True),
    secret=dict(type="str", no_log=True),
    signature_header=dict(type="str", default=SIGNATURE_HEADER),
    headers=dict(type="dict", no_log=True),
    start_suffix=dict(type="str", default="/start"),
    fail_suffix=dict(type="str", default="/fail"),
)
ALERTS_SPEC = dict(alerts=dict(type="list", elements="dict", options=CHANNEL_OPTIONS, default=[]))
_DEFAULT_RETRIES = {"email": 2, "syslog": 2, "webhook": 3, "ping": 3}
_DEFAULT_PORTS = {
    ("email", "starttls"): 587,
    ("email", "tls"): 465,
    ("email", "none"): 25,
    ("syslog", "udp"): 514,
    ("syslog", "tcp"): 514,
    ("syslog", "tls"): 6514,
}


class ChannelError(ValueError):
    """A channel description that cannot work; the message names the key."""


# ---- events --------------------------------------------------------------------------------


def severity_of(event):
    kind = event.get("kind")
    if kind in KINDS:
        return KINDS[kind][0]
    if event.get("severity") in SEVERITIES:
        return event["severity"]
    return "error"  # an unknown kind is somebody's problem until told otherwise


def ping_state(event):
    kind = event.get("kind")
    if kind in KINDS:
        return KINDS[kind][1]
    return {"error": "fail", "warning": "fail"}.get(severity_of(event), "success")


def scrub(value, key=""):
    """The event without secrets: values of secret-named keys masked, URL user information removed."""
    if key and SECRET_KEY.search(key):
        return "********" if value not in (None, "", False) else value
    if isinstance(value, dict):
        return {k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return URL_USERINFO.sub(r"\1", value)
    return value


def normalise(event):
    """A clean event: scrubbed, with kind, severity, time and the sending host."""
    event = scrub(dict(event or {}))
    event.setdefault("kind", "unknown")
    event["severity"] = severity_of(event)
    event.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    event.setdefault("sender_host", socket.gethostname())
    return event


def _component_lines(event):
    components = event.get("components") or {}
    failures = dict(event.get("failures") or {})
    lines = []
    for name in sorted(set(components) | set(failures)):
        value = components.get(name)
        status, error = (value.get("status"), value.get("error")) if isinstance(value, dict) else (value, None)
        error = error or failures.get(name)
        status = status or "failed"
        lines.append("%s: %s%s" % (name, status, " - %s" % error if error else ""))
    return lines


def subject(event, prefix="[lifeboat]"):
    what = KINDS.get(event.get("kind"), (None, None, event.get("kind", "event").replace("_", " ")))[2]
    where = event.get("node") or event.get("target") or event.get("sender_host")
    tail = " (%s)" % event["backup_id"] if event.get("backup_id") else ""
    return " ".join(filter(None, [prefix, "%s: %s%s" % (where, what, tail)]))


def summary_line(event):
    """One line (no newline): for syslog, and the first line of every message."""
    parts = [subject(event, prefix="")]
    if event.get("verdict"):
        parts.append("verdict %s" % event["verdict"])
    if event.get("reason"):
        parts.append("reason: %s" % event["reason"])
    failed = [line for line in _component_lines(event) if not line.split(": ", 1)[1].startswith(("success", "skipped"))]
    if failed:
        parts.append("components: %s" % "; ".join(failed))
    if event.get("target"):
        parts.append("target %s" % event["target"])
    if event.get("image"):
        parts.append("image %s" % event["image"])
    return re.sub(r"[\r\n]+", " ", " - ".join(parts))


def text_body(event):
    """The whole event for people: e-mail and ping bodies."""
    lines = [summary_line(event), ""]
    for key, label in (
        ("kind", "event"),
        ("node", "node"),
        ("backup_id", "backup id"),
        ("verdict", "verdict"),
        ("reason", "reason"),
        ("image", "image"),
        ("target", "target"),
        ("time", "time"),
        ("sender_host", "sent from"),
    ):
        if event.get(key) not in (None, ""):
            lines.append("%-10s %s" % (label + ":", event[key]))
    components = _component_lines(event)
    if components:
        lines.append("components:")
        lines.extend("  " + line for line in components)
    details = event.get("details")
    if details:
        lines.append("details:")
        lines.extend("  %s: %s" % (k, json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v) for k, v in sorted(details.items()))
    return "\n".join(lines) + "\n"


# ---- channels ------------------------------------------------------------------------------


_REQUIRED = {"email": ("host", "sender", "to"), "syslog": ("host",), "webhook": ("url",), "ping": ("url",)}


def check_channel(channel, where="alerts"):
    """A channel with its defaults filled in; raises ChannelError naming ``where[i].key``."""
    channel = dict(channel or {})
    kind = channel.get("type")
    if kind not in TYPES:
        raise ChannelError("%s.type must be one of %s (got %r)" % (where, ", ".join(TYPES), kind))
    for key, spec in CHANNEL_OPTIONS.items():
        if channel.get(key) is None and "default" in spec:
            channel[key] = spec["default"]
    for key in _REQUIRED[kind]:
        if not channel.get(key):
            raise ChannelError("%s.%s is required for a %s channel" % (where, key, kind))
    _check_kind(channel, kind, where)
    _kind_defaults(channel, kind)
    if channel["retries"] < 1 or channel["timeout"] <= 0:
        raise ChannelError("%s: retries must be at least 1 and timeout above 0" % where)
    return channel


def _kind_defaults(channel, kind):
    """Fill in the defaults that depend on the kind: the port (by security or protocol), the
    retries and the events."""
    if channel.get("port") is None and kind in ("email", "syslog"):
        channel["port"] = _DEFAULT_PORTS[(kind, channel["security"] if kind == "email" else channel["protocol"])]
    if channel.get("retries") is None:
        channel["retries"] = _DEFAULT_RETRIES[kind]
    if not channel.get("events"):
        channel["events"] = list(PING_DEFAULT) if kind == "ping" else [PROBLEMS]


def _check_kind(channel, kind, where):
    """What only one kind of channel must satisfy: an HTTP(S) URL, SMTP credentials in pairs
    and never in clear text."""
    if kind in ("webhook", "ping"):
        scheme = urllib.parse.urlsplit(channel["url"]).scheme
        if scheme not in ("http", "https"):
            raise ChannelError("%s.url must be an http:// or https:// URL (got a %s URL)" % (where, scheme or "schemeless"))
    if kind == "email" and bool(channel.get("username")) != bool(channel.get("password")):
        raise ChannelError("%s: username and password go together (SMTP authentication needs both)" % where)
    if kind == "email" and channel.get("username") and channel["security"] == "none":
        raise ChannelError("%s: security=none would send the SMTP password in clear text; use starttls or tls" % where)


def check_channels(channels, option="alerts"):
    return [check_channel(c, "%s[%d]" % (option, i)) for i, c in enumerate(channels or [])]


def label_of(channel, index=None):
    """How an outcome names a channel: its name, else type and host - never a URL (it may be a credential)."""
    if channel.get("name"):
        return channel["name"]
    host = channel.get("host")
    if not host and channel.get("url"):
        host = urllib.parse.urlsplit(channel["url"]).hostname
    base = "%s %s" % (channel.get("type", "channel"), host or "?")
    return base if index is None else "%s #%d" % (base, index)


def wants(channel, event):
    events = channel.get("events") or [PROBLEMS]
    if "all" in events or event["kind"] in events:
        return True
    return PROBLEMS in events and event["severity"] in ("error", "warning")


def _tls_context(channel):
    context = ssl.create_default_context(cafile=channel.get("ca_file"))
    if not channel.get("validate_certs", True):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if channel.get("client_cert_file"):
        context.load_cert_chain(channel["client_cert_file"], channel.get("client_key_file"))
    return context


def _send_email(channel, event):
    message = EmailMessage()
    message["Subject"] = subject(event, channel.get("subject_prefix"))
    message["From"] = channel["sender"]
    message["To"] = ", ".join(channel["to"])
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=(channel["sender"].rpartition("@")[2] or None))
    message["X-Lifeboat-Event"] = event["kind"]
    message.set_content(text_body(event))
    timeout = channel["timeout"]
    if channel["security"] == "tls":
        client = smtplib.SMTP_SSL(channel["host"], channel["port"], timeout=timeout, context=_tls_context(channel))
    else:
        client = smtplib.SMTP(channel["host"], channel["port"], timeout=timeout)
    with client:
        client.ehlo()
        if channel["security"] == "starttls":
            if not client.has_extn("starttls"):
                raise OSError("the SMTP server does not offer STARTTLS; set security=tls for implicit TLS, or security=none")
            client.starttls(context=_tls_context(channel))
            client.ehlo()
        if channel.get("username"):
            client.login(channel["username"], channel["password"])
        refused = client.send_message(message)
    if refused:
        raise OSError("recipients refused: %s" % ", ".join(sorted(refused)))
    return "sent to %s" % ", ".join(channel["to"])


def _sd_value(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printable(text, limit, default="-"):
    text = re.sub(r"[^\x21-\x7e]", "_", str(text or ""))[:limit]
    return text or default


def syslog_message(channel, event):
    """One RFC 5424 message (bytes, no framing)."""
    priority = FACILITIES[channel["facility"]] * 8 + SEVERITIES[event["severity"]]
    params = [(k, event[k]) for k in ("kind", "node", "backup_id", "verdict", "target", "image") if event.get(k) not in (None, "")]
    structured = "[%s %s]" % (SD_ID, " ".join('%s="%s"' % (k, _sd_value(v)) for k, v in params))
    header = "<%d>1 %s %s %s %d %s" % (
        priority,
        event["time"],
        _printable(event.get("node") or event["sender_host"], 255),
        _printable(channel["app_name"], 48),
        os.getpid(),
        _printable(event["kind"], 32),
    )
    return ("%s %s \ufeff%s" % (header, structured, summary_line(event))).encode("utf-8")


def _send_syslog(channel, event):
    payload = syslog_message(channel, event)
    address = (channel["host"], channel["port"])
    if channel["protocol"] == "udp":
        family = socket.getaddrinfo(channel["host"], channel["port"], type=socket.SOCK_DGRAM)[0]
        with socket.socket(family[0], socket.SOCK_DGRAM) as sock:
            sock.settimeout(channel["timeout"])
            sock.sendto(payload[:8192], family[4])
        return "sent over udp"
    with socket.create_connection(address, timeout=channel["timeout"]) as raw:
        if channel["protocol"] == "tls":
            with _tls_context(channel).wrap_socket(raw, server_hostname=channel["host"]) as sock:
                sock.sendall(b"%d %s" % (len(payload), payload))  # RFC 5425 octet counting
                sock.unwrap()
        else:
            raw.sendall(payload + b"\n")  # RFC 6587 newline framing
            raw.shutdown(socket.SHUT_WR)
    return "sent over %s" % channel["protocol"]


def sign(secret, body):
    """The signature header's value: ``sha256=`` and the HMAC-SHA256 of the body, in hex."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _post(channel, url, body, content_type, extra_headers=None):
    headers = {"Content-Type": content_type, "User-Agent": "lifeboat.backup alerts"}
    headers.update(channel.get("headers") or {})
    headers.update(extra_headers or {})
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    # The standard library's opener, not ansible.module_utils.urls: standalone programs
    # (the WAL archive command) send alerts with this file and no Ansible installed.
    handlers = [urllib.request.HTTPSHandler(context=_tls_context(channel))] if url.lower().startswith("https:") else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=channel["timeout"]) as response:
            response.read(65536)
            return response.status
    except urllib.error.HTTPError as exc:
        raise OSError("HTTP %d %s" % (exc.code, exc.reason)) from None
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None


def webhook_body(event):
    return json.dumps(dict(event, message=summary_line(event)), sort_keys=True).encode("utf-8")


def _send_webhook(channel, event):
    body = webhook_body(event)
    extra = {"X-Lifeboat-Event": event["kind"]}
    if channel.get("secret"):
        extra[channel["signature_header"]] = sign(channel["secret"], body)
    status = _post(channel, channel["url"], body, "application/json", extra)
    return "HTTP %d" % status


def ping_url(channel, event):
    state = ping_state(event)
    suffix = {"start": channel["start_suffix"], "fail": channel["fail_suffix"]}.get(state, "")
    return channel["url"].rstrip("/") + suffix if suffix else channel["url"]


def _send_ping(channel, event):
    status = _post(channel, ping_url(channel, event), text_body(event).encode("utf-8")[:10000], "text/plain; charset=utf-8")
    return "%s, HTTP %d" % (ping_state(event), status)


_SENDERS = {"email": _send_email, "syslog": _send_syslog, "webhook": _send_webhook, "ping": _send_ping}


def _deliver(channel, event, index, sleep):
    outcome = {"channel": label_of(channel, index), "type": channel.get("type"), "ok": False, "attempts": 0}
    started = time.monotonic()
    try:
        channel = check_channel(channel, "alerts[%d]" % index)
    except ChannelError as exc:
        outcome["error"] = str(exc)
        return outcome
    except Exception as exc:  # noqa: BLE001 - a channel never raises into the caller
        outcome["error"] = "invalid channel: %s" % exc
        return outcome
    if not wants(channel, event):
        outcome.update(ok=True, skipped=True, detail="not subscribed to %s" % event["kind"])
        return outcome
    delay = channel["retry_delay"]
    for attempt in range(1, channel["retries"] + 1):
        outcome["attempts"] = attempt
        try:
            outcome["detail"] = _SENDERS[channel["type"]](channel, event)
            outcome["ok"] = True
            outcome.pop("error", None)
            break
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none raised
            outcome["error"] = _describe(exc)
        if attempt < channel["retries"]:
            sleep(delay)
            delay *= 2
    outcome["seconds"] = round(time.monotonic() - started, 3)
    return outcome


def _describe(exc):
    if isinstance(exc, socket.timeout):
        text = "timed out"
    elif isinstance(exc, smtplib.SMTPAuthenticationError):
        text = "SMTP authentication refused (%s)" % exc.smtp_code
    elif isinstance(exc, OSError) and str(exc):
        text = str(exc)
    else:
        text = "%s: %s" % (type(exc).__name__, exc)
    return URL_USERINFO.sub(r"\1", text)


def send(event, channels, sleep=time.sleep):
    """Send ``event`` to every channel that wants it. Never raises; returns one outcome per
    channel, in order: {channel, type, ok, attempts, detail | error, skipped, seconds}."""
    try:
        event = normalise(event)
        channels = list(channels or [])
    except Exception as exc:  # noqa: BLE001
        return [{"channel": "alerts", "type": None, "ok": False, "attempts": 0, "error": "the event could not be read: %s" % exc}]
    outcomes = [None] * len(channels)

    def work(i, channel):
        try:
            outcomes[i] = _deliver(channel, event, i, sleep)
        except Exception as exc:  # noqa: BLE001
            outcomes[i] = {"channel": "alerts[%d]" % i, "type": None, "ok": False, "attempts": 0, "error": "internal error: %s" % exc}

    threads = [threading.Thread(target=work, args=(i, c), name="lifeboat-alert-%d" % i, daemon=True) for i, c in enumerate(channels)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def summarise(outcomes):
    """One line for a summary: which channels failed, or that all were reached."""
    failed = ["%s (%s)" % (o["channel"], o.get("error")) for o in outcomes if not o.get("ok")]
    sent = [o["channel"] for o in outcomes if o.get("ok") and not o.get("skipped")]
    if failed:
        return "alerts failed on %s; sent to %s" % (", ".join(failed), ", ".join(sent) or "none")
    return "alerts sent to %s" % (", ".join(sent) or "no channel (none subscribed)")


def load_channels(path):
    """Channels from a JSON file (mode 0600: it may hold passwords): a list, or {"alerts": [...]}.
    Raises ChannelError saying why not."""
    try:
        with open(path) as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if mode & 0o077:
                raise ChannelError("%s is open to other users (mode %04o) and may hold passwords: chmod 600 it" % (path, mode & 0o7777))
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ChannelError("cannot read the alert channels in %s: %s" % (path, exc)) from None
    if isinstance(data, dict):
        data = data.get("alerts", [])
    if not isinstance(data, list):
        raise ChannelError('%s must hold a list of channels (or {"alerts": [...]})' % path)
    return data


def notify(event, config_path):
    """For standalone programs: send ``event`` to the channels in ``config_path``. Never raises."""
    try:
        channels = load_channels(config_path)
    except ChannelError as exc:
        return [{"channel": config_path, "type": None, "ok": False, "attempts": 0, "error": str(exc)}]
    return send(event, channels)
