"""Entry point shared by ``python -m deployer.serving`` and ``deployer serve``."""

from __future__ import annotations

import os
import socket

from .config import parse_settings
from .metrics import Metrics, attach
from .supervisor import WORKER_ENV, run_supervisor
from .worker import bind, run_worker


def main(argv: list[str] | None = None) -> int:
    """Parse options (flags over environment) and serve until SIGTERM/SIGINT.

    Returns the exit status: 0 after a requested stop, 3 if the entry script failed
    to load or init(), 2 for bad usage. Must run on the main thread (signals).
    """
    try:
        settings = parse_settings(argv)
    except SystemExit as exc:  # argparse's --help and usage errors
        return exc.code if isinstance(exc.code, int) else 2

    worker = os.environ.pop(WORKER_ENV, None)
    if worker:  # started by the supervisor with the shared socket and metrics block
        sock_fd, metrics_fd, index = (int(part) for part in worker.split(","))
        metrics = Metrics(attach(metrics_fd, settings.workers), settings.workers, index)
        return run_worker(settings, socket.socket(fileno=sock_fd), metrics)
    if settings.workers == 1:
        return run_worker(settings, bind(settings.host, settings.port), Metrics())
    return run_supervisor(settings)
