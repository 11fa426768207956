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

The listening sockets come from outside (cli.py, or the supervisor): they may be shared
with other processes - the supervisor, the other workers, another version of the
service (listeners.py). On SIGTERM the worker closes only its own copies and drains
(protocol.py). A single-worker instance also serves the control socket (control.py)
from here; a worker under a supervisor takes its changes over a channel (channel.py).
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

from . import channel
from .app import App
from .config import Settings
from .control import ControlServer
from .deadline import Deadline
from .instance import LocalInstance
from .logs import AccessLog
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


def run_worker(
    settings: Settings,
    listeners: dict[str, tuple[socket.socket, bool]],
    metrics: Metrics,
    *,
    control: ControlServer | None = None,
    link: socket.socket | None = None,
) -> int:
    """Serve ``listeners`` (role -> (socket, accepting)) until told to stop; return the
    process exit status. ``control``: serve it (single-worker instance); ``link``: the
    channel from the supervisor."""
    loop = new_loop()
    access_log = AccessLog()
    deadline = Deadline(settings.scoring_timeout_ms)
    app = App(settings.max_request_bytes, metrics, access_log, deadline)
    server = HttpServer(app, loop, settings.max_request_bytes)
    for role, (sock, accepting) in listeners.items():
        server.listen(role, sock, accepting)
        host, port = sock.getsockname()[:2]
        log.info("listening on http://%s:%s (%s, worker pid %d)", host, port, role, os.getpid())
    serving = loop.create_task(server.serve_until_stopped(DRAIN_S))
    access_log.start(loop)
    signals = _Signals(server)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signals)
    if control is not None:
        control.serve(LocalInstance(settings, server))
    if link is not None:
        channel.serve_supervisor(link, server)

    status, ready = _init_while_serving(settings, loop, signals)
    if ready is not None and not signals.received:
        app.set_ready(*ready)
        deadline.start()
        log.info("ready: serving %s in %s mode", ready[0].path, ready[0].mode.value)
    else:
        app.set_failed()
        server.request_stop()
    if link is not None:
        channel.notify(link, "ready" if app.ready else "failed")
    try:
        loop.run_until_complete(serving)
    finally:
        if control is not None:
            control.close()
        deadline.stop()
        access_log.close()
        loop.close()
    return status


def _init_while_serving(
    settings: Settings, loop: asyncio.AbstractEventLoop, signals: _Signals
) -> tuple[int, tuple[EntryScript, SwaggerDocs] | None]:
    """Load the script and init() it on this (the main) thread while the loop serves on
    a helper thread; then stop the loop there. The exit status so far, and the script."""
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
    return status, ready


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
