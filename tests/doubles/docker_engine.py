"""The Docker engine with faults on demand: a proxy on a unix socket in front of the real one.

The ``local`` target's platform is the real Docker engine, so its double is the engine
itself, reached the way every user reaches an engine: ``DOCKER_HOST``. This proxy forwards
each request to the real engine unchanged, except the ones a test has picked, which it

- **fails**: answers as the engine does when it fails (a status and ``{"message": ...}``,
  the body of every Engine API error), without forwarding; or
- **holds**: never answers, until the test lets it go (forwarded then) or kills the client,
  so that a test can kill a deploy at an exact step of its protocol.

A request is picked by method, a path pattern and, for a JSON body, a piece of text in it
(an exec's command). Each forwarded request is sent with ``Connection: close`` so that the
client opens a new connection for its next request and every request passes through here;
upgraded connections (exec, attach) and streams (logs) are piped as they are.

What differs from the real engine: nothing in what is forwarded; an injected error is
answered before the engine sees the request, which the real engine does for validation
errors only (a real 500 may come after a partial effect: tests that need that use holds).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HEAD_LIMIT = 65536


@dataclass
class Rule:
    method: str
    path: str  # a regular expression, searched in the path (query included)
    body_contains: str = ""
    action: str = "fail"  # "fail" or "hold"
    status: int = 500
    message: str = "injected by the test's engine double"
    times: int = 1  # how many requests it applies to
    matched: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    seen: int = 0

    def matches(self, method: str, path: str, body: bytes) -> bool:
        if self.seen >= self.times or method != self.method:
            return False
        if not re.search(self.path, path):
            return False
        return not self.body_contains or self.body_contains.encode() in body


@dataclass
class Recorded:
    method: str
    path: str
    body: bytes


class DockerEngineDouble:
    """``with DockerEngineDouble(tmp / "docker.sock", upstream) as engine:`` then
    ``DOCKER_HOST=engine.docker_host``."""

    def __init__(self, path: Path, upstream: str) -> None:
        self.path = path
        self.upstream = upstream.removeprefix("unix://")
        self.rules: list[Rule] = []
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._closing = False

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def __enter__(self) -> DockerEngineDouble:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server.bind(str(self.path))
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        for rule in self.rules:
            rule.released.set()
        self._server.close()

    def fail(
        self,
        method: str,
        path: str,
        body_contains: str = "",
        status: int = 500,
        message: str = "injected by the test's engine double",
    ) -> Rule:
        """Answer the next matching request with an error, as the engine answers errors."""
        return self._add(Rule(method, path, body_contains, "fail", status, message))

    def hold(self, method: str, path: str, body_contains: str = "") -> Rule:
        """Keep the next matching request waiting until ``rule.released`` is set."""
        return self._add(Rule(method, path, body_contains, "hold"))

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    # Serving ------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            try:
                head, rest = _read_head(client)
            except (OSError, ValueError):
                return
            request_line, _, header_text = head.partition(b"\r\n")
            method, target, _ = request_line.decode("latin-1").split(" ", 2)
            headers = _headers(header_text)
            body = rest
            length = int(headers.get("content-length", "0") or 0)
            while len(body) < length:
                chunk = client.recv(length - len(body))
                if not chunk:
                    return
                body += chunk
            with self._lock:
                self.requests.append(Recorded(method, target, body))
                rule = next((r for r in self.rules if r.matches(method, target, body)), None)
                if rule is not None:
                    rule.seen += 1
            if rule is not None:
                rule.matched.set()
                if rule.action == "fail":
                    _answer_error(client, rule.status, rule.message)
                    return
                rule.released.wait()
                if self._closing:
                    return
            self._forward(client, request_line, header_text, headers, body)

    def _forward(
        self,
        client: socket.socket,
        request_line: bytes,
        header_text: bytes,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        upgrade = "upgrade" in headers.get("connection", "").lower()
        lines = [line for line in header_text.split(b"\r\n") if line]
        if not upgrade:
            lines = [line for line in lines if not line.lower().startswith(b"connection:")]
            lines.append(b"Connection: close")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as engine:
            engine.connect(self.upstream)
            engine.sendall(b"\r\n".join([request_line, *lines]) + b"\r\n\r\n" + body)
            pump = threading.Thread(target=_pipe, args=(client, engine), daemon=True)
            pump.start()
            _pipe(engine, client)
            pump.join(timeout=1)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("closed before a request head")
        data += chunk
        if len(data) > HEAD_LIMIT:
            raise ValueError("request head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _headers(text: bytes) -> dict[str, str]:
    found = {}
    for line in text.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            found[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return found


def _answer_error(client: socket.socket, status: int, message: str) -> None:
    body = json.dumps({"message": message}).encode()
    client.sendall(
        b"HTTP/1.1 %d Injected\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, len(body), body)
    )


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy until ``source`` ends, then end ``sink``'s sending side."""
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def engine_double(path: Path, upstream: str) -> Iterator[DockerEngineDouble]:
    with DockerEngineDouble(path, upstream) as double:
        yield double
