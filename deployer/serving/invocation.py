"""How a request becomes a run() call and run()'s result an answer: Azure ML's /score.

One core for everything that calls the entry script: the scoring server (app.py, on its
scoring thread) and the Azure Functions handler (templates/functions/). Both get Azure
ML's behaviour from here, byte for byte as azureml-inference-server-http 1.5.1 answers
(its routes.py and input_parsers.py; tests/serving/test_compat.py checks it side by side):

* the input by calling convention (script.py decides it once): the body as text, a JSON
  object spread into keyword arguments (inference-schema), or the request itself
  (``@rawhttp``: an AMLRequest, which is a werkzeug Request);
* the answer: a JSON-encodable result as JSON, an AMLResponse (or any werkzeug/Flask
  response) as it is, and one over a generator as a :class:`~.request.Stream`, sent as
  it is produced;
* the error contract: whatever run() raises is logged with its traceback and answered 500
  with a generic message; the exception's text never reaches the client.

Answers are ``(status, header lines, body)`` with the header lines as bytes, which is
what the server writes; constant lines are prepared at import, so the common path
formats one line (the run time) per request.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from itertools import count
from typing import Any, Protocol
from urllib.parse import parse_qsl

from .deadline import ScoringTimeout
from .request import Request, Response, Stream
from .script import EntryScript, Mode

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


dumps = _make_dumps()
_perf = time.perf_counter

JSON = b"content-type: application/json\r\n"
HTML = b"content-type: text/html; charset=utf-8\r\n"  # Flask's default, which Azure ML keeps
NOT_FAILED = b"x-ms-run-function-failed: False\r\n"
FAILED = b"x-ms-run-function-failed: True\r\n"
NO_RUN = b"x-ms-run-fn-exec-ms: 0.000\r\n"
# Types json.dumps handles, checked first so common results skip the response probe.
_PLAIN = frozenset({list, dict, str, int, float, bool, tuple})
_ID_LIMIT = 100  # Azure ML rejects longer ids with 431
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})

MSG_NOT_ALLOWED = "The method is not allowed for the requested URL."
MSG_RUN_FAILED = "An unexpected error occurred in scoring script. Check the logs for more info."
MSG_INTERNAL = "An unexpected internal error occurred. Check the logs for more info."


def message(text: str) -> bytes:
    return dumps({"message": text}).encode()


class BadInput(Exception):
    """Input the server parses (schema mode, UTF-8) is malformed: 400."""


class UnsupportedType(Exception):
    """Schema mode needs a JSON body: 415."""


class RunDeadline(Protocol):
    """What bounds a run() call (deadline.Deadline in the server). ``begin`` numbers the
    call; ``end`` says whether it passed its deadline."""

    timeout_ms: int

    def begin(self) -> int: ...

    def end(self, seq: int) -> bool: ...


class Unbounded:
    """No deadline of ours: the caller's platform has its own (the Functions host's
    functionTimeout)."""

    timeout_ms = 0

    def begin(self) -> int:
        return 0

    def end(self, seq: int) -> bool:
        return False


class RequestIds:
    """Azure ML's request-id rules (routes.py ``_init_headers``) as header lines."""

    def __init__(self, prefix: bytes):
        # uuid4-shaped ids: a random per-process prefix and a counter - unique without an
        # os.urandom() call per request.
        self._prefix = prefix
        self._ids = count()

    def lines(self, req: Request) -> tuple[list[bytes], str | None]:
        """The id header lines for ``req``, and the 431 message if an id is too long."""
        rid, legacy, client = req.request_id, req.legacy_id, req.client_id
        if rid is None and legacy is None and client is None and req.trace is None:
            # The common case, in one line: a new id, also sent as x-ms-request-id.
            rid = req.request_id = b"%s%012x" % (self._prefix, next(self._ids))
            return [b"x-request-id: %s\r\nx-ms-request-id: %s\r\n" % (rid, rid)], None
        too_long = None
        if rid is None or len(rid) > _ID_LIMIT:
            if rid is not None:
                too_long = "x-request-id must not exceed 100 characters"
            rid = req.request_id = b"%s%012x" % (self._prefix, next(self._ids))
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


class Invocation:
    """``/score`` for one loaded entry script: the input, the run() call, the answer."""

    def __init__(self, script: EntryScript, deadline: RunDeadline):
        self.script = script
        self.deadline = deadline
        self._mode = script.mode
        self._invoke = script.invoke
        self._params = script.params
        self.timeout_body = message(f"Scoring timeout after {deadline.timeout_ms} ms")
        self._build_request: Callable[..., Any] | None = None
        if self._mode is Mode.RAW:  # werkzeug is imported only for scripts that use it
            from .aml_request import build_request

            self._build_request = build_request

    def answer(self, req: Request, ids: list[bytes]) -> Response:
        """Call run() for ``req`` and answer as Azure ML does. ``ids`` are the request-id
        header lines every answer carries."""
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
            data = self._input(req)
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
        seq = deadline.begin()
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
            failed = self.timeout_body
            log.error("run() was interrupted by the scoring timeout", exc_info=True)
        except BaseException:  # whatever run() raises is the script's failure: a 500
            failed = message(MSG_RUN_FAILED)
            log.error("run() raised an exception", exc_info=True)
        run_ms = b"x-ms-run-fn-exec-ms: %.3f\r\n" % ((_perf() - t) * 1e3)
        if failed is not None:
            return 500, [JSON, FAILED, run_ms, *ids], failed
        return self._result(result, run_ms, ids, method == "HEAD")

    def _result(self, result: Any, run_ms: bytes, ids: list[bytes], head: bool) -> Response:
        if result is None:  # Azure ML's AMLResponse(None) is an empty JSON object
            return 200, [JSON, NOT_FAILED, run_ms, *ids], b"{}"
        if type(result) in _PLAIN or not _is_response(result):
            try:
                return 200, [JSON, NOT_FAILED, run_ms, *ids], dumps(result).encode()
            except (TypeError, ValueError):
                log.error("run() returned a value JSON cannot encode", exc_info=True)
        else:
            try:
                status, lines, body = _response_parts(result, ids)
            except Exception:
                log.error("run() returned a response that cannot be sent", exc_info=True)
            else:
                if type(body) is Stream and not body.start(head):
                    return 500, [JSON, FAILED, run_ms, *ids], message(MSG_RUN_FAILED)
                return status, [*lines, run_ms, *ids], body
        return 500, [JSON, NOT_FAILED, NO_RUN, *ids], message(MSG_INTERNAL)

    def _input(self, req: Request) -> Any:
        """run()'s input, parsed as Azure ML's input_parsers.py does."""
        mode = self._mode
        if mode is Mode.STRING:
            if req.method == "GET":
                return dumps(query_params(req.query))
            try:
                return req.body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInput(f"Input cannot be decoded as UTF-8: {exc}") from None
        if mode is Mode.RAW:
            assert self._build_request is not None
            return self._build_request(
                req.method, req.path, req.query, req.headers, req.body, remote_addr=req.peer
            )
        if req.method == "GET":
            parsed = query_params(req.query)
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
        kwargs = {}
        for param in self._params:
            value = parsed.get(param.name, param.default)
            if value is param.empty:
                raise BadInput(f"A value is not provided for the {param.name!r} parameter.")
            kwargs[param.name] = value
        return kwargs


def query_params(query: bytes) -> dict[str, Any]:
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
    """Ours or Flask's AMLResponse/Response: duck-typed on what a werkzeug response has."""
    return all(hasattr(result, name) for name in ("get_data", "status_code", "headers"))


def _response_parts(result: Any, ids: list[bytes]) -> Response:
    """A werkzeug response (AMLResponse, or Flask's from a real azureml install) as header
    lines. aml_response.response_parts applies Azure ML's rules (framing dropped, a 5xx
    marked failed); the request-id headers are the server's, as Azure ML's replace any
    of the same name the script set."""
    from .aml_response import response_parts  # werkzeug: imported once a script uses it

    status, headers, body = response_parts(result)
    ours = {line.split(b":", 1)[0] for line in b"".join(ids).split(b"\r\n") if line}
    lines = [
        b"%s: %s\r\n" % (name.encode(), value.encode("latin-1"))
        for name, value in headers
        if name.lower().encode() not in ours
    ]
    return status, lines, body if isinstance(body, bytes) else Stream(body)
