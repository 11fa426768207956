"""Entry point shared by ``python -m deployer.serving`` and ``deployer serve``."""

from __future__ import annotations

import json
import logging
import os
import sys

from .config import Settings, build_parser, parse_settings
from .control import ControlServer
from .handoff import server_token
from .instance import initial_listeners
from .listeners import adopt
from .logs import flush_logs, setup_logging
from .metrics import Metrics, attach
from .supervisor import WORKER_ENV, run_supervisor
from .worker import run_worker

log = logging.getLogger("deployer.serving")


def main(argv: list[str] | None = None, prog: str = "python -m deployer.serving") -> int:
    """Parse options (flags over environment) and serve until SIGTERM/SIGINT.

    Returns the exit status: 0 after a requested stop, 3 if the entry script failed
    to load or init(), 2 for bad usage (a missing entry script or model folder too), 1
    if a port or the control socket can't be opened. Must run on the main thread
    (signals). ``prog`` names the command in usage lines and errors.
    """
    try:
        settings = parse_settings(argv, parser=build_parser(prog))
    except SystemExit as exc:  # argparse's --help and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    if os.environ.get(WORKER_ENV) is None:  # a worker's supervisor has checked them
        problem = _unusable_paths(settings)
        if problem is not None:
            print(f"{prog}: error: {problem}", file=sys.stderr)
            return 2
    setup_logging()
    try:
        return _serve(settings)
    finally:
        flush_logs()


def _unusable_paths(settings: Settings) -> str | None:
    """Why the entry script or the model folder can't be used, checked before anything
    listens (a traceback after "listening on" helped nobody)."""
    script, model_dir = settings.entry_script, settings.model_dir
    if not os.path.isfile(script):
        what = "is a folder, not a file" if os.path.isdir(script) else "does not exist"
        return f"entry script {script} {what} (--entry-script, AZUREML_ENTRY_SCRIPT)"
    if not os.access(script, os.R_OK):
        return f"entry script {script} cannot be read: permission denied"
    if not os.path.isdir(model_dir):
        what = "is a file, not a folder" if os.path.isfile(model_dir) else "does not exist"
        return f"model folder {model_dir} {what} (--model-dir, AZUREML_MODEL_DIR)"
    if not os.access(model_dir, os.R_OK | os.X_OK):
        return f"model folder {model_dir} cannot be read: permission denied"
    return None


def _serve(settings: Settings) -> int:
    worker = os.environ.pop(WORKER_ENV, None)
    if worker:  # started by the supervisor with the sockets, the channel and the metrics
        spec = json.loads(worker)
        metrics = Metrics(
            attach(spec["metrics"], settings.workers), settings.workers, spec["index"]
        )
        listeners = {role: (adopt(fd), accepting) for role, fd, accepting in spec["listeners"]}
        token = server_token(spec["metrics"])
        return run_worker(
            settings, listeners, metrics, link=adopt(spec["link"]), handoff_token=token
        )

    control = None
    try:
        # The control socket first: a second server with the same name stops here.
        control = ControlServer(settings.instance) if settings.instance else None
        sockets = initial_listeners(settings)
    except OSError as exc:
        log.error("%s", exc.strerror or exc)
        if control is not None:
            control.close()
        return 1
    if settings.workers == 1:
        listeners = {role: (sock, True) for role, sock in sockets.items()}
        return run_worker(settings, listeners, Metrics(), control=control)
    return run_supervisor(settings, sockets, control)
