"""The verifier against a real HTTP server on 127.0.0.1 that answers like a scoring server."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deployer.cli import main
from deployer.config.model import ScoringTests
from deployer.verify import run_tests
from deployer.verify_answers import json_mismatch
from tests.conftest import EXAMPLE

KEY = "k3y-for-the-test"


class _Scoring(BaseHTTPRequestHandler):
    """Doubles each number of {"data": [...]}; 500 for anything else (like run() raising).
    Under /keyed/ it wants ``Authorization: Bearer KEY`` first, as an endpoint behind a key."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            result = [2 * x for x in json.loads(body)["data"]]
            status, payload = 200, json.dumps(result).encode()
        except (ValueError, KeyError, TypeError) as exc:
            status, payload = 500, json.dumps({"message": str(exc)}).encode()
        if self.path.startswith("/keyed/") and self.headers["Authorization"] != f"Bearer {KEY}":
            status, payload = 401, b'{"message": "missing or wrong key"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def scoring_uri() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scoring)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/score"
    server.shutdown()
    server.server_close()


def _tests(requests: list[dict[str, object]], **extra: object) -> ScoringTests:
    return ScoringTests.model_validate({"requests": requests, "latency_requests": 20, **extra})


def test_passing_requests_and_latency(scoring_uri: str) -> None:
    tests = _tests(
        [
            {
                "name": "doubles",
                "json": {"data": [1, 2.5]},
                "expect": {"json": [2, 5.0004], "tolerance": 0.001},
            },
            {"name": "bad", "json": {"nope": 1}, "expect": {"status": 500}},
        ],
        latency_p95_ms=1000,
    )
    run = run_tests(scoring_uri, tests)
    assert run.passed, run
    assert [r.name for r in run.results] == ["doubles", "bad"]
    assert run.latency is not None and run.latency.requests == 20
    assert 0 < run.latency.p50_ms <= run.latency.p95_ms <= run.latency.p99_ms
    assert run.summary == "2/2 passed"


def test_a_wrong_value_outside_tolerance_fails_with_its_path(scoring_uri: str) -> None:
    tests = _tests(
        [{"name": "off", "json": {"data": [1, 2]}, "expect": {"json": [2, 4.1], "tolerance": 0.01}}]
    )
    run = run_tests(scoring_uri, tests)
    assert not run.passed
    assert run.results[0].detail == "$[1]: 4 differs from 4.1 by more than 0.01"


def test_a_wrong_status_fails_and_shows_the_body(scoring_uri: str) -> None:
    run = run_tests(
        scoring_uri, _tests([{"name": "s", "json": {"x": 1}, "expect": {"status": 200}}])
    )
    assert not run.passed
    assert run.results[0].status == 500
    assert "status 500, expected 200" in run.results[0].detail
    assert "'data'" in run.results[0].detail


def test_latency_over_budget_fails(scoring_uri: str) -> None:
    run = run_tests(
        scoring_uri, _tests([{"name": "ok", "json": {"data": [1]}}], latency_p95_ms=0.001)
    )
    assert run.results[0].passed
    assert run.latency is not None and not run.latency.passed
    assert not run.passed


def test_the_headers_an_endpoint_needs_are_sent_with_every_request(scoring_uri: str) -> None:
    keyed = scoring_uri.replace("/score", "/keyed/score")
    tests = _tests([{"name": "doubles", "json": {"data": [1]}, "expect": {"json": [2]}}])
    without = run_tests(keyed, tests)
    assert not without.passed
    assert without.results[0].status == 401
    run = run_tests(keyed, tests, {"Authorization": f"Bearer {KEY}"})
    assert run.passed, run
    assert run.latency is not None and run.latency.requests == 20


def test_a_server_that_does_not_speak_http_is_a_failed_run_not_an_exception() -> None:
    """http.client.BadStatusLine and its kin end in the run's error, like a refusal does."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer_garbage() -> None:
            for _ in range(2):  # the verifier tries a second connection once
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

        threading.Thread(target=answer_garbage, daemon=True).start()
        run = run_tests(
            f"http://127.0.0.1:{port}/score", _tests([{"name": "ok", "json": {"data": [1]}}])
        )
    assert not run.passed
    assert run.error is not None and run.error.startswith("cannot reach"), run.error


def test_an_unreachable_service_is_reported_not_raised() -> None:
    run = run_tests("http://127.0.0.1:9/score", _tests([{"name": "ok", "json": {"data": [1]}}]))
    assert not run.passed
    assert run.error is not None and "cannot reach" in run.error


@pytest.mark.parametrize(
    ("actual", "expected", "tolerance", "mismatch"),
    [
        ({"a": [1, 2]}, {"a": [1, 2]}, 0, ""),
        ([1.0005], [1], 0.001, ""),
        ([1, 2], [1], 0, "$: 2 items, expected 1"),
        ({"a": 1}, {"b": 1}, 0, "$: keys ['a'], expected ['b']"),
        (True, 1, 0, "$: true, expected 1"),
        ("1", 1, 0, '$: "1", expected 1'),
        (
            {"a": {"b": [0, 3]}},
            {"a": {"b": [0, 2]}},
            0.5,
            "$.a.b[1]: 3 differs from 2 by more than 0.5",
        ),
    ],
)
def test_json_comparison(actual: object, expected: object, tolerance: float, mismatch: str) -> None:
    assert json_mismatch(actual, expected, tolerance) == mismatch


def test_cli_test_command_prints_a_table(
    scoring_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "deploy.yaml"
    shutil.copytree(EXAMPLE, tmp_path, dirs_exist_ok=True)
    text = config.read_text()
    # The doubling server answers [2, 4] to {"data": [1, 2]}.
    start = text.index("tests:")
    end = text.index("targets:")
    text = (
        text[:start]
        + "tests:\n  requests:\n    - name: doubles\n      json: {data: [1, 2]}\n"
        + "      expect: {json: [2, 4]}\n  latency_p95_ms: 1000\n"
        + text[end:]
    )
    config.write_text(text)
    code = main(["test", "-c", str(config), "-t", "local", "--uri", scoring_uri])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"tests against {scoring_uri}: passed" in out
    assert "pass  doubles" in out


def test_cli_test_without_uri_or_report_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A target whose platform cannot be asked, and no report that names its URI."""
    code = main(
        ["test", "-c", str(EXAMPLE / "deploy.yaml"), "-t", "staging", "--report-dir", str(tmp_path)]
    )
    assert code == 2
    assert "pass --uri URL" in capsys.readouterr().err
