"""Same scripts, same requests: our server and Microsoft's azureml-inference-server-http.

Each entry script in the Azure ML styles is served by both (azmlinfsrv from its own
venv), every request goes to both, and the status codes, bodies (parsed when JSON)
and the headers clients read must match.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Reply, ServeFactory, Server, wait_until_up

pytestmark = pytest.mark.slow

# (method, path, body, headers)
Case = tuple[str, str, bytes | None, dict[str, str]]
JSON_CT = {"Content-Type": "application/json"}


def post(body: Any, **headers: str) -> Case:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ("POST", "/score", data, {**JSON_CT, **headers})


COMMON: list[Case] = [
    ("GET", "/", None, {}),
    ("GET", "/nope", None, {}),
    ("PUT", "/score", b"{}", {}),
    ("OPTIONS", "/score", None, {}),
    ("GET", "/swagger.json", None, {}),
    ("GET", "/swagger.json?version=2.0", None, {}),
    ("GET", "/swagger.json?version=3", None, {}),
    ("GET", "/swagger.json?version=3.1", None, {}),
    ("GET", "/swagger.json?version=7", None, {}),
    post({}, **{"x-request-id": "x" * 101}),
    post({}, **{"x-ms-request-id": "y" * 101}),
]
SCRIPTS: dict[str, list[Case]] = {
    "echo.py": [
        *COMMON,
        post({"kind": "dict"}),
        post({"kind": "str"}),
        post({"kind": "list"}),
        post({"kind": "none"}),
        post({"kind": "fail"}),
        post({"kind": "unencodable"}),
        post({"kind": "sleep", "seconds": 3}),  # both run with a 1000 ms timeout
        post(b"\xff\xfe not utf-8"),
        post(b"not json at all"),  # run()'s json.loads raises: a 500 for both
        ("GET", "/score?kind=list", None, {}),
        ("GET", "/score?kind=dict&a=1&b=x&a=2", None, {}),
        ("POST", "/score", b'{"kind": "list"}', {"Content-Type": "text/plain"}),
    ],
    "headers.py": [
        post({"a": 1}, **{"X-Custom-Header": "value"}),
        post({"a": 1}),
    ],
    "schema.py": [
        *COMMON,
        post({"data": [[1, 2, 3]]}),
        post({"data": [[1, 2, 3]], "scale": 3}),
        post({"data": [[1, 2, 3]], "scale": -1}),
        post({"data": [[1, 2, 3]], "unused": 1}),
        ("POST", "/score", b'{"data": [[1]]}', {"Content-Type": "text/plain"}),
        ("POST", "/score", b'{"data": [[1]]}', {}),
        ("POST", "/score", b'{"data": [[1]]}', {"Content-Type": "application/vnd.x+json"}),
        post(b"{not json"),
        post(b"[1, 2]"),
        post(b""),
        post({"scale": 1}),
        ("GET", "/score?data=[[1,2]]&scale=2", None, {}),
        ("GET", "/score?scale=2", None, {}),
    ],
    "raw_contrib.py": [
        ("GET", "/score?x=1&x=2", None, {}),
        ("POST", "/score", b"\x00\x01 raw bytes", {}),
        post({"a": [1, 2]}, **{"X-Kind": "json"}),
        ("POST", "/score", b"", {"X-Kind": "teapot"}),
        ("POST", "/score", b"", {"X-Kind": "error"}),
        ("POST", "/score", b"", {"X-Kind": "none"}),
        ("POST", "/score", b"", {"X-Kind": "plain"}),
        ("POST", "/score", b"", {"X-Kind": "raise"}),
        ("POST", "/score", b"no json here", {"X-Kind": "json"}),
        ("POST", "/score", b'{"a": 1}', {"X-Kind": "json"}),  # no JSON content type
        ("OPTIONS", "/score", None, {}),
        ("PUT", "/score", b"", {}),
        (
            "POST",
            "/score",
            (
                b'--B\r\nContent-Disposition: form-data; name="field"\r\n\r\nv\r\n'
                b'--B\r\nContent-Disposition: form-data; name="upload"; filename="f.bin"\r\n'
                b"Content-Type: application/octet-stream\r\n\r\n\x00\x01\x02\r\n--B--\r\n"
            ),
            {"X-Kind": "files", "Content-Type": "multipart/form-data; boundary=B"},
        ),
    ],
    "raw_server_api.py": [
        ("POST", "/score", b"shout", {}),
        ("GET", "/score", None, {}),
    ],
    # Flask idioms on the request and the response (AMLRequest/AMLResponse are Flask's).
    "raw_flask_idioms.py": [
        (
            "POST",
            "/score?case=request&a=1&a=2&b=",
            (
                b'--B\r\nContent-Disposition: form-data; name="field"\r\n\r\nv\r\n'
                b'--B\r\nContent-Disposition: form-data; name="upload"; filename="f.bin"\r\n'
                b"Content-Type: application/octet-stream\r\n\r\n\x00\x01\x02\r\n--B--\r\n"
            ),
            {
                "Content-Type": "multipart/form-data; boundary=B",
                "Cookie": "session=abc; theme=dark",
                "User-Agent": "compat-test/1.0",
                "X_Under_Score": "dropped",
            },
        ),
        ("POST", "/score?case=request", b'{"k": [1, 2]}', JSON_CT),
        ("POST", "/score?case=request", b"not json", {"Content-Type": "text/plain"}),
        ("GET", "/score?case=request&x=%C3%BC", None, {}),
        ("POST", "/score?case=input_stream", b"abcdefgh", {"Content-Type": "text/plain"}),
        ("POST", "/score?case=stream", b"abcdefgh", {"Content-Type": "text/plain"}),
        ("POST", "/score?case=json_strict", b"not json", {"Content-Type": "text/plain"}),
        ("POST", "/score?case=json_caught", b"not json", {"Content-Type": "text/plain"}),
        ("POST", "/score?case=json_caught", b"{broken", JSON_CT),
        *(
            ("POST", f"/score?case={case}", b"", {})
            for case in (
                "mimetype",
                "content_type",
                "status",
                "status_code",
                "extend",
                "cookie",
                "response_json",
                "set_data",
                "failed_5xx",
                "location",
                "no_content",
                "list_body",
            )
        ),
        ("HEAD", "/score?case=mimetype", None, {}),
    ],
    # AMLResponse over a generator: streamed, chunk by chunk, on both.
    "streaming.py": [
        ("POST", "/score", b"", {"Content-Type": "text/plain"}),
        ("GET", "/score?case=reset", None, {}),
        ("HEAD", "/score", None, {}),
        ("GET", "/score?case=closed", None, {}),
        # (A generator that fails before its first item: 500 on both, but Azure ML's body
        # is gunicorn's HTML error page and ours the JSON message; test_streaming.py.)
    ],
}
# Headers a client may read; the rest (date, server, ids' values) legitimately differ.
COMPARED_HEADERS = (
    "content-type",
    "x-ms-run-function-failed",
    "x-extra",
    "allow",
    "transfer-encoding",
    "set-cookie",
    "location",
    "retry-after",
    "x-split",
    "x-one",
    "x-two",
    "x-three",
)
ENV = {"SCORING_TIMEOUT_MS": "1000"}


def comparable(reply: Reply, method: str) -> dict[str, Any]:
    content_type = (reply.header("Content-Type") or "").split(";")[0]
    body: Any = reply.body
    if content_type == "application/json" and reply.body:
        body = reply.json()
    headers = {name: sorted(v.lower() for v in reply.all(name)) for name in COMPARED_HEADERS}
    if reply.status in (404, 405) and method != "OPTIONS":
        headers.pop("x-ms-run-function-failed")  # Flask-level errors: set on ours only
    headers.pop("allow", None) if method != "OPTIONS" else None
    return {"status": reply.status, "body": body, "headers": headers}


@pytest.fixture(scope="module", params=sorted(SCRIPTS))
def pair(
    request: pytest.FixtureRequest, serve_module: ServeFactory, azureml_serve: ServeFactory
) -> tuple[str, Server, Server]:
    script = request.param  # the servers stop with the module-scoped factories
    return script, serve_module(script, env=ENV), azureml_serve(script, env=ENV)


def test_same_answers(pair: tuple[str, Server, Server]) -> None:
    script, ours, theirs = pair
    mismatches = []
    for method, path, body, headers in SCRIPTS[script]:
        mine = comparable(ours.request(method, path, body, headers), method)
        reference = comparable(theirs.request(method, path, body, headers), method)
        if mine != reference:
            mismatches.append(
                f"{method} {path} {body!r} {headers}:\n  ours:    {mine}\n  azureml: {reference}"
            )
    assert not mismatches, f"{script}: {len(mismatches)} differences\n" + "\n".join(mismatches)


def test_request_ids_both_ways(pair: tuple[str, Server, Server]) -> None:
    _, ours, theirs = pair
    for server in (ours, theirs):
        sent = server.request("GET", "/", None, {"x-request-id": "abc", "TraceId": "t-1"})
        assert sent.header("x-request-id") == "abc"
        assert sent.header("x-ms-request-id") == "abc"
        assert sent.header("TraceId") == "t-1"
        fresh = server.request("GET", "/")
        assert len(fresh.header("x-request-id") or "") == 36


def test_init_failure_both_exit_non_zero(serve: ServeFactory, azureml_serve: ServeFactory) -> None:
    ours = serve("init_fails.py", wait=False)
    theirs = azureml_serve("init_fails.py", wait=False)
    assert ours.wait_exit(timeout=60) == 3
    assert theirs.wait_exit(timeout=60) != 0
    assert "init_fails sentinel" in ours.stderr()
    assert "init_fails sentinel" in theirs.stdout() + theirs.stderr()


def test_scoring_timeout_is_the_same_500_on_both(
    serve_module: ServeFactory, azureml_serve: ServeFactory
) -> None:
    """Azure ML answers a run() past SCORING_TIMEOUT_MS with 500 and this message (not 504):
    a client that checks either keeps working."""
    ours, theirs = serve_module("echo.py", env=ENV), azureml_serve("echo.py", env=ENV)
    for server in (ours, theirs):
        reply = server.post({"kind": "sleep", "seconds": 3})
        assert reply.status == 500
        assert reply.json() == {"message": "Scoring timeout after 1000 ms"}
        assert reply.header("x-ms-run-function-failed") == "True"


def test_swagger_is_served_once_the_liveness_probe_answers(
    serve: ServeFactory, azureml_serve: ServeFactory, tmp_path: Path
) -> None:
    """For Azure ML, GET / = 200 means the server is up, and tools read /swagger.json next.
    Ours answers GET / during init() already (liveness), so /swagger.json waits for init()
    as /score does, instead of answering 503."""
    gate = tmp_path / "open"
    env = {"SLOW_INIT_GATE": str(gate)}
    ours = serve("slow_init.py", env=env, wait=False)
    theirs = azureml_serve("slow_init.py", env=env, wait=False)
    for server in (ours, theirs):
        wait_until_up(server, "/")
    with concurrent.futures.ThreadPoolExecutor() as pool:
        pending = [pool.submit(s.request, "GET", "/swagger.json") for s in (ours, theirs)]
        time.sleep(0.5)  # the requests are waiting on init() (ours) or in the backlog
        gate.touch()
        replies = [future.result(timeout=60) for future in pending]
    assert [reply.status for reply in replies] == [200, 200]
    assert replies[0].json()["swagger"] == replies[1].json()["swagger"]


def test_a_stream_that_fails_midway_is_cut_short_the_same_way_on_both(
    serve: ServeFactory, azureml_serve: ServeFactory
) -> None:
    for server in (serve("streaming.py"), azureml_serve("streaming.py")):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/score", body=b"raise", headers={"Content-Type": "text/plain"})
        response = conn.getresponse()
        assert response.status == 200, server.name
        assert response.getheader("Transfer-Encoding") == "chunked", server.name
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        assert cut.value.partial == b"item 0\nitem 1\n", server.name
        conn.close()


def test_repeated_request_headers_reach_the_script_joined_on_both(
    serve: ServeFactory, azureml_serve: ServeFactory
) -> None:
    views = []
    for server in (serve("raw_flask_idioms.py"), azureml_serve("raw_flask_idioms.py")):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"GET /score?case=request HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                b"X-Repeated: one\r\nX-Repeated: two\r\n\r\n"
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), (server.name, head)
        view = json.loads(body)
        views.append((view["repeated"], view["repeated_list"]))
    assert views == [("one,two", ["one,two"])] * 2


def test_a_keyed_request_is_answered_as_azureml_answers_it(
    serve: ServeFactory, azureml_serve: ServeFactory
) -> None:
    """azmlinfsrv 1.5.1 has no key check of its own (in Azure ML the endpoint's gateway
    checks keys, and its swagger only declares a Bearer scheme), so it ignores
    DEPLOYER_SCORING_KEY: there is no 401 of theirs to compare. What must match is the
    answer to a request that carries the key: a client written for Azure ML, sending
    Authorization, gets the same answer from ours behind auth: key."""
    key = "compat-k3y-0123456789abcdef"
    env = {**ENV, "DEPLOYER_SCORING_KEY": key}
    ours, theirs = serve("echo.py", env=env), azureml_serve("echo.py", env=env)
    keyed = {**JSON_CT, "Authorization": f"Bearer {key}"}
    for method, path, body in (
        ("POST", "/score", json.dumps({"kind": "dict"}).encode()),
        ("POST", "/score", json.dumps({"kind": "fail"}).encode()),
        ("GET", "/swagger.json", None),
        ("GET", "/", None),
    ):
        mine = comparable(ours.request(method, path, body, keyed), method)
        reference = comparable(theirs.request(method, path, body, keyed), method)
        assert mine == reference, (method, path)
    unkeyed = theirs.request("POST", "/score", json.dumps({"kind": "dict"}).encode(), JSON_CT)
    assert unkeyed.status == 200  # theirs: no key check
    assert ours.post({"kind": "dict"}).status == 401
