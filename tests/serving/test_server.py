"""The server's contract, end to end: a real `python -m deployer.serving` on 127.0.0.1."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import (
    REPO,
    SCRIPTS,
    ServeFactory,
    Server,
    free_port,
    launch,
    metric,
    wait_until_up,
)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def echo(serve_module: ServeFactory) -> Server:
    return serve_module(
        "echo.py",
        args=("--scoring-timeout-ms", "700"),
        env={"DEPLOYER_MAX_REQUEST_BYTES": "1000000"},
    )


def raw_exchange(port: int, data: bytes, read_timeout: float = 5) -> bytes:
    """Send bytes, read until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + read_timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


# Probes -------------------------------------------------------------------------------------
def test_liveness_and_readiness(echo: Server) -> None:
    live = echo.request("GET", "/")
    assert (live.status, live.body) == (200, b"Healthy")
    ready = echo.request("GET", "/ready")
    assert (ready.status, ready.body) == (200, b"Ready")


def test_readiness_is_503_until_init_finishes(serve: ServeFactory, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = serve("slow_init.py", env={"SLOW_INIT_GATE": str(gate)}, wait=False)
    wait_until_up(server, "/")  # liveness answers while init() runs
    assert server.request("GET", "/ready").status == 503
    # A scoring request made now waits for init() instead of failing.
    with ThreadPoolExecutor(1) as pool:
        early = pool.submit(server.post, {"x": 1})
        time.sleep(0.3)
        assert not early.done()
        assert server.request("GET", "/ready").status == 503
        gate.touch()
        reply = early.result(timeout=20)
    assert (reply.status, reply.json()) == (200, {"ready": True})
    assert server.request("GET", "/ready").status == 200


def test_init_runs_once_with_model_dir_set(serve: ServeFactory, tmp_path: Path) -> None:
    server = serve("echo.py", model_dir=tmp_path)
    assert server.post({"kind": "model_dir"}).json() == str(tmp_path)
    assert server.post({"kind": "init_calls"}).json() == 1


# Scoring results -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "expected_body"),
    [
        ("dict", b'{"echo": {"kind": "dict"}, "nested": {"ok": true}}'),
        ("str", b'"h\\u00e9llo w\\u00f6rld"'),  # a str result is sent as a JSON string
        ("list", b'[1, 2.5, "three", null, true]'),
        ("none", b"{}"),
    ],
)
def test_results_are_json(echo: Server, kind: str, expected_body: bytes) -> None:
    reply = echo.post({"kind": kind})
    assert reply.status == 200
    assert reply.body == expected_body  # byte for byte what Azure ML's json.dumps sends
    assert reply.header("Content-Type") == "application/json"
    assert reply.header("x-ms-run-function-failed") == "False"
    assert re.fullmatch(r"\d+\.\d{3}", reply.header("x-ms-run-fn-exec-ms") or "")


def test_request_ids(echo: Server) -> None:
    first, second = echo.post({}), echo.post({})
    ids = [first.header("x-request-id"), second.header("x-request-id")]
    assert all(UUID_RE.match(i or "") for i in ids), ids
    assert ids[0] != ids[1]
    assert first.header("x-ms-request-id") == ids[0]
    mine = echo.post({}, headers={"x-request-id": "my-id-1", "x-ms-client-request-id": "c-2"})
    assert mine.header("x-request-id") == "my-id-1"
    assert mine.header("x-ms-client-request-id") == "c-2"
    assert mine.header("x-ms-request-id") == "c-2"
    for path in ("/", "/ready", "/metrics", "/nope"):
        assert (
            echo.request("GET", path, headers={"x-request-id": "p"}).header("x-request-id") == "p"
        )
    too_long = echo.post({}, headers={"x-request-id": "x" * 101})
    assert too_long.status == 431
    assert too_long.json() == {"message": "x-request-id must not exceed 100 characters"}


def test_get_score_passes_query_as_json(echo: Server) -> None:
    reply = echo.request("GET", "/score?kind=list")
    assert reply.json() == [1, 2.5, "three", None, True]


# Errors ---------------------------------------------------------------------------------------
def test_run_raising_is_a_500_and_the_server_keeps_serving(echo: Server) -> None:
    reply = echo.post({"kind": "fail"})
    assert reply.status == 500
    assert reply.json() == {
        "message": "An unexpected error occurred in scoring script. Check the logs for more info."
    }
    assert reply.header("x-ms-run-function-failed") == "True"
    assert reply.header("x-request-id")
    assert reply.header("x-ms-run-fn-exec-ms")
    assert echo.post({"kind": "dict"}).status == 200
    deadline = time.monotonic() + 5  # the traceback is logged, by a thread
    while "asked to fail" not in echo.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "ValueError: asked to fail" in echo.stderr()


def test_unencodable_result_is_a_500(echo: Server) -> None:
    reply = echo.post({"kind": "unencodable"})
    assert reply.status == 500
    assert reply.json()["message"].startswith("An unexpected internal error occurred")


def test_body_not_utf8_is_a_400(echo: Server) -> None:
    reply = echo.request("POST", "/score", b"\xff\xfe")
    assert reply.status == 400
    assert reply.json()["message"].startswith("Input cannot be decoded as UTF-8")


@pytest.mark.parametrize("kind", ["sleep", "spin", "swallow"])
def test_scoring_timeout(echo: Server, kind: str) -> None:
    started = time.monotonic()
    reply = echo.post({"kind": kind, "seconds": 5})
    elapsed = time.monotonic() - started
    assert reply.status == 500
    assert reply.json() == {"message": "Scoring timeout after 700 ms"}
    assert reply.header("x-ms-run-function-failed") == "True"
    assert 0.6 < elapsed < 3.0, elapsed  # interrupted, not run to the end
    assert echo.post({"kind": "dict"}).status == 200  # and the server goes on


def test_body_over_the_limit_is_413_before_it_is_read(echo: Server) -> None:
    # Announce 50 MB (limit: 1 MB), send only 64 KB, and read the answer.
    head = (
        b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", echo.port), timeout=5) as sock:
        sock.sendall(head + b"x" * 65536)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in answer.lower()
    assert b"Request body is larger than the limit of 1000000 bytes." in answer


def test_expect_continue_over_the_limit_gets_no_continue(echo: Server) -> None:
    head = (
        b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    answer = raw_exchange(echo.port, head)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer


def test_chunked_body_over_the_limit_is_413(echo: Server) -> None:
    chunk = b"x" * 300_000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4)) + b"0\r\n\r\n"
    head = b"POST /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert raw_exchange(echo.port, head + body).startswith(b"HTTP/1.1 413 ")


def test_chunked_body_under_the_limit_is_scored(echo: Server) -> None:
    payload = json.dumps({"kind": "list"}).encode()
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
    head = (
        b"POST /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
    )
    answer = raw_exchange(echo.port, head + body)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b'[1, 2.5, "three", null, true]')


def test_malformed_http_is_a_400(echo: Server) -> None:
    assert raw_exchange(echo.port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_unknown_path_and_method(echo: Server) -> None:
    assert echo.request("GET", "/nope").status == 404
    assert echo.request("PUT", "/score", b"{}").status == 405
    assert echo.request("DELETE", "/").status == 405


def test_keep_alive_and_pipelining_answer_in_order(echo: Server) -> None:
    requests = (
        b"".join(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            for body in (b'{"kind": "list"}', b'{"kind": "str"}')
        )
        + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = raw_exchange(echo.port, requests)
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert answer.index(b"three") < answer.index(b"h\\u00e9llo") < answer.index(b"Healthy")


# Schema mode (inference_schema) -------------------------------------------------------------
@pytest.fixture(scope="module")
def schema(serve_module: ServeFactory) -> Server:
    return serve_module("schema.py")


def test_schema_arguments_come_from_the_json_body(schema: Server) -> None:
    assert schema.post({"data": [[1, 2, 3]], "scale": 2}).json() == [12.0]
    assert schema.post({"data": [[1, 2, 3]]}).json() == [6.0]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b'{"data": [[1]]}', "text/plain", 415, "Expects Content-Type to be application/json"),
        (
            b"{not json",
            "application/json",
            400,
            "POST body could not be decoded as JSON: "
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        (b"[1, 2]", "application/json", 400, "POST body should be a JSON dictionary."),
        (b"", "application/json", 400, "POST body is empty. Expecting a JSON dictionary."),
        (
            b'{"scale": 1}',
            "application/json",
            400,
            "A value is not provided for the 'data' parameter.",
        ),
    ],
)
def test_schema_input_errors(
    schema: Server, body: bytes, content_type: str, status: int, message: str
) -> None:
    reply = schema.request("POST", "/score", body, {"Content-Type": content_type})
    assert (reply.status, reply.json()) == (status, {"message": message})
    assert reply.header("x-ms-run-function-failed") == "False"


def test_swagger_from_the_schema(schema: Server) -> None:
    v2 = schema.request("GET", "/swagger.json").json()
    assert v2["swagger"] == "2.0"
    assert v2["definitions"]["ServiceInput"]["properties"]["data"]["type"] == "array"
    v3 = schema.request("GET", "/swagger.json?version=3").json()
    assert v3["openapi"] == "3.0.3"
    assert "ServiceOutput" in v3["components"]["schemas"]
    assert schema.request("GET", "/swagger.json?version=3.1").json()["openapi"] == "3.1.0"
    bad = schema.request("GET", "/swagger.json?version=9")
    assert bad.status == 404
    assert bad.json() == {
        "message": "Swagger version [9] is not valid. Supported versions: [2, 3, 3.1]."
    }


# Raw mode (@rawhttp, AMLRequest, AMLResponse) -------------------------------------------------
@pytest.fixture(scope="module")
def raw(serve_module: ServeFactory) -> Server:
    return serve_module("raw_contrib.py")


def test_raw_request_and_response(raw: Server) -> None:
    got = raw.request("GET", "/score?x=1&x=2")
    assert got.json() == {"args": ["1", "2"], "path": "/score?x=1&x=2"}
    echoed = raw.request("POST", "/score", b"\x00\x01binary")
    assert (echoed.status, echoed.body) == (200, b"\x00\x01binary")
    assert echoed.header("Content-Type") == "application/octet-stream"
    teapot = raw.request("POST", "/score", b"", {"X-Kind": "teapot"})
    assert (teapot.status, teapot.body) == (418, b"short and stout")
    assert teapot.all("X-Extra") == ["a", "b"]
    assert teapot.header("x-ms-run-function-failed") == "False"
    failed = raw.request("POST", "/score", b"", {"X-Kind": "error"})
    assert failed.status == 503
    assert failed.header("x-ms-run-function-failed") == "True"
    assert raw.post({"a": [1]}, headers={"X-Kind": "json"}).json() == {"a": [1]}
    assert raw.request("POST", "/score", b"", {"X-Kind": "raise"}).status == 500


def test_raw_multipart_files(raw: Server) -> None:
    boundary = "XyZ"
    content = bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="field"\r\n\r\nvalue\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="upload"; '
            f'filename="img.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    reply = raw.request(
        "POST",
        "/score",
        body,
        {"X-Kind": "files", "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert reply.json() == {"filename": "img.bin", "size": len(content), "field": "value"}


def test_request_headers_parameter(serve: ServeFactory) -> None:
    server = serve("headers.py")
    reply = server.post({"a": 1}, headers={"X-Custom-Header": "yes"})
    assert reply.json() == {
        "data": '{"a": 1}',
        "custom": "yes",
        "content_type": "application/json",
        "has_host": True,
    }


def test_real_azureml_package_objects_work_with_our_server(
    serve: ServeFactory, azureml_python: Path
) -> None:
    """With azureml-inference-server-http installed, scripts get its (Flask) AMLResponse."""
    server = serve("raw_server_api.py", python=str(azureml_python))
    reply = server.request("POST", "/score", b"shout")
    assert (reply.status, reply.body) == (200, b"SHOUT")
    assert reply.header("Content-Type") == "text/plain"
    contrib = serve("raw_contrib.py", python=str(azureml_python))
    assert contrib.request("POST", "/score", b"", {"X-Kind": "teapot"}).status == 418


# Metrics --------------------------------------------------------------------------------------
def test_burst_with_failures_and_metrics(serve: ServeFactory) -> None:
    server = serve("echo.py")
    kinds = ["fail" if i % 3 == 0 else "list" for i in range(300)]
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda k: server.post({"kind": k}).status, kinds))
    assert statuses == [500 if k == "fail" else 200 for k in kinds]
    assert server.request("GET", "/").status == 200
    text = server.request("GET", "/metrics").body.decode()
    assert metric(text, 'deployer_http_requests_total{path="/score",code="200"}') == 200
    assert metric(text, 'deployer_http_requests_total{path="/score",code="500"}') == 100
    assert metric(text, "deployer_score_duration_seconds_count") == 300
    assert metric(text, 'deployer_score_duration_seconds_bucket{le="+Inf"}') == 300
    assert metric(text, "deployer_requests_in_flight") == 1  # this scrape
    assert "# TYPE deployer_score_duration_seconds histogram" in text


def test_access_log_is_structured(echo: Server) -> None:
    echo.post({"kind": "list"}, headers={"x-request-id": "log-me"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "log-me" not in echo.stdout():
        time.sleep(0.05)
    line = next(json.loads(x) for x in echo.stdout().splitlines() if "log-me" in x)
    assert line["event"] == "access"
    assert (line["method"], line["path"], line["status"]) == ("POST", "/score", 200)
    assert line["duration_ms"] >= 0


# Lifecycle -----------------------------------------------------------------------------------
def test_init_failure_exits_non_zero_with_traceback(serve: ServeFactory) -> None:
    server = serve("init_fails.py", wait=False)
    assert server.wait_exit(timeout=30) == 3
    err = server.stderr()
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: model file is corrupt: init_fails sentinel" in err


def test_sigterm_drains_in_flight_requests(serve: ServeFactory) -> None:
    server = serve("echo.py")
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(server.post, {"kind": "sleep", "seconds": 1.5})
        time.sleep(0.4)
        server.proc.send_signal(signal.SIGTERM)
        reply = slow.result(timeout=20)
    assert (reply.status, reply.json()) == (200, "slept")
    assert server.wait_exit(timeout=20) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_environment_variables_and_flag_precedence(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "AZUREML_ENTRY_SCRIPT": str(SCRIPTS / "echo.py"),
        "AZUREML_MODEL_DIR": str(tmp_path),
        "DEPLOYER_SERVER_PORT": "1",
        "SCORING_TIMEOUT_MS": "300",
    }
    server = launch(
        [__import__("sys").executable, "-m", "deployer.serving", "--port", str(port)],
        tmp_path,
        "env",
        port,
        env=env,
    )
    try:
        wait_until_up(server, "/ready")
        assert server.post({"kind": "model_dir"}).json() == str(tmp_path)
        assert server.post({"kind": "sleep", "seconds": 3}).json() == {
            "message": "Scoring timeout after 300 ms"
        }
    finally:
        server.stop()


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    port = free_port()
    server = launch(
        [__import__("sys").executable, "-m", "deployer.serving"],
        tmp_path,
        "usage",
        port,
        env={"AZUREML_ENTRY_SCRIPT": "", "AZUREML_MODEL_DIR": ""},
    )
    assert server.wait_exit(timeout=30) == 2
    assert "--entry-script" in server.stderr()


def test_two_workers_share_the_port_and_the_metrics(serve: ServeFactory) -> None:
    server = serve("echo.py", args=("--workers", "2"))
    for _ in range(40):
        assert server.post({"kind": "list"}).status == 200
    # A worker counts a request just after writing its answer, so a scrape answered by
    # the other worker can overtake the count of the last request: wait for it.
    deadline = time.monotonic() + 10
    while True:
        text = server.request("GET", "/metrics").body.decode()
        scored = metric(text, 'deployer_http_requests_total{path="/score",code="200"}')
        if scored == 40 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert metric(text, "deployer_workers") == 2
    assert scored == 40
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit(timeout=30) == 0


def test_two_workers_init_failure_exits_3(serve: ServeFactory) -> None:
    server = serve("init_fails.py", args=("--workers", "2"), wait=False)
    assert server.wait_exit(timeout=30) == 3
    assert "init_fails sentinel" in server.stderr()


def test_runs_without_the_toolkit_installed(tmp_path: Path) -> None:
    """The image copies deployer/__init__.py + deployer/serving only: serve from such a copy."""
    import shutil
    import sys

    root = tmp_path / "image"
    shutil.copytree(
        REPO / "deployer" / "serving",
        root / "deployer" / "serving",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(REPO / "deployer" / "__init__.py", root / "deployer" / "__init__.py")
    port = free_port()
    argv = [
        sys.executable,
        "-I",
        "-c",  # -I: no PYTHONPATH, no cwd on sys.path
        f"import sys; sys.path[:0] = [{str(root)!r}] + {[p for p in sys.path if 'site-packages' in p]!r}; "  # noqa: E501
        "import runpy; sys.argv[0] = 'deployer.serving'; runpy.run_module('deployer.serving', run_name='__main__')",  # noqa: E501
        "--entry-script",
        str(SCRIPTS / "echo.py"),
        "--model-dir",
        str(tmp_path),
        "--port",
        str(port),
    ]
    server = launch(argv, tmp_path, "image", port, cwd=tmp_path)
    try:
        wait_until_up(server, "/ready")
        assert server.post({"kind": "list"}).status == 200
        assert threading.active_count() >= 1
    finally:
        server.stop()
