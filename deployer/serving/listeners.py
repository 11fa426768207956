"""The listening sockets a server holds, and how they move between processes.

A version switch on one host never closes the service port's listening socket: the
socket itself is handed from process to process (``SCM_RIGHTS`` over unix sockets), so
while two versions hold it they accept from one queue, and the one that leaves resets
nothing. Why not ``SO_REUSEPORT``: on Linux, connections queued to a closing reuseport
listener are reset unless ``net.ipv4.tcp_migrate_req`` is 1 (it is 0 by default).

A server holds at most two listeners, by role: ``service`` (the port clients use) and
``candidate`` (a private port where a new version is tested before it joins the service
port). Messages that carry them are JSON: one line on a stream socket (the control
socket, control.py), one packet on a ``SOCK_SEQPACKET`` pair (supervisor and worker,
channel.py); the file descriptors ride along with the first byte.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("deployer.serving")

SERVICE = "service"
CANDIDATE = "candidate"
ROLES = (SERVICE, CANDIDATE)  # the order status lists them in
BACKLOG = 2048
BIND_RETRY_S = 0.5
MAX_MESSAGE = 65536
MAX_FDS = 4  # a message carries at most one listener; room for a mistaken sender's extras


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (OSError, e.g. EADDRINUSE, if it can't be)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)  # listen now: connections made during startup queue, not fail
    except BaseException:
        sock.close()
        raise
    return sock


def bind_when_free(host: str, port: int) -> socket.socket:
    """Bind, waiting while another process holds the port (a promoted instance that
    restarts while the version it replaced is still leaving)."""
    waiting = False
    while True:
        try:
            return bind(host, port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            if not waiting:
                log.info("port %d is in use; retrying every %.1f s", port, BIND_RETRY_S)
                waiting = True
        time.sleep(BIND_RETRY_S)


def port_of(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


def adopt(fd: int) -> socket.socket:
    """A socket object for a received or inherited listener fd, not passed on to the
    user's subprocesses (they would keep the port alive)."""
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    return sock


def check_listener(sock: socket.socket) -> None:
    """Raise ValueError unless ``sock`` is a listening TCP socket."""
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.type != socket.SOCK_STREAM or not listening:
        raise ValueError("the received file descriptor is not a listening TCP socket")
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise ValueError("the received file descriptor is not a TCP socket")


# Messages --------------------------------------------------------------------------------------
def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def send_message(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """Send one message; ``fds`` are attached to its first byte."""
    data = encode(message)
    sent = socket.send_fds(sock, [data], list(fds)) if fds else sock.send(data)
    if sent < len(data):  # a stream socket may take a long line in pieces
        sock.sendall(data[sent:])


def recv_packet(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One message from a SOCK_SEQPACKET socket: (None, []) at end of stream."""
    data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS, socket.MSG_CMSG_CLOEXEC)
    if not data:
        _close_all(fds)
        return None, []
    return _decode(data, fds), fds


def recv_line(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One line-delimited message from a stream socket, with any fds sent along."""
    chunks: list[bytes] = []
    fds: list[int] = []
    size = 0
    while True:
        data, received, _, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS, socket.MSG_CMSG_CLOEXEC)
        fds += received
        if not data:
            _close_all(fds)
            raise ConnectionError("the peer closed the connection before a complete line")
        chunks.append(data)
        size += len(data)
        if b"\n" in data:
            break
        if size > MAX_MESSAGE:
            _close_all(fds)
            raise ValueError(f"message longer than {MAX_MESSAGE} bytes")
    return _decode(b"".join(chunks).split(b"\n", 1)[0], fds), fds


def _decode(data: bytes, fds: list[int]) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        _close_all(fds)
        raise ValueError("not a JSON object")
    return message


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            socket.close(fd)
