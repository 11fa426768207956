"""A small HTTP/1.1 server: httptools (llhttp) parsing on the event loop.

Why not uvicorn: profiling showed uvicorn's ASGI machinery - a task, an
``asyncio.Event`` and two dict messages per request, regex checks on every response
header, two socket writes per response, a keep-alive timer per request - costing more
per request than our whole scoring path, and capping a bare uvicorn handler below the
throughput goal (benchmarks/README.md). Here a complete request is dispatched inside
``data_received``; the answer is written with one ``transport.write``, at once (probes,
errors) or when the scoring thread has it (scoring.py).

What it does: keep-alive and pipelining, chunked request bodies, ``Expect:
100-continue`` (HTTP/1.1 clients only), HEAD, request size limits (413 before reading
the body, then a lingering close so the client sees the answer), back-pressure on slow
readers, listeners that can be paused and resumed, graceful shutdown. What it doesn't:
TLS, HTTP/2 and upgrades (a scoring container sits behind an ingress for those).

Answers always go out in request order. Each connection keeps the requests it has begun
and not yet answered in ``pending``, oldest first; only the oldest is ever answered,
so an early answer (413, 400, 431, 408) or a ``100 Continue`` for a pipelined request
waits its turn too. While the oldest waits for the app, one more request is read
ahead, then reading stops: what the client sends meanwhile stays in the kernel's buffer
(bounded by TCP), not in ours.

Limits against hostile or broken clients:
* the request line and headers: at most MAX_HEADER_BYTES, counted as they arrive
  (431), and complete within ``header_timeout_s`` of their first byte (408: a client
  sending one byte every few seconds no longer holds a connection for ever);
* a body whose bytes stop arriving for READ_TIMEOUT_S: dropped;
* connections: at most ``max_connections`` per worker; one more is answered 503 and
  closed at once, so the probes and other clients still get through.

Sharing the work between workers (several processes accept from one socket):
* a worker whose scoring thread is busy, or that holds more connections than a peer,
  leaves new connections to that peer (a board in shared memory says who is idle and
  who holds how many, metrics.py), and takes them itself only if they are still
  waiting a moment later; a burst of new connections is taken one at a time, so it is
  shared out evenly (keep-alive connections stay where they land);
* a /score request that reaches a busy worker on a connection it already holds (keep-
  alive) is handed, with the connection, to an idle peer (handoff.py), if the run()
  ahead of it has been going for HANDOFF_AFTER_S already;
* requests queued behind a run() are handed on the same way when a peer turns idle
  before their turn (checked every REBALANCE_S while any wait).

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
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import unquote

import httptools

from .listeners import port_of
from .request import Request, Response, Stream

if TYPE_CHECKING:
    from .app import App

STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
KEEPALIVE_S = 5  # idle keep-alive connections are closed after this (uvicorn's default)
READ_TIMEOUT_S = 60  # a request body whose bytes stop arriving for this long is dropped
LINGER_S = 1.0  # after a 413: keep reading (and dropping) this long so the client sees it
LINGER_BYTES = 1 << 20  # ... or this much, whichever comes first
MAX_HEADER_BYTES = 65536
ACCEPT_BATCH = 16  # connections taken from the queue per wake-up
ACCEPT_RETRY_S = 1.0  # out of file descriptors or memory: stop accepting this long
# A busy worker leaves a new connection this long to an idle peer before taking it.
ACCEPT_DEFER_S = 0.005
HANDOFF_MAX_BYTES = 65536  # a request this large or larger stays where it arrived
# While jobs wait behind run(), look this often for a peer that has turned idle.
REBALANCE_S = 0.005
HANDOFF_AFTER_S = 0.001  # work moves to a peer only from behind a run() this old
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
        b"authorization",
    }
)


def plain_answer(status: int, reason: bytes, extra: bytes = b"") -> bytes:
    """A complete text answer that closes the connection (errors found by the server)."""
    return (
        STATUS_LINES[status]
        + b"content-type: text/plain; charset=utf-8\r\n"
        + extra
        + b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(reason), reason)
    )


_TOO_MANY = plain_answer(503, b"Too many connections", b"retry-after: 1\r\n")


@dataclass(frozen=True)
class Limits:
    max_body: int
    max_connections: int
    header_timeout_s: int


class Sharing(Protocol):
    """How a worker hands work to its peers (handoff.py); None for a lone worker."""

    def peer_idle(self) -> bool: ...

    def fewest_connections_elsewhere(self) -> float: ...

    def send(self, conn: HttpProtocol, raw: bytes) -> bool: ...


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

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop, limits: Limits):
        self.app = app
        self.loop = loop
        self.limits = limits
        self.sharing: Sharing | None = None
        self._rebalancing = False
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
        self.app.on_load_change()

    def pause(self, role: str) -> None:
        """Stop accepting from the ``role`` listener, keeping the socket; its connections
        are answered with ``connection: close`` from now on, so their clients move on."""
        listener = self._listener(role)
        listener.accepting = False
        self._unpoll(listener)
        for conn in self.connections:
            if conn.listener is listener:
                conn.leave()
        self.app.on_load_change()

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

    @property
    def accepting(self) -> bool:
        """Taking new connections from some listener: a peer may hand work to us."""
        return not self.closing and any(li.accepting for li in self.listeners.values())

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
        batch = ACCEPT_BATCH
        sharing = self.sharing
        if sharing is not None:
            held = len(self.connections) + self.setting_up
            if (
                not self.app.idle and sharing.peer_idle()
            ) or held > sharing.fewest_connections_elsewhere():
                # Busy, or holding more connections than a peer (keep-alive connections
                # stay where they land): leave the connection to the peer, also woken by
                # it. Look again shortly, and take it then if it is still waiting.
                self._unpoll(listener)
                self.loop.call_later(ACCEPT_DEFER_S, self._take_left, listener)
                return
            batch = 1  # then look again: a burst of connections is shared out evenly
        self._take(listener, batch)

    def _take_left(self, listener: Listener) -> None:
        """What a peer left waiting for ACCEPT_DEFER_S is ours after all (it may be
        stopped, stalled or slow), then poll as usual."""
        held = listener.accepting and self.listeners.get(listener.role) is listener
        if held and self._take(listener, ACCEPT_BATCH):
            self._poll(listener)

    def _take(self, listener: Listener, batch: int) -> bool:
        """Accept up to ``batch`` connections; False if accepting failed and is backing off."""
        for _ in range(batch):
            try:
                conn, _ = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return True  # the queue is empty (or another process took the connection)
            except ConnectionAbortedError:
                continue  # reset by its client while queued
            except OSError as exc:  # out of file descriptors or memory, typically
                # The socket stays readable: stop polling it for a while instead of spinning.
                log.error("accept() failed (%s); retrying in %.0f s", exc, ACCEPT_RETRY_S)
                self._unpoll(listener)
                self.loop.call_later(ACCEPT_RETRY_S, self._poll, listener)
                return False
            if len(self.connections) + self.setting_up >= self.limits.max_connections:
                self._refuse(conn)
                continue
            self.setting_up += 1
            self.loop.create_task(self._set_up(conn, listener))
        return True

    def _refuse(self, conn: socket.socket) -> None:
        """Too many connections: say so and close, without reading (the request, if any,
        is not ours to take)."""
        conn.setblocking(False)
        try:
            conn.send(_TOO_MANY)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            return
        self.app.metrics.observe("other", 503, 0.0)
        # Closing with the request unread resets the connection: give the client a moment
        # to read the answer first.
        self.loop.call_later(LINGER_S, conn.close)

    def adopt(self, conn: socket.socket, role: str, raw: bytes) -> None:
        """Serve a connection handed over by a peer worker, ``raw`` being what that peer
        read from it (one or more requests, from a request's first byte)."""
        conn.setblocking(False)
        self.setting_up += 1
        self.loop.create_task(self._set_up(conn, self.listeners.get(role), raw))

    async def _set_up(
        self, conn: socket.socket, listener: Listener | None, handed: bytes | None = None
    ) -> None:
        try:
            await self.loop.connect_accepted_socket(
                lambda: HttpProtocol(self, listener, handed), conn
            )
        except Exception:  # the client reset it already, or no memory: nothing to answer
            conn.close()
        finally:
            self.setting_up -= 1

    def hand_off(self, conn: HttpProtocol) -> bool:
        """Hand ``conn`` and its unanswered input to an idle peer, if this worker is busy
        and one is idle: True if it is gone."""
        sharing = self.sharing
        if sharing is None or conn.raw is None or not self._worth_moving():
            return False
        transport = conn.transport
        if transport is None or transport.get_write_buffer_size():
            return False  # an earlier answer is still being written
        return sharing.send(conn, b"".join(conn.raw))

    def _worth_moving(self) -> bool:
        """Work waits behind a run() that is taking a while, and a peer is idle. A run()
        that has just begun is likely short (most are well under a millisecond): moving a
        connection costs more than waiting for it."""
        sharing = self.sharing
        return (
            sharing is not None
            and self.app.running_for() >= HANDOFF_AFTER_S
            and sharing.peer_idle()
        )

    def rebalance_soon(self) -> None:
        """Jobs wait behind run(): move some to peers that turn idle meanwhile."""
        if self.sharing is not None and not self._rebalancing:
            self._rebalancing = True
            self.loop.call_later(REBALANCE_S, self._rebalance)

    def _rebalance(self) -> None:
        self._rebalancing = False
        app, sharing = self.app, self.sharing
        assert sharing is not None
        while len(app.jobs) > 1 and self._worth_moving():
            job = app.take_back()
            if job is None:
                break
            raw = job.conn.raw
            assert raw is not None
            if not sharing.send(job.conn, b"".join(raw)):
                app.resubmit(job)
                break
        if len(app.jobs) > 1 and not self.closing:
            self.rebalance_soon()

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
        self.app.on_load_change()
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
    def __init__(self, server: HttpServer, listener: Listener | None, handed: bytes | None = None):
        self.server = server
        self.listener = listener  # None: handed over by a peer, for a role we don't hold
        self.closing = False  # answer with connection: close from now on
        self.app = server.app
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.pending: deque[Request] = deque()  # begun and not yet answered, oldest first
        self.last_data = server.clock
        self.head_since: int | None = None  # clock at the first byte of a request's head
        self.head_bytes = 0  # its request line and headers, counted by the parser
        self.head_raw = 0  # bytes received while inside a head (the unparsed part too)
        self.req = Request()
        self.url = b""
        self.chunks: list[bytes] = []
        self.size = 0
        self.length: bytes | None = None
        self.expect = False
        self.rejected = False  # the input broke or was refused: the rest is not parsed
        self.lingering = False  # the last answer is written; dropping input, then closing
        self.dropped = 0
        self.reading = True
        self.write_paused = False
        # What was received since the connection was last quiet (nothing pending), while
        # nothing has been written: a peer can take the connection over from there.
        self.raw: list[bytes] | None = None
        self.raw_size = 0
        self.handed = handed
        self.eof = False  # the client will send nothing more
        self.stream: Stream | None = None  # the answer being streamed (pending[0]'s)
        self.stream_status = 0
        self.stream_size = 0  # body bytes produced so far
        self.inflight = server.app.metrics.inflight
        self.values = server.app.metrics.values

    # Connection events --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Typed as BaseTransport; a TCP server's transports are full Transports.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self.server.connections.add(self)
        self.app.on_load_change()
        # Accepted just before a pause or a stop: move this client on too.
        listener = self.listener
        self.closing = self.server.closing or listener is None or not listener.accepting
        if self.handed is not None:  # reading starts after this returns: parse this first
            handed, self.handed = self.handed, None
            self._feed(handed)

    def connection_lost(self, exc: Exception | None) -> None:
        stream = self.stream
        if stream is not None:  # stop the scoring thread iterating for nobody
            stream.gone = True
            stream.writable.set()
        self.server.connections.discard(self)
        self.app.on_load_change()
        self.values[self.inflight] -= len(self.pending)  # requests never to be answered
        self.pending.clear()

    def pause_writing(self) -> None:  # the client isn't reading: stop reading from it too
        self.write_paused = True
        if self.stream is not None:
            self.stream.writable.clear()
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.stream is not None:
            self.stream.writable.set()
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        if self.server.sharing is not None:  # a lone worker has no one to hand it to
            self._keep_raw(data)
        self._feed(data)

    def _keep_raw(self, data: bytes) -> None:
        if not self.pending:
            # Quiet until now: this may be handed to a peer along with the connection.
            self.raw = [data] if len(data) < HANDOFF_MAX_BYTES else None
            self.raw_size = len(data)
        elif self.raw is not None:
            self.raw_size += len(data)
            if self.raw_size < HANDOFF_MAX_BYTES:
                self.raw.append(data)
            else:
                self.raw = None

    def _feed(self, data: bytes) -> None:
        self.last_data = self.server.clock
        if self.rejected:
            if self.lingering:
                self.dropped += len(data)
                if self.dropped > LINGER_BYTES:
                    self.abort()
            return  # else an error waits for its turn; reading has stopped
        in_head = self.head_since is not None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # an Upgrade we don't support: the request was answered as plain HTTP
        except httptools.HttpParserError:
            if self.head_bytes > MAX_HEADER_BYTES:  # raised on purpose by a callback
                self._fail(431, b"Request Header Fields Too Large")
            else:
                self._fail(400, b"Bad Request")
            return
        # A head whose bytes keep coming without a complete header line, which the parser
        # buffers without a limit: count what arrived while inside it.
        if in_head and self.head_since is not None:
            self.head_raw += len(data)
            if self.head_raw > MAX_HEADER_BYTES:
                self._fail(431, b"Request Header Fields Too Large")

    def check_timeouts(self, clock: int) -> None:
        if self.lingering or not self.reading or (self.pending and self.pending[0].dispatched):
            return  # closing anyway, or waiting for the app (which bounds that) or the client
        if self.head_since is not None and clock - self.head_since >= (
            self.server.limits.header_timeout_s
        ):
            self._fail(408, b"Request Timeout")
            return
        idle = clock - self.last_data
        if self.pending and idle >= READ_TIMEOUT_S:
            self.abort()
        elif not self.pending and idle >= KEEPALIVE_S:
            self.close()

    def movable(self, req: Request) -> bool:
        """Could ``req`` go to a peer with this connection: it is the only request, and
        nothing has been written since its first byte arrived."""
        transport = self.transport
        return (
            self.raw is not None
            and len(self.pending) == 1
            and self.pending[0] is req
            and not self.eof
            and transport is not None
            and not transport.is_closing()
            and not transport.get_write_buffer_size()
        )

    def eof_received(self) -> bool | None:
        """The client has half-closed: no more requests, but it reads the answers to
        those it has sent (a request cut short is not answered)."""
        self.eof = True
        self.raw = None
        pending = self.pending
        while pending and not (pending[-1].complete or pending[-1].early or pending[-1].error):
            pending.pop()
            self.values[self.inflight] -= 1
        if not self.pending:
            return None  # close now
        return True  # keep writing; closed after the last answer (_send)

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
        if self.rejected:
            return
        self.req = req = Request()
        req.t0 = time.perf_counter()
        req.peer = self.peer
        req.headers = []
        self.pending.append(req)
        self.values[self.inflight] += 1
        self.head_since = self.server.clock
        self.head_bytes = self.head_raw = 0
        self.url = b""
        self.chunks = []
        self.size = 0
        self.length = None
        self.expect = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
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
            elif name == b"authorization":
                req.authorization = value
            elif name == b"expect":
                self.expect = value.lower() == b"100-continue"

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEADER_BYTES:
            raise ValueError("request head too large")  # stops the parser: see _feed

    def on_headers_complete(self) -> None:
        if self.rejected:
            return
        self.head_since = None
        req = self.req
        parser = self.parser
        req.method = parser.get_method().decode("ascii")
        url = httptools.parse_url(self.url)
        path = url.path.decode("latin-1")
        req.path = unquote(path) if "%" in path else path
        req.query = url.query or b""
        # llhttp has validated Content-Length (digits, no duplicates).
        if self.length is not None and int(self.length) > self.server.limits.max_body:
            req.early = self.app.too_large(req)
            self.rejected = True
            self._advance()
        elif parser.get_http_version() != "1.1":
            req.http10 = True
        elif self.expect:
            # RFC 9110 10.1.1: ignore the expectation of an HTTP/1.0 client.
            req.expect = True
            self._advance()

    def on_body(self, body: bytes) -> None:
        if self.rejected:
            return
        self.size += len(body)
        if self.size > self.server.limits.max_body:  # chunked, or more than Content-Length said
            self.req.early = self.app.too_large(self.req)
            self.rejected = True
            self._advance()
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.rejected:
            return
        req = self.req
        chunks = self.chunks
        req.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        req.keep_alive = self.parser.should_keep_alive()
        req.complete = True
        self._advance()

    # Answering --------------------------------------------------------------------------------
    def _advance(self) -> None:
        """Answer what can be answered, oldest first, until something must wait."""
        pending = self.pending
        while pending:
            transport = self.transport
            if transport is None or transport.is_closing():
                return
            req = pending[0]
            if req.dispatched:
                break  # its answer comes later
            if req.error is not None:
                self._write_error(req, *req.error)
                return
            if req.early is not None:
                self._send(req, req.early, linger=True)
                return
            if not req.complete:
                if req.expect and not req.continued:  # the client waits for our go
                    req.continued = True
                    self.raw = None
                    transport.write(_CONTINUE)
                break
            if self.raw is not None and req.path == "/score" and self.server.hand_off(self):
                return  # a peer answers it now
            req.dispatched = True
            response = self.app.handle(req, self)
            if response is not None:
                req.dispatched = False
                self._send(req, response)
        self._update_reading()

    def answer(self, req: Request, response: Response) -> None:
        """The app's answer to a request it took (on the loop)."""
        transport = self.transport
        if transport is None or transport.is_closing() or not self.pending:
            return  # the client has gone
        assert self.pending[0] is req, "answers go out in request order"
        req.dispatched = False
        self._send(req, response)
        self._advance()

    def _update_reading(self) -> None:
        """Read unless a request waits for its turn behind one the app is answering (one
        is read ahead: a client that doesn't pipeline costs no system call), an error
        waits for its turn, or the client doesn't read our answers."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        pending = self.pending
        queued = len(pending) > 1 and pending[0].dispatched
        want = self.lingering or not (queued or self.rejected or self.write_paused)
        if want == self.reading:
            return
        self.reading = want
        if want:
            transport.resume_reading()
            # Time spent not reading is ours, not the client's.
            self.last_data = self.server.clock
            if self.head_since is not None:
                self.head_since = self.server.clock
        else:
            transport.pause_reading()

    def _send(self, req: Request, response: Response, linger: bool = False) -> None:
        status, lines, body = response
        last = self.eof and len(self.pending) == 1  # the client sends no more: close after
        keep = req.keep_alive and not self.closing and not linger and not last
        transport = self.transport
        assert transport is not None
        if type(body) is Stream:
            self._begin_stream(req, status, lines, body, keep)
            return
        assert isinstance(body, bytes)
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
        self.pending.popleft()
        self.raw = None
        self.values[self.inflight] -= 1
        self.app.done(req, status, len(body))
        if linger:
            self._linger()
        elif not keep:
            transport.close()

    # Streamed answers: the head now, chunks from the scoring thread as run()'s response
    # produces them (each through call_soon_threadsafe, so in order), then the end.
    def _begin_stream(
        self, req: Request, status: int, lines: list[bytes], stream: Stream, keep: bool
    ) -> None:
        transport = self.transport
        assert transport is not None
        req.keep_alive = keep = keep and not req.http10  # 1.0: no chunks; the close ends it
        if req.method == "HEAD":  # the head alone, as for any HEAD: no body, no framing
            framing = b"" if keep else b"connection: close\r\n"
        else:
            framing = b"transfer-encoding: chunked\r\n" if keep else b"connection: close\r\n"
        status_line = STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status
        transport.write(b"".join((status_line, *lines, self.server.date_line, framing, b"\r\n")))
        self.raw = None
        req.dispatched = True  # the answer is still being written: pending[0] until the end
        self.stream = stream
        self.stream_status, self.stream_size = status, 0
        if self.write_paused:
            stream.writable.clear()

    def stream_chunk(self, req: Request, data: bytes) -> None:
        transport = self.transport
        if self.stream is None or transport is None or transport.is_closing():
            return
        self.stream_size += len(data)
        if req.method == "HEAD":
            return
        if req.keep_alive:
            transport.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            transport.write(data)

    def stream_end(self, req: Request, complete: bool) -> None:
        """The stream is over: ``complete`` False if it raised, or the client left."""
        transport = self.transport
        stream, self.stream = self.stream, None
        if stream is None or transport is None or transport.is_closing():
            return
        self.pending.popleft()
        self.values[self.inflight] -= 1
        req.dispatched = False
        self.app.done(req, self.stream_status, self.stream_size)
        if not complete:
            # No last chunk: a client reading chunks sees the answer is cut short.
            transport.abort() if req.keep_alive else transport.close()
            return
        if not req.keep_alive:
            transport.close()
            return
        if req.method != "HEAD":
            transport.write(b"0\r\n\r\n")
        self._advance()

    def _fail(self, status: int, reason: bytes) -> None:
        """The input broke (400), is too large (431) or too slow (408): answer that in
        turn, and close."""
        if self.rejected:
            return
        self.rejected = True
        self.head_since = None
        pending = self.pending
        if pending and not pending[-1].complete and not pending[-1].dispatched:
            req = pending[-1]
        else:  # broke between requests
            req = Request()
            req.headers = []
            pending.append(req)
            self.values[self.inflight] += 1
        req.error = (status, reason)
        self._advance()

    def _write_error(self, req: Request, status: int, reason: bytes) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(plain_answer(status, reason))
        self.pending.popleft()
        self.values[self.inflight] -= 1
        self.app.metrics.observe("other", status, 0.0)
        self.close()

    def _linger(self) -> None:
        # Closing with unread input makes the kernel send a reset, which can destroy the
        # answer before the client reads it; so half-close and drain for a moment.
        self.rejected = self.lingering = True
        transport = self.transport
        assert transport is not None
        if transport.can_write_eof():
            transport.write_eof()
            self._update_reading()
            self.server.loop.call_later(LINGER_S, self.close)
        else:
            transport.close()
