"""Tests that express what real endpoints take: uploads, binary bodies, GET with a query,
headers; and expectations on headers, content type and a binary answer's digest.

They run against our scoring server on 127.0.0.1, serving Azure-ML-style @rawhttp scripts
from tests/deploy/scripts; a chunked answer comes from a small in-process server.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deployer.cli import main
from deployer.config.model import ScoringTests
from deployer.verify import run_tests
from deployer.verify_answers import media_type_matches
from deployer.verify_requests import guess_type, prepare_request
from tests.serving.conftest import Server, free_port, launch, wait_until_up

SCRIPTS = Path(__file__).resolve().parent / "scripts"
IMAGE = bytes(range(256)) * 40 + b"\x89PNG\r\n\x1a\n--boundary?--\r\n"  # binary, not UTF-8
CONFIG = """\
version: 1
name: images
model:
  path: model
entry_script: score.py
registry:
  address: 127.0.0.1:5000
targets:
  local: {{type: local, port: 8080}}
tests:
  latency_requests: 5
  requests:
{requests}
"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Our scoring server on each script of tests/deploy/scripts: name -> scoring URI."""
    logdir = tmp_path_factory.mktemp("servers")
    started: list[Server] = []
    try:
        for script in ("upload", "query", "headers"):
            port = free_port()
            argv = [
                *(sys.executable, "-m", "deployer.serving"),
                *("--entry-script", str(SCRIPTS / f"{script}.py")),
                *("--model-dir", str(logdir), "--port", str(port)),
            ]
            started.append(launch(argv, logdir, f"{script}-{port}", port))
        for server in started:
            wait_until_up(server, "/ready")
        yield {
            name: f"http://127.0.0.1:{server.port}/score"
            for name, server in zip(("upload", "query", "headers"), started, strict=True)
        }
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """deploy.yaml's folder, with the files tests send."""
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "cat.png").write_bytes(IMAGE)
    (tmp_path / "samples" / "photo.jpeg").write_bytes(IMAGE[:100])
    return tmp_path


def _tests(folder: Path, *requests: dict[str, Any], **extra: Any) -> ScoringTests:
    """Validated as the loader does: the files are checked in ``folder``."""
    data = {"requests": list(requests), "latency_requests": 5, **extra}
    return ScoringTests.model_validate(data, context={"base_dir": folder})


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- uploads and binary answers -------------------------------------------------------


def test_a_multipart_upload_with_a_binary_answer_passes(
    servers: dict[str, str], folder: Path
) -> None:
    tests = _tests(
        folder,
        {
            "name": "upload",
            "files": {"image": "samples/cat.png"},
            "form": {"caption": "a cat"},
            "expect": {
                "content_type": "application/octet-stream",
                "headers": {
                    "X-Upload-Name": "cat.png",
                    "x-upload-type": "image/png",  # guessed from the extension
                    "X-Upload-Bytes": str(len(IMAGE)),
                    "X-Caption": "a cat",
                },
                "body_sha256": _sha256(IMAGE[::-1]),
            },
        },
        latency_p95_ms=5000,
    )
    run = run_tests(servers["upload"], tests, base_dir=folder)
    assert run.passed, run
    (result,) = run.results
    assert result.received_bytes == len(IMAGE)
    assert result.ttfb_ms is not None and 0 < result.ttfb_ms <= result.latency_ms
    assert run.latency is not None and run.latency.requests == 5  # the burst uploads too


def test_a_wrong_binary_answer_fails_with_both_digests(
    servers: dict[str, str], folder: Path
) -> None:
    """The upload that used to be untestable: a JSON test passed while uploads failed."""
    wrong = _sha256(IMAGE)  # the upload itself, not what the endpoint makes of it
    tests = _tests(
        folder,
        {"name": "json-only", "json": {"data": [1]}, "expect": {"status": 415}},
        {
            "name": "upload",
            "files": {"image": "samples/cat.png"},
            "expect": {"body_sha256": wrong.upper()},
        },
    )
    run = run_tests(servers["upload"], tests, base_dir=folder)
    assert not run.passed
    assert run.results[0].passed
    failed = run.results[1]
    assert failed.failures == (
        f"body sha256: expected {wrong}, got {_sha256(IMAGE[::-1])} "
        f"({len(IMAGE)} bytes of application/octet-stream)",
    )
    assert failed.detail == failed.failures[0]


def test_a_binary_body_file_is_sent_as_is_with_a_guessed_or_given_type(
    servers: dict[str, str], folder: Path
) -> None:
    reversed_jpeg = _sha256(IMAGE[:100][::-1])
    tests = _tests(
        folder,
        {
            "name": "guessed",
            "body_file": "samples/photo.jpeg",
            "expect": {"headers": {"X-Upload-Type": "image/jpeg"}, "body_sha256": reversed_jpeg},
        },
        {
            "name": "given",
            "body_file": "samples/cat.png",
            "headers": {"content-type": "image/webp"},
            "expect": {
                "headers": {"X-Upload-Type": "image/webp", "X-Upload-Bytes": str(len(IMAGE))}
            },
        },
        # Azure ML's /score takes GET, POST and OPTIONS: a PUT is sent as a PUT.
        {"name": "put", "method": "PUT", "body_file": "samples/cat.png", "expect": {"status": 405}},
    )
    run = run_tests(servers["upload"], tests, base_dir=folder)
    assert run.passed, run
    assert [r.method for r in run.results] == ["POST", "POST", "PUT"]


def test_a_wrong_status_on_a_binary_answer_says_what_came_not_garbage(folder: Path) -> None:
    with _server(_binary_500) as uri:
        run = run_tests(uri, _tests(folder, {"name": "b", "json": {}}))
    assert run.results[0].detail == (
        "status 500, expected 200: (4 bytes of application/octet-stream, not text)"
    )


# --- GET with a query; content types --------------------------------------------------


def test_get_with_a_query(servers: dict[str, str], folder: Path) -> None:
    tests = _tests(
        folder,
        {
            "name": "search",
            "method": "GET",
            "query": {"q": ["red car", "ä&b"], "limit": "3"},
            "expect": {
                "json": {"q": ["red car", "ä&b"], "limit": 3},
                "content_type": "application/json",  # its charset is not compared
            },
        },
        {
            "name": "with-charset",
            "method": "GET",
            "expect": {"content_type": "Application/JSON; charset=UTF-8"},
        },
    )
    run = run_tests(servers["query"], tests, base_dir=folder)
    assert run.passed, run


def test_a_query_is_added_to_the_query_of_the_scoring_uri(
    servers: dict[str, str], folder: Path
) -> None:
    tests = _tests(
        folder,
        {
            "name": "q",
            "method": "GET",
            "query": {"q": "b"},
            "expect": {"json": {"q": ["a", "b"], "limit": 10}},
        },
    )
    run = run_tests(servers["query"] + "?q=a", tests, base_dir=folder)
    assert run.passed, run


def test_a_wrong_content_type_fails_with_both(servers: dict[str, str], folder: Path) -> None:
    tests = _tests(
        folder,
        {
            "name": "t",
            "method": "GET",
            "expect": {"content_type": "application/json; charset=latin-1"},
        },
    )
    run = run_tests(servers["query"], tests, base_dir=folder)
    assert run.results[0].failures == (
        "content type: expected 'application/json; charset=latin-1', "
        "got 'application/json; charset=utf-8'",
    )


@pytest.mark.parametrize(
    ("actual", "expected", "matches"),
    [
        ("image/png", "image/png", True),
        ("IMAGE/PNG", "image/png", True),
        ("text/plain; charset=utf-8", "text/plain", True),
        ("text/plain", "text/plain; charset=utf-8", False),
        ('text/plain; charset="UTF-8"', "text/plain; charset=utf-8", True),
        ("text/plain; format=Flowed", "text/plain; format=flowed", False),
        ("text/html", "text/plain", False),
    ],
)
def test_media_type_comparison(actual: str, expected: str, matches: bool) -> None:
    assert media_type_matches(actual, expected) is matches


# --- headers --------------------------------------------------------------------------


def test_custom_request_headers_and_expected_answer_headers(
    servers: dict[str, str], folder: Path
) -> None:
    tests = _tests(
        folder,
        {
            "name": "echo",
            "headers": {"X-Api-Version": "2024-01", "X-Echo-Trace": "abc 123"},
            "json": {},
            "expect": {
                "headers": {"x-model-version": "2", "X-TRACE": "abc 123"},
                "json": {"Trace": "abc 123"},
            },
        },
        {"name": "no-version", "json": {}, "expect": {"status": 400}},
    )
    run = run_tests(servers["headers"], tests, base_dir=folder)
    assert run.passed, run


def test_every_failed_expectation_is_listed(servers: dict[str, str], folder: Path) -> None:
    tests = _tests(
        folder,
        {
            "name": "echo",
            "headers": {"X-Api-Version": "2024-01"},
            "expect": {
                "headers": {"X-Model-Version": "3", "X-Region": "westeurope"},
                "content_type": "text/plain",
                "json": {"a": 1},
            },
        },
    )
    run = run_tests(servers["headers"], tests, base_dir=folder)
    assert run.results[0].failures == (
        "header X-Model-Version: expected '3', got '2'",
        "header X-Region: expected 'westeurope', got no such header",
        "content type: expected 'text/plain', got 'application/json'",
        "$: keys [], expected ['a']",
    )
    assert run.results[0].detail == "; ".join(run.results[0].failures)


def test_a_header_given_twice_in_the_answer_is_compared_joined(folder: Path) -> None:
    with _server(_two_headers) as uri:
        tests = _tests(folder, {"name": "t", "expect": {"headers": {"X-Tag": "a, b"}}})
        assert run_tests(uri, tests, base_dir=folder).passed


# --- streamed answers and timing ------------------------------------------------------


def test_a_chunked_answer_is_read_as_it_streams(folder: Path) -> None:
    chunks = [b'{"rows": [', b"1, 2", b", 3]}"]
    with _server(_chunked(chunks, pause_s=0.05)) as uri:
        tests = _tests(
            folder,
            {
                "name": "stream",
                "expect": {"json": {"rows": [1, 2, 3]}, "body_sha256": _sha256(b"".join(chunks))},
            },
            latency_requests=3,
        )
        run = run_tests(uri, tests, base_dir=folder)
    assert run.passed, run
    (result,) = run.results
    assert result.received_bytes == len(b"".join(chunks))
    # Headers first, then two pauses before the last chunk.
    assert result.ttfb_ms is not None and result.latency_ms - result.ttfb_ms >= 90
    assert run.latency is not None and run.latency.requests == 3  # one kept-alive connection


# --- how requests are built -----------------------------------------------------------


def test_multipart_bodies_carry_names_types_and_a_boundary_not_in_the_files(
    folder: Path,
) -> None:
    (folder / 'we"ird.bin').write_bytes(b"\x00\x01")
    (test,) = _tests(
        folder,
        {"name": "m", "files": {"a": "samples/cat.png", "b": 'we"ird.bin'}, "form": {"c": "ü"}},
    ).requests
    request = prepare_request(test, folder)
    content_type = request.headers["Content-Type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    boundary = content_type.split("=", 1)[1].encode()
    assert request.body is not None and boundary not in IMAGE
    parts = request.body.split(b"--" + boundary)
    assert parts[0] == b"" and parts[-1] == b"--\r\n"
    assert (
        parts[1] == b'\r\nContent-Disposition: form-data; name="c"\r\n\r\n' + "ü".encode() + b"\r\n"
    )
    assert parts[2].startswith(
        b'\r\nContent-Disposition: form-data; name="a"; filename="cat.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + IMAGE
    )
    assert b'filename="we%22ird.bin"\r\nContent-Type: application/octet-stream' in parts[3]


@pytest.mark.parametrize(
    ("request_", "method", "body", "content_type"),
    [
        ({}, "POST", b"null", "application/json"),  # as before: a POST sends JSON
        ({"method": "GET"}, "GET", None, None),
        ({"method": "DELETE"}, "DELETE", None, None),
        ({"method": "GET", "json": None}, "GET", b"null", "application/json"),
        ({"body": "hi"}, "POST", b"hi", "text/plain"),
        ({"body": "hi", "headers": {"CONTENT-TYPE": "text/csv"}}, "POST", b"hi", "text/csv"),
    ],
)
def test_what_each_form_sends(
    folder: Path,
    request_: dict[str, Any],
    method: str,
    body: bytes | None,
    content_type: str | None,
) -> None:
    (test,) = _tests(folder, {"name": "r", **request_}).requests
    request = prepare_request(test, folder)
    assert (request.method, request.body) == (method, body)
    types = [v for k, v in request.headers.items() if k.lower() == "content-type"]
    assert types == ([content_type] if content_type else [])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.png", "image/png"),
        ("a.JPG", "image/jpeg"),
        ("a.json", "application/json"),
        ("a.npy", "application/octet-stream"),
        ("a.json.gz", "application/octet-stream"),
        ("noext", "application/octet-stream"),
    ],
)
def test_content_types_are_guessed_from_python_s_own_table(name: str, expected: str) -> None:
    assert guess_type(name) == expected


def test_a_file_that_cannot_be_read_fails_its_test_without_sending_it(
    servers: dict[str, str], folder: Path
) -> None:
    """`deployer test` loads deploy.yaml without checking files: they are read at run time."""
    tests = ScoringTests.model_validate(
        {
            "requests": [
                {"name": "gone", "body_file": "samples/gone.png"},
                {"name": "ok", "body_file": "samples/cat.png"},
            ],
            "latency_requests": 2,
        }
    )
    run = run_tests(servers["upload"], tests, base_dir=folder)
    gone, ok = run.results
    assert (gone.passed, gone.status) == (False, None)
    assert gone.detail == "body_file 'samples/gone.png' cannot be read: No such file or directory"
    assert ok.passed
    assert run.latency is not None and run.latency.requests == 2


def test_a_symbolic_link_out_of_the_folder_is_not_read(
    folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text("secret")
    (folder / "samples" / "link.txt").symlink_to(outside)
    tests = ScoringTests.model_validate(
        {"requests": [{"name": "l", "body_file": "samples/link.txt"}]}
    )
    run = run_tests("http://127.0.0.1:9/score", tests, base_dir=folder)
    assert (
        run.results[0].detail
        == "body_file 'samples/link.txt' leads outside the folder of deploy.yaml"
    )


# --- deployer test --------------------------------------------------------------------


def test_cli_prints_first_byte_and_total_times_and_each_failure(
    servers: dict[str, str], folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = f"""\
    - name: upload
      files: {{image: samples/cat.png}}
      expect:
        content_type: application/octet-stream
        body_sha256: {_sha256(IMAGE[::-1])}
    - name: upload-wrong
      files: {{image: samples/cat.png}}
      expect:
        headers: {{X-Upload-Name: dog.png}}
        body_sha256: {"f" * 64}
    - name: raw-missing
      body_file: samples/missing.png
"""
    config = folder / "deploy.yaml"
    config.write_text(CONFIG.format(requests=requests))
    code = main(["test", "-c", str(config), "-t", "local", "--uri", servers["upload"]])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    lines = out.splitlines()
    assert lines[0] == f"tests against {servers['upload']}: FAILED"
    assert lines[1].startswith("  pass  upload                   POST    200  first byte ")
    assert " ms  total " in lines[1] and lines[1].endswith("  10.0 KiB")
    assert lines[2].startswith("  FAIL  upload-wrong             POST    200  first byte ")
    assert lines[3] == "          header X-Upload-Name: expected 'dog.png', got 'cat.png'"
    assert lines[4] == (
        f"          body sha256: expected {'f' * 64}, got {_sha256(IMAGE[::-1])} "
        f"({len(IMAGE)} bytes of application/octet-stream)"
    )
    assert lines[5] == "  FAIL  raw-missing              POST      -  not sent"
    assert lines[6] == (
        "          body_file 'samples/missing.png' cannot be read: No such file or directory"
    )
    assert lines[7].startswith("  latency over 5 requests: p50 ")


# --- in-process servers for what the scoring server does not do -----------------------


Handler = Any


def _server(respond: Handler) -> Any:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            respond(self)

        do_GET = do_POST = _any

        def log_message(self, format: str, *args: object) -> None:
            pass

    class _Running:
        def __enter__(self) -> str:
            self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            threading.Thread(target=self.server.serve_forever, daemon=True).start()
            return f"http://127.0.0.1:{self.server.server_address[1]}/score"

        def __exit__(self, *exc: object) -> None:
            self.server.shutdown()
            self.server.server_close()

    return _Running()


def _binary_500(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(500)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("Content-Length", "4")
    handler.end_headers()
    handler.wfile.write(b"\xff\xfe\x00\x81")


def _two_headers(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("X-Tag", "a")
    handler.send_header("x-tag", "b")
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def _chunked(chunks: list[bytes], pause_s: float) -> Handler:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        handler.wfile.flush()
        for index, chunk in enumerate(chunks):
            if index:
                time.sleep(pause_s)
            handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()

    return respond


def test_json_expectation_still_compares_json_after_these_changes(folder: Path) -> None:
    with _server(_chunked([json.dumps([1, 2]).encode()], pause_s=0)) as uri:
        tests = _tests(folder, {"name": "j", "expect": {"json": [1, 3]}})
        assert (
            run_tests(uri, tests, base_dir=folder).results[0].detail
            == "$[1]: 2 differs from 3 by more than 0.0"
        )


def _long_text_500(handler: BaseHTTPRequestHandler) -> None:
    body = ("é" * 1000).encode()
    handler.send_response(500)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_a_long_text_answer_is_shown_cut(folder: Path) -> None:
    with _server(_long_text_500) as uri:
        run = run_tests(uri, _tests(folder, {"name": "t", "json": {}}))
    assert run.results[0].detail == "status 500, expected 200: " + "é" * 300 + "…"


class _Http10(BaseHTTPRequestHandler):
    """HTTP/1.0: no Content-Length, the connection closes after each answer."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"hello")

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_answers_delimited_by_closing_and_head_answers(folder: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Http10)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tests = _tests(
            folder,
            {"name": "get", "method": "GET", "expect": {"body_sha256": _sha256(b"hello")}},
            {"name": "head", "method": "HEAD", "expect": {"body_sha256": _sha256(b"")}},
        )
        run = run_tests(
            f"http://127.0.0.1:{server.server_address[1]}/score", tests, base_dir=folder
        )
    finally:
        server.shutdown()
        server.server_close()
    assert run.passed, run
    assert [r.received_bytes for r in run.results] == [5, 0]
    assert run.latency is not None and run.latency.requests == 5  # reconnecting each time
