"""The Log Analytics double (tests/doubles/azure/log_analytics.py, kql.py) driven by
azure-monitor-query's ``LogsQueryClient.query_resource`` and azure-identity, as a driver
reading a function app's Application Insights logs reaches it: the Entra double's tokens,
the test CA through REQUESTS_CA_BUNDLE, every connection on loopback."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.monitor.query import LogsQueryClient, LogsQueryResult, LogsQueryStatus

from tests.doubles.azure import kql, tls
from tests.doubles.azure.entra import EntraDouble, EntraHandler
from tests.doubles.azure.log_analytics import (
    EXCEPTIONS,
    TRACES,
    LogAnalytics,
    LogAnalyticsHandler,
)

TENANT = str(uuid.uuid4())
CLIENT = str(uuid.uuid4())
SECRET = "secret-" + uuid.uuid4().hex
APP = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg"
    "/providers/microsoft.insights/components/diabetes-fn"
)
COLUMNS = [
    "timestamp",
    "itemType",
    "severityLevel",
    "message",
    "outerMessage",
    "cloud_RoleInstance",
]
# The driver's two queries, as it sends them.
TAIL = """union traces, exceptions
| where cloud_RoleName =~ 'diabetes-fn'
| order by timestamp desc
| take 200
| project timestamp, itemType, severityLevel, message, outerMessage, cloud_RoleInstance"""


def follow(after: str) -> str:
    return f"""union traces, exceptions
| where cloud_RoleName =~ 'diabetes-fn'
| where timestamp > datetime({after})
| order by timestamp asc
| take 1000
| project timestamp, itemType, severityLevel, message, outerMessage, cloud_RoleInstance"""


@dataclass
class Stack:
    entra: EntraDouble
    logs: LogAnalytics
    cached_token: str = ""
    cached_client: LogsQueryClient | None = None

    def credential(self) -> ClientSecretCredential:
        return ClientSecretCredential(
            TENANT, CLIENT, SECRET, authority=self.entra.url, disable_instance_discovery=True
        )

    def client(self, **kwargs: Any) -> LogsQueryClient:
        kwargs.setdefault("retry_backoff_factor", 0.01)
        return LogsQueryClient(self.credential(), endpoint=self.logs.url, **kwargs)

    def query(self, text: str, timespan: Any = None, **kwargs: Any) -> LogsQueryResult:
        """A query through one client for the test (its token cached, as a driver's is)."""
        if self.cached_client is None:
            self.cached_client = self.client()
        result = self.cached_client.query_resource(APP, text, timespan=timespan, **kwargs)
        assert isinstance(result, LogsQueryResult), result
        assert result.status == LogsQueryStatus.SUCCESS
        return result

    def token(self) -> str:
        if not self.cached_token:
            self.cached_token = self.credential().get_token(self.logs.url + "/.default").token
        return self.cached_token

    def post(
        self, body: bytes, token: str | None = "", content_type: str = "application/json"
    ) -> requests.Response:
        """A raw request; ``token=""`` gets a valid one, None sends no Authorization."""
        headers = {"Content-Type": content_type} if content_type else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token or self.token()}"
        return requests.post(f"{self.logs.url}/v1{APP}/query", data=body, headers=headers)


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[tls.TestCertificates, tls.HttpsServer, tls.HttpsServer]]:
    """An Entra server and a Log Analytics server for the module; each test serves fresh
    doubles on them (``server.app``)."""
    certificates = tls.make_certificates(tmp_path_factory.mktemp("log-analytics-tls"))
    entra = tls.HttpsServer(EntraHandler, certificates, None).start()
    logs = tls.HttpsServer(LogAnalyticsHandler, certificates, None).start()
    try:
        yield certificates, entra, logs
    finally:
        entra.stop()
        logs.stop()


@pytest.fixture
def stack(
    servers: tuple[tls.TestCertificates, tls.HttpsServer, tls.HttpsServer],
    monkeypatch: pytest.MonkeyPatch,
) -> Stack:
    """A fresh Entra double and Log Analytics double, served; the SDKs (and ``requests``)
    trust the test CA through REQUESTS_CA_BUNDLE. The component APP is added."""
    certificates, entra_server, logs_server = servers
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates.ca_bundle))
    entra = EntraDouble(TENANT)
    entra.add_principal(CLIENT, SECRET)
    entra.url = entra_server.url
    logs = LogAnalytics(entra)
    logs.url = logs_server.url
    entra_server.app, logs_server.app = entra, logs
    logs.add(APP)
    return Stack(entra, logs)


def rows(result: LogsQueryResult) -> list[list[Any]]:
    (table,) = result.tables
    return [list(row) for row in table.rows]


def error_of(excinfo: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int | None, str, str]:
    """(status, top-level code, the innermost message) as the SDK gives them."""
    error = excinfo.value
    assert error.error is not None
    message = str(error.error.message)
    inner: Any = error.error.innererror
    while isinstance(inner, Mapping) and inner:
        message = inner.get("message", message)
        inner = inner.get("innererror")
    return error.status_code, str(error.error.code), message


def emit_app_logs(logs: LogAnalytics, start: datetime) -> None:
    second = timedelta(seconds=1)
    logs.emit(APP, "traces", timestamp=start, message="started", severityLevel=1,
              cloud_RoleName="diabetes-fn", cloud_RoleInstance="i-1")  # fmt: skip
    logs.emit(APP, "exceptions", timestamp=start + second, type="ValueError",
              outerMessage="boom", innermostMessage="bad input", severityLevel=3,
              cloud_RoleName="diabetes-fn", cloud_RoleInstance="i-1")  # fmt: skip
    logs.emit(APP, "traces", timestamp=start + 2 * second, message="scored", severityLevel=1,
              cloud_RoleName="diabetes-fn", cloud_RoleInstance="i-2")  # fmt: skip
    logs.emit(APP, "traces", timestamp=start + 3 * second, message="someone else's",
              cloud_RoleName="other-fn")  # fmt: skip
    logs.emit(APP, "traces", timestamp=start + 4 * second, message="case differs",
              severityLevel=2, cloud_RoleName="Diabetes-FN", cloud_RoleInstance="i-2")  # fmt: skip


# The driver's queries ------------------------------------------------------------------
def test_tail_answers_the_newest_rows_of_the_app_newest_first(stack: Stack) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    emit_app_logs(stack.logs, start)

    result = stack.query(TAIL)

    (table,) = result.tables
    assert table.name == "PrimaryResult"
    assert table.columns == COLUMNS
    assert table.columns_types == ["datetime", "string", "int", "string", "string", "string"]
    assert rows(result) == [
        [start + timedelta(seconds=4), "trace", 2, "case differs", "", "i-2"],
        [start + timedelta(seconds=2), "trace", 1, "scored", "", "i-2"],
        [start + timedelta(seconds=1), "exception", 3, "", "boom", "i-1"],
        [start, "trace", 1, "started", "", "i-1"],
    ]
    assert table.rows[0]["timestamp"].tzinfo is not None  # parsed into an aware datetime

    newest = stack.query(TAIL.replace("take 200", "take 2"))
    assert [row[3] for row in rows(newest)] == ["case differs", "scored"]


def test_follow_answers_only_later_rows_oldest_first_to_the_tick(stack: Stack) -> None:
    for stamp, message in [
        ("2026-12-02T06:59:59.0000000Z", "before"),
        ("2026-12-02T07:00:00.1234567Z", "the last one seen"),
        ("2026-12-02T07:00:01.0000000Z", "second new"),
        ("2026-12-02T07:00:00.1234568Z", "first new, one tick later"),
    ]:
        stack.logs.emit(APP, "traces", timestamp=stamp, message=message,
                        cloud_RoleName="diabetes-fn")  # fmt: skip

    result = stack.query(follow("2026-12-02T07:00:00.1234567Z"))

    assert [row[3] for row in rows(result)] == ["first new, one tick later", "second new"]
    # The SDK keeps microseconds; the service prints 7 digits, as the raw answer shows.
    assert rows(result)[0][0] == datetime(2026, 12, 2, 7, 0, 0, 123456, tzinfo=UTC)
    body = json.dumps({"query": follow("2026-12-02T07:00:00.1234567Z")}).encode()
    raw = stack.post(body).json()["tables"][0]["rows"]
    assert [row[0] for row in raw] == [
        "2026-12-02T07:00:00.1234568Z",
        "2026-12-02T07:00:01.0000000Z",
    ]


def test_union_has_every_column_once_and_fills_what_a_table_lacks(stack: Stack) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    dimensions = {"Category": "Host"}
    stack.logs.emit(APP, "traces", timestamp=start, message="hello",
                    customDimensions=dimensions, cloud_RoleName="diabetes-fn")  # fmt: skip
    stack.logs.emit(APP, "exceptions", timestamp=start + timedelta(seconds=1),
                    type="KeyError", outerMessage="missing", problemId="p1")  # fmt: skip

    result = stack.query("union traces, exceptions | order by timestamp asc")

    (table,) = result.tables
    trace_only = [c for c in EXCEPTIONS if c not in TRACES]
    assert table.columns == [*TRACES, *trace_only]
    trace, exception = table.rows
    # Kusto has no null string: a string column a table lacks reads "", any other null.
    assert (trace["outerMessage"], trace["problemId"], trace["type"]) == ("", "", "")
    assert (exception["message"], exception["customDimensions"]) == ("", None)
    assert exception["severityLevel"] is None  # an int left out is null
    assert trace["customDimensions"] == '{"Category":"Host"}'  # dynamic: JSON text
    assert (trace["itemType"], exception["itemType"]) == ("trace", "exception")


def test_timespan_restricts_rows_by_timestamp(stack: Stack) -> None:
    now = datetime.now(UTC)
    stack.logs.emit(APP, "traces", timestamp=now - timedelta(days=2), message="old")
    stack.logs.emit(APP, "traces", timestamp=now - timedelta(hours=1), message="recent")
    query = "traces | order by timestamp asc | project message"

    def messages(timespan: Any) -> list[str]:
        return [row[0] for row in rows(stack.query(query, timespan=timespan))]

    assert messages(None) == ["old", "recent"]
    assert messages(timedelta(days=1)) == ["recent"]
    assert messages((now - timedelta(days=3), now - timedelta(days=1))) == ["old"]
    assert messages((now - timedelta(hours=2), timedelta(minutes=90))) == ["recent"]
    assert messages(timedelta(minutes=30)) == []
    assert stack.logs.requests[1].body["timespan"] == "PT86400.0S"


def test_equality_is_case_sensitive_and_tilde_is_not(stack: Stack) -> None:
    stack.logs.emit(APP, "traces", message="a", cloud_RoleName="diabetes-fn")
    stack.logs.emit(APP, "traces", message="b", cloud_RoleName="DIABETES-FN")

    def messages(where: str) -> list[str]:
        text = f"traces | where {where} | order by message asc | project message"
        return [row[0] for row in rows(stack.query(text))]

    assert messages("cloud_RoleName =~ 'Diabetes-Fn'") == ["a", "b"]
    assert messages('cloud_RoleName == "diabetes-fn"') == ["a"]
    assert messages("cloud_RoleName !~ 'diabetes-FN'") == []
    assert messages("cloud_RoleName != 'diabetes-fn'") == ["b"]


# Refusals ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "at"),
    [
        ("completely invalid syntax", "'invalid' on line [1,11]"),  # as recorded from Azure
        ("traces | summarize count() by itemType", "'summarize' on line [1,9]"),
        ("traces\n| where severityLevel > 1 and message == 'x'", "'and' on line [2,26]"),
        ("traces | project when = timestamp", "'=' on line [1,22]"),
        ("traces | where message contains 'x'", "'contains' on line [1,23]"),
        ("traces | take", "'<EOF>' on line [1,13]"),
        ("union withsource=T traces, exceptions", "'=' on line [1,16]"),
    ],
)
def test_kql_outside_the_subset_is_a_syntax_error(stack: Stack, query: str, at: str) -> None:
    with pytest.raises(HttpResponseError) as excinfo:
        stack.client().query_resource(APP, query, timespan=None)

    assert error_of(excinfo) == (400, "BadArgumentError", f"Query could not be parsed at {at}")
    assert stack.logs.requests[-1].error == "BadArgumentError"


def test_a_syntax_error_answers_in_the_service_format(stack: Stack) -> None:
    answer = stack.post(json.dumps({"query": "traces | extend x"}).encode())

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["message"] == "The request had some invalid properties"
    assert error["code"] == "BadArgumentError"
    uuid.UUID(error["correlationId"])
    assert error["innererror"] == {
        "code": "SyntaxError",
        "message": "A recognition error occurred in the query.",
        "innererror": {
            "code": "SYN0002",
            "message": "Query could not be parsed at 'extend' on line [1,9]",
            "line": 1,
            "pos": 9,
            "token": "extend",
        },
    }


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "traces | where cloud_rolename =~ 'x'",
            "'where' operator: Failed to resolve column or scalar expression named "
            "'cloud_rolename'",
        ),
        (
            "traces | project timestamp, outerMessage",
            "'project' operator: Failed to resolve scalar expression named 'outerMessage'",
        ),
        (
            "union traces, requests",
            "'union' operator: Failed to resolve table or column expression named 'requests'",
        ),
        (
            "Traces | take 1",
            "'take' operator: Failed to resolve table or column expression named 'Traces'",
        ),
        (
            "traces | where severityLevel == '3'",
            "Cannot compare values of types int and string. Try adding explicit casts",
        ),
    ],
)
def test_unknown_names_and_mismatched_types_are_semantic_errors(
    stack: Stack, query: str, message: str
) -> None:
    with pytest.raises(HttpResponseError) as excinfo:
        stack.client().query_resource(APP, query, timespan=None)

    assert error_of(excinfo) == (400, "BadArgumentError", message)
    middle = stack.post(json.dumps({"query": query}).encode()).json()["error"]["innererror"]
    assert (middle["code"], middle["message"]) == ("SemanticError", "A semantic error occurred.")


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{}", "InvalidProperty"),
        (b'{"query": 1}', "InvalidProperty"),
        (b'{"query": "traces", "timespan": "yesterday"}', "InvalidTimespan"),
        (b'{"query": "traces", "timespan": "2026-01-02/2026-01-01"}', "InvalidTimespan"),
        (b'{"query": "traces", "timespan": 3600}', "InvalidProperty"),
        (b'{"query": "traces", "workspaces": "ws-1"}', "InvalidProperty"),
        (b'{"query": "traces", "workspaces": [1]}', "InvalidProperty"),
        (b"[]", "InvalidJsonBody"),
        (b'{"query": "traces"', "InvalidJsonBody"),
    ],
)
def test_a_body_of_the_wrong_shape_is_a_bad_argument(
    stack: Stack, body: bytes, detail: str
) -> None:
    answer = stack.post(body)

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["innererror"]["code"]) == (
        "BadArgumentError",
        "QueryValidationError",
    )
    assert error["innererror"]["details"][0]["code"] == detail


def test_valid_bodies_and_the_documented_empty_200(stack: Stack) -> None:
    for body in [
        {"query": "traces | take 1"},
        {"query": "traces | take 1", "timespan": "P1D", "workspaces": None},
        {"query": "traces | take 1", "timespan": "P1DT2H30M", "workspaces": ["ws-1"]},
        {"query": "traces | take 1", "timespan": "2026-01-01T00:00:00.000Z/PT300.0S"},
        {"query": "traces | take 1", "timespan": "PT5M/2026-01-01T00:00:00Z"},
    ]:
        answer = stack.post(json.dumps(body).encode())
        assert answer.status_code == 200, answer.text
        assert answer.json()["tables"][0]["rows"] == []

    # Documented: a POST without a JSON body or without its content type is an empty 200.
    for answer in [stack.post(b""), stack.post(b'{"query": "traces"}', content_type="")]:
        assert (answer.status_code, answer.content) == (200, b"")


def test_get_with_the_query_in_the_url(stack: Stack) -> None:
    stack.logs.emit(APP, "traces", message="by GET")
    answer = requests.get(
        f"{stack.logs.url}/v1{APP}/query",
        params={"query": "traces | project message", "timespan": "PT1H"},
        headers={"Authorization": f"Bearer {stack.token()}"},
    )

    assert answer.status_code == 200
    assert answer.json()["tables"][0]["rows"] == [["by GET"]]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/workspaces/00000000-0000-0000-0000-000000000000/query"),
        ("POST", f"/v2{APP}/query"),
        ("POST", f"/v1{APP}/search"),
        ("DELETE", f"/v1{APP}/query"),
    ],
)
def test_other_paths_and_verbs_are_not_found(stack: Stack, method: str, path: str) -> None:
    answer = requests.request(method, stack.logs.url + path, json={"query": "traces"})

    assert answer.status_code == 404
    error = answer.json()["error"]
    assert (error["code"], error["message"]) == (
        "PathNotFoundError",
        "The requested path does not exist",
    )


# Authentication and access -------------------------------------------------------------
def test_missing_or_unknown_tokens_are_unauthenticated(stack: Stack) -> None:
    body = json.dumps({"query": "traces"}).encode()
    for answer in [stack.post(body, token=None), stack.post(body, token="not-a-token")]:
        assert answer.status_code == 401
        error = answer.json()["error"]
        assert (error["code"], error["message"]) == (
            "AuthorizationRequiredError",
            "Valid authentication was not provided",
        )
    assert [r.client_id for r in stack.logs.requests] == ["", ""]


def test_an_expired_token_is_unauthenticated(stack: Stack) -> None:
    client = stack.client()
    client.query_resource(APP, "traces | take 1", timespan=None)
    stack.entra.expire_tokens()  # the client keeps using its cached token

    with pytest.raises(HttpResponseError) as excinfo:
        client.query_resource(APP, "traces | take 1", timespan=None)

    status, code, message = error_of(excinfo)
    assert (status, code, message) == (
        401,
        "AuthorizationRequiredError",
        "Valid authentication was not provided",
    )


def test_a_token_for_another_audience_is_refused(stack: Stack) -> None:
    client = stack.client(audience="https://api.loganalytics.io")

    with pytest.raises(HttpResponseError) as excinfo:
        client.query_resource(APP, "traces | take 1", timespan=None)

    assert error_of(excinfo) == (403, "InvalidTokenError", "Could not validate the request")
    assert stack.entra.scopes_asked == ["https://api.loganalytics.io/.default"]


def test_deny_answers_insufficient_access(stack: Stack) -> None:
    stack.logs.deny(APP.upper().replace("SUBSCRIPTIONS", "subscriptions"))
    object_id = stack.entra.principals[CLIENT].object_id

    with pytest.raises(HttpResponseError) as excinfo:
        stack.client().query_resource(APP, "traces | take 1", timespan=None)

    assert error_of(excinfo) == (
        403,
        "InsufficientAccessError",
        f"User '{object_id}' does not have access to read logs for this resource",
    )
    stack.logs.allow(APP)
    assert rows(stack.query("traces | take 1")) == []


def test_an_unknown_resource_is_not_found(stack: Stack) -> None:
    other = APP.replace("diabetes-fn", "Nope-Fn")

    with pytest.raises(HttpResponseError) as excinfo:
        stack.client().query_resource(other, "traces | take 1", timespan=None)

    printed = other.replace("resourceGroups", "resourcegroups")
    assert error_of(excinfo) == (
        404,
        "ResourceNotFoundError",
        f"The resource {printed} was not found",
    )


def test_the_resource_id_matches_case_insensitively(stack: Stack) -> None:
    stack.logs.emit(APP.lower(), "traces", message="found")

    result = stack.client().query_resource(
        APP.replace("microsoft.insights", "Microsoft.Insights"), "traces | project message",
        timespan=None,
    )  # fmt: skip

    assert isinstance(result, LogsQueryResult)
    assert rows(result) == [["found"]]


# Faults --------------------------------------------------------------------------------
def test_a_429_with_retry_after_is_waited_for_and_retried_by_the_sdk(stack: Stack) -> None:
    fault = stack.logs.throttle(times=1, retry_after=1)
    began = time.monotonic()

    assert rows(stack.query("traces | take 1")) == []

    assert time.monotonic() - began >= 1.0  # the SDK honoured Retry-After
    assert fault.seen == 1
    assert [(r.status, r.error) for r in stack.logs.requests] == [
        (429, "ThrottledError"),
        (200, ""),
    ]


def test_a_429_says_when_to_retry(stack: Stack) -> None:
    stack.logs.throttle(times=1, retry_after=7)

    answer = stack.post(json.dumps({"query": "traces"}).encode())

    assert (answer.status_code, answer.headers["Retry-After"]) == (429, "7")
    assert answer.json()["error"]["code"] == "ThrottledError"


def test_503s_are_retried_by_the_sdk(stack: Stack) -> None:
    stack.logs.fail(status=503, times=2)

    assert rows(stack.query("traces | take 1")) == []
    assert [r.status for r in stack.logs.requests] == [503, 503, 200]


def test_faults_outlasting_the_retries_reach_the_caller(stack: Stack) -> None:
    stack.logs.fail(status=503, times=5)
    client = stack.client(retry_total=1)

    with pytest.raises(HttpResponseError) as excinfo:
        client.query_resource(APP, "traces | take 1", timespan=None)

    assert error_of(excinfo)[:2] == (503, "ServiceUnavailableError")


# What is recorded ----------------------------------------------------------------------
def test_every_request_is_recorded(stack: Stack) -> None:
    stack.query("traces | take 1", timespan=timedelta(hours=1), server_timeout=30)

    (recorded,) = stack.logs.requests
    assert (recorded.method, recorded.path) == ("POST", f"/v1{APP}/query")
    assert recorded.body == {
        "query": "traces | take 1",
        "timespan": "PT3600.0S",
        "workspaces": None,
    }
    assert (recorded.client_id, recorded.prefer) == (CLIENT, "wait=30")
    assert (recorded.status, recorded.error) == (200, "")


def test_emit_checks_what_a_test_ingests(stack: Stack) -> None:
    with pytest.raises(ValueError, match="no column"):
        stack.logs.emit(APP, "traces", outerMessage="traces have no outerMessage")
    with pytest.raises(ValueError, match="no table"):
        stack.logs.emit(APP, "requests", name="GET /")
    with pytest.raises(TypeError, match="severityLevel"):
        stack.logs.emit(APP, "traces", severityLevel="3")
    with pytest.raises(ValueError, match="time zone"):
        stack.logs.emit(APP, "traces", timestamp=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="itemType"):
        stack.logs.emit(APP, "traces", itemType="exception")
    with pytest.raises(KeyError):
        stack.logs.emit(APP.replace("diabetes-fn", "other"), "traces")
    with pytest.raises(ValueError, match="component"):
        stack.logs.add("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/x")


# The KQL subset, without HTTP ----------------------------------------------------------
def run(query: str, traces: list[dict[str, Any]], now: str = "2026-01-01T12:00:00Z") -> list[Any]:
    schema = tuple(kql.Column(name, kind) for name, kind in TRACES.items())
    stored = [{**row, "timestamp": kql.parse_datetime(row["timestamp"])} for row in traces]
    ticks = kql.parse_datetime(now)
    assert ticks is not None
    result = kql.execute(kql.parse(query), {"traces": kql.Table(schema, stored)}, ticks)
    return result.rows


def test_kql_ago_sort_defaults_nulls_and_limit() -> None:
    traces: list[dict[str, Any]] = [
        {"timestamp": "2026-01-01T11:00:00Z", "message": "an hour ago", "severityLevel": 1},
        {"timestamp": "2026-01-01T11:55:00Z", "message": "5 minutes ago", "severityLevel": None},
        {"timestamp": "2026-01-01T11:59:30Z", "message": "30 s ago", "severityLevel": 3},
    ]
    query = """traces // recent ones
        | where timestamp >= ago(10m)
        | sort by timestamp
        | project message"""
    assert run(query, traces) == [["30 s ago"], ["5 minutes ago"]]
    by_level = "traces | order by severityLevel {} | limit 2 | project message"
    assert run(by_level.format("asc"), traces) == [
        ["5 minutes ago"],  # asc: nulls first
        ["an hour ago"],
    ]
    assert run(by_level.format("desc"), traces) == [
        ["30 s ago"],
        ["an hour ago"],  # desc: nulls last
    ]
    assert run(by_level.format("asc nulls last"), traces)[0] == ["an hour ago"]
    assert run("traces | where severityLevel > 1 | project message", traces) == [["30 s ago"]]


def test_kql_strings_escape_and_datetimes_keep_ticks() -> None:
    traces: list[dict[str, Any]] = [
        {"timestamp": "2026-01-01T00:00:00.0000001Z", "message": 'it\'s "quoted"'}
    ]
    assert run(r"traces | where message == 'it\'s \"quoted\"' | project message",
               traces) == [["it's \"quoted\""]]  # fmt: skip
    assert run("traces | where timestamp > datetime(2026-01-01) | project message", traces) == [
        ['it\'s "quoted"']
    ]
    ticks = kql.parse_datetime("2026-01-01T02:00:00.5+02:00")
    assert ticks is not None
    assert kql.format_ticks(ticks) == "2026-01-01T00:00:00.5000000Z"
    assert kql.parse_datetime("2026-02-30") is None
