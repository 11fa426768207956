"""``--workers N`` (N > 1): listening sockets shared by N worker processes.

The supervisor binds the sockets and creates the shared metrics block, then starts
each worker as a fresh ``python -m deployer.serving`` (not a fork: the parent never
imports the user's script, and fresh interpreters avoid fork-with-threads hazards),
passing the file descriptors and one end of a channel (channel.py). The kernel spreads
connections over the workers.

With ``--instance`` the supervisor also owns the control socket and keeps its own copy
of every listener: it can share the service socket with another instance, and hand a
listener it receives to the workers over their channels. (Without it, the supervisor
closes its copies once the workers have them, as it has no use for them.) The supervisor
also holds the leases (instance.py), both those it hands out and the one it takes with
a listener from another instance; it ends the latter when it begins to stop, so that
instance, if paused, takes over at once instead of after the workers' drain.

If any worker exits (init() failed, or it crashed), the others are stopped and the
supervisor exits with that worker's status: a container with one worker fewer would
still pass its liveness probe, so it is better for the orchestrator to restart it
whole. SIGTERM/SIGINT is forwarded to every worker, which drains and exits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from . import metrics
from .channel import WorkerLink, broadcast, pair
from .config import Settings
from .control import ControlServer, Refused
from .instance import Instance
from .listeners import SERVICE, port_of
from .worker import DRAIN_S

log = logging.getLogger("deployer.serving")
# JSON: {"metrics": fd, "index": i, "link": fd, "listeners": [[role, fd, accepting], ...]}
WORKER_ENV = "_DEPLOYER_SERVING_WORKER"  # internal
_POLL_S = 0.1
# The directory holding the ``deployer`` package, so workers import this same code.
_CODE_ROOT = str(Path(__file__).resolve().parents[2])


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # killed by signal N -> 128+N


class SupervisedInstance(Instance):
    """An instance made of workers: the supervisor's copies, and changes broadcast."""

    def __init__(
        self, settings: Settings, sockets: dict[str, socket.socket], links: list[WorkerLink]
    ):
        super().__init__(settings)
        self.sockets = sockets
        self.accepting = dict.fromkeys(sockets, True)
        self.links = links
        self.lease: socket.socket | None = None  # on the instance the service socket came from
        self.signalled = False
        self._sockets_lock = threading.Lock()  # service_fd vs close_all

    def readiness(self) -> tuple[bool, bool]:
        links = self.links
        return all(link.ready for link in links), any(link.failed for link in links)

    def stopping(self) -> bool:
        return self.signalled

    def held(self) -> dict[str, tuple[int, bool]]:
        return {role: (port_of(sock), self.accepting[role]) for role, sock in self.sockets.items()}

    def service_fd(self) -> int | None:
        with self._sockets_lock:
            sock = self.sockets.get(SERVICE)
            return None if sock is None else os.dup(sock.fileno())

    def add_service(self, sock: socket.socket, lease: socket.socket | None) -> None:
        # Ours from here even if some worker fails to take it: the others may have.
        self.sockets[SERVICE] = sock
        self.lease = lease
        self.accepting[SERVICE] = True
        self._apply("listen", SERVICE, [sock.fileno()])

    def set_accepting(self, role: str, accepting: bool) -> None:
        self.accepting[role] = accepting
        self._apply("resume" if accepting else "pause", role)

    def drop(self, role: str) -> None:
        try:
            self._apply("drop", role)
        finally:
            with self._sockets_lock:
                self.sockets.pop(role).close()
                self.accepting.pop(role)
                if role == SERVICE:
                    self._end_lease()

    def close_all(self) -> None:
        with self._sockets_lock:
            for sock in self.sockets.values():
                sock.close()
            self._end_lease()

    def _end_lease(self) -> None:
        if self.lease is not None:
            self.lease.close()
            self.lease = None

    def _apply(self, op: str, role: str, fds: list[int] | None = None) -> None:
        errors = broadcast(self.links, op, role, fds or [])
        if errors:
            raise Refused("; ".join(errors))


def run_supervisor(
    settings: Settings, sockets: dict[str, socket.socket], control: ControlServer | None
) -> int:
    block, metrics_fd = metrics.shared_block(settings.workers)
    stop_requested: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_CODE_ROOT, env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "deployer.serving", *settings.to_argv()]
    workers: list[subprocess.Popen[bytes]] = []
    links: list[WorkerLink] = []
    listeners = [[role, sock.fileno(), True] for role, sock in sockets.items()]
    for index in range(settings.workers):
        ours, theirs = pair()
        spec: dict[str, Any] = {
            "metrics": metrics_fd,
            "index": index,
            "link": theirs.fileno(),
            "listeners": listeners,
        }
        env[WORKER_ENV] = json.dumps(spec)
        fds = (metrics_fd, theirs.fileno(), *(sock.fileno() for sock in sockets.values()))
        worker = subprocess.Popen(argv, env=env, pass_fds=fds)
        theirs.close()
        workers.append(worker)
        links.append(WorkerLink(ours, worker.pid))
    os.close(metrics_fd)
    ports = [port_of(sock) for sock in sockets.values()]
    instance = None
    if control is not None:
        instance = SupervisedInstance(settings, sockets, links)
        control.serve(instance)
    else:  # the workers hold them now; when the last one closes them, they are gone
        for sock in sockets.values():
            sock.close()
    log.info(
        "supervising %d workers on port %s: pids %s",
        len(workers),
        ", ".join(map(str, ports)),
        [w.pid for w in workers],
    )

    status = 0
    while not stop_requested:
        exited = [w for w in workers if w.poll() is not None]
        if exited:
            first = exited[0]
            status = _exit_status(first.returncode) or 1  # a worker must not stop by itself
            log.error(
                "worker pid %d exited with status %d; stopping the others",
                first.pid,
                first.returncode,
            )
            break
        time.sleep(_POLL_S)
    if stop_requested:
        log.info("signal %d: stopping %d workers", stop_requested[0], len(workers))
    if instance is not None:
        # No new changes; and our copies go now: queued connections are better refused at
        # once than left waiting for workers that no longer accept (if no one else holds
        # the sockets - a next version may, and then nothing is lost).
        instance.signalled = True
        if control is not None:
            control.close()
        instance.close_all()
    _stop_all(workers)
    if stop_requested:
        worst = max((_exit_status(w.returncode or 0) for w in workers), default=0)
        status = worst if worst not in (0, 128 + signal.SIGTERM) else 0
    for link in links:
        link.close()
    block.close()
    return status


def _stop_all(workers: list[subprocess.Popen[bytes]]) -> None:
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + DRAIN_S + 5
    for w in workers:
        try:
            w.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker pid %d did not stop in time; killing it", w.pid)
            w.kill()
            w.wait()
