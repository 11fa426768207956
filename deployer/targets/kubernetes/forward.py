"""A local doorway to the API server's proxy, as ``kubectl proxy`` opens one: what deployer's
tests use to reach a pod or a ClusterIP Service that nothing outside the cluster can.

``Forwarder(cluster).url("/api/v1/namespaces/ml/pods/web-abc:http/proxy")`` returns
``http://127.0.0.1:<port>/<token>``; a request to that URL plus a path goes to the API
server's proxy path plus the same path, with the cluster's own credentials (a bearer token
refreshed through an exec plugin, or a client certificate) and its CA. The tests then
need nothing of the cluster's authentication, and no scoring URI carries a credential.
"""

from __future__ import annotations

import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import urllib3

from deployer.targets.kubernetes.cluster import Cluster

# Headers that belong to one connection, not to the request (RFC 9110 section 7.6.1).
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
}
CHUNK = 65536
READ_TIMEOUT_S = 330.0  # longer than any scoring timeout deploy.yaml allows a request


class Forwarder:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._routes: dict[str, str] = {}  # token -> API proxy path
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def url(self, proxy_path: str) -> str:
        with self._lock:
            if self._server is None:
                self._server = _serve(self)
            token = secrets.token_hex(8)
            self._routes[token] = proxy_path.rstrip("/")
            port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/{token}"

    def upstream(self, request_path: str) -> str | None:
        token, _, rest = request_path.lstrip("/").partition("/")
        found = self._routes.get(token)
        return None if found is None else f"{self.cluster.host}{found}/{rest}"

    def close(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
                self._server = None


def _serve(forwarder: Forwarder) -> ThreadingHTTPServer:
    class Handler(_Handler):
        owner = forwarder

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="k8s-forwarder", daemon=True).start()
    return server


class _Handler(BaseHTTPRequestHandler):
    owner: Forwarder
    protocol_version = "HTTP/1.1"
    # The head and the body go out in separate writes: without TCP_NODELAY, Nagle's
    # algorithm holds the body back until the client's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests' own report says what was sent

    def _forward(self) -> None:
        upstream = self.owner.upstream(self.path)
        if upstream is None:
            self._answer(404, b"no such forwarded path\n")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.update(self.owner.cluster.auth_headers())
        body = self._body()
        pool = self.owner.cluster.api.rest_client.pool_manager
        try:
            response = pool.request(
                self.command,
                upstream,
                body=body,
                headers=headers,
                preload_content=False,
                retries=False,  # a scoring request is not ours to send twice
                timeout=urllib3.Timeout(connect=10, read=READ_TIMEOUT_S),
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as error:
            self._answer(502, f"the API server could not be reached: {error}\n".encode())
            return
        self._relay(response)

    def _body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length))
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():
                pass  # trailers
            return b"".join(parts)
        return None

    def _relay(self, response: Any) -> None:
        self.send_response(response.status, response.reason)
        length = response.headers.get("Content-Length")
        for key, value in response.headers.items():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        chunked = length is None and self.command != "HEAD"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for data in response.stream(CHUNK, decode_content=False):
                if self.command == "HEAD" or not data:
                    continue
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                else:
                    self.wfile.write(data)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        finally:
            response.release_conn()

    def _answer(self, status: int, text: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward
