"""``--workers N`` (N > 1): listening sockets shared by N worker processes.

The supervisor binds the sockets and creates the shared metrics block, then starts
each worker as a fresh ``python -m deployer.serving`` (not a fork: the parent never
imports the user's script, and fresh interpreters avoid fork-with-threads hazards),
passing the file descriptors and one end of a channel (channel.py). The kernel spreads
connections over the workers.

The supervisor keeps its own copy of every listener for as long as it runs: to give it
to a worker it starts again (below), and, with ``--instance``, because it also owns the
control socket: it can share the service socket with another instance, and hand a
listener it receives to the workers over their channels. The supervisor also holds the
leases (instance.py), both those it hands out and the one it takes with a listener from
another instance; it ends the latter when it begins to stop, so that instance, if
paused, takes over at once instead of after the workers' drain.

A worker that dies once it is ready - it crashed, called ``os._exit``, was killed (the
OOM killer's SIGKILL), or exited for any reason while the supervisor is not stopping -
is started again in its place (same index, same metrics row), as uvicorn's and
gunicorn's supervisors do: only the requests it was answering are lost, while the
others keep serving and the sockets keep queueing connections. (Stopping everything
instead, for the orchestrator to restart the container, would cut every worker's
requests and refuse connections until the container is back.) The new worker gets the
listeners the supervisor holds at that moment, accepting or paused as they are, and a
new channel; a change on the control socket and a restart take turns
(``SupervisedInstance.changes``), so it misses no change. Each death and restart is
logged (``worker I (pid P) was killed by signal SIGKILL; restarting it``, then
``worker I restarted: pid Q (was pid P)``) and counted (metrics.py).

The supervisor stops the others and exits instead - the orchestrator then restarts the
container whole, and shows it - in two cases:

* init() failed: a worker exits with status 3 (worker.INIT_FAILED) before it was ready.
  An entry script that cannot init will not get better by trying again; the supervisor
  exits 3, as gunicorn and Azure ML's server do.
* A crash loop: more than MAX_RESTARTS workers died within RESTART_WINDOW_S (exit 1). So
  a loop does not spin meanwhile, a worker that dies within QUICK_DEATH_S of its start
  is started again only after RESTART_BACKOFF_S.

SIGTERM/SIGINT is forwarded to every worker, which drains and exits; a restart not done
yet is called off, and a worker still starting is stopped with the others.
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
from collections import deque
from pathlib import Path
from types import FrameType
from typing import Any

from . import metrics
from .channel import WorkerLink, broadcast, pair
from .config import Settings, drain_s
from .control import ControlServer, Refused
from .instance import Instance
from .listeners import SERVICE, port_of
from .worker import INIT_FAILED

log = logging.getLogger("deployer.serving")
# JSON: {"metrics": fd, "index": i, "link": fd, "listeners": [[role, fd, accepting], ...]}
# (made in one place: _Supervisor._start_worker)
WORKER_ENV = "_DEPLOYER_SERVING_WORKER"  # internal
# A crash loop: when more than MAX_RESTARTS workers die within RESTART_WINDOW_S, the
# supervisor gives up (exit 1) and leaves it to the orchestrator, whose restarts show.
# One death every 12 s on average is more than a bug hit now and then, and 6 deaths of
# a fast-crashing worker take a few seconds (the backoff below), not minutes.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
# A worker that dies this soon after its start waits RESTART_BACKOFF_S before it starts
# again: at most one start per second and slot, however fast it crashes.
QUICK_DEATH_S = 5.0
RESTART_BACKOFF_S = 1.0
# A worker whose channel ended has exited, or is about to be: how long to wait for that.
_EXIT_WAIT_S = 1.0
_POLL_S = 0.1
# The directory holding the ``deployer`` package, so workers import this same code.
_CODE_ROOT = str(Path(__file__).resolve().parents[2])


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # killed by signal N -> 128+N


def _cause(returncode: int) -> str:
    """How a process ended, for the log: ``exited with status N``, ``was killed by
    signal SIGKILL``."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    return f"was killed by signal {_signal_name(-returncode)}"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


class _Worker:
    """One worker process in slot ``index`` (its metrics row); a restart puts a new one
    in the slot."""

    def __init__(self, index: int, proc: subprocess.Popen[bytes], link: WorkerLink):
        self.index = index
        self.proc = proc
        self.link = link
        self.pid = proc.pid
        self.started = time.monotonic()

    def exited(self) -> bool:
        """The process has exited (waiting briefly: its channel ends just before)."""
        try:
            self.proc.wait(timeout=_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            return False
        return True


class SupervisedInstance(Instance):
    """An instance made of workers: the supervisor's copies, and changes broadcast."""

    def __init__(
        self, settings: Settings, sockets: dict[str, socket.socket], workers: list[_Worker]
    ):
        super().__init__(settings)
        self.sockets = sockets
        self.accepting = dict.fromkeys(sockets, True)
        self.workers = workers  # the supervisor's list: a restart replaces an item
        self.lease: socket.socket | None = None  # on the instance the service socket came from
        self.signalled = False
        # Held while the listeners change and the workers are told, and while a worker is
        # started (with the listeners as they are then): it gets every change either way.
        self.changes = threading.Lock()
        self._sockets_lock = threading.Lock()  # service_fd vs close_all

    @property
    def links(self) -> list[WorkerLink]:
        return [worker.link for worker in self.workers]

    def listeners(self) -> list[tuple[str, socket.socket, bool]]:
        """(role, socket, accepting) for each listener held (call with ``changes`` held)."""
        return [(role, sock, self.accepting[role]) for role, sock in self.sockets.items()]

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
        with self.changes:
            # Ours from here even if some worker fails to take it: the others may have.
            self.sockets[SERVICE] = sock
            self.lease = lease
            self.accepting[SERVICE] = True
            self._apply("listen", SERVICE, [sock.fileno()])

    def set_accepting(self, role: str, accepting: bool) -> None:
        with self.changes:
            self.accepting[role] = accepting
            self._apply("resume" if accepting else "pause", role)

    def drop(self, role: str) -> None:
        with self.changes:
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
        """Send the change to every worker, then collect the answers (under ``changes``).
        A worker that died meanwhile is no error, unless we are stopping: the one started
        in its place gets the listeners as they are after the change."""
        by_link = {worker.link: worker for worker in self.workers}
        errors = broadcast(
            list(by_link),
            op,
            role,
            fds or [],
            excused=lambda link: not self.signalled and by_link[link].exited(),
        )
        if errors:
            raise Refused("; ".join(errors))


def run_supervisor(
    settings: Settings, sockets: dict[str, socket.socket], control: ControlServer | None
) -> int:
    return _Supervisor(settings, sockets, control).run()


class _Supervisor:
    def __init__(
        self, settings: Settings, sockets: dict[str, socket.socket], control: ControlServer | None
    ):
        self.settings = settings
        self.sockets = sockets  # our copies, until we stop (the instance's, with one)
        self.control = control
        self.instance: SupervisedInstance | None = None
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [_CODE_ROOT, self.env.get("PYTHONPATH")])
        )
        self.argv = [sys.executable, "-m", "deployer.serving", *settings.to_argv()]
        self.workers: list[_Worker] = []  # by index
        self.due: dict[int, float] = {}  # index -> when to start it again (it died)
        self.deaths: deque[float] = deque()  # when workers died, in the last RESTART_WINDOW_S
        self.signals: list[int] = []
        self.block, self.metrics_fd = metrics.shared_block(settings.workers)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        try:
            return self._supervise()
        finally:
            for worker in self.workers:
                worker.link.close()
            self.block.close()
            os.close(self.metrics_fd)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)

    def _supervise(self) -> int:
        for index in range(self.settings.workers):
            self.workers.append(self._start_worker(index))
        if self.control is not None:
            self.instance = SupervisedInstance(self.settings, self.sockets, self.workers)
            self.control.serve(self.instance)
        log.info(
            "supervising %d workers on port %s: pids %s",
            len(self.workers),
            ", ".join(str(port_of(sock)) for sock in self.sockets.values()),
            [worker.pid for worker in self.workers],
        )

        status = None
        while status is None and not self.signals:
            time.sleep(_POLL_S)
            status = self._check()
        current = [worker for worker in self.workers if worker.index not in self.due]
        if status is None:
            log.info("signal %s: stopping %d workers", _signal_name(self.signals[0]), len(current))
        self._close_listeners()
        returncodes = _stop_all(
            [worker.proc for worker in current], drain_s(self.settings.scoring_timeout_ms)
        )
        if status is None:
            worst = max(map(_exit_status, returncodes), default=0)
            status = worst if worst not in (0, 128 + signal.SIGTERM) else 0
        return status

    def _start_worker(self, index: int) -> _Worker:
        """Start worker ``index`` with the listeners held now (the caller holds the
        instance's ``changes``, if any). The one place a worker's spec is made: first
        starts and restarts alike."""
        fds: list[int] = []

        def passed(fd: int) -> int:  # a descriptor the worker inherits
            fds.append(fd)
            return fd

        ours, theirs = pair()
        try:
            spec: dict[str, Any] = {
                "metrics": passed(self.metrics_fd),
                "index": index,
                "link": passed(theirs.fileno()),
                "listeners": [
                    [role, passed(sock.fileno()), accepting]
                    for role, sock, accepting in self._listeners()
                ],
            }
            env = {**self.env, WORKER_ENV: json.dumps(spec)}
            proc = subprocess.Popen(self.argv, env=env, pass_fds=fds)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return _Worker(index, proc, WorkerLink(ours, proc.pid))

    def _listeners(self) -> list[tuple[str, socket.socket, bool]]:
        if self.instance is not None:
            return self.instance.listeners()
        return [(role, sock, True) for role, sock in self.sockets.items()]

    def _check(self) -> int | None:
        """Notice the workers that died and start those that are due again; the exit
        status if the supervisor must give up."""
        now = time.monotonic()
        for worker in self.workers:
            if worker.index not in self.due and worker.proc.poll() is not None:
                status = self._died(worker, worker.proc.returncode, now)
                if status is not None:
                    return status
        return self._restart_due(now)

    def _died(self, worker: _Worker, returncode: int, now: float) -> int | None:
        what = f"worker {worker.index} (pid {worker.pid}) {_cause(returncode)}"
        if returncode == INIT_FAILED and not worker.link.ready:
            log.error("%s before it was ready (init() failed); stopping the others", what)
            return INIT_FAILED
        self.deaths.append(now)
        while self.deaths[0] <= now - RESTART_WINDOW_S:
            self.deaths.popleft()
        if len(self.deaths) > MAX_RESTARTS:
            log.error(
                "%s; giving up: %d workers died within %g s, more than the %d restarts "
                "allowed (a crash loop); stopping the others",
                what,
                len(self.deaths),
                RESTART_WINDOW_S,
                MAX_RESTARTS,
            )
            return 1
        delay = RESTART_BACKOFF_S if now - worker.started < QUICK_DEATH_S else 0.0
        log.error("%s; restarting it%s", what, f" in {delay:g} s" if delay else "")
        self.due[worker.index] = now + delay
        return None

    def _restart_due(self, now: float) -> int | None:
        for index, when in list(self.due.items()):
            if when > now:
                continue
            changes = self.instance.changes if self.instance is not None else None
            if changes is not None and not changes.acquire(blocking=False):
                return None  # a change is being made: start the worker after it, not block
            try:
                metrics.worker_replaced(self.block, index)
                old = self.workers[index]
                try:
                    self.workers[index] = new = self._start_worker(index)
                except OSError as exc:
                    log.error("cannot start worker %d again: %s; stopping the others", index, exc)
                    return 1
            finally:
                if changes is not None:
                    changes.release()
            old.link.close()
            del self.due[index]
            log.info("worker %d restarted: pid %d (was pid %d)", index, new.pid, old.pid)
        return None

    def _close_listeners(self) -> None:
        # No new changes; and our copies go now: queued connections are better refused at
        # once than left waiting for workers that no longer accept (if no one else holds
        # the sockets - a next version may, and then nothing is lost).
        if self.instance is not None:
            self.instance.signalled = True
        if self.control is not None:
            self.control.close()
        if self.instance is not None:
            self.instance.close_all()
        else:
            for sock in self.sockets.values():
                sock.close()


def _stop_all(procs: list[subprocess.Popen[bytes]], drain: float) -> list[int]:
    """SIGTERM each worker still running, and wait for all; their return codes."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + drain + 5
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker pid %d did not stop in time; killing it", proc.pid)
            proc.kill()
            proc.wait()
    return [proc.returncode for proc in procs]
