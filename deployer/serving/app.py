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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from itertools import count
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from .aml_request import AMLRequest
from .datastructures import Headers
from .deadline import Deadline, ScoringTimeout
from .logs import AccessLog
from .metrics import Metrics
from .protocol import Request, Response
from .scoring import Job, ScoringThread
from .script import EntryScript, Mode
from .swagger import SwaggerDocs

if TYPE_CHECKING:
    from .protocol import HttpProtocol

log = logging.getLogger("deployer.serving")


def _make_dumps() -> Callable[[Any], str]:
    """``json.dumps`` with its default options - byte for byte what Azure ML sends -
    reusing one C encoder: JSONEncoder builds a new one per call (half the cost for a
    short list of floats)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator
        return json.JSONEncoder().encode
    markers: dict[int, Any] = {}

    def default(obj: Any) -> Any:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    encode = make(
        markers, default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )

    def dumps(obj: Any) -> str:
        try:
            return "".join(encode(obj, 0))
        except BaseException:
            markers.clear()  # the circular-reference guard may hold entries after an error
            raise

    return dumps


_dumps = _make_dumps()
_perf = time.perf_counter
_now = time.time

JSON = b"content-type: application/json\r\n"
HTML = b"content-type: text/html; charset=utf-8\r\n"  # Flask's default, which Azure ML keeps
TEXT = b"content-type: text/plain; charset=utf-8\r\n"
PROMETHEUS = b"content-type: text/plain; version=0.0.4; charset=utf-8\r\n"
NOT_FAILED = b"x-ms-run-function-failed: False\r\n"
FAILED = b"x-ms-run-function-failed: True\r\n"
NO_RUN = b"x-ms-run-fn-exec-ms: 0.000\r\n"
ALLOW = b"allow: HEAD, OPTIONS, GET\r\n"
RETRY = b"retry-after: 1\r\n"
# Types json.dumps handles, checked first so common results skip the Response probe.
_PLAIN = frozenset({list, dict, str, int, float, bool, tuple})
_ID_LIMIT = 100  # Azure ML rejects longer ids with 431
_OTHER_PATHS = frozenset({"/", "/ready", "/metrics", "/swagger.json"})
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})

MSG_NOT_FOUND = (
    "The requested URL was not found on the server. If you entered the URL "
    "manually please check your spelling and try again."
)
MSG_NOT_ALLOWED = "The method is not allowed for the requested URL."
MSG_RUN_FAILED = "An unexpected error occurred in scoring script. Check the logs for more info."
MSG_INTERNAL = "An unexpected internal error occurred. Check the logs for more info."
MSG_STARTING = "The server is starting: init() has not finished."
MSG_FAILED = "The server is not serving: init() failed or it is shutting down."
MSG_STUCK = "The worker holding this request is being replaced: run() is stuck."


class BadInput(Exception):
    """Input the server parses (schema mode, UTF-8) is malformed: 400."""


class UnsupportedType(Exception):
    """Schema mode needs a JSON body: 415."""


def message(text: str) -> bytes:
    return _dumps({"message": text}).encode()


class App:
    def __init__(
        self,
        max_request_bytes: int,
        limit_concurrency: int,
        metrics: Metrics,
        access_log: AccessLog,
        deadline: Deadline,
    ):
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
        self._mode = Mode.STRING
        self._invoke: Callable[[Any, list[tuple[bytes, bytes]]], Any] = lambda data, raw: None
        # uuid4-shaped ids: a random per-process prefix and a counter - unique without
        # an os.urandom() call per request.
        self._id_prefix = str(uuid.uuid4())[:24].encode()
        self._ids = count()
        self._timeout_body = message(f"Scoring timeout after {deadline.timeout_ms} ms")
        self._busy_body = message(
            f"The server is busy: {limit_concurrency} requests are waiting for run() already. "
            "Retry later."
        )

    # Lifecycle (worker.py; on the loop) ---------------------------------------------------
    def set_ready(self, script: EntryScript, swagger: SwaggerDocs, scorer: ScoringThread) -> None:
        self.script, self.swagger, self.scorer = script, swagger, scorer
        self._mode, self._invoke = script.mode, script.invoke
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
        ids, too_long = self._id_lines(req)
        if too_long is not None:
            return 431, [JSON, NOT_FAILED, *ids], message(too_long)
        path = req.path
        if path in {"/score", "/swagger.json"}:
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
            ids, _ = self._id_lines(req)
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
        job.conn.answer(job.req, (500, [JSON, FAILED, run_ms, *job.ids], self._timeout_body))

    def abandon(self) -> None:
        """run() is stuck and this worker is leaving: answer everything waiting (loop)."""
        for job in self.jobs:
            if not job.answered:
                job.answered = True
                body = message(MSG_STUCK)
                job.conn.answer(job.req, (503, [JSON, NOT_FAILED, NO_RUN, RETRY, *job.ids], body))

    def too_large(self, req: Request) -> Response:
        ids, _ = self._id_lines(req)
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

    def _id_lines(self, req: Request) -> tuple[list[bytes], str | None]:
        """Azure ML's request-id rules (routes.py _init_headers) as header lines."""
        rid, legacy, client = req.request_id, req.legacy_id, req.client_id
        if rid is None and legacy is None and client is None and req.trace is None:
            # The common case, in one line: a new id, also sent as x-ms-request-id.
            rid = req.request_id = b"%s%012x" % (self._id_prefix, next(self._ids))
            return [b"x-request-id: %s\r\nx-ms-request-id: %s\r\n" % (rid, rid)], None
        too_long = None
        if rid is None or len(rid) > _ID_LIMIT:
            if rid is not None:
                too_long = "x-request-id must not exceed 100 characters"
            rid = req.request_id = b"%s%012x" % (self._id_prefix, next(self._ids))
        if legacy:
            client = client or legacy
        else:
            legacy = client or rid
        if too_long is None and (len(legacy) > _ID_LIMIT or (client and len(client) > _ID_LIMIT)):
            too_long = "x-ms-request-id and x-ms-client-request-id must not exceed 100 characters"
            legacy = client = None
        lines = [b"x-request-id: %s\r\n" % rid]
        if legacy:
            lines.append(b"x-ms-request-id: %s\r\n" % legacy)
        if client:
            lines.append(b"x-ms-client-request-id: %s\r\n" % client)
        if req.trace is not None:
            lines.append(b"traceid: %s\r\n" % req.trace)
        return lines, too_long

    # /score (on the scoring thread) -------------------------------------------------------------
    def score(self, job: Job) -> Response:
        req, ids = job.req, job.ids
        method, mode = req.method, self._mode
        if method == "POST" or (mode is Mode.RAW and method in ("GET", "OPTIONS", "HEAD")):
            pass
        elif method == "GET":
            req.body = b""
        elif method == "OPTIONS":
            return 200, [HTML, NOT_FAILED, NO_RUN, *ids], b""
        else:
            text = "Method not allowed" if method == "HEAD" else MSG_NOT_ALLOWED
            return 405, [JSON, NOT_FAILED, NO_RUN, *ids], message(text)
        try:
            data = self._input(mode, req)
        except BadInput as exc:
            return 400, [JSON, NOT_FAILED, NO_RUN, *ids], message(str(exc))
        except UnsupportedType:
            return (
                415,
                [JSON, NOT_FAILED, NO_RUN, *ids],
                message("Expects Content-Type to be application/json"),
            )

        # Call run() under the deadline (deadline.py explains the protocol).
        deadline = self.deadline
        failed = None
        self.current = job
        seq = job.seq = deadline.begin()
        t = _perf()
        try:
            try:
                result = self._invoke(data, req.headers)
            finally:
                timed_out = deadline.end(seq)
            if timed_out:  # the script swallowed ScoringTimeout
                raise ScoringTimeout
        except ScoringTimeout:
            deadline.end(seq)  # again, in case the timeout landed in the finally clause
            failed = self._timeout_body
            log.error("run() was interrupted by the scoring timeout", exc_info=True)
        except BaseException:  # whatever run() raises is the script's failure: a 500
            failed = message(MSG_RUN_FAILED)
            log.error("run() raised an exception", exc_info=True)
        run_ms = b"x-ms-run-fn-exec-ms: %.3f\r\n" % ((_perf() - t) * 1e3)
        if failed is not None:
            return 500, [JSON, FAILED, run_ms, *ids], failed
        return self._result(result, run_ms, ids)

    def _result(self, result: Any, run_ms: bytes, ids: list[bytes]) -> Response:
        if result is None:  # Azure ML's AMLResponse(None) is an empty JSON object
            return 200, [JSON, NOT_FAILED, run_ms, *ids], b"{}"
        if type(result) in _PLAIN or not _is_response(result):
            try:
                return 200, [JSON, NOT_FAILED, run_ms, *ids], _dumps(result).encode()
            except (TypeError, ValueError):
                log.error("run() returned a value JSON cannot encode", exc_info=True)
        else:
            try:
                status, lines, body = _response_parts(result)
                return status, [*lines, run_ms, *ids], body
            except Exception:
                log.error("run() returned a response that cannot be sent", exc_info=True)
        return 500, [JSON, NOT_FAILED, NO_RUN, *ids], message(MSG_INTERNAL)

    def _input(self, mode: Mode, req: Request) -> Any:
        """run()'s input, parsed as Azure ML's input_parsers.py does."""
        if mode is Mode.STRING:
            if req.method == "GET":
                return _dumps(_query_params(req.query))
            try:
                return req.body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInput(f"Input cannot be decoded as UTF-8: {exc}") from None
        if mode is Mode.RAW:
            headers = Headers(
                (n.decode("latin-1").title(), v.decode("latin-1")) for n, v in req.headers
            )
            return AMLRequest(
                req.method, req.path, req.query, headers, req.body, remote_addr=req.peer
            )
        if req.method == "GET":
            parsed = _query_params(req.query)
        else:
            mimetype = (req.ctype or b"").split(b";", 1)[0].strip().lower()
            json_suffix = mimetype.startswith(b"application/") and mimetype.endswith(b"+json")
            if not (mimetype == b"application/json" or json_suffix):
                raise UnsupportedType
            try:
                parsed = json.loads(req.body)
            except ValueError as exc:  # JSONDecodeError, or bytes that aren't text
                if req.body:
                    raise BadInput(f"POST body could not be decoded as JSON: {exc}") from None
                raise BadInput("POST body is empty. Expecting a JSON dictionary.") from None
            if not isinstance(parsed, dict):
                raise BadInput("POST body should be a JSON dictionary.")
        assert self.script is not None
        kwargs = {}
        for param in self.script.params:
            value = parsed.get(param.name, param.default)
            if value is param.empty:
                raise BadInput(f"A value is not provided for the {param.name!r} parameter.")
            kwargs[param.name] = value
        return kwargs

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


def _query_params(query: bytes) -> dict[str, Any]:
    """Azure ML's GET input: each query value parsed as JSON if it is JSON, repeated
    keys as lists (input_parsers._parse_get_parameters)."""
    grouped: dict[str, list[str]] = {}
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        grouped.setdefault(key, []).append(value)
    return {
        k: _maybe_json(v[0]) if len(v) == 1 else [_maybe_json(x) for x in v]
        for k, v in grouped.items()
    }


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _is_response(result: Any) -> bool:
    """Ours or Flask's AMLResponse/Response: duck-typed on what _response_parts reads."""
    return all(hasattr(result, name) for name in ("get_data", "status_code", "headers"))


def _response_parts(result: Any) -> Response:
    status = int(result.status_code)
    body = bytes(result.get_data())
    lines: list[bytes] = []
    failed_seen = False
    for name, value in result.headers:  # werkzeug's and our Headers iterate as pairs
        low, text = str(name).lower(), str(value)
        if low in _FRAMING:
            continue  # framing is the server's to set
        if low == "x-ms-run-function-failed":
            failed_seen = True
            if status >= 500:  # as Azure ML: a 5xx from run() marks the run failed
                text = "True"
        if "\r" in text or "\n" in text or not low.isascii() or ":" in low:
            raise ValueError(f"invalid response header {name!r}")
        lines.append(b"%s: %s\r\n" % (str(name).encode(), text.encode("latin-1")))
    if status >= 500 and not failed_seen:
        lines.append(FAILED)
    return status, lines, body
