"""The control socket, and its client: how a deploy switches versions on one host.

A server started with ``--instance NAME`` listens on the abstract unix socket
``@deployer-serving/NAME`` (containers on the host network share the abstract
namespace, so the versions of a service reach each other). Only a peer with the
server's own uid is served (``SO_PEERCRED``). Each connection carries one request line
of JSON and one reply line of JSON, ``{"ok": true, ...}`` or ``{"ok": false, "error":
"..."}``. What the operations do is instance.py's; the sequence a deploy follows::

    N starts with --candidate-port Q        (tested on Q while O serves P)
    N: join --from O                        (N gets O's listener on P; both accept)
    O: pause                                (only N accepts; O's clients are moved)
    ...verify P...
    O gets SIGTERM (drains, exits), then N: promote      -- or, to roll back:
    O: resume, and N gets SIGTERM

If N dies while O is paused (it crashes under traffic, is OOM-killed, or is stopped),
O does not wait for the deploy tool (which may be slow to notice, or dead itself): the
connection N opened to O for ``join --from O`` stays open as long as N holds P's socket
(the *lease*), and when it ends - N's process exits or dies, or it begins to stop - O,
if paused and left with no other lease, resumes accepting on P by itself and logs
``N is gone: accepting on port P again``. A lease that ends while O accepts, or while O
is stopping, changes nothing. An explicit ``resume`` still works (and is a no-op then).

The command line below is the public interface (the deploy tool runs it with ``docker
exec`` in each container, as the server's uid); keep it stable::

    python -m deployer.serving.control [--instance NAME] [--timeout S] OP [--from NAME]

NAME defaults to ``$DEPLOYER_INSTANCE``. It prints the reply, one JSON line, on stdout
and exits 0 if ``ok``, 1 if not or if the server cannot be reached (the reply then
names the socket), 2 on usage errors. OP is one of:

``status``
    ``{"ok":true,"instance":NAME,"pid":PID,"ready":BOOL,"failed":BOOL,"promoted":BOOL,
    "service_port":P,"candidate_port":Q|null,"listeners":[{"port":P,"accepting":BOOL}],
    "leases":[NAME,...]}``; ready: init() finished in every worker; failed: it failed in
    one; leases: the instances that joined from this one and still hold P's socket.
``join [--from NAME]``
    Take over the service port P: the listener of instance NAME (its ``share``), or without
    ``--from`` a new socket bound to P (error ``port P is in use by another program`` if
    taken); then accept on it. Refused before init() finished or after it failed; a no-op
    if P is held already. Replies with the status.
``pause`` / ``resume``
    Stop / start accepting on P, keeping the socket. After ``pause`` each open connection
    is answered with ``Connection: close`` on its next request, so clients reconnect to
    whoever accepts. ``pause`` is refused when every instance that took a lease on P is
    gone already (nobody else would accept). Reply: the status.
``promote``
    Write the marker ``STATE_DIR/NAME.promoted`` (so a restart serves P by itself) and close
    the candidate port. Needs P held. Reply: the status.
``share``
    ``{"ok":true,"port":P}`` with P's listening socket attached (``SCM_RIGHTS``); what
    ``join --from`` asks the other instance for. The CLI closes the received socket.
    ``join --from`` sends ``{"op":"share","holder":N}`` (N: its own name) and keeps the
    connection open, never writing on it again: that is N's lease on this instance,
    listed in ``status`` until it ends (EOF or an error on this end). A share without
    ``holder`` (the CLI's) is no lease: the connection closes after the reply.

:func:`call` is the same client for Python callers (the tests).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from .config import INSTANCE_NAME
from .listeners import recv_line, send_message

log = logging.getLogger("deployer.serving")

OPS = ("status", "share", "join", "pause", "resume", "promote")
ADDRESS_PREFIX = "deployer-serving/"
# Reading a request: a client that connects and says nothing must not hold the socket.
REQUEST_TIMEOUT_S = 5.0
# The CLI's wait for a reply: longer than the server's own bounded waits (instance.py).
DEFAULT_TIMEOUT_S = 90.0
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Refused(Exception):
    """An operation the instance declines; the message becomes the reply's ``error``."""


class Unreachable(OSError):
    """No server answers on the instance's control socket."""


class Handler(Protocol):
    def handle(
        self, request: dict[str, Any], conn: socket.socket
    ) -> tuple[dict[str, Any], list[int]]:
        """The reply to one request, and fds to attach (the server closes them after).
        ``conn`` is the client's connection, closed by the server after the reply: a
        handler that wants it to outlive the request (a lease) keeps a ``dup()``."""
        ...


def address(instance: str) -> str:
    """The abstract socket address (a leading NUL) for an instance name."""
    return "\0" + ADDRESS_PREFIX + instance


def display(instance: str) -> str:
    return "@" + ADDRESS_PREFIX + instance  # as ss(8) and /proc/net/unix show it


def peer_uid(conn: socket.socket) -> int:
    """The effective uid of the process at the other end of a unix socket."""
    _, uid, _ = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return int(uid)


class ControlServer:
    """The abstract unix socket ``@deployer-serving/NAME`` and the thread serving it.

    Requests are served one at a time on one thread: they are rare, and a change of
    listeners must not interleave with another. Work that belongs on the event loop is
    passed there by the handler (instance.py).
    """

    def __init__(self, instance: str):
        self.instance = instance
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(address(instance))
        except OSError as exc:
            self.sock.close()
            raise OSError(
                exc.errno,
                f"cannot open the control socket {display(instance)} ({exc.strerror}): "
                f"is another server running with --instance {instance}?",
            ) from None
        self.sock.listen(16)
        self._thread: threading.Thread | None = None

    def serve(self, handler: Handler) -> None:
        self._thread = threading.Thread(
            target=self._serve, args=(handler,), name="control", daemon=True
        )
        self._thread.start()
        log.info("control socket %s open", display(self.instance))

    def close(self) -> None:
        # shutdown() wakes the thread blocked in accept(); a bare close() would not.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _serve(self, handler: Handler) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                try:
                    self._answer(conn, handler)
                except Exception:  # a client that went away, or a bug: keep serving others
                    log.warning("control request failed", exc_info=True)

    def _answer(self, conn: socket.socket, handler: Handler) -> None:
        conn.settimeout(REQUEST_TIMEOUT_S)
        uid, own = peer_uid(conn), os.geteuid()
        if uid != own:
            log.warning("control socket: refused a peer with uid %d", uid)
            send_message(
                conn,
                _error(f"peer uid {uid} refused: only uid {own} may use {display(self.instance)}"),
            )
            return
        try:
            request, fds = recv_line(conn)
        except (ValueError, ConnectionError) as exc:
            send_message(conn, _error(f"bad request: {exc}"))
            return
        for fd in fds:  # no request carries descriptors
            os.close(fd)
        conn.settimeout(None)  # the reply may take a while (instance.py bounds it)
        fds = []
        try:
            reply, fds = handler.handle(request, conn)
        except Refused as exc:
            reply = _error(str(exc))
        except Exception as exc:
            log.error("control operation %r failed", request.get("op"), exc_info=True)
            reply = _error(f"{type(exc).__name__}: {exc}")
        try:
            send_message(conn, reply, fds)
        finally:
            for fd in fds:
                os.close(fd)


def _error(text: str) -> dict[str, Any]:
    return {"ok": False, "error": text}


# Client --------------------------------------------------------------------------------------
def request(
    instance: str, message: dict[str, Any], timeout: float = DEFAULT_TIMEOUT_S
) -> tuple[dict[str, Any], list[int]]:
    """Send one request; return the reply and the fds that came with it (yours to close).

    Raises :class:`Unreachable` if no server listens, OSError/ValueError if the exchange
    fails half way.
    """
    with _connect(instance, timeout) as sock:
        send_message(sock, message)
        return recv_line(sock)


def lease(
    instance: str, holder: str, timeout: float = DEFAULT_TIMEOUT_S
) -> tuple[dict[str, Any], list[int], socket.socket]:
    """``share`` as instance ``holder``: the reply, its fds, and the connection, left open.

    The connection is the lease: keep it open, unread and unwritten (a ``shutdown`` would
    end it too), for as long as this process holds the shared socket; close it then.
    Raises like :func:`request`.
    """
    sock = _connect(instance, timeout)
    try:
        send_message(sock, {"op": "share", "holder": holder})
        reply, fds = recv_line(sock)
    except BaseException:
        sock.close()
        raise
    return reply, fds, sock


def _connect(instance: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address(instance))
    except OSError as exc:
        sock.close()
        raise Unreachable(
            exc.errno, f"no server answers on {display(instance)}: {exc.strerror}"
        ) from None
    return sock


def call(
    instance: str, op: str, timeout: float = DEFAULT_TIMEOUT_S, **fields: Any
) -> dict[str, Any]:
    """:func:`request` for callers that want only the reply (attached fds are closed)."""
    reply, fds = request(instance, {"op": op, **fields}, timeout)
    for fd in fds:
        os.close(fd)
    return reply


def _name(raw: str) -> str:
    if not INSTANCE_NAME.fullmatch(raw):
        raise argparse.ArgumentTypeError(f"not an instance name: {raw!r}")
    return raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deployer.serving.control",
        description="Ask a running scoring server (started with --instance) to report or "
        "change which ports it serves. Prints the JSON reply; exits 0 if ok, 1 if not.",
    )
    parser.add_argument(
        "--instance",
        type=_name,
        metavar="NAME",
        default=None,
        help="the server's --instance (default: $DEPLOYER_INSTANCE)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for the reply (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument("op", choices=OPS, metavar="OP", help=" | ".join(OPS))
    parser.add_argument(
        "--from",
        dest="source",
        type=_name,
        metavar="NAME",
        help="join only: take the service port's listener from this instance",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        instance = args.instance or os.environ.get("DEPLOYER_INSTANCE", "").strip()
        if not instance:
            parser.error("--instance NAME (or DEPLOYER_INSTANCE) is required")
        try:
            _name(instance)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"DEPLOYER_INSTANCE: {exc}")
        if args.source is not None and args.op != "join":
            parser.error("--from goes with join only")
    except SystemExit as exc:  # argparse's --help and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    fields = {} if args.source is None else {"from": args.source}
    try:
        reply = call(instance, args.op, args.timeout, **fields)
    except Unreachable as exc:
        reply = _error(str(exc.strerror))
    except (OSError, ValueError) as exc:
        reply = _error(f"no reply from {display(instance)}: {exc}")
    print(json.dumps(reply))
    return 0 if reply.get("ok") is True else 1


if __name__ == "__main__":
    sys.exit(main())
