"""Clients for the HTTP-level tests: a raw socket client where the bytes matter, and
gates that hold run() (scripts/gate.py) until a test lets it go.

Shared by test_protocol.py, test_load.py and test_fuzz.py.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .conftest import Reply, Server

HOST = "127.0.0.1"
MAX_HEADER_BYTES = 65536  # request line + headers, per request


# Helpers ------------------------------------------------------------------------------------
@dataclass
class Answer:
    """One response read off a raw connection."""

    status: int
    status_line: bytes
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[0] if found else None

    @property
    def closes(self) -> bool:
        return (self.header("connection") or "").lower() == "close"

    def json(self) -> Any:
        return json.loads(self.body)


class Raw:
    """A client connection under byte-level control: what is sent is exactly what the
    test wrote; answers are parsed as they come. Every read is bounded."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.eof = False  # the server closed (FIN or reset)
        self.reset = False

    def __enter__(self) -> Raw:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> bool:
        """Send it all; False if the server had closed (the rest was not sent)."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def send_pieces(self, data: bytes, size: int, wait: float = 0.0) -> bool:
        """Send in pieces of ``size`` bytes, waiting up to ``wait`` s between two for the
        server to say something; stop as soon as it has (or has closed). True if all was
        sent."""
        for start in range(0, len(data), size):
            if start and wait and self.readable(wait):
                return False
            if not self.send(data[start : start + size]):
                return False
        return True

    def shut(self) -> None:
        """Half-close: the server reads end-of-file, and may still answer."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def readable(self, timeout: float) -> bool:
        return bool(self.buf) or bool(select.select([self.sock], [], [], timeout)[0])

    def _recv(self, timeout: float) -> bool:
        """Read what arrives within ``timeout``; False if nothing did."""
        if self.eof:
            return False
        self.sock.settimeout(max(timeout, 0.001))
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            self.eof = self.reset = True
            return True
        finally:
            self.sock.settimeout(self.timeout)
        if not chunk:
            self.eof = True
        self.buf += chunk
        return True

    def quiet_for(self, seconds: float) -> bytes:
        """Everything that arrives within ``seconds`` (left in the buffer to be parsed):
        for checks that the server has said nothing yet."""
        deadline = time.monotonic() + seconds
        while not self.eof and (left := deadline - time.monotonic()) > 0:
            self._recv(left)
        return self.buf

    def answer(self, *, head: bool = False, timeout: float | None = None) -> Answer:
        """The next complete response (``head``: it answers a HEAD, so it has no body)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)

        def more(what: str) -> None:
            if self.eof:
                raise AssertionError(f"the server closed before {what}; got {self.buf[:600]!r}")
            if not self._recv(deadline - time.monotonic()) and time.monotonic() >= deadline:
                raise AssertionError(f"no {what} in time; got {self.buf[:600]!r}")

        while b"\r\n\r\n" not in self.buf:
            more("a complete response head")
        head_bytes, _, _ = self.buf.partition(b"\r\n\r\n")
        lines = head_bytes.split(b"\r\n")
        status_line = lines[0]
        assert status_line[:9] == b"HTTP/1.1 " and status_line[9:12].isdigit(), status_line
        status = int(status_line[9:12])
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            assert colon, f"malformed response header line {line!r}"
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        answer = Answer(status, status_line, headers, b"")
        start = len(head_bytes) + 4
        if head or 100 <= status < 200 or status in (204, 304):
            length = 0
        elif (declared := answer.header("content-length")) is not None:
            length = int(declared)
        else:  # no framing: the body runs to the end of the connection
            while not self.eof:
                more("the end of an unframed body")
            length = len(self.buf) - start
        while len(self.buf) < start + length:
            more(f"the body ({length} bytes)")
        answer.body = self.buf[start : start + length]
        self.buf = self.buf[start + length :]
        return answer

    def closed(self, timeout: float = 10.0) -> bytes:
        """Wait for the server to close; what arrived meanwhile (unparsed)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"the server did not close the connection within {timeout} s; "
                    f"got {self.buf[:600]!r}"
                )
            self._recv(left)
        rest, self.buf = self.buf, b""
        return rest


def http_request(
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    headers: tuple[bytes, ...] = (),
    version: bytes = b"HTTP/1.1",
) -> bytes:
    lines = [b"%s %s %s" % (method.encode(), path.encode(), version), b"Host: x", *headers]
    if body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def score_request(payload: Any, *, headers: tuple[bytes, ...] = ()) -> bytes:
    body = json.dumps(payload).encode()
    return http_request(
        "POST", "/score", body, headers=(b"Content-Type: application/json", *headers)
    )


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def probe(server: Server, path: str, timeout: float = 5.0) -> Reply:
    """GET ``path`` on a new connection; an AssertionError if no answer in time."""
    try:
        return server.request("GET", path, timeout=timeout)
    except (TimeoutError, http.client.HTTPException, OSError) as exc:
        raise AssertionError(f"GET {path} got no answer within {timeout} s: {exc!r}") from None


def post_bounded(server: Server, payload: Any, timeout: float = 5.0) -> Reply:
    """POST /score on a new connection; an AssertionError if no answer in time."""
    try:
        return server.post(payload, timeout=timeout)
    except (TimeoutError, http.client.HTTPException, OSError) as exc:
        raise AssertionError(f"POST /score got no answer within {timeout} s: {exc!r}") from None


class Gates:
    """Control over gate.py's run(): each request gets its own gate and started marker,
    named by a tag. Leaving the ``with`` block (or the fixture) opens every gate, so a
    failing test never leaves a worker blocked behind it."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.tags: list[str] = []

    def request(self, tag: str, **extra: Any) -> dict[str, Any]:
        self.tags.append(tag)
        return {"gate": str(self._gate(tag)), "started": str(self._started(tag)), **extra}

    def _gate(self, tag: str) -> Path:
        return self.root / f"{tag}.open"

    def _started(self, tag: str) -> Path:
        return self.root / f"{tag}.started"

    def pid(self, tag: str) -> int | None:
        """The pid of the worker whose run() has started for ``tag``, if it has."""
        path = self._started(tag)
        return int(path.read_text()) if path.exists() else None

    def wait_started(self, tag: str, timeout: float = 30.0) -> int:
        wait_for(lambda: self.pid(tag) is not None, f"run() to start for {tag!r}", timeout)
        pid = self.pid(tag)
        assert pid is not None
        return pid

    def started(self) -> dict[str, int]:
        """tag -> pid for every request whose run() has started."""
        return {tag: pid for tag in self.tags if (pid := self.pid(tag)) is not None}

    def open(self, *tags: str) -> None:
        for tag in tags:
            self._gate(tag).touch()

    def open_all(self) -> None:
        self.open(*self.tags)

    def __enter__(self) -> Gates:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.open_all()


def block_workers(
    server: Server,
    gates: Gates,
    pool: ThreadPoolExecutor,
    count: int,
    *,
    prefix: str = "block",
    attempts: int = 8,
    settle: float = 3.0,
) -> tuple[list[Future[Reply]], dict[str, int]]:
    """Send gated requests, each on a new connection, until run() has started in
    ``count`` different workers (which worker takes a connection is the kernel's choice,
    so keep trying). Returns the requests' futures and tag -> pid of the started ones."""
    futures: list[Future[Reply]] = []
    for attempt in range(attempts):
        tag = f"{prefix}{attempt}"
        futures.append(pool.submit(server.post, gates.request(tag), timeout=120))
        with contextlib.suppress(AssertionError):
            gates.wait_started(tag, timeout=settle)
        started = gates.started()
        if len(set(started.values())) >= count:
            return futures, started
    raise AssertionError(
        f"run() started in {len(set(gates.started().values()))} worker(s), not {count}, "
        f"after {attempts} requests"
    )


@contextlib.contextmanager
def stopped(pids: set[int]) -> Iterator[None]:
    """SIGSTOP these processes meanwhile: only the others accept connections."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    # kill() returns before every thread has stopped: one still running may accept a
    # connection made right after. Wait until all are stopped ('T' in /proc).
    for pid in pids:
        wait_for(lambda pid=pid: all_stopped(pid), f"pid {pid} stopped")
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def all_stopped(pid: int) -> bool:
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in {"t", "T"} for state in states)
