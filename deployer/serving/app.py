"""Request handling: ``/score`` and the small endpoints around it.

Status codes, bodies and headers follow azureml-inference-server-http 1.5.1 (its
routes.py and input_parsers.py; tests/serving/test_compat.py checks them side by side).
Handlers are plain functions returning ``(status, header lines, body)``: protocol.py calls
them synchronously and writes the answer at once. Constant header lines are bytes
prepared at import.

Where each request is answered: the probes (``/``, ``/ready``, ``/metrics``) and
every error decided before run() at once, on the event loop; ``/score`` on the worker's
scoring thread (scoring.py explains why, and what it costs), in arrival order, one
run() at a time; ``/swagger.json`` and ``/score`` that arrive during init() wait for it.
A worker holds at most ``limit_concurrency`` /score requests (running and waiting);
past that, 503 with Retry-After at once, as uvicorn's ``limit_concurrency`` does.

With scoring keys (config.py: ``DEPLOYER_SCORING_KEY``, ``..._SECONDARY``), ``/score`` and
``/swagger.json`` need ``Authorization: Bearer <key>``, checked before anything else
(before waiting for init()); the probes stay open. Without keys the check costs one
attribute test.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from .deadline import Deadline
from .invocation import (
    FAILED,
    HTML,
    JSON,
    MSG_INTERNAL,
    MSG_NOT_ALLOWED,
    NO_RUN,
    NOT_FAILED,
    Invocation,
    RequestIds,
    message,
)
from .logs import AccessLog
from .metrics import Metrics
from .request import Request, Response
from .scoring import Job, ScoringThread
from .script import EntryScript
from .swagger import SwaggerDocs

if TYPE_CHECKING:
    from .protocol import HttpProtocol

log = logging.getLogger("deployer.serving")
_perf = time.perf_counter
_now = time.time

TEXT = b"content-type: text/plain; charset=utf-8\r\n"
PROMETHEUS = b"content-type: text/plain; version=0.0.4; charset=utf-8\r\n"
ALLOW = b"allow: HEAD, OPTIONS, GET\r\n"
RETRY = b"retry-after: 1\r\n"
_OTHER_PATHS = frozenset({"/", "/ready", "/metrics", "/swagger.json"})
# A missing or wrong key, answered as Azure ML's key-authenticated online endpoints answer
# it: 401 with the plain-text reason key_auth_access_denied (the body users report from
# them: MicrosoftDocs/azure-docs issue #98265, "Error connecting to end point
# key_auth_access_denied"; 401 "Unauthorized" in how-to-troubleshoot-online-endpoints.md's
# status code table). Azure's own challenge header is not documented; this one is RFC
# 6750 section 3's: "Bearer" when no key came, with error="invalid_token" for a wrong one.
UNAUTHORIZED_BODY = b"key_auth_access_denied"
CHALLENGE_MISSING = b"www-authenticate: Bearer\r\n"
CHALLENGE_INVALID = b'www-authenticate: Bearer error="invalid_token"\r\n'

MSG_NOT_FOUND = (
    "The requested URL was not found on the server. If you entered the URL "
    "manually please check your spelling and try again."
)
MSG_STARTING = "The server is starting: init() has not finished."
MSG_FAILED = "The server is not serving: init() failed or it is shutting down."
MSG_STUCK = "The worker holding this request is being replaced: run() is stuck."


class App:
    def __init__(
        self,
        max_request_bytes: int,
        limit_concurrency: int,
        metrics: Metrics,
        access_log: AccessLog,
        deadline: Deadline,
        *,
        scoring_keys: tuple[str, ...] = (),
    ):
        # SHA-256 of each key: comparing digests takes the same time whatever the length
        # of the key sent, and the keys themselves are not kept on the App.
        self.key_digests = tuple(hashlib.sha256(k.encode()).digest() for k in scoring_keys)
        self.max_bytes = max_request_bytes
        self.limit = limit_concurrency
        self.metrics = metrics
        self.access_log = access_log
        self.deadline = deadline
        self.ready = False
        self.failed = False
        self._state_changed = asyncio.Event()
        self.scorer: ScoringThread | None = None
        self.jobs: list[Job] = []  # /score requests held, oldest first (the running one first)
        self.current: Job | None = None  # the job in run(), set by the scoring thread
        self.on_load_change: Callable[[], None] = lambda: None  # became idle or busy
        self.on_backlog: Callable[[], None] = lambda: None  # a job waits behind another
        self._waiting_for_init: set[asyncio.Task[None]] = set()
        self.script: EntryScript | None = None
        self.swagger: SwaggerDocs | None = None
        self.invocation: Invocation | None = None
        self.ids = RequestIds(str(uuid.uuid4())[:24].encode())
        self._busy_body = message(
            f"The server is busy: {limit_concurrency} requests are waiting for run() already. "
            "Retry later."
        )

    # Lifecycle (worker.py; on the loop) ---------------------------------------------------
    def set_ready(self, script: EntryScript, swagger: SwaggerDocs, scorer: ScoringThread) -> None:
        self.script, self.swagger, self.scorer = script, swagger, scorer
        self.invocation = Invocation(script, self.deadline)
        self.ready = True
        self._state_changed.set()
        self.on_load_change()

    def set_failed(self) -> None:
        self.failed = True
        self._state_changed.set()
        self.on_load_change()

    def running_for(self) -> float:
        """Seconds the current run() has been executing; 0.0 between calls (any thread)."""
        started = self.deadline.started
        return _perf() - started if started else 0.0

    @property
    def idle(self) -> bool:
        """Ready and nothing to score: a /score request now would start at once."""
        return self.ready and not self.jobs

    # Entry points (protocol.py; on the loop) ---------------------------------------------------
    def handle(self, req: Request, conn: HttpProtocol) -> Response | None:
        """The answer, or None when it comes later, through ``conn.answer``: /score (from
        the scoring thread), and /swagger.json or /score during init()."""
        ids, too_long = self.ids.lines(req)
        if too_long is not None:
            return 431, [JSON, NOT_FAILED, *ids], message(too_long)
        path = req.path
        if path in {"/score", "/swagger.json"}:
            if self.key_digests:
                challenge = self._refused(req)
                if challenge is not None:
                    return 401, [TEXT, challenge, *ids], UNAUTHORIZED_BODY
            if not self.ready:
                if self.failed:
                    return self._not_serving(ids)
                task = asyncio.get_running_loop().create_task(self._when_ready(req, conn))
                self._waiting_for_init.add(task)
                task.add_done_callback(self._waiting_for_init.discard)
                return None
            if path == "/score":
                return self._queue(req, ids, conn)
        return self._other(req, ids)

    def _refused(self, req: Request) -> bytes | None:
        """None if ``req`` carries one of the keys; else the challenge line to answer 401
        with. Every key is compared, in constant time, whichever matches."""
        header = req.authorization
        if header is None:
            return CHALLENGE_MISSING
        scheme, _, token = header.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return CHALLENGE_MISSING  # another scheme: no bearer key came
        digest = hashlib.sha256(token.strip()).digest()
        matched = False
        for key in self.key_digests:
            matched |= hmac.compare_digest(digest, key)
        return None if matched else CHALLENGE_INVALID

    def _queue(self, req: Request, ids: list[bytes], conn: HttpProtocol) -> Response | None:
        if len(self.jobs) >= self.limit:
            return 503, [JSON, NOT_FAILED, NO_RUN, RETRY, *ids], self._busy_body
        assert self.scorer is not None
        job = Job(req, ids, conn)
        self.jobs.append(job)
        if len(self.jobs) == 1:
            self.on_load_change()
        elif len(self.jobs) == 2:
            self.on_backlog()
        self.scorer.submit(job)
        return None

    def take_back(self) -> Job | None:
        """The newest job that has not started and whose connection a peer could take,
        withdrawn from the scoring thread; None if there is none (on the loop)."""
        assert self.scorer is not None
        for job in reversed(self.jobs[1:]):  # the first has started, or is about to
            if job.conn.movable(job.req) and self.scorer.claim_for_move(job):
                self.jobs.remove(job)
                return job
        return None

    def resubmit(self, job: Job) -> None:
        """A job taken back that could not be moved after all: queue it again."""
        fresh = self._queue(job.req, job.ids, job.conn)
        if fresh is not None:  # over the limit meanwhile
            job.conn.answer(job.req, fresh)

    async def _when_ready(self, req: Request, conn: HttpProtocol) -> None:
        if not self.ready and not self.failed:
            # As long as a request may wait for run(), it may wait for init().
            timeout = self.deadline.timeout_s or None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), timeout)
        response = self.handle(req, conn) if self.ready else None
        if response is None and not self.ready:
            ids, _ = self.ids.lines(req)
            response = self._not_serving(ids)
        if response is not None:
            conn.answer(req, response)

    def _not_serving(self, ids: list[bytes]) -> Response:
        text = MSG_FAILED if self.failed else MSG_STARTING
        return 503, [JSON, NOT_FAILED, NO_RUN, *ids], message(text)

    def finish(self, job: Job, response: Response | None) -> None:
        """The scoring thread is done with ``job`` (on the loop)."""
        self.jobs.remove(job)  # the oldest, nearly always: O(1) in practice
        if not self.jobs:
            self.on_load_change()
        if not job.answered:
            job.answered = True
            if response is None:  # a bug of ours, logged by the scoring thread
                response = 500, [JSON, NOT_FAILED, NO_RUN, *job.ids], message(MSG_INTERNAL)
            job.conn.answer(job.req, response)

    def begin_stream(self, job: Job, response: Response) -> None:
        """The head of a streamed answer; its chunks follow from the scoring thread (loop)."""
        if not job.answered:
            job.answered = True
            job.conn.answer(job.req, response)

    def end_stream(self, job: Job, complete: bool) -> None:
        job.conn.stream_end(job.req, complete)
        self.finish(job, None)

    def expire(self, seq: int) -> None:
        """The watchdog says run() call ``seq`` is past its deadline: answer now (loop)."""
        job = self.current
        if job is None or job.seq != seq or job.answered:
            return
        job.answered = True
        log.error(
            "run() passed the scoring timeout of %d ms: answered 500 (x-request-id %s)",
            self.deadline.timeout_ms,
            (job.req.request_id or b"-").decode("latin-1"),
        )
        run_ms = b"x-ms-run-fn-exec-ms: %.3f\r\n" % self.deadline.timeout_ms
        body = message(f"Scoring timeout after {self.deadline.timeout_ms} ms")
        job.conn.answer(job.req, (500, [JSON, FAILED, run_ms, *job.ids], body))

    def abandon(self) -> None:
        """run() is stuck and this worker is leaving: answer everything waiting (loop)."""
        for job in self.jobs:
            if not job.answered:
                job.answered = True
                body = message(MSG_STUCK)
                job.conn.answer(job.req, (503, [JSON, NOT_FAILED, NO_RUN, RETRY, *job.ids], body))

    def too_large(self, req: Request) -> Response:
        ids, _ = self.ids.lines(req)
        text = f"Request body is larger than the limit of {self.max_bytes} bytes."
        return 413, [JSON, NOT_FAILED, NO_RUN, *ids], message(text)

    def done(self, req: Request, status: int, size: int) -> None:
        """Bookkeeping after the answer is written."""
        seconds = _perf() - req.t0
        path = req.path
        self.metrics.observe(path, status, seconds)
        if path == "/score" or status >= 400 or path == "/swagger.json":  # not probes
            record = (
                _now(),
                req.method,
                path,
                req.query,
                status,
                seconds,
                size,
                req.request_id or b"-",
            )
            self.access_log.append(record)

    # /score (on the scoring thread) -------------------------------------------------------------
    def score(self, job: Job) -> Response:
        assert self.invocation is not None
        self.current = job
        # The next run() call's number: only this thread calls begin(), which takes it.
        job.seq = self.deadline.seq + 1
        return self.invocation.answer(job.req, job.ids)

    # Everything but /score ---------------------------------------------------------------------
    def _other(self, req: Request, ids: list[bytes]) -> Response:
        path, method = req.path, req.method
        if path not in _OTHER_PATHS:
            return 404, [JSON, NOT_FAILED, *ids], message(MSG_NOT_FOUND)
        if method == "OPTIONS":
            return 200, [HTML, ALLOW, *ids], b""
        if method not in ("GET", "HEAD"):
            return 405, [JSON, NOT_FAILED, *ids], message(MSG_NOT_ALLOWED)
        if path == "/":  # liveness: the process answers, whatever init() is doing
            return 200, [HTML, *ids], b"Healthy"
        if path == "/metrics":
            return 200, [PROMETHEUS, *ids], self.metrics.render()
        if path == "/ready":
            if not self.ready:
                return 503, [JSON, *ids], message(MSG_FAILED if self.failed else MSG_STARTING)
            return 200, [TEXT, *ids], b"Ready"
        assert self.swagger is not None
        version = dict(parse_qsl(req.query.decode("latin-1"))).get("version")
        status, doc = self.swagger.get(version)
        body = doc if isinstance(doc, bytes) else message(doc)
        return status, [JSON, NOT_FAILED, *ids], body
