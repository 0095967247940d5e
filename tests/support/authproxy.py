"""A reverse proxy that demands credentials, in front of a real search server.

The OpenSearch/Elasticsearch integ-test distributions have no security plugin, so
authentication is tested the way many sites deploy it: a reverse proxy (nginx,
Apache, a load balancer) checks the ``Authorization`` header and forwards what passes
to the engine. This one does the same with the standard library, on 127.0.0.1 and a
free port, optionally over TLS with client certificates.

Every accepted request goes to the real engine and its answer comes back unchanged; a
refused one gets a 401 in the engines' own error format, as their security plugins
answer. Nothing else is invented here.

    with AuthProxy(server.url, basic=("backup", "s3cret")) as proxy:
        run_module(..., hosts=[proxy.url], username="backup", password="s3cret")
"""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

# Not forwarded: hop-by-hop headers, and the credentials (the engine has no security plugin).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers", "transfer-encoding", "upgrade", "host"}
HOP_BY_HOP.add("authorization")


class AuthProxy:
    """Forward to ``upstream`` only requests whose Authorization header is one of the accepted ones."""

    def __init__(self, upstream, basic=None, api_key=None, bearer=None, tls=None):
        self.upstream = urlsplit(upstream)
        self.accepted = set()
        if basic:
            self.accepted.add("Basic " + base64.b64encode(("%s:%s" % basic).encode()).decode())
        if api_key:
            self.accepted.add("ApiKey " + base64.b64encode(api_key.encode()).decode())
        if bearer:
            self.accepted.add("Bearer " + bearer)
        self.tls = tls
        self.refused = 0
        self.forwarded = 0
        self._server = None
        self._thread = None

    @property
    def url(self):
        scheme = "https" if self.tls else "http"
        return "%s://127.0.0.1:%d" % (scheme, self._server.server_address[1])

    def __enter__(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _refuse(self):
                proxy.refused += 1
                body = json.dumps(
                    {
                        "error": {"type": "security_exception", "reason": "unable to authenticate user for REST request [%s]" % self.path.split("?")[0]},
                        "status": 401,
                    }
                ).encode()
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="security" charset="UTF-8"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.headers.get("Authorization") not in proxy.accepted:
                    self._refuse()
                    return
                proxy.forwarded += 1
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls:
            self._server.socket = self.tls.server_context().wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="authproxy", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class ProxyPKI:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate (PEM files)."""

    def __init__(self, directory):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        directory = Path(directory)
        now = datetime.datetime.now(datetime.timezone.utc)

        def name(text):
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

        def write_key(key, path):
            path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            path.chmod(0o600)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(name("lifeboat test CA"))
            .issuer_name(name("lifeboat test CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )

        def issue(common_name, usage, san=None):
            key = ec.generate_private_key(ec.SECP256R1())
            builder = (
                x509.CertificateBuilder()
                .subject_name(name(common_name))
                .issuer_name(ca.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            )
            if san:
                builder = builder.add_extension(san, critical=False)
            return key, builder.sign(ca_key, hashes.SHA256())

        loopback = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        server_key, server_cert = issue("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, loopback)
        client_key, client_cert = issue("backup-client", ExtendedKeyUsageOID.CLIENT_AUTH)
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.server_cert = directory / "server.pem"
        self.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
        self.server_key = directory / "server.key"
        write_key(server_key, self.server_key)
        self.client_cert = directory / "client.pem"
        self.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
        self.client_key = directory / "client.key"
        write_key(client_key, self.client_key)

    def server_context(self):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca_path))
        context.load_cert_chain(str(self.server_cert), str(self.server_key))
        context.verify_mode = ssl.CERT_REQUIRED
        return context
