"""A small HTTP/1.1 server: httptools (llhttp) parsing on the event loop.

Why not uvicorn: profiling showed uvicorn's ASGI machinery - a task, an
``asyncio.Event`` and two dict messages per request, regex checks on every response
header, two socket writes per response, a keep-alive timer per request - costing more
per request than our whole scoring path, and capping a bare uvicorn handler below the
throughput goal (benchmarks/README.md). Here a complete request is handled
synchronously inside ``data_received`` and answered with one ``transport.write``.

What it does: keep-alive and pipelining (answers in order), chunked request bodies,
``Expect: 100-continue``, HEAD, request size limits (413 before reading the body, then
a lingering close so the client sees the answer), a header size limit (431), idle and
slow-request timeouts, back-pressure on slow readers, listeners that can be paused and
resumed, graceful shutdown. What it doesn't: TLS, HTTP/2 and upgrades (a scoring
container sits behind an ingress for those).

Leaving gracefully matters more than usual here: the listening socket may be shared
with the next version of the service (listeners.py), which keeps accepting from it while
this process stops. So stopping (or pausing) never cuts a connection that might carry a
request right now: each connection is answered as usual with ``connection: close`` on
its next response, then closed; an idle one is left to send that next request or to
reach the idle timeout.

Why accept by hand rather than with ``loop.create_server``: pausing an asyncio Server
means ``Server.close()``, and a connection accepted in the same loop iteration but not
yet set up then fails in ``Server._attach()`` (an assertion) and is dropped unanswered.
Here pausing only stops polling the socket; whatever was accepted is served.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, cast
from urllib.parse import unquote

import httptools

from .listeners import port_of

if TYPE_CHECKING:
    from .app import App

STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
KEEPALIVE_S = 5  # idle keep-alive connections are closed after this (uvicorn's default)
READ_TIMEOUT_S = 60  # a request whose bytes stop arriving for this long is dropped
LINGER_S = 1.0  # after a 413: keep reading (and dropping) this long so the client sees it
LINGER_BYTES = 1 << 20  # ... or this much, whichever comes first
MAX_HEADER_BYTES = 65536
ACCEPT_BATCH = 128  # connections taken from the queue per wake-up (others get a turn too)
ACCEPT_RETRY_S = 1.0  # out of file descriptors or memory: stop accepting this long
log = logging.getLogger("deployer.serving")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_SPECIAL = frozenset(
    {
        b"content-length",
        b"content-type",
        b"expect",
        b"x-request-id",
        b"x-ms-request-id",
        b"x-ms-client-request-id",
        b"traceid",
    }
)


class Request:
    """One parsed request. The headers the server acts on are pulled out while parsing.

    Class attributes are the defaults, so creating one per request sets only what the
    request has (no __init__ assigning thirteen fields).
    """

    method = "GET"
    path = "/"
    query = b""
    headers: list[tuple[bytes, bytes]]  # names lower-cased, in order
    body = b""
    ctype: bytes | None = None
    request_id: bytes | None = None
    legacy_id: bytes | None = None
    client_id: bytes | None = None
    trace: bytes | None = None
    keep_alive = True
    peer: str | None = None
    t0 = 0.0


# (status, header lines b"name: value\r\n", body)
Response = tuple[int, list[bytes], bytes]


class Listener:
    """A listening socket this process holds (its own copy), by role (listeners.py), and
    the lease on the instance it came from, if any (instance.py), closed with it."""

    def __init__(self, role: str, sock: socket.socket, lease: socket.socket | None = None):
        self.role = role
        self.sock = sock
        self.lease = lease
        self.port = port_of(sock)
        self.accepting = False  # polled by the loop and accepted from
        self.polled = False  # registered with the loop (False while backing off an error)


class HttpServer:
    """The listening sockets, their connections, and the once-a-second housekeeping.

    Listener changes run on the loop; other threads go through instance.py.
    """

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop, max_body: int):
        self.app = app
        self.loop = loop
        self.max_body = max_body
        self.connections: set[HttpProtocol] = set()
        self.listeners: dict[str, Listener] = {}
        self.setting_up = 0  # accepted connections whose transport isn't made yet
        self.closing = False
        self.clock = 0  # whole seconds (monotonic), for timeouts without per-request timers
        self.date_line = b""
        self._stop = asyncio.Event()
        # Held while a listener's socket is closed or duplicated: the control thread
        # duplicates the service socket for another process (dup_listener).
        self._sockets_lock = threading.Lock()
        self._tick()

    # Listeners -------------------------------------------------------------------------------
    def listen(
        self,
        role: str,
        sock: socket.socket,
        accepting: bool = True,
        lease: socket.socket | None = None,
    ) -> None:
        """Hold ``sock`` as the ``role`` listener, and ``lease`` until ``sock`` is closed
        (both ours to close from now on, once this returns)."""
        if role in self.listeners:
            raise ValueError(f"a {role} listener is held already")
        if self.closing:
            raise RuntimeError("the server is shutting down")
        sock.setblocking(False)
        self.listeners[role] = Listener(role, sock, lease)
        if accepting:
            self.resume(role)

    def resume(self, role: str) -> None:
        """Accept connections from the ``role`` listener (again)."""
        listener = self._listener(role)
        if self.closing:
            raise RuntimeError("the server is shutting down")
        listener.accepting = True
        self._poll(listener)

    def pause(self, role: str) -> None:
        """Stop accepting from the ``role`` listener, keeping the socket; its connections
        are answered with ``connection: close`` from now on, so their clients move on."""
        listener = self._listener(role)
        listener.accepting = False
        self._unpoll(listener)
        for conn in self.connections:
            if conn.listener is listener:
                conn.leave()

    def drop(self, role: str) -> None:
        """Pause and close this process's copy of the ``role`` listener (and its lease:
        the instance it came from may take over at once)."""
        self.pause(role)
        with self._sockets_lock:
            listener = self.listeners.pop(role)
            listener.sock.close()
            if listener.lease is not None:
                listener.lease.close()

    def dup_listener(self, role: str) -> int | None:
        """A duplicate of the ``role`` listener's fd (the caller closes it), or None if not
        held. Any thread."""
        with self._sockets_lock:
            listener = self.listeners.get(role)
            return None if listener is None else os.dup(listener.sock.fileno())

    def _listener(self, role: str) -> Listener:
        try:
            return self.listeners[role]
        except KeyError:
            raise LookupError(f"no {role} listener is held") from None

    def _poll(self, listener: Listener) -> None:
        if (
            listener.accepting
            and not listener.polled
            and self.listeners.get(listener.role) is listener
        ):
            self.loop.add_reader(listener.sock.fileno(), self._accept, listener)
            listener.polled = True

    def _unpoll(self, listener: Listener) -> None:
        if listener.polled:
            self.loop.remove_reader(listener.sock.fileno())
            listener.polled = False

    def _accept(self, listener: Listener) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # the queue is empty (or another process took the connection)
            except ConnectionAbortedError:
                continue  # reset by its client while queued
            except OSError as exc:  # out of file descriptors or memory, typically
                # The socket stays readable: stop polling it for a while instead of spinning.
                log.error("accept() failed (%s); retrying in %.0f s", exc, ACCEPT_RETRY_S)
                self._unpoll(listener)
                self.loop.call_later(ACCEPT_RETRY_S, self._poll, listener)
                return
            self.setting_up += 1
            self.loop.create_task(self._set_up(conn, listener))

    async def _set_up(self, conn: socket.socket, listener: Listener) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: HttpProtocol(self, listener), conn)
        except Exception:  # the client reset it already, or no memory: nothing to answer
            conn.close()
        finally:
            self.setting_up -= 1

    def _tick(self) -> None:
        now = time.time()
        self.clock = int(time.monotonic())
        self.date_line = b"date: %s\r\n" % formatdate(now, usegmt=True).encode()
        for conn in list(self.connections):
            conn.check_timeouts(self.clock)
        self.loop.call_later(1.0, self._tick)

    def request_stop(self) -> None:
        """Begin a graceful shutdown (call on the loop, or via call_soon_threadsafe)."""
        self._stop.set()

    async def serve_until_stopped(self, drain_s: float) -> None:
        await self._stop.wait()
        self.closing = True
        # Stop accepting and close our copies: connections still queued are refused only
        # if no other process holds the socket (the next version may).
        for role in list(self.listeners):
            self.drop(role)
        for conn in list(self.connections):
            conn.leave()
        # Busy connections finish; idle ones get their next request answered (with
        # close) or reach the idle timeout (_tick), whichever comes first.
        deadline = time.monotonic() + drain_s
        while (self.connections or self.setting_up) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()


class HttpProtocol(asyncio.Protocol):
    def __init__(self, server: HttpServer, listener: Listener):
        self.server = server
        self.listener = listener
        self.closing = False  # answer with connection: close from now on
        self.app = server.app
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.busy = False  # a request is being received or answered
        self.open = 0  # requests begun and not yet answered (pipelining: more than one)
        self.last_data = server.clock
        self.req = Request()
        self.url = b""
        self.chunks: list[bytes] = []
        self.size = 0
        self.in_head = True  # between requests, or inside a request line/headers
        self.head_bytes = 0
        self.length: bytes | None = None
        self.expect = False
        self.rejected = False  # answered early (413/431): the rest of the input is dropped
        self.dropped = 0
        self.waiting: deque[Request] | None = None  # requests behind an async answer
        self.inflight = server.app.metrics.inflight
        self.values = server.app.metrics.values

    # Connection events --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Typed as BaseTransport; a TCP server's transports are full Transports.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self.server.connections.add(self)
        # Accepted just before a pause or a stop: move this client on too.
        self.closing = self.server.closing or not self.listener.accepting

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.values[self.inflight] -= self.open  # requests that will never be answered
        self.open = 0
        self.busy = False

    def pause_writing(self) -> None:  # the client isn't reading: stop reading from it too
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.waiting is None:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.last_data = self.server.clock
        if self.rejected:
            self.dropped += len(data)
            if self.dropped > LINGER_BYTES:
                self.abort()
            return
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # an Upgrade we don't support: the request was answered as plain HTTP
        except httptools.HttpParserError:
            self._reject(400, b"Bad Request", linger=False)
            return
        # Still inside a request line + headers this long: refuse (llhttp has no limit).
        if self.in_head and self.head_bytes > MAX_HEADER_BYTES:
            self._reject(431, b"Request Header Fields Too Large", linger=False)

    def check_timeouts(self, clock: int) -> None:
        if self.waiting is not None:
            return  # waiting on init(): the app bounds that
        idle = clock - self.last_data
        if self.busy and idle >= READ_TIMEOUT_S:
            self.abort()
        elif not self.busy and idle >= KEEPALIVE_S:
            self.close()

    def leave(self) -> None:
        """Close after the next response. Not now, even if idle: the client may be sending
        a request already, and closing under it would fail that request (a client cannot
        tell whether a request on a closed connection was processed, so it can't retry it
        safely). An idle connection that sends nothing is closed by the idle timeout."""
        self.closing = True

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # Parser callbacks -----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.busy = True
        self.open += 1
        self.values[self.inflight] += 1
        self.req = req = Request()
        req.t0 = time.perf_counter()
        req.peer = self.peer
        req.headers = []
        self.url = b""
        self.chunks = []
        self.size = 0
        self.length = None
        self.expect = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        req = self.req
        req.headers.append((name, value))
        if name in _SPECIAL:
            if name == b"content-length":
                self.length = value
            elif name == b"content-type":
                req.ctype = value
            elif name == b"x-request-id":
                req.request_id = value
            elif name == b"x-ms-request-id":
                req.legacy_id = value
            elif name == b"x-ms-client-request-id":
                req.client_id = value
            elif name == b"traceid":
                req.trace = value
            elif name == b"expect":
                self.expect = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        self.in_head = False
        req = self.req
        req.method = self.parser.get_method().decode("ascii")
        url = httptools.parse_url(self.url)
        path = url.path.decode("latin-1")
        req.path = unquote(path) if "%" in path else path
        req.query = url.query or b""
        # llhttp has validated Content-Length (digits, no duplicates).
        if self.length is not None and int(self.length) > self.server.max_body:
            self._answer_early(self.app.too_large(req))
        elif self.expect and self.transport is not None:  # the client waits for our go
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self.rejected:
            return
        self.size += len(body)
        if self.size > self.server.max_body:  # chunked, or more than Content-Length said
            self._answer_early(self.app.too_large(self.req))
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.in_head, self.head_bytes = True, 0
        if self.rejected:
            return
        req = self.req
        chunks = self.chunks
        req.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        req.keep_alive = self.parser.should_keep_alive()
        if self.waiting is not None:  # pipelined behind a request still being answered
            self.waiting.append(req)
            return
        response = self.app.handle(req)
        if response is None:
            self._answer_later(req)
        else:
            self._send(req, response)

    # Answering --------------------------------------------------------------------------------
    def _send(self, req: Request, response: Response, linger: bool = False) -> None:
        status, lines, body = response
        keep = req.keep_alive and not self.closing and not linger
        transport = self.transport
        assert transport is not None
        status_line = STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status
        transport.write(
            b"".join(
                (
                    status_line,
                    *lines,
                    b"content-length: %d\r\n" % len(body),
                    self.server.date_line,
                    b"" if keep else b"connection: close\r\n",
                    b"\r\n",
                    b"" if req.method == "HEAD" else body,
                )
            )
        )
        self.open -= 1
        self.values[self.inflight] -= 1
        self.busy = self.open > 0
        self.app.done(req, status, len(body))
        if linger:
            self._linger()
        elif not keep:
            transport.close()

    def _answer_later(self, req: Request) -> None:
        """The app needs to wait (init() still running): answer from a task, and hold
        any pipelined requests (and reading) until then."""
        assert self.transport is not None
        self.waiting = deque()
        self.transport.pause_reading()
        self.server.loop.create_task(self._answer_async(req))

    async def _answer_async(self, req: Request) -> None:
        waiting, transport = self.waiting, self.transport
        assert waiting is not None
        assert transport is not None
        current: Request | None = req
        while current is not None:
            response = await self.app.handle_when_ready(current)
            if transport.is_closing():
                return
            self._send(current, response)
            current = waiting.popleft() if waiting else None
        self.waiting = None
        if not transport.is_closing():
            transport.resume_reading()

    def _answer_early(self, response: Response) -> None:
        """Answer before the body is read (413), then drop the rest of the input."""
        self._send(self.req, response, linger=True)

    def _reject(self, status: int, reason: bytes, linger: bool) -> None:
        if self.transport is None or self.rejected:
            return
        self.transport.write(
            STATUS_LINES[status]
            + b"content-type: text/plain; charset=utf-8\r\n"
            + b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(reason), reason)
        )
        self.app.metrics.observe("other", status, 0.0)
        if linger:
            self._linger()
        else:
            self.rejected = True
            self.close()

    def _linger(self) -> None:
        # Closing with unread input makes the kernel send a reset, which can destroy the
        # answer before the client reads it; so half-close and drain for a moment.
        self.rejected = True
        transport = self.transport
        assert transport is not None
        if transport.can_write_eof():
            transport.write_eof()
            self.server.loop.call_later(LINGER_S, self.close)
        else:
            transport.close()
