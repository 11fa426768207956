"""Workers of one server hand connections to each other.

A keep-alive connection stays with the worker that accepted it. When a /score request
arrives on it while that worker's scoring thread is busy and a peer's is idle, the
request would wait for nothing; so the busy worker sends the connection itself
(``SCM_RIGHTS``) with the bytes it has read from it (from the request's first byte on)
to the idle peer, which parses them as if it had read them and answers. Nothing has been
written to the connection since those bytes arrived, so the client cannot tell; and
whatever the client sends meanwhile waits in the socket's kernel buffer, which moves
with the socket.

Who is idle: each worker publishes, in a row of the shared metrics block (metrics.py),
whether it is ready, accepting, and has nothing to score. The board may be a moment
stale: a peer that turns busy before the connection arrives just queues the request.

Each worker listens on an abstract unix socket (``SOCK_SEQPACKET``, one message per
connection) named after the server - its supervisor's pid and the shared block's inode,
unique on the host - and the worker's index, and accepts only processes of its own user.
A peer that has died refuses the connection, and the request is served where it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
from typing import TYPE_CHECKING

from .listeners import MAX_FDS

if TYPE_CHECKING:
    from .metrics import Metrics
    from .protocol import HttpProtocol, HttpServer

log = logging.getLogger("deployer.serving")
MAX_PACKET = 70_000  # a role name and up to protocol.HANDOFF_MAX_BYTES of request bytes
_UCRED = struct.Struct("3i")


def address(token: str, index: int) -> str:
    return f"\0deployer-serving/{token}/worker-{index}"


def server_token(metrics_fd: int) -> str:
    """Names this server's workers' sockets (see the module docstring)."""
    return f"{os.getppid()}.{os.fstat(metrics_fd).st_ino}"


class Handoff:
    """One worker's end: the socket peers hand connections to, and its own lines to them."""

    def __init__(self, server: HttpServer, metrics: Metrics, token: str, index: int):
        self.server = server
        self.metrics = metrics
        self.token = token
        self.index = index
        self._peers: dict[int, socket.socket] = {}
        self._inbox = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._inbox.bind(address(token, index))
        self._inbox.listen(16)
        self._inbox.setblocking(False)
        self._lines: set[socket.socket] = set()
        server.loop.add_reader(self._inbox.fileno(), self._accept)

    # Sending (HttpServer.hand_off) ----------------------------------------------------------------
    def peer_idle(self) -> bool:
        return self.metrics.idle_peer() is not None

    def fewest_connections_elsewhere(self) -> float:
        return self.metrics.fewest_connections_elsewhere()

    def send(self, conn: HttpProtocol, raw: bytes) -> bool:
        index = self.metrics.idle_peer()
        transport = conn.transport
        if index is None or transport is None:
            return False
        sock = transport.get_extra_info("socket")
        role = conn.listener.role if conn.listener is not None else ""
        payload = role.encode() + b"\n" + raw
        try:
            line = self._line(index)
            socket.send_fds(line, [payload], [sock.fileno()], socket.MSG_DONTWAIT)
        except OSError as exc:  # the peer died, restarts, or is flooded: serve it here
            log.debug("handing a connection to worker %d failed: %s", index, exc)
            self._drop_line(index)
            return False
        # The peer holds the socket now: close only our descriptor of it.
        conn.abort()
        self.metrics.handed_off()
        return True

    def _line(self, index: int) -> socket.socket:
        line = self._peers.get(index)
        if line is None:
            line = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                line.connect(address(self.token, index))
            except OSError:
                line.close()
                raise
            self._peers[index] = line
        return line

    def _drop_line(self, index: int) -> None:
        line = self._peers.pop(index, None)
        if line is not None:
            line.close()

    # Receiving ------------------------------------------------------------------------------
    def _accept(self) -> None:
        try:
            line, _ = self._inbox.accept()
        except OSError:
            return
        pid, uid, _ = _UCRED.unpack(
            line.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        if uid != os.getuid():
            log.warning("refused a handoff line from pid %d (uid %d)", pid, uid)
            line.close()
            return
        line.setblocking(False)
        self._lines.add(line)
        self.server.loop.add_reader(line.fileno(), self._receive, line)

    def _receive(self, line: socket.socket) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(line, MAX_PACKET, MAX_FDS, socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data:  # the peer has gone
            self.server.loop.remove_reader(line.fileno())
            self._lines.discard(line)
            line.close()
            for fd in fds:
                os.close(fd)
            return
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return
        role, _, raw = data.partition(b"\n")
        # Even while stopping: the sender has forgotten it, so it is ours to answer.
        self.server.adopt(socket.socket(fileno=fds[0]), role.decode(), raw)

    def close(self) -> None:
        loop = self.server.loop
        for sock in (self._inbox, *self._lines):
            with contextlib.suppress(Exception):
                loop.remove_reader(sock.fileno())
            sock.close()
        for line in self._peers.values():
            line.close()
