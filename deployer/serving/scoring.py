"""run() off the event loop: one scoring thread per worker, the thread init() ran on.

Why a thread, measured in benchmarks/README.md: while run() executes inline on the
event loop, nothing else is answered - not the liveness probe, not a scrape of
/metrics, not a request another worker could take. Here the loop (its own thread)
parses, answers the probes, accepts and hands connections on, and queues /score
requests for this thread, which calls run() for them one at a time, in arrival order:
Azure ML's semantics (one run() at a time per worker, on the thread that ran init(),
so thread-local state of TensorFlow or PyTorch set up in init() is still there). It is
the process's main thread, where signal handlers run: that is how a blocking call in
run() is cut short at the scoring timeout (deadline.py).

The price is a hand-off per request: a queue put, the thread's wake-up, and a wake-up
of the loop for the result (one for as many results as are ready by the time it runs).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from queue import SimpleQueue
from typing import TYPE_CHECKING

from .deadline import ScoringTimeout
from .request import Stream

if TYPE_CHECKING:
    from .app import App
    from .protocol import HttpProtocol
    from .request import Request, Response

log = logging.getLogger("deployer.serving")


class Job:
    """One /score request from the moment it is queued until it is answered."""

    __slots__ = ("answered", "conn", "ids", "moved", "req", "seq", "started")

    def __init__(self, req: Request, ids: list[bytes], conn: HttpProtocol):
        self.req = req
        self.ids = ids
        self.conn = conn
        self.seq = 0  # the deadline's id of its run() call, once it starts
        self.answered = False  # by the scoring thread's result, a timeout, or shutdown
        # Claimed under ScoringThread's lock, by one side only: the scoring thread starts
        # it, or the loop moves it to a peer before it starts.
        self.started = False
        self.moved = False


class ScoringThread:
    def __init__(self, app: App, loop: asyncio.AbstractEventLoop):
        self.app = app
        self.loop = loop
        self._queue: SimpleQueue[Job | None] = SimpleQueue()
        self._claims = threading.Lock()
        # Results for the loop: one wake-up for as many as pile up before it runs.
        self._done: deque[tuple[Job, Response | None]] = deque()
        self._wake_pending = False
        self._stopped = False

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def claim_for_move(self, job: Job) -> bool:
        """Take back a job that has not started, to hand it to a peer (the loop)."""
        with self._claims:
            if job.started:
                return False
            job.moved = True
            return True

    def stop(self) -> None:
        """Return from serve() after the current run(); jobs still queued are dropped (the
        server has stopped: their connections are closed). Any thread."""
        self._stopped = True
        self._queue.put(None)

    def serve(self) -> None:
        """Call run() for each job until stop() (on the thread that ran init())."""
        get, score, claims = self._queue.get, self.app.score, self._claims
        done, call, deliver = self._done.append, self.loop.call_soon_threadsafe, self._deliver
        while True:
            job = get()
            if job is None or self._stopped:
                return
            with claims:
                if job.moved:
                    continue
                job.started = True
            response: Response | None
            try:
                response = score(job)
            except ScoringTimeout:  # landed outside run(): the loop has answered already
                response = None
            except Exception:  # a bug of ours: the loop answers 500
                log.exception("scoring failed outside run()")
                response = None
            if response is not None and type(response[2]) is Stream:
                self._stream(job, response)
                continue
            done((job, response))
            if not self._wake_pending:
                self._wake_pending = True
                call(deliver)

    def _stream(self, job: Job, response: Response) -> None:
        """Send a streamed answer as it is produced: the script's generator runs here, on
        the scoring thread, as it would in Azure ML's worker; run() calls wait behind it."""
        status, lines, stream = response
        assert type(stream) is Stream
        call, conn, req = self.loop.call_soon_threadsafe, job.conn, job.req
        call(self.app.begin_stream, job, (status, lines, stream))
        complete = False
        try:
            if stream.first is not None:
                chunks = itertools.chain((stream.first,), stream.chunks)
                for chunk in chunks:
                    stream.writable.wait()
                    if stream.gone:
                        break
                    call(conn.stream_chunk, req, bytes(chunk))
                else:
                    complete = True
            else:
                complete = True
        except Exception:
            log.exception("the streamed response raised: the answer is cut short")
        finally:
            try:
                stream.close()
            except Exception:
                log.exception("closing the streamed response failed")
            call(self.app.end_stream, job, complete)

    def _deliver(self) -> None:
        """Hand the results to the app (on the loop). The flag is cleared first: a result
        added after that schedules another call."""
        self._wake_pending = False
        done, finish = self._done, self.app.finish
        while done:
            finish(*done.popleft())
