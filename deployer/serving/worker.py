"""One serving process: import the script, init() it, serve until SIGTERM.

init() and run() both execute on the main thread, as under Azure ML's sync worker:
thread-local state set up in init() (a TensorFlow default graph, PyTorch grad mode,
signal handlers) is still there in run(). Yet the worker must answer ``GET /`` and
``GET /ready`` (503) while init() runs, which can take minutes. So during startup the
event loop runs on a helper thread while the main thread imports the script and
calls init(); then the loop is stopped there and resumed on the main thread, where
run() is called inline. Connections, tasks and the listening socket live in the loop
object, not the thread, so they carry over. ``/score`` requests that arrive early
wait for init() (as they would queue in Azure ML's listen backlog).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from types import FrameType

from .app import App
from .config import Settings
from .deadline import Deadline
from .logs import AccessLog, setup_logging
from .metrics import Metrics
from .protocol import HttpServer
from .script import EntryScript, load
from .swagger import SwaggerDocs, app_root_for

log = logging.getLogger("deployer.serving")
INIT_FAILED = 3  # the status gunicorn and Azure ML use for a worker that failed to boot
# Requests in progress get this long to finish after SIGTERM (Kubernetes' default grace
# period is 30 s; it sends SIGKILL after that anyway).
DRAIN_S = 25


class _Terminated(BaseException):
    """SIGTERM/SIGINT arrived while the script was loading or in init()."""


class _Signals:
    def __init__(self, server: HttpServer):
        self.server = server
        self.starting = False
        self.received = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        if self.starting:  # nothing to drain yet: abandon init()
            self.starting = False
            raise _Terminated
        # Runs on the main thread between bytecodes - maybe inside run(); only schedule.
        self.server.loop.call_soon_threadsafe(self.server.request_stop)


def new_loop() -> asyncio.AbstractEventLoop:
    # The stdlib loop, not uvloop: with protocol.py answering inside data_received, the
    # loop's own overhead is small next to the kernel's; measured with wrk on the
    # example model, uvloop gave the same requests/s (+-3%) at 16-256 connections and
    # a worse p99 at 64 (10 ms vs 7 ms). One dependency fewer in the image.
    return asyncio.new_event_loop()


def bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)  # listen now: connections made during startup queue, not fail
    return sock


def run_worker(settings: Settings, sock: socket.socket, metrics: Metrics) -> int:
    """Serve ``sock`` until told to stop; return the process exit status."""
    logs = setup_logging()
    loop = new_loop()
    access_log = AccessLog()
    deadline = Deadline(settings.scoring_timeout_ms)
    app = App(settings.max_request_bytes, metrics, access_log, deadline)
    server = HttpServer(app, loop, settings.max_request_bytes)
    loop.run_until_complete(server.start(sock))
    serving = loop.create_task(server.serve_until_stopped(DRAIN_S))
    access_log.start(loop)
    signals = _Signals(server)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signals)
    host, port = sock.getsockname()[:2]
    log.info("listening on http://%s:%s (worker pid %d)", host, port, os.getpid())

    helper = threading.Thread(target=loop.run_forever, name="startup-loop", daemon=True)
    helper.start()
    status, ready = 0, None
    try:
        try:
            signals.starting = True
            ready = _start_script(settings)
        finally:  # from here on a signal asks for a graceful stop instead of raising
            signals.starting = False
    except _Terminated:
        log.info("stopped by a signal before init() finished")
    except BaseException:
        # The deploy shows this: the script's own traceback, on stderr.
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        log.error("the entry script failed to load or init(); exiting")
        status = INIT_FAILED
    loop.call_soon_threadsafe(loop.stop)
    helper.join()

    if ready is not None and not signals.received:
        app.set_ready(*ready)
        deadline.start()
        log.info("ready: serving %s in %s mode", ready[0].path, ready[0].mode.value)
    else:
        app.set_failed()
        server.request_stop()
    try:
        loop.run_until_complete(serving)
    finally:
        deadline.stop()
        access_log.close()
        loop.close()
        logs.stop()
    return status


def _start_script(settings: Settings) -> tuple[EntryScript, SwaggerDocs]:
    os.environ["AZUREML_MODEL_DIR"] = settings.model_dir
    started = time.perf_counter()
    script = load(settings.entry_script)
    script.init()
    swagger = SwaggerDocs(script.run, app_root_for(script.path, os.environ), os.environ)
    log.info("init() finished in %.3f s", time.perf_counter() - started)
    # Everything loaded so far (modules, the model) lives until exit: move it out of the
    # cyclic GC's reach, so the periodic full collections stay short (p99 latency).
    gc.collect()
    gc.freeze()
    return script, swagger
