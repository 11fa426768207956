"""Test a deployment: the requests of deploy.yaml's ``tests``, then a latency burst.

Plain ``http.client`` on one keep-alive connection: the verifier must not need more than the
toolkit already has, and one connection measures the service, not connection set-up.
"""

from __future__ import annotations

import http.client
import json
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from deployer.config.model import ScoringTest, ScoringTests
from deployer.errors import DeployerError

TIMEOUT_S = 30.0
MAX_SHOWN = 300  # characters of an unexpected body kept in a result


@dataclass(frozen=True)
class RequestResult:
    name: str
    passed: bool
    status: int | None
    expected_status: int
    latency_ms: float
    detail: str = ""  # why it failed


@dataclass(frozen=True)
class Latency:
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    limit_p95_ms: float | None

    @property
    def passed(self) -> bool:
        return self.limit_p95_ms is None or self.p95_ms <= self.limit_p95_ms


@dataclass(frozen=True)
class TestRun:
    __test__ = False  # not a pytest class

    uri: str
    results: list[RequestResult] = field(default_factory=list)
    latency: Latency | None = None
    error: str | None = None  # the service could not be reached at all

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and all(r.passed for r in self.results)
            and (self.latency is None or self.latency.passed)
        )

    @property
    def summary(self) -> str:
        passed = sum(r.passed for r in self.results)
        return f"{passed}/{len(self.results)} passed"


class _Connection:
    """One keep-alive HTTP connection to the scoring URI, reopened if the server closes it."""

    def __init__(self, uri: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeployerError(f"not an http(s) scoring URI: {uri}")
        self._parts = parts
        self._path = parts.path or "/"
        if parts.query:
            self._path += "?" + parts.query
        self._headers = dict(headers)
        self._conn: http.client.HTTPConnection | None = None

    def _open(self) -> http.client.HTTPConnection:
        cls = (
            http.client.HTTPSConnection
            if self._parts.scheme == "https"
            else http.client.HTTPConnection
        )
        return cls(self._parts.hostname or "", self._parts.port, timeout=TIMEOUT_S)

    def post(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes, float]:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._open()
            started = time.perf_counter()
            try:
                self._conn.request(
                    "POST", self._path, body=body, headers={**self._headers, **headers}
                )
                response = self._conn.getresponse()
                data = response.read()
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                continue
            return response.status, data, (time.perf_counter() - started) * 1000
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def run_tests(uri: str, tests: ScoringTests, headers: Mapping[str, str] | None = None) -> TestRun:
    """Send each test request to ``uri``, compare, then measure latency with a burst."""
    connection = _Connection(uri, headers or {})
    try:
        results = [_run_one(connection, test) for test in tests.requests]
        latency = _burst(connection, tests) if tests.requests else None
    except (OSError, http.client.HTTPException) as exc:
        # Refused, reset, timed out, or not HTTP at all (BadStatusLine): a failed test run,
        # never an escaping exception.
        reason = str(exc) or type(exc).__name__
        return TestRun(uri, error=f"cannot reach {uri}: {reason}")
    finally:
        connection.close()
    return TestRun(uri, results, latency)


def request_body(test: ScoringTest) -> tuple[bytes, dict[str, str]]:
    if test.body is not None:
        return test.body.encode(), {"Content-Type": "text/plain", **test.headers}
    return json.dumps(test.json_).encode(), {"Content-Type": "application/json", **test.headers}


def _run_one(connection: _Connection, test: ScoringTest) -> RequestResult:
    body, headers = request_body(test)
    status, data, latency_ms = connection.post(body, headers)
    expect = test.expect
    if status != expect.status:
        detail = f"status {status}, expected {expect.status}: {_shown(data)}"
        return RequestResult(test.name, False, status, expect.status, latency_ms, detail)
    if expect.json_ is not None:
        try:
            actual = json.loads(data)
        except ValueError:
            detail = f"response is not JSON: {_shown(data)}"
            return RequestResult(test.name, False, status, expect.status, latency_ms, detail)
        mismatch = json_mismatch(actual, expect.json_, expect.tolerance)
        if mismatch:
            return RequestResult(test.name, False, status, expect.status, latency_ms, mismatch)
    return RequestResult(test.name, True, status, expect.status, latency_ms)


def json_mismatch(actual: Any, expected: Any, tolerance: float, path: str = "$") -> str:
    """Where ``actual`` differs from ``expected`` (numbers within ``tolerance``), or ""."""
    if _is_number(expected) and _is_number(actual):
        if math.isclose(actual, expected, rel_tol=0.0, abs_tol=tolerance) or actual == expected:
            return ""
        return f"{path}: {actual!r} differs from {expected!r} by more than {tolerance}"
    if isinstance(expected, list) and isinstance(actual, list):
        if len(actual) != len(expected):
            return f"{path}: {len(actual)} items, expected {len(expected)}"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            if found := json_mismatch(a, e, tolerance, f"{path}[{index}]"):
                return found
        return ""
    if isinstance(expected, dict) and isinstance(actual, dict):
        if sorted(actual) != sorted(expected):
            return f"{path}: keys {sorted(actual)}, expected {sorted(expected)}"
        for key in expected:
            if found := json_mismatch(actual[key], expected[key], tolerance, f"{path}.{key}"):
                return found
        return ""
    if type(actual) is not type(expected) or actual != expected:
        return f"{path}: {_shown(json.dumps(actual).encode())}, expected {json.dumps(expected)}"
    return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _burst(connection: _Connection, tests: ScoringTests) -> Latency:
    """Latency over ``latency_requests`` requests, cycling through the test requests that
    are expected to succeed (error paths are not what a latency budget is about)."""
    candidates = [t for t in tests.requests if t.expect.status < 400] or tests.requests
    bodies = [request_body(t) for t in candidates]
    samples = []
    for index in range(tests.latency_requests):
        body, headers = bodies[index % len(bodies)]
        samples.append(connection.post(body, headers)[2])
    return Latency(
        requests=len(samples),
        p50_ms=statistics.median(samples),
        p95_ms=_percentile(samples, 95),
        p99_ms=_percentile(samples, 99),
        limit_p95_ms=tests.latency_p95_ms,
    )


def _percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest sample at or above pct% of the samples."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _shown(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"
