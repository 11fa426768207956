"""Test a deployment: the requests of deploy.yaml's ``tests``, then a latency burst.

Plain ``http.client`` on one keep-alive connection: the verifier must not need more than the
toolkit already has, and one connection measures the service, not connection set-up.

Each request is built from its test (verify_requests.py), sent, and its answer read as a
stream, then judged (verify_answers.py). Reading measures the time to the status line and
headers (first byte) and to the last byte (total), and hashes the body as it arrives, so
a chunked or large binary answer costs no more than a small one.
"""

from __future__ import annotations

import hashlib
import http.client
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from deployer.config.model import ScoringTest, ScoringTests
from deployer.errors import DeployerError
from deployer.verify_answers import Answer, expectation_failures
from deployer.verify_requests import (
    PreparedRequest,
    RequestFileError,
    merge_headers,
    prepare_request,
)

TIMEOUT_S = 30.0  # the longest wait for any one byte
ANSWER_TIMEOUT_S = 300.0  # the longest one answer may take to arrive in full
MAX_KEPT = 32 * 1024 * 1024  # bytes of an answer kept to compare as JSON (all are hashed)
READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class RequestResult:
    name: str
    passed: bool
    status: int | None
    expected_status: int
    latency_ms: float  # total: from sending the request to the answer's last byte
    detail: str = ""  # why it failed: every failed expectation, joined with "; "
    ttfb_ms: float | None = None  # to the answer's status line and headers
    received_bytes: int | None = None  # the answer's body
    method: str = "POST"
    failures: tuple[str, ...] = ()  # each failed expectation, for a listing


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
    # Why no test was sent: the endpoint is out of this machine's reach (a device's
    # address on its own network). Nothing failed, and nothing was proven.
    skipped: str | None = None

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and all(r.passed for r in self.results)
            and (self.latency is None or self.latency.passed)
        )

    @property
    def summary(self) -> str:
        if self.skipped is not None:
            return f"not run: {self.skipped}"
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
        self._query = parts.query
        self._headers = dict(headers)
        self._conn: http.client.HTTPConnection | None = None

    def _open(self) -> http.client.HTTPConnection:
        cls = (
            http.client.HTTPSConnection
            if self._parts.scheme == "https"
            else http.client.HTTPConnection
        )
        return cls(self._parts.hostname or "", self._parts.port, timeout=TIMEOUT_S)

    def target(self, query: str) -> str:
        """The request target: the URI's path and query, then the test's query."""
        joined = "&".join(q for q in (self._query, query) if q)
        return self._path + ("?" + joined if joined else "")

    def send(self, request: PreparedRequest) -> Answer:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._open()
            started = time.perf_counter()
            try:
                self._conn.request(
                    request.method,
                    self.target(request.query),
                    body=request.body,
                    headers=merge_headers(self._headers, request.headers),
                )
                response = self._conn.getresponse()
                return _read_answer(response, started)
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
            except TimeoutError:
                self.close()  # an answer half read: the connection cannot be reused
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _read_answer(response: http.client.HTTPResponse, started: float) -> Answer:
    """Read the body as it comes (chunked or not), hashing every byte and keeping the first
    MAX_KEPT; the status line and headers have arrived when this is called."""
    ttfb_ms = (time.perf_counter() - started) * 1000
    digest = hashlib.sha256()
    kept = bytearray()
    size = 0
    deadline = started + ANSWER_TIMEOUT_S
    while True:
        chunk = response.read1(READ_SIZE)
        if not chunk:
            chunk = response.read()  # ends the response (a Content-Length reached 0)
            if not chunk:
                break
        digest.update(chunk)
        size += len(chunk)
        if len(kept) < MAX_KEPT:
            kept += chunk[: MAX_KEPT - len(kept)]
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the answer took more than {ANSWER_TIMEOUT_S:g} s")
    total_ms = (time.perf_counter() - started) * 1000
    return Answer(
        response.status, response.headers, bytes(kept), size, digest.hexdigest(), ttfb_ms, total_ms
    )


def run_tests(
    uri: str,
    tests: ScoringTests,
    headers: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> TestRun:
    """Send each test request to ``uri``, compare, then measure latency with a burst.

    ``headers`` go with every request (an endpoint's key). The files tests send are read
    from ``base_dir``, the folder of deploy.yaml.
    """
    connection = _Connection(uri, headers or {})
    prepared: list[tuple[ScoringTest, PreparedRequest]] = []
    results = []
    try:
        for test in tests.requests:
            try:
                request = prepare_request(test, base_dir)
            except RequestFileError as exc:
                results.append(failed_request(test, str(exc)))
                continue
            prepared.append((test, request))
            results.append(_run_one(connection, test, request))
        latency = _burst(connection, tests, prepared) if prepared else None
    except (OSError, http.client.HTTPException) as exc:
        # Refused, reset, timed out, or not HTTP at all (BadStatusLine): a failed test run,
        # never an escaping exception.
        reason = str(exc) or type(exc).__name__
        return TestRun(uri, error=f"cannot reach {uri}: {reason}")
    finally:
        connection.close()
    return TestRun(uri, results, latency)


def failed_request(test: ScoringTest, reason: str, method: str | None = None) -> RequestResult:
    """A test request that could not be sent or answered, and why."""
    return RequestResult(
        test.name,
        False,
        None,
        test.expect.status,
        0.0,
        reason,
        method=method or test.method,
        failures=(reason,),
    )


def _run_one(connection: _Connection, test: ScoringTest, request: PreparedRequest) -> RequestResult:
    answer = connection.send(request)
    failures = expectation_failures(test, answer)
    return RequestResult(
        test.name,
        not failures,
        answer.status,
        test.expect.status,
        answer.total_ms,
        "; ".join(failures),
        ttfb_ms=answer.ttfb_ms,
        received_bytes=answer.size,
        method=request.method,
        failures=tuple(failures),
    )


def _burst(
    connection: _Connection,
    tests: ScoringTests,
    prepared: list[tuple[ScoringTest, PreparedRequest]],
) -> Latency:
    """Latency over ``latency_requests`` requests, cycling through the test requests that
    are expected to succeed (error paths are not what a latency budget is about). Each
    sample is a request's total time, its answer read to the last byte."""
    requests = [request for test, request in prepared if test.expect.status < 400] or [
        request for _, request in prepared
    ]
    samples = []
    for index in range(tests.latency_requests):
        samples.append(connection.send(requests[index % len(requests)]).total_ms)
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
