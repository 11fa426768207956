"""What the control socket's operations do (control.py has the protocol and the CLI).

An instance is one server: a single worker process, or a supervisor and its workers.
It holds a listener per role (listeners.py): ``candidate`` (the private port a new version
is tested on) and ``service`` (the port clients use). :class:`Instance` is the part both
kinds share - the rules: when a join is allowed, where the service socket comes from,
what promotion writes. How a change is applied differs: :class:`LocalInstance` applies
it to its own event loop; supervisor.py's subclass sends it to every worker.

Leases (control.py has the sequence): an instance N that joins from O keeps the control
connection it opened to O for as long as it holds the service socket; that is N's lease
on O. N holds it with its copy of the socket - the worker's listener in a single-worker
instance (protocol.py), the supervisor's copy with ``--workers N`` - and closes it with
that copy: when the process exits or dies, or when it begins to stop. O watches each
lease it handed out on a thread of its own (one per lease: joins are rare). When a lease
ends while O is paused (and not stopping) and it was the last one, no other process may
be accepting on the socket: O resumes accepting at once. The rule is "every lease O
handed out has ended", not "the latest one": while an instance still holds the socket
it may be accepting, and O stays as the deploy tool left it.

Promotion leaves a marker file, ``STATE_DIR/NAME.promoted``: a promoted instance that
restarts (the container's restart policy, after a crash) serves the service port by
itself - no deploy tool is there to tell it to join - binding it as soon as it is free.
"""

from __future__ import annotations

import concurrent.futures
import errno
import json
import logging
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from . import control
from .config import INSTANCE_NAME, Settings
from .control import OPS, Refused
from .listeners import (
    CANDIDATE,
    ROLES,
    SERVICE,
    adopt,
    bind,
    bind_when_free,
    check_listener,
    port_of,
)
from .protocol import HttpServer

log = logging.getLogger("deployer.serving")
T = TypeVar("T")

# How long a control request waits for the event loop, which a long run() call keeps
# busy (run() executes on the loop: app.py). Past this, the change is called off.
LOOP_TIMEOUT_S = 30.0
# How long a join waits for the other instance to share its listener.
SHARE_TIMEOUT_S = 10.0


class Lease:
    """Our end of the control connection an instance that joined from us keeps open."""

    def __init__(self, holder: str, sock: socket.socket):
        self.holder = holder
        self.sock = sock


class Instance(ABC):
    """The operations, on top of a few primitives a subclass provides. Called by the
    control thread, one request at a time, and by a lease's thread when it ends: the
    two take turns (``_lock``), so listener changes never interleave."""

    def __init__(self, settings: Settings):
        assert settings.instance, "an instance needs a name"
        self.settings = settings
        self.name = settings.instance
        self.leases: list[Lease] = []  # handed out by share(), in order; under _lock
        self.leases_ended = 0  # leases that ended since the last one was handed out
        self._lock = threading.Lock()

    # Primitives ------------------------------------------------------------------------------
    @abstractmethod
    def readiness(self) -> tuple[bool, bool]:
        """(init() finished everywhere, init() failed somewhere)."""

    @abstractmethod
    def stopping(self) -> bool:
        """A signal asked this instance to drain and exit."""

    @abstractmethod
    def held(self) -> dict[str, tuple[int, bool]]:
        """role -> (port, accepting) for each listener held."""

    @abstractmethod
    def service_fd(self) -> int | None:
        """A duplicate fd of the service listener (the caller closes it), if held."""

    @abstractmethod
    def add_service(self, sock: socket.socket, lease: socket.socket | None) -> None:
        """Hold ``sock`` as the service listener and accept from it, and ``lease`` (the
        connection to the instance ``sock`` came from) until this process's copy of
        ``sock`` is closed; owns both from the call on (closes them if it fails)."""

    @abstractmethod
    def set_accepting(self, role: str, accepting: bool) -> None: ...

    @abstractmethod
    def drop(self, role: str) -> None:
        """Stop accepting from the ``role`` listener and close every copy of it."""

    # Operations ------------------------------------------------------------------------------
    def handle(
        self, request: dict[str, Any], conn: socket.socket
    ) -> tuple[dict[str, Any], list[int]]:
        with self._lock:
            return self._handle(request, conn)

    def _handle(
        self, request: dict[str, Any], conn: socket.socket
    ) -> tuple[dict[str, Any], list[int]]:
        op = request.get("op")
        if op == "share":
            return self.share(_name_field(request, "holder"), conn)
        if op == "join":
            self.join(_name_field(request, "from"))
        elif op == "pause":
            self._require_service()
            if self.leases_ended and not self.leases:
                # The instance that joined died before the pause came: pausing now would
                # leave nobody accepting on the port.
                raise Refused("the instance that took a copy of the port's socket is gone")
            self.set_accepting(SERVICE, False)
            log.info("paused: not accepting on port %d", self.service_port())
        elif op == "resume":
            self._require_service()
            if self.stopping():
                raise Refused("the server is shutting down")
            self.set_accepting(SERVICE, True)
            log.info("resumed: accepting on port %d", self.service_port())
        elif op == "promote":
            self.promote()
        elif op != "status":
            raise Refused(f"unknown operation {op!r}; expected one of: {', '.join(OPS)}")
        return self.status(), []

    def status(self) -> dict[str, Any]:
        ready, failed = self.readiness()
        held = self.held()
        candidate = held.get(CANDIDATE)
        return {
            "ok": True,
            "instance": self.name,
            "pid": os.getpid(),
            "ready": ready,
            "failed": failed,
            "promoted": is_promoted(self.settings),
            "service_port": self.service_port(),
            "candidate_port": candidate[0] if candidate else None,
            "listeners": [
                {"port": held[role][0], "accepting": held[role][1]}
                for role in ROLES
                if role in held
            ],
            "leases": [lease.holder for lease in self.leases],
        }

    def service_port(self) -> int:
        service = self.held().get(SERVICE)
        return service[0] if service else self.settings.port

    def share(self, holder: str | None, conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
        """The service listener; with ``holder``, ``conn`` becomes that instance's lease."""
        try:
            fd = self.service_fd()
        except OSError as exc:  # closed under us: the instance is stopping
            raise Refused(
                f"cannot share the listener on port {self.settings.port}: {exc}"
            ) from None
        if fd is None:
            raise Refused(f"instance {self.name} holds no listener on port {self.settings.port}")
        port = self.service_port()
        if holder is not None:
            try:
                self._watch(Lease(holder, conn.dup()))
            except BaseException:
                os.close(fd)
                raise
            log.info("%s holds a lease on port %d", holder, port)
        return {"ok": True, "port": port}, [fd]

    def join(self, source: str | None) -> None:
        if SERVICE in self.held():
            return  # joined already: a retried request changes nothing
        ready, failed = self.readiness()
        if failed:
            raise Refused("init() failed: this instance cannot serve")
        if self.stopping():
            raise Refused("the server is shutting down")
        if not ready:
            raise Refused("init() has not finished")
        sock, lease = self._fetch(source) if source else (self._bind(), None)
        self.add_service(sock, lease)
        origin = f"the listener of instance {source}" if source else "a new socket"
        log.info("joined port %d (%s)", self.service_port(), origin)

    def promote(self) -> None:
        self._require_service()
        path = marker_path(self.settings)
        try:
            write_marker(path, {"instance": self.name, "port": self.service_port()})
        except OSError as exc:
            raise Refused(f"cannot write the promotion marker {path}: {exc}") from None
        log.info("promoted: %s written", path)
        candidate = self.held().get(CANDIDATE)
        if candidate is not None:
            self.drop(CANDIDATE)
            log.info("candidate port %d closed", candidate[0])

    def _require_service(self) -> None:
        if SERVICE not in self.held():
            raise Refused(f"not serving port {self.settings.port}: join first")

    def _fetch(self, source: str) -> tuple[socket.socket, socket.socket]:
        """The service listener of instance ``source``, over its control socket, and the
        lease on it (the connection, left open)."""
        if source == self.name:
            raise Refused("an instance cannot join from itself")
        try:
            reply, fds, lease = control.lease(source, self.name, SHARE_TIMEOUT_S)
        except control.Unreachable as exc:
            raise Refused(f"instance {source} does not answer: {exc.strerror}") from None
        except (OSError, ValueError) as exc:
            raise Refused(f"instance {source} gave no answer: {exc}") from None
        socks = [adopt(fd) for fd in fds]
        try:
            if reply.get("ok") is not True or len(socks) != 1:
                reason = reply.get("error") or "it sent no socket"
                raise Refused(f"instance {source} cannot share its listener: {reason}")
            sock = socks[0]
            check_listener(sock)
            port = port_of(sock)
            if self.settings.port not in (0, port):
                raise Refused(
                    f"instance {source} listens on port {port}, not on {self.settings.port}"
                )
        except BaseException as exc:
            lease.close()  # ends the lease, if the other side made one
            for each in socks:
                each.close()
            if isinstance(exc, ValueError):
                raise Refused(f"instance {source}: {exc}") from None
            raise
        return sock, lease

    # Leases handed out ------------------------------------------------------------------------
    def _watch(self, lease: Lease) -> None:
        """Hold ``lease`` (under _lock) and watch it on a thread of its own."""
        lease.sock.settimeout(None)
        thread = threading.Thread(
            target=self._wait_for_end, args=(lease,), name=f"lease-{lease.holder}", daemon=True
        )
        self.leases.append(lease)
        self.leases_ended = 0
        try:
            thread.start()
        except BaseException:
            self.leases.remove(lease)
            lease.sock.close()
            raise

    def _wait_for_end(self, lease: Lease) -> None:
        try:
            while lease.sock.recv(4096):  # the holder sends nothing; if it does, ignore it
                pass
        except OSError:
            pass  # reset: ended too
        try:
            self._lease_ended(lease)
        except Exception:  # the thread ends either way
            if self.stopping():  # our sockets closed under us: nothing to do anyway
                log.info("%s no longer holds a lease", lease.holder)
            else:
                log.error("handling the end of %s's lease failed", lease.holder, exc_info=True)

    def _lease_ended(self, lease: Lease) -> None:
        with self._lock:
            self.leases.remove(lease)
            self.leases_ended += 1
            lease.sock.close()
            service = None if self.stopping() else self.held().get(SERVICE)
            if service is None or service[1]:
                log.info("%s no longer holds a lease", lease.holder)
                return  # leaving, or accepting: nothing to take over
            port = service[0]
            if self.leases:
                log.info(
                    "%s is gone; still paused on port %d: %s hold a lease",
                    lease.holder,
                    port,
                    ", ".join(other.holder for other in self.leases),
                )
                return
            try:
                self.set_accepting(SERVICE, True)
            except Exception as exc:  # stopping meanwhile, or a loop too busy to answer
                log.error(
                    "%s is gone, but accepting on port %d again failed: %s",
                    lease.holder,
                    port,
                    exc,
                )
                return
            log.warning("%s is gone: accepting on port %d again", lease.holder, port)

    def _bind(self) -> socket.socket:
        host, port = self.settings.host, self.settings.port
        try:
            return bind(host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise Refused(f"port {port} is in use by another program") from None
            raise Refused(f"cannot listen on {host}:{port}: {exc.strerror}") from None


class LocalInstance(Instance):
    """An instance that is one process: changes go to its own event loop."""

    def __init__(self, settings: Settings, server: HttpServer):
        super().__init__(settings)
        self.server = server

    def readiness(self) -> tuple[bool, bool]:
        return self.server.app.ready, self.server.app.failed

    def stopping(self) -> bool:
        return self.server.closing

    def held(self) -> dict[str, tuple[int, bool]]:
        listeners = list(self.server.listeners.values())  # a snapshot: the loop may change it
        return {listener.role: (listener.port, listener.accepting) for listener in listeners}

    def service_fd(self) -> int | None:
        return self.server.dup_listener(SERVICE)

    def add_service(self, sock: socket.socket, lease: socket.socket | None) -> None:
        try:
            call_on_loop(self.server.loop, lambda: self.server.listen(SERVICE, sock, lease=lease))
        except BaseException:
            sock.close()
            if lease is not None:
                lease.close()
            raise

    def set_accepting(self, role: str, accepting: bool) -> None:
        change = self.server.resume if accepting else self.server.pause
        call_on_loop(self.server.loop, lambda: change(role))

    def drop(self, role: str) -> None:
        call_on_loop(self.server.loop, lambda: self.server.drop(role))


def _name_field(request: dict[str, Any], key: str) -> str | None:
    """The instance name in ``request[key]``, if any (Refused if it is not one)."""
    value = request.get(key)
    if value is not None and not (isinstance(value, str) and INSTANCE_NAME.fullmatch(value)):
        raise Refused(f"not an instance name: {value!r}")
    return value


def call_on_loop(loop: Any, fn: Callable[[], T], timeout: float = LOOP_TIMEOUT_S) -> T:
    """Run ``fn`` on the event loop and return its result, from another thread.

    If the loop doesn't get to it within ``timeout`` (it runs run() calls inline), the
    call is withdrawn and Refused is raised: then ``fn`` has not run and never will.
    ``fn`` must not block: once started it finishes in the same loop callback.
    """
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if done.set_running_or_notify_cancel():  # not withdrawn: commit to running it
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

    try:
        loop.call_soon_threadsafe(run)
    except RuntimeError:  # the loop is closed: the process is exiting
        raise Refused("the server is shutting down") from None
    finished, _ = concurrent.futures.wait([done], timeout)
    if not finished and done.cancel():
        raise Refused(
            f"the server's event loop did not get to it in {timeout:g} s (a long run() "
            "call?); nothing was changed"
        )
    return done.result()


# Promotion marker ------------------------------------------------------------------------------
def marker_path(settings: Settings) -> Path:
    return Path(settings.state_dir) / f"{settings.instance}.promoted"


def is_promoted(settings: Settings) -> bool:
    return bool(settings.instance) and marker_path(settings).exists()


def write_marker(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({**content, "pid": os.getpid(), "time": time.time()}) + "\n")
    os.replace(temporary, path)  # whole or absent, even after a crash


def initial_listeners(settings: Settings) -> dict[str, socket.socket]:
    """The listeners an instance starts with: the candidate port, or the service port
    (waiting for it to be free if this instance was promoted before a restart)."""
    host, port = settings.host, settings.port
    try:
        if is_promoted(settings):
            if settings.candidate_port is not None:
                log.info(
                    "instance %s was promoted (%s): serving port %d, not candidate port %d",
                    settings.instance,
                    marker_path(settings),
                    port,
                    settings.candidate_port,
                )
            return {SERVICE: bind_when_free(host, port)}
        if settings.candidate_port is not None:
            port = settings.candidate_port
            return {CANDIDATE: bind(host, port)}
        return {SERVICE: bind(host, port)}
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
