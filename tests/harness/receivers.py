"""Alert receivers for the operations tests, real servers on 127.0.0.1 like the database
servers: an SMTP server (aiosmtpd, STARTTLS or implicit TLS, optional AUTH) and rsyslogd
with a private configuration (RFC 5424 over UDP, TCP and TLS on three random ports).

    with SmtpServer(pki) as smtp:           # pki: tests.support.authproxy.ProxyPKI
        ...; smtp.messages()                # [(envelope dict, email.message.EmailMessage)]
    with SyslogServer(pki) as syslog:
        ...; syslog.wait_for("backup_id")   # the RFC 5424 lines received so far

Each one runs in its own process group with its files in a private temp dir, and is torn
down (and its logs kept on failure) by the harness's Server base class.
"""

from __future__ import annotations

import email
import email.policy
import json
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path

from tests.harness.process import ServerError, wait_until
from tests.harness.servers import HOST, Server, _base_env


def _port_open(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=1):
        return True


class SmtpServer(Server):
    """aiosmtpd (tests/harness/smtp_receiver.py) with STARTTLS required (``mode="starttls"``),
    implicit TLS (``"tls"``) or none (``"plain"``); AUTH with ``user`` and a random password."""

    label = "SMTP"

    def __init__(self, pki, mode: str = "starttls", user: str | None = "alerts", start_timeout: float = 30):
        super().__init__(start_timeout)
        self.pki = pki
        self.mode = mode
        self.user = user
        self.password = secrets.token_urlsafe(12) + "\\&!'\" $" if user else None
        self.host = HOST
        self.port: int | None = None
        self.version = mode

    @property
    def maildir(self) -> Path:
        return self.root / "mail"

    def _check_prerequisites(self) -> None:
        try:
            import aiosmtpd  # noqa: F401, PLC0415 - only to say what is missing
        except ImportError:
            raise ServerError("SMTP: the aiosmtpd package is missing from the venv (requirements/test.txt; make deps)") from None

    def _start(self) -> None:
        self.maildir.mkdir()
        self._relaunch_on_port_clash(self._launch_on)

    def _launch_on(self, port: int) -> None:
        self.port = port
        cmd = [sys.executable, "-m", "tests.harness.smtp_receiver", "--port", str(port), "--maildir", str(self.maildir), "--mode", self.mode]
        if self.mode != "plain":
            cmd += ["--cert", str(self.pki.server_cert), "--key", str(self.pki.server_key)]
        if self.user:
            secret = self.root / "password"
            secret.touch(mode=0o600)
            secret.write_text(self.password)
            cmd += ["--user", self.user, "--password-file", str(secret)]
        env = _base_env(PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        process = self._launch(cmd, env, "smtp.log")
        wait_until(lambda: "listening" in self.log_path.read_text(), timeout=self.start_timeout, process=process, what=f"{self.name} on port {port}")

    def messages(self):
        """Every message received so far, oldest first: (envelope, parsed message)."""
        found = []
        for eml in sorted(self.maildir.glob("*.eml")):
            envelope = json.loads(eml.with_suffix(".json").read_text())
            found.append((envelope, email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)))
        return found

    def clear(self) -> None:
        for path in self.maildir.iterdir():
            path.unlink()


class SyslogServer(Server):
    """rsyslogd -n with a private configuration: imudp, imtcp and imtcp over TLS (the openssl
    stream driver), each on its own random port; every message goes to ``messages.log`` in
    the RFC 5424 form rsyslog received it (RSYSLOG_SyslogProtocol23Format)."""

    label = "rsyslog"

    def __init__(self, pki, start_timeout: float = 30):
        super().__init__(start_timeout)
        self.pki = pki
        self.host = HOST
        self.udp_port: int | None = None
        self.tcp_port: int | None = None
        self.tls_port: int | None = None
        self._binary: str | None = None

    @property
    def messages_path(self) -> Path:
        return self.root / "messages.log"

    def _check_prerequisites(self) -> None:
        self._binary = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
        if self._binary is None:
            raise ServerError("rsyslog: rsyslogd not found. Install the Debian packages rsyslog and rsyslog-openssl (scripts/install-os-deps.sh does).")
        self.version = "8"

    def _start(self) -> None:
        (self.root / "work").mkdir()
        self._relaunch_on_port_clash(self._launch_on)

    def _free_udp_port(self) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            return sock.getsockname()[1]

    def _launch_on(self, port: int) -> None:
        from tests.harness.process import free_port  # noqa: PLC0415

        self.tcp_port, self.tls_port, self.udp_port = port, free_port(), self._free_udp_port()
        conf = self.root / "rsyslog.conf"
        conf.write_text(
            f"""
global(workDirectory="{self.root / "work"}" maxMessageSize="64k"
       DefaultNetstreamDriverCAFile="{self.pki.ca_path}"
       DefaultNetstreamDriverCertFile="{self.pki.server_cert}"
       DefaultNetstreamDriverKeyFile="{self.pki.server_key}")
module(load="imudp")
module(load="imtcp" MaxSessions="50")
input(type="imudp" address="{HOST}" port="{self.udp_port}" ruleset="alerts")
input(type="imtcp" address="{HOST}" port="{self.tcp_port}" ruleset="alerts")
input(type="imtcp" address="{HOST}" port="{self.tls_port}" ruleset="alerts"
      StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
ruleset(name="alerts") {{
    action(type="omfile" file="{self.messages_path}" template="RSYSLOG_SyslogProtocol23Format")
}}
"""
        )
        pidfile = self.root / "rsyslogd.pid"
        process = self._launch([self._binary, "-n", "-f", str(conf), "-i", str(pidfile)], _base_env(), "rsyslogd.log")
        wait_until(
            lambda: _port_open(self.tcp_port) and _port_open(self.tls_port),
            timeout=self.start_timeout,
            process=process,
            what=f"{self.name} on ports {port}/{self.tls_port}",
        )

    def lines(self) -> list[str]:
        try:
            return self.messages_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def wait_for(self, text: str, timeout: float = 15.0) -> list[str]:
        """The lines containing ``text``, waiting until there is one (rsyslog writes asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.lines() if text in line]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)
