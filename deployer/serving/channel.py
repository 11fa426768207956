"""The supervisor's line to each worker: listener changes down, readiness up.

With ``--workers N`` the supervisor owns the control socket and a copy of every
listener (supervisor.py); each worker accepts from its own copies. A change decided on
the control socket reaches the workers over a ``SOCK_SEQPACKET`` socketpair per worker
(message boundaries kept, a passed socket attached to its message):

* supervisor -> worker: ``{"id": n, "op": "listen"|"pause"|"resume"|"drop", "role": R}``,
  ``listen`` with the socket attached; the worker answers ``{"id": n, "ok": true}`` or
  ``{"id": n, "ok": false, "error": "..."}``.
* worker -> supervisor, unasked: ``{"event": "ready"}`` or ``{"event": "failed"}`` once
  init() is done.

If the supervisor dies, the pair reaches end of stream and the worker drains and exits:
orphaned workers would hold the service port with no one to stop them.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .instance import LOOP_TIMEOUT_S, call_on_loop
from .listeners import ROLES, adopt, recv_packet, send_message
from .protocol import HttpServer

log = logging.getLogger("deployer.serving")
# A worker's answer takes at most its loop's timeout; then allow for the round trip.
REPLY_TIMEOUT_S = LOOP_TIMEOUT_S + 10


def pair() -> tuple[socket.socket, socket.socket]:
    """(the supervisor's end, the worker's end)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class WorkerLink:
    """The supervisor's end of one worker's channel. A reader thread records the
    worker's events and queues its answers."""

    def __init__(self, sock: socket.socket, pid: int):
        self.sock = sock
        self.pid = pid
        self.ready = False
        self.failed = False
        self._replies: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._ids = itertools.count(1)
        self._reader = threading.Thread(target=self._read, name=f"worker-{pid}", daemon=True)
        self._reader.start()

    def send(self, op: str, role: str, fds: Sequence[int] = ()) -> int | None:
        """Send a request; its id, or None if the worker is gone."""
        request_id = next(self._ids)
        try:
            send_message(self.sock, {"id": request_id, "op": op, "role": role}, fds)
        except OSError:
            return None
        return request_id

    def reply(self, request_id: int | None, deadline: float) -> dict[str, Any]:
        """The answer to request ``request_id`` (an error if none comes by ``deadline``)."""
        while request_id is not None:
            try:
                reply = self._replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return {"ok": False, "error": "no answer (busy in a long run() call?)"}
            if reply.get("id") in (request_id, None):  # None: the worker is gone
                return reply
            # An answer to a request that timed out earlier: stale.
        return {"ok": False, "error": "the worker has exited"}

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _read(self) -> None:
        while True:
            try:
                message, fds = recv_packet(self.sock)
            except (OSError, ValueError):
                message, fds = None, []
            for fd in fds:  # workers send no descriptors
                socket.close(fd)
            if message is None:
                self._replies.put({"id": None, "ok": False, "error": "the worker has exited"})
                return
            event = message.get("event")
            if event == "ready":
                self.ready = True
            elif event == "failed":
                self.failed = True
            elif event is None:
                self._replies.put(message)


def broadcast(
    links: Sequence[WorkerLink],
    op: str,
    role: str,
    fds: Sequence[int] = (),
    excused: Callable[[WorkerLink], bool] = lambda link: False,
) -> list[str]:
    """Send one request to every worker, then collect the answers; the errors, if any,
    but for the workers ``excused`` (a worker that died meanwhile, say)."""
    sent = [(link, link.send(op, role, fds)) for link in links]
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    errors = []
    for link, request_id in sent:
        reply = link.reply(request_id, deadline)
        if reply.get("ok") is not True and not excused(link):
            errors.append(f"worker pid {link.pid}: {reply.get('error')}")
    return errors


# The worker's end ------------------------------------------------------------------------------
def notify(sock: socket.socket, event: str) -> None:
    with contextlib.suppress(OSError):  # the supervisor is gone: the reader stops us
        send_message(sock, {"event": event})


def serve_supervisor(sock: socket.socket, server: HttpServer) -> None:
    """In a worker: apply the supervisor's requests to ``server``, on a thread."""
    threading.Thread(
        target=_serve, args=(sock, server), name="supervisor-link", daemon=True
    ).start()


def _serve(sock: socket.socket, server: HttpServer) -> None:
    while True:
        try:
            message, fds = recv_packet(sock)
        except (OSError, ValueError):
            message, fds = None, []
        if message is None:
            log.error("the supervisor is gone; stopping")
            server.loop.call_soon_threadsafe(server.request_stop)
            return
        passed = [adopt(fd) for fd in fds]
        try:
            _apply(server, message, passed)
            reply: dict[str, Any] = {"id": message.get("id"), "ok": True}
        except Exception as exc:
            reply = {"id": message.get("id"), "ok": False, "error": str(exc) or repr(exc)}
        finally:
            for extra in passed:  # what _apply did not take
                extra.close()
        with contextlib.suppress(OSError):
            send_message(sock, reply)


def _apply(server: HttpServer, message: dict[str, Any], passed: list[socket.socket]) -> None:
    op, role = message.get("op"), message.get("role")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    if op == "listen":
        if len(passed) != 1:
            raise ValueError("listen needs exactly one socket")
        sock = passed.pop()
        try:
            call_on_loop(server.loop, lambda: server.listen(role, sock))
        except BaseException:
            sock.close()
            raise
    elif op in ("pause", "resume", "drop"):
        change = getattr(server, op)
        call_on_loop(server.loop, lambda: change(role))
    else:
        raise ValueError(f"unknown operation {op!r}")
