"""``--workers N`` (N > 1): one listening socket shared by N worker processes.

The supervisor binds the socket and creates the shared metrics block, then starts
each worker as a fresh ``python -m deployer.serving`` (not a fork: the parent never
imports the user's script, and fresh interpreters avoid fork-with-threads hazards),
passing both file descriptors. The kernel spreads connections over the workers.

If any worker exits (init() failed, or it crashed), the others are stopped and the
supervisor exits with that worker's status: a container with one worker fewer would
still pass its liveness probe, so it is better for the orchestrator to restart it
whole. SIGTERM/SIGINT is forwarded to every worker, which drains and exits.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from . import metrics
from .config import Settings
from .logs import setup_logging
from .worker import DRAIN_S, bind

log = logging.getLogger("deployer.serving")
WORKER_ENV = "_DEPLOYER_SERVING_WORKER"  # "socket fd,metrics fd,index", internal
_POLL_S = 0.1
# The directory holding the ``deployer`` package, so workers import this same code.
_CODE_ROOT = str(Path(__file__).resolve().parents[2])


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # killed by signal N -> 128+N


def run_supervisor(settings: Settings) -> int:
    logs = setup_logging()
    sock = bind(settings.host, settings.port)
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
    for index in range(settings.workers):
        env[WORKER_ENV] = f"{sock.fileno()},{metrics_fd},{index}"
        workers.append(subprocess.Popen(argv, env=env, pass_fds=(sock.fileno(), metrics_fd)))
    port = sock.getsockname()[1]
    sock.close()  # the workers hold it now; when the last one closes it, it is gone
    os.close(metrics_fd)
    log.info(
        "supervising %d workers on port %d: pids %s", len(workers), port, [w.pid for w in workers]
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
    _stop_all(workers)
    if stop_requested:
        worst = max((_exit_status(w.returncode or 0) for w in workers), default=0)
        status = worst if worst not in (0, 128 + signal.SIGTERM) else 0
    block.close()
    logs.stop()
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
