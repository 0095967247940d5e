"""A webhook / ping receiver for the alert tests: a real HTTP server on 127.0.0.1 (in a thread
of the test process) that records every request and checks the HMAC-SHA256 signature the way
a receiver should (constant-time compare over the raw body).

    with WebhookReceiver(secret="s3cret", statuses=[500, 200]) as hook:
        ... hook.url ...
        hook.requests  # [Request(path, headers, body, signature_ok, status)]
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Request:
    method: str
    path: str
    headers: dict
    body: bytes
    signature_ok: bool | None
    status: int

    def json(self):
        return json.loads(self.body)


class WebhookReceiver:
    def __init__(self, secret: str | None = None, statuses=(), header: str = "X-Lifeboat-Signature"):
        self.secret = secret
        self.header = header
        self.statuses = list(statuses)  # answered in order; 200 once they run out
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def check(self, body: bytes, signature: str | None) -> bool | None:
        if self.secret is None:
            return None
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        return bool(signature) and hmac.compare_digest(expected, signature)

    def __enter__(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's hook name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.requests.append(
                        Request("POST", self.path, dict(self.headers), body, receiver.check(body, self.headers.get(receiver.header)), status)
                    )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
