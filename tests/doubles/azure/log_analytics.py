"""The Azure Monitor Logs query API (Log Analytics' data plane, "Query - Resource Execute")
for Application Insights components, as azure-monitor-query 2.0's
``LogsQueryClient.query_resource`` reaches it: ``POST {endpoint}/v1/{resourceId}/query`` with
``{"query", "timespan", "workspaces"}`` (also ``GET .../query?query=...&timespan=...``).

**How it is reached.** ``HttpsServer(LogAnalyticsHandler, certs, log_analytics)`` on 127.0.0.1
over TLS (the test CA through ``REQUESTS_CA_BUNDLE``); once served, ``log_analytics.url =
server.url``. A client is ``LogsQueryClient(credential, endpoint=log_analytics.url)``: its
token audience is its endpoint, and so is the audience this double accepts.

**What it holds.** ``add(resource_id)`` registers a component (``/subscriptions/<s>/
resourceGroups/<rg>/providers/microsoft.insights/components/<name>``, matched
case-insensitively); ``emit(resource_id, "traces"|"exceptions", **columns)`` ingests a row
(``timestamp`` defaults to now, UTC; a ``str`` timestamp keeps Kusto's 100 ns ticks). The
tables have Application Insights' columns (``TRACES``, ``EXCEPTIONS``): a string column left
out is ``""`` (Kusto has no null string), any other null. Also: ``deny(resource_id)`` /
``allow(resource_id)``, ``throttle(times, retry_after)`` and ``fail(status, times)`` (each
returns a ``Fault`` whose ``seen`` counts the requests it answered), ``requests`` (what was
served) and ``clock`` (what "now" is, for ``ago()``, durations and default timestamps).

**What it checks, in this order**, answering in the service's error format ``{"error":
{"message", "code", "correlationId", "innererror"?}}``:

1. the route: ``/v1/subscriptions/.../query`` by POST or GET, else 404 ``PathNotFoundError``
   "The requested path does not exist" (also for another verb, as documented);
2. the bearer token, asked of the Entra double: missing, unknown or expired: 401
   ``AuthorizationRequiredError`` "Valid authentication was not provided"; issued for another
   audience: 403 ``InvalidTokenError`` "The provided authentication is not valid for this
   resource" (innererror ``SignatureVerificationFailed``);
3. faults a test asked for: ``throttle()`` 429 with ``Retry-After``, ``fail()`` (503...);
4. the body: no body or no ``Content-Type: application/json``: an empty 200, as documented;
   not JSON, or a wrong shape (``query`` a required string, ``timespan`` an optional ISO 8601
   string: ``PT3600.0S``, ``P1D``, ``start/end``, ``start/PT5M``, ``PT5M/end``; ``workspaces``
   an optional array of strings or null): 400 ``BadArgumentError`` "The request had some
   invalid properties" with innererror ``QueryValidationError`` "Failed parsing the query"
   and its ``details``;
5. the resource: not ``add``ed: 404 ``ResourceNotFoundError`` "The resource <id> was not
   found" -- 404 rather than 403 because that is what the service documents for a resource
   that does not exist (Querying logs for Azure resources, "Error responses");
   ``deny(resource_id)``: 403 ``InsufficientAccessError`` "The provided credentials have
   insufficient access to perform the requested operation" with innererror
   ``AuthorizationFailedError`` "User '<object id>' does not have access to read logs for
   this resource";
6. the query (tests/doubles/azure/kql.py: a strict subset, executed for real): outside the
   subset, 400 ``BadArgumentError`` > ``SyntaxError`` "A recognition error occurred in the
   query." > ``SYN0002`` "Query could not be parsed at 'x' on line [l,p]" (with line, pos,
   token); an unknown table or column, 400 ``BadArgumentError`` > ``SemanticError`` "A
   semantic error occurred." > ``SEM0100`` "'where' operator: Failed to resolve column or
   scalar expression named 'x'".

Then it answers ``{"tables": [{"name": "PrimaryResult", "columns": [{"name", "type"}],
"rows": [...]}]}`` with Kusto's type names; datetimes print with 7 fractional digits and
``Z`` (``2026-12-02T07:00:00.1234567Z``), dynamic values as JSON text. The body's timespan
restricts rows by ``timestamp`` before the query runs (a duration ends now).

Every request is recorded in ``requests`` (method, path, parsed body, the token's client id,
the ``Prefer`` header, the status and error code).

Sources of the answers: Microsoft Learn, "Azure Monitor Log Analytics API errors" (syntax
error, PathNotFoundError, the empty 200) and "Querying logs for Azure resources" (404
ResourceNotFoundError, 403 InsufficientAccessError/AuthorizationFailedError), "Batch queries"
(QueryValidationError/InvalidJsonBody; 403 InvalidTokenError for a token without access to the
resource, as also reported for a token of another audience in Azure/azure-sdk-for-js#15399);
a recorded real answer in azure-sdk-for-js' tests (SyntaxError > SYN0002, its line/pos/token
and correlationId); Azure/azure-cli-extensions#3002 (SemanticError > SEM0100 and its
sentence); a real 401 body kept in Argo Rollouts' Application Insights provider tests
(AuthorizationRequiredError) and a Microsoft support guide listing that 401 for a token
that fails validation.

**Where it could differ from the real service** (see also kql.py):

- KQL is a small subset; valid KQL outside it (``summarize``, ``and``, ``extend``...) is
  refused as a syntax error, which the service would run.
- The error codes and sentences are the documented or reported ones; the 429 and 5xx
  bodies (``ThrottledError``, ``ServiceUnavailableError``...), the details of a wrong body
  shape or timespan, and the code of a type mismatch (``SEM0000``) were found nowhere and
  are the double's own.
- Which failure wins when several apply (the order above) is the double's choice.
- An expired token is answered like an unknown one (401); the service's exact answer to an
  expired token was not found. Microsoft's error page shows ARM's ``AuthenticationFailed``
  for a missing header; the double answers the ``AuthorizationRequiredError`` reported from
  the direct endpoint. No ``WWW-Authenticate`` header is sent with a 401.
- Only Application Insights components, and only ``traces`` and ``exceptions``; no
  workspace-centric route (``/v1/workspaces/{id}/query``: 404), no ``$batch``, no
  cross-resource ``workspaces`` (accepted and ignored), no ``Prefer`` options
  (``wait``, ``include-statistics``, ``include-render``: recorded, not applied).
- Rows come in ingestion order (traces before exceptions in a ``union``) when the query does
  not order them, and ties keep that order; the service promises no order.
- Data is queryable as soon as it is emitted; the service ingests with minutes of latency.
- The timespan keeps ``start <= timestamp <= end``; the service's treatment of the bounds
  was not checked.
- Dynamic values are answered as JSON text, and a string column that a ``union`` fills
  as ``""`` (Kusto's rule: no null strings); neither was checked against a real answer.
- A resource is found or not; the service can also answer 200 with no rows, or a
  semantic error, when the caller lacks access to the workspace behind the resource.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.doubles.azure import kql
from tests.doubles.azure.entra import EntraDouble, IssuedToken
from tests.doubles.azure.tls import JsonHandler

TRACES: dict[str, str] = {
    "timestamp": "datetime",
    "message": "string",
    "severityLevel": "int",
    "itemType": "string",
    "cloud_RoleName": "string",
    "cloud_RoleInstance": "string",
    "operation_Name": "string",
    "customDimensions": "dynamic",
}
EXCEPTIONS: dict[str, str] = {
    "timestamp": "datetime",
    "type": "string",
    "outerMessage": "string",
    "innermostMessage": "string",
    "severityLevel": "int",
    "itemType": "string",
    "cloud_RoleName": "string",
    "cloud_RoleInstance": "string",
    "operation_Name": "string",
    "problemId": "string",
}
SCHEMAS = {"traces": TRACES, "exceptions": EXCEPTIONS}
ITEM_TYPES = {"traces": "trace", "exceptions": "exception"}
PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "int": (int,),
    "datetime": (datetime, str),
}

ROUTE = re.compile(r"^/v1/+(subscriptions/.+)/query$", re.IGNORECASE)
RESOURCE_ID = re.compile(
    r"^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.insights/components/[^/]+$",
    re.IGNORECASE,
)
DURATION = re.compile(
    r"^P(?!$)(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)
DURATION_UNITS = (7 * 86_400, 86_400, 3_600, 60, 1)  # W D H M S, in seconds
INVALID_PROPERTIES = "The request had some invalid properties"


class LogAnalyticsError(Exception):
    """An answer in the service's error format."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        innererror: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.innererror = innererror
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "code": self.code,
            "correlationId": str(uuid.uuid4()),
        }
        if self.innererror is not None:
            error["innererror"] = self.innererror
        return {"error": error}


def path_not_found() -> LogAnalyticsError:
    return LogAnalyticsError(404, "PathNotFoundError", "The requested path does not exist")


def authentication_required() -> LogAnalyticsError:
    return LogAnalyticsError(
        401, "AuthorizationRequiredError", "Valid authentication was not provided"
    )


def invalid_token() -> LogAnalyticsError:
    return LogAnalyticsError(
        403,
        "InvalidTokenError",
        "The provided authentication is not valid for this resource",
        {"code": "SignatureVerificationFailed", "message": "Could not validate the request"},
    )


def invalid_body(detail_code: str, message: str, target: str | None) -> LogAnalyticsError:
    return LogAnalyticsError(
        400,
        "BadArgumentError",
        INVALID_PROPERTIES,
        {
            "code": "QueryValidationError",
            "message": "Failed parsing the query",
            "details": [{"code": detail_code, "message": message, "target": target}],
        },
    )


def query_error(error: kql.KqlError) -> LogAnalyticsError:
    if error.kind == "syntax":
        middle = {"code": "SyntaxError", "message": "A recognition error occurred in the query."}
    else:
        middle = {"code": "SemanticError", "message": "A semantic error occurred."}
    return LogAnalyticsError(
        400, "BadArgumentError", INVALID_PROPERTIES, middle | {"innererror": error.innermost()}
    )


def resource_not_found(resource_id: str) -> LogAnalyticsError:
    return LogAnalyticsError(
        404, "ResourceNotFoundError", f"The resource {printed_id(resource_id)} was not found"
    )


def insufficient_access(object_id: str) -> LogAnalyticsError:
    return LogAnalyticsError(
        403,
        "InsufficientAccessError",
        "The provided credentials have insufficient access to perform the requested operation",
        {
            "code": "AuthorizationFailedError",
            "message": f"User '{object_id}' does not have access to read logs for this resource",
        },
    )


FAULTS: dict[int, tuple[str, str]] = {
    429: ("ThrottledError", "Too many requests. Retry after the time in Retry-After."),
    500: ("InternalServerError", "An internal server error occurred."),
    502: ("BadGatewayError", "The service could not reach its backend."),
    503: ("ServiceUnavailableError", "The service is temporarily unavailable."),
    504: ("GatewayTimeoutError", "The query did not complete in time."),
}


def printed_id(resource_id: str) -> str:
    """The resource id as the service prints it: keywords, provider and type in lower case,
    names as given."""
    parts = resource_id.strip("/").split("/")
    named = ("subscriptions", "resourcegroups")
    printed = [
        part if (i % 2 and parts[i - 1].lower() in named) or i == len(parts) - 1 else part.lower()
        for i, part in enumerate(parts)
    ]
    return "/" + "/".join(printed)


def normalized(resource_id: str) -> str:
    return "/" + resource_id.strip("/").lower()


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # with its query string
    body: Any  # the parsed JSON body, the raw text if it is not JSON, None if empty
    client_id: str  # the token's, "" when none was valid
    prefer: str | None  # the Prefer header as sent
    status: int
    error: str  # the answer's error code, "" on success


@dataclass
class Fault:
    """The next ``times`` queries answer ``status`` (with ``headers``)."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    seen: int = 0


@dataclass
class Component:
    resource_id: str  # as added
    rows: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {name: [] for name in SCHEMAS}
    )


@dataclass
class Request:
    method: str
    target: str  # path and query string, as sent
    authorization: str
    content_type: str
    prefer: str | None
    body: bytes


Answer = tuple[int, Any, dict[str, str]]


class LogAnalytics:
    """The service's data, its access rules and faults; ``serve`` answers one request."""

    def __init__(self, entra: EntraDouble) -> None:
        self.entra = entra
        self.url = ""  # set once served: the audience tokens must be for
        self.components: dict[str, Component] = {}  # by normalized id
        self.denied: set[str] = set()  # normalized ids
        self.faults: list[Fault] = []
        self.requests: list[Recorded] = []
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._lock = threading.Lock()

    # The test's API ---------------------------------------------------------------------
    def add(self, resource_id: str) -> Component:
        """Registers an Application Insights component (its tables start empty)."""
        if not RESOURCE_ID.match(resource_id):
            raise ValueError(f"not an Application Insights component id: {resource_id}")
        with self._lock:
            return self.components.setdefault(normalized(resource_id), Component(resource_id))

    def emit(self, resource_id: str, table: str, **columns: Any) -> dict[str, Any]:
        """Ingests one row into ``traces`` or ``exceptions``; returns it as stored (datetimes
        as ticks). ``timestamp`` (a time-zone-aware datetime or an ISO 8601 string with up to
        7 fractional digits) defaults to now; ``itemType`` is the table's."""
        schema = SCHEMAS.get(table)
        if schema is None:
            raise ValueError(f"no table {table!r}: {sorted(SCHEMAS)}")
        unknown = sorted(set(columns) - set(schema))
        if unknown:
            raise ValueError(f"{table} has no column {unknown}: {list(schema)}")
        columns.setdefault("timestamp", self.clock())
        columns.setdefault("itemType", ITEM_TYPES[table])
        if columns["itemType"] != ITEM_TYPES[table]:
            raise ValueError(f"the itemType of {table} is {ITEM_TYPES[table]!r}")
        row = {name: _stored(name, kind, columns.get(name)) for name, kind in schema.items()}
        with self._lock:
            component = self.components.get(normalized(resource_id))
            if component is None:
                raise KeyError(f"{resource_id} was not added")
            component.rows[table].append(row)
        return row

    def deny(self, resource_id: str) -> None:
        """Queries on this resource answer 403 InsufficientAccessError."""
        with self._lock:
            self.denied.add(normalized(resource_id))

    def allow(self, resource_id: str) -> None:
        with self._lock:
            self.denied.discard(normalized(resource_id))

    def throttle(self, times: int = 1, retry_after: int = 1) -> Fault:
        """The next ``times`` queries answer 429 with ``Retry-After: retry_after``."""
        code, message = FAULTS[429]
        return self._add_fault(Fault(429, code, message, {"Retry-After": str(retry_after)}, times))

    def fail(self, status: int = 503, times: int = 1) -> Fault:
        """The next ``times`` queries answer ``status`` (500, 502, 503 or 504)."""
        code, message = FAULTS[status]
        return self._add_fault(Fault(status, code, message, {}, times))

    def _add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    # Serving ----------------------------------------------------------------------------
    def serve(self, request: Request) -> Answer:
        token: IssuedToken | None = None
        parsed: Any = None
        try:
            parts = urlsplit(request.target)
            found = ROUTE.match(unquote(parts.path))
            if found is None or request.method not in ("GET", "POST"):
                raise path_not_found()
            token = self._authenticate(request.authorization)
            self._apply_faults()
            if request.method == "POST":
                if not request.body or not request.content_type.lower().startswith(
                    "application/json"
                ):
                    self._record(request, None, token, 200, "")
                    return 200, None, {}  # documented: an empty 200
                parsed = _json(request.body)
            else:
                parsed = {key: values[0] for key, values in parse_qs(parts.query).items()}
                if "workspaces" in parsed:
                    parsed["workspaces"] = parsed["workspaces"].split(",")
            query, window = self._validate(parsed)
            component = self._resource("/" + found.group(1), token)
            result = self._run(query, component, window)
        except LogAnalyticsError as error:
            self._record(request, parsed, token, error.status, error.code)
            return error.status, error.body(), error.headers
        except Exception as exc:  # a bug of the double: visible in the answer and the record
            failure = LogAnalyticsError(500, "DoubleError", f"the double failed: {exc!r}")
            self._record(request, parsed, token, failure.status, failure.code)
            return failure.status, failure.body(), {}
        self._record(request, parsed, token, 200, "")
        return 200, result, {}

    def _record(
        self, request: Request, body: Any, token: IssuedToken | None, status: int, error: str
    ) -> None:
        if body is None and request.body:
            body = request.body.decode(errors="replace")
        client_id = token.client_id if token else ""
        recorded = Recorded(
            request.method, request.target, body, client_id, request.prefer, status, error
        )
        with self._lock:
            self.requests.append(recorded)

    def _authenticate(self, authorization: str) -> IssuedToken:
        scheme, _, value = authorization.partition(" ")
        token = self.entra.token(value.strip()) if scheme.lower() == "bearer" else None
        if token is None or token.expires_on < time.time():
            raise authentication_required()
        if token.audience.rstrip("/") != self.url.rstrip("/"):
            raise invalid_token()
        return token

    def _apply_faults(self) -> None:
        with self._lock:
            fault = next((f for f in self.faults if f.seen < f.times), None)
            if fault is not None:
                fault.seen += 1
        if fault is not None:
            raise LogAnalyticsError(fault.status, fault.code, fault.message, None, fault.headers)

    def _validate(self, body: Any) -> tuple[str, tuple[int | None, int | None]]:
        if not isinstance(body, dict):
            raise invalid_body("InvalidJsonBody", "The body must be a JSON object", None)
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise invalid_body("InvalidProperty", "'query' must be a non-empty string", "query")
        timespan = body.get("timespan")
        if timespan is not None and not isinstance(timespan, str):
            raise invalid_body("InvalidProperty", "'timespan' must be a string", "timespan")
        workspaces = body.get("workspaces")
        if workspaces is not None and not (
            isinstance(workspaces, list) and all(isinstance(w, str) for w in workspaces)
        ):
            raise invalid_body(
                "InvalidProperty", "'workspaces' must be an array of strings", "workspaces"
            )
        window: tuple[int | None, int | None] = (None, None)
        if timespan is not None:
            parsed = _window(timespan, kql.ticks_of(self.clock()))
            if parsed is None:
                raise invalid_body(
                    "InvalidTimespan", f"'{timespan}' is not an ISO 8601 time period", "timespan"
                )
            window = parsed
        return query, window

    def _resource(self, resource_id: str, token: IssuedToken) -> Component:
        key = normalized(resource_id)
        with self._lock:
            component = self.components.get(key)
            denied = key in self.denied
        if component is None:
            raise resource_not_found(resource_id)
        if denied:
            raise insufficient_access(token.object_id)
        return component

    def _run(
        self, text: str, component: Component, window: tuple[int | None, int | None]
    ) -> dict[str, Any]:
        start, end = window
        with self._lock:
            tables = {
                name: kql.Table(
                    tuple(kql.Column(column, kind) for column, kind in SCHEMAS[name].items()),
                    [
                        row
                        for row in rows
                        if (start is None or row["timestamp"] >= start)
                        and (end is None or row["timestamp"] <= end)
                    ],
                )
                for name, rows in component.rows.items()
            }
        try:
            result = kql.execute(kql.parse(text), tables, kql.ticks_of(self.clock()))
        except kql.KqlError as error:
            raise query_error(error) from None
        return {
            "tables": [
                {
                    "name": "PrimaryResult",
                    "columns": [{"name": c.name, "type": c.type} for c in result.columns],
                    "rows": [
                        [
                            _printed(c.type, value)
                            for c, value in zip(result.columns, row, strict=True)
                        ]
                        for row in result.rows
                    ],
                }
            ]
        }


def _stored(name: str, kind: str, value: Any) -> Any:
    if value is None:
        return kql.null_of(kind)
    accepted = PYTHON_TYPES.get(kind)
    if accepted and (not isinstance(value, accepted) or isinstance(value, bool)):
        raise TypeError(f"{name} is a Kusto {kind}: {value!r}")
    if kind == "datetime":
        ticks = kql.parse_datetime(value) if isinstance(value, str) else kql.ticks_of(value)
        if ticks is None:
            raise ValueError(f"{name}: {value!r} is not an ISO 8601 date and time")
        return ticks
    if kind == "dynamic":
        json.dumps(value)  # JSON-able, as ingested telemetry is
    return value


def _printed(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "datetime":
        return kql.format_ticks(value)
    if kind == "dynamic":
        return json.dumps(value, separators=(",", ":"))
    return value


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise invalid_body("InvalidJsonBody", str(exc), None) from None


def _duration(text: str) -> int | None:
    """Ticks of an ISO 8601 duration (weeks, days, hours, minutes, seconds), None if not."""
    found = DURATION.match(text)
    if found is None:
        return None
    seconds = sum(
        float(amount) * unit
        for amount, unit in zip(found.groups(), DURATION_UNITS, strict=True)
        if amount is not None
    )
    return round(seconds * kql.TICKS_PER_SECOND)


def _window(timespan: str, now: int) -> tuple[int, int] | None:
    """[start, end] in ticks: ``duration`` (ending now), ``start/end``, ``start/duration``
    or ``duration/end``."""
    first, slash, second = timespan.strip().partition("/")
    if not slash:
        span = _duration(first)
        return None if span is None else (now - span, now)
    start, end = kql.parse_datetime(first), kql.parse_datetime(second)
    if start is not None and end is None:
        span = _duration(second)
        end = None if span is None else start + span
    elif start is None and end is not None:
        span = _duration(first)
        start = None if span is None else end - span
    if start is None or end is None or start > end:
        return None
    return start, end


class LogAnalyticsHandler(JsonHandler):
    """Hands every request to the double (``server.app.serve``)."""

    def _serve(self) -> None:
        app: LogAnalytics = self.server.app  # type: ignore[attr-defined]
        request = Request(
            self.command,
            self.path,
            self.headers.get("Authorization", ""),
            self.headers.get("Content-Type", ""),
            self.headers.get("Prefer"),
            self.read_body(),
        )
        status, body, headers = app.serve(request)
        self.answer(status, body, headers)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve
