"""One serving process: import the script, init() it, serve until SIGTERM.

Two threads. The event loop runs on its own thread from the start: it answers ``GET /``
and ``GET /ready`` (503) while init() runs, which can take minutes, and the probes,
/metrics and errors at once while run() is busy. The main thread imports the script,
calls init(), then becomes the scoring thread (scoring.py), calling run() for each
/score request in turn: init() and run() share a thread, as under Azure ML's sync
worker, so thread-local state set up in init() (a TensorFlow default graph, PyTorch grad
mode, signal handlers) is still there in run(). ``/score`` and ``/swagger.json``
requests that arrive early wait for init() (as they would queue in Azure ML's listen
backlog).

The listening sockets come from outside (cli.py, or the supervisor): they may be shared
with other processes - the supervisor, the other workers, another version of the
service (listeners.py). On SIGTERM the worker closes only its own copies and drains
(protocol.py) for as long as the longest run() may take (config.drain_s). A single-
worker instance also serves the control socket (control.py) from here; a worker under a
supervisor takes its changes over a channel (channel.py) and hands connections to its
peers (handoff.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType

from . import channel
from .app import App
from .config import Settings, drain_s
from .control import ControlServer
from .deadline import Deadline
from .handoff import Handoff
from .instance import LocalInstance
from .logs import AccessLog, flush_logs
from .metrics import Metrics
from .protocol import HttpServer, Limits
from .scoring import ScoringThread
from .script import EntryScript, load
from .swagger import SwaggerDocs, app_root_for

log = logging.getLogger("deployer.serving")
INIT_FAILED = 3  # the status gunicorn and Azure ML use for a worker that failed to boot
RUN_STUCK = 4  # run() never returned from native code after its scoring timeout


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
    handoff_token: str | None = None,
) -> int:
    """Serve ``listeners`` (role -> (socket, accepting)) until told to stop; return the
    process exit status. ``control``: serve it (single-worker instance); ``link``: the
    channel from the supervisor; ``handoff_token``: hand connections to peer workers."""
    loop = new_loop()
    server = _http_server(settings, loop, metrics)
    app = server.app
    for role, (sock, accepting) in listeners.items():
        server.listen(role, sock, accepting)
        host, port = sock.getsockname()[:2]
        log.info("listening on http://%s:%s (%s, worker pid %d)", host, port, role, os.getpid())
    if settings.scoring_keys:
        log.info(
            "auth: key: /score and /swagger.json need 'Authorization: Bearer <key>' "
            "(%d key%s accepted)",
            len(settings.scoring_keys),
            "s" if len(settings.scoring_keys) > 1 else "",
        )
    handoff = None
    if handoff_token is not None and settings.workers > 1:
        handoff = Handoff(server, metrics, handoff_token, metrics.index)
        server.sharing = handoff
    scorer = ScoringThread(app, loop)
    serving = loop.create_task(server.serve_until_stopped(drain_s(settings.scoring_timeout_ms)))
    serving.add_done_callback(lambda _: scorer.stop())
    app.access_log.start(loop)
    stuck = threading.Event()
    signals = _Signals(server)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signals)
    if control is not None:
        control.serve(LocalInstance(settings, server))
    if link is not None:
        channel.serve_supervisor(link, server)
    loop_thread = threading.Thread(
        target=_run_loop, args=(loop, serving, stuck), name="event-loop", daemon=True
    )
    loop_thread.start()

    status, ready = _init(settings, signals)
    if ready is not None and not signals.received:
        script, swagger = ready
        app.deadline.start(
            on_timeout=lambda seq: _call(loop, app.expire, seq),
            on_stuck=lambda seq, seconds: _stuck(loop, app, server, stuck, seconds),
        )
        loop.call_soon_threadsafe(app.set_ready, script, swagger, scorer)
        log.info("ready: serving %s in %s mode", script.path, script.mode.value)
        if link is not None:
            channel.notify(link, "ready")
        scorer.serve()  # until the server has stopped
    else:
        loop.call_soon_threadsafe(app.set_failed)
        loop.call_soon_threadsafe(server.request_stop)
        if link is not None:
            channel.notify(link, "failed")
    loop_thread.join()
    if control is not None:
        control.close()
    if handoff is not None:
        handoff.close()
    app.deadline.stop()
    app.access_log.close()
    loop.close()
    return status


def _http_server(
    settings: Settings, loop: asyncio.AbstractEventLoop, metrics: Metrics
) -> HttpServer:
    deadline = Deadline(settings.scoring_timeout_ms)
    app = App(
        settings.max_request_bytes,
        settings.limit_concurrency,
        metrics,
        AccessLog(),
        deadline,
        scoring_keys=settings.scoring_keys,
    )
    limits = Limits(settings.max_request_bytes, settings.max_connections, settings.header_timeout_s)
    server = HttpServer(app, loop, limits)

    def publish() -> None:
        serving = app.ready and server.accepting
        held = len(server.connections) + server.setting_up if serving else math.inf
        metrics.publish(serving and not app.jobs, held)

    app.on_load_change = publish
    app.on_backlog = server.rebalance_soon
    return server


def _call(loop: asyncio.AbstractEventLoop, fn: Callable[[int], None], arg: int) -> None:
    loop.call_soon_threadsafe(fn, arg)


def _run_loop(
    loop: asyncio.AbstractEventLoop, serving: asyncio.Task[None], stuck: threading.Event
) -> None:
    asyncio.set_event_loop(loop)
    loop.run_until_complete(serving)
    if stuck.is_set():  # the scoring thread will never return: leave without it
        flush_logs()
        os._exit(RUN_STUCK)


def _stuck(
    loop: asyncio.AbstractEventLoop,
    app: App,
    server: HttpServer,
    stuck: threading.Event,
    seconds: float,
) -> None:
    """run() did not return at its timeout (watchdog thread): replace this worker."""
    log.error(
        "run() has been running for %.0f s, past its scoring timeout of %d ms, and cannot "
        "be interrupted (native code); this worker answers the requests waiting for it "
        "with 503, stops, and exits with status %d to be replaced",
        seconds,
        app.deadline.timeout_ms,
        RUN_STUCK,
    )
    stuck.set()

    def leave() -> None:
        app.abandon()
        server.request_stop()

    loop.call_soon_threadsafe(leave)


def _init(
    settings: Settings, signals: _Signals
) -> tuple[int, tuple[EntryScript, SwaggerDocs] | None]:
    """Load the script and init() it on this (the main) thread while the loop serves on
    its own. The exit status so far, and the script."""
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
