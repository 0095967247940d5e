"""An SMTP server for the alert tests, run by tests/harness/receivers.py as its own process:
aiosmtpd on 127.0.0.1, STARTTLS required (or implicit TLS, or plain), AUTH PLAIN/LOGIN
against one account when a password file is given. Every message accepted is written to
``<maildir>/<n>.eml`` (write aside, then rename), with the envelope in ``<n>.json``.

    python -m tests.harness.smtp_receiver --port 2525 --maildir DIR --mode starttls \
        --cert server.pem --key server.key [--user alerts --password-file FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import ssl
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class MaildirHandler:
    def __init__(self, maildir: Path):
        self.maildir = maildir
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        number = next(self.counter)
        stem = self.maildir / f"{number:04d}"
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
            "authenticated": bool(session.authenticated),
            "login": session.auth_data.login.decode() if session.auth_data and hasattr(session.auth_data, "login") else None,
        }
        for suffix, data in ((".json", json.dumps(meta).encode()), (".eml", envelope.original_content)):
            tmp = stem.with_suffix(suffix + ".tmp")
            tmp.write_bytes(data)
            os.rename(tmp, stem.with_suffix(suffix))
        return "250 OK stored as %04d" % number


class Authenticator:
    def __init__(self, user: str, password: str):
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = getattr(auth_data, "login", None) == self.user and getattr(auth_data, "password", None) == self.password
        return AuthResult(success=ok, handled=False, auth_data=auth_data)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    parser.add_argument("--mode", choices=["starttls", "tls", "plain"], default="starttls")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    parser.add_argument("--password-file")
    args = parser.parse_args(argv)
    context = None
    if args.mode != "plain":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    kwargs = {}
    if args.user:
        password = Path(args.password_file).read_text().strip()
        kwargs.update(authenticator=Authenticator(args.user, password), auth_required=True, auth_require_tls=args.mode == "starttls")
    # With implicit TLS the whole session is encrypted, but aiosmtpd only knows about STARTTLS:
    # AUTH must not wait for it there.
    if args.mode == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    elif args.mode == "tls":
        kwargs.update(ssl_context=context)
    controller = Controller(MaildirHandler(args.maildir), hostname="127.0.0.1", port=args.port, ready_timeout=20, **kwargs)
    controller.start()
    print("listening on 127.0.0.1:%d (%s)" % (args.port, args.mode), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
