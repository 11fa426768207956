"""TLS for the Azure doubles: a test CA, a server certificate for 127.0.0.1 and localhost,
and one threaded HTTPS server class every endpoint (Entra, ARM) is served by.

Why TLS at all: azure-core refuses to send a bearer token over plain http, and deployer must
reach the doubles exactly as it reaches a real cloud. Clients trust the test CA through
``REQUESTS_CA_BUNDLE`` (the way a corporate proxy's CA is trusted), never through a client
built differently for tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TestCertificates:
    ca_bundle: Path  # the CA alone: what REQUESTS_CA_BUNDLE points at
    certificate: Path  # the server's chain (server certificate, then the CA)
    key: Path


def make_certificates(directory: Path) -> TestCertificates:
    """A CA made for this test session, and a server certificate it signed for the names a
    client may use: 127.0.0.1 and localhost (``ipAddress.fqdn`` is ``localhost``)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=2))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deployer test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    certs = TestCertificates(
        directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    )
    certs.ca_bundle.write_bytes(ca_cert.public_bytes(pem))
    certs.certificate.write_bytes(server_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    certs.key.write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return certs


class JsonHandler(BaseHTTPRequestHandler):
    """A request handler with the helpers both doubles use; subclasses route by method."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the services do

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test's output stays readable; requests are recorded by the doubles

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = None if body is None else json.dumps(body).encode()
        self.send(status, data, "application/json; charset=utf-8", headers)

    def answer_text(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        self.send(status, text.encode(), "text/plain; charset=utf-8", headers)

    def send(
        self, status: int, data: bytes | None, content_type: str, headers: dict[str, str] | None
    ) -> None:
        self.send_response(status)
        if data is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data or b"")))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data or b"")


class HttpsServer(ThreadingHTTPServer):
    """A threaded HTTPS server on 127.0.0.1 (a port of its own); ``app`` is the double the
    handler serves (``self.server.app`` in the handler)."""

    daemon_threads = True

    def __init__(self, handler: type[JsonHandler], certs: TestCertificates, app: Any) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.app = app
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.certificate, certs.key)
        # The handshake happens in the request's thread, so a slow client never holds up
        # the accepting one.
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT`` (no trailing slash)."""
        return f"https://127.0.0.1:{self.server_address[1]}"

    def start(self) -> HttpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
