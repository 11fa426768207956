"""@rawhttp on werkzeug: AMLRequest/AMLResponse are werkzeug's Request/Response, as
Flask's are in Azure ML, so every Flask idiom a script uses behaves as there.

build_request() makes the request from raw parts (a WSGI environ as gunicorn builds it);
response_parts() turns a response into status, headers and body (bytes, or chunks when
streamed). The expected values are what azureml-inference-server-http 1.5.1 (Flask 3.1,
werkzeug 3.1, gunicorn) answers; tests/serving/scripts/raw_flask_idioms.py and
streaming.py run the same idioms on both servers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, UnsupportedMediaType
from werkzeug.wrappers import Request, Response

from deployer.serving.aml_request import AMLRequest, build_request
from deployer.serving.aml_response import AMLResponse, response_parts

from .conftest import REPO, ServeFactory

HTML = "text/html; charset=utf-8"


def req(
    method: str = "POST",
    path: str = "/score",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    **kw: Any,
) -> AMLRequest:
    kw.setdefault("remote_addr", "10.1.2.3")
    kw.setdefault("server", ("0.0.0.0", 5001))
    return build_request(method, path, query, [(b"Host", b"h:5001"), *(headers or [])], body, **kw)


def parts(resp: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    status, headers, body = response_parts(resp)
    assert isinstance(body, bytes), "not streamed"
    return status, headers, body


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


# The request --------------------------------------------------------------------------------------
def test_request_is_a_werkzeug_request_with_a_gunicorn_environ() -> None:
    r = req(
        "POST",
        "/sc%6Fre",
        b"a=1&a=2&b=%C3%BC",
        [(b"Content-Type", b"application/json"), (b"Content-Length", b"2"), (b"X-Ms-Id", b" 7 ")],
        b"{}",
        remote_port=4711,
    )
    assert isinstance(r, Request)
    env = r.environ
    assert (env["REQUEST_METHOD"], env["PATH_INFO"], env["QUERY_STRING"]) == (
        "POST",
        "/score",
        "a=1&a=2&b=%C3%BC",
    )
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("0.0.0.0", "5001")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("10.1.2.3", "4711")
    assert (env["wsgi.url_scheme"], env["SERVER_PROTOCOL"], env["SCRIPT_NAME"]) == (
        "http",
        "HTTP/1.1",
        "",
    )
    assert (env["CONTENT_TYPE"], env["CONTENT_LENGTH"]) == ("application/json", "2")
    assert "HTTP_CONTENT_TYPE" not in env  # as gunicorn: CONTENT_* only
    assert (env["HTTP_HOST"], env["HTTP_X_MS_ID"]) == ("h:5001", "7")
    assert env["wsgi.input_terminated"] is True
    assert r.args.getlist("a") == ["1", "2"]
    assert r.args["b"] == "ü"
    assert (r.path, r.full_path, r.url) == (
        "/score",
        "/score?a=1&a=2&b=%C3%BC",
        "http://h:5001/score?a=1&a=2&b=ü",  # werkzeug's url is an IRI
    )
    assert (r.remote_addr, r.host, r.scheme) == ("10.1.2.3", "h:5001", "http")


def test_https_root_path_and_server_from_the_host_header() -> None:
    r = build_request(
        "GET",
        "/api/score",
        b"",
        [(b"Host", b"example.org")],
        b"",
        remote_addr=None,
        scheme="https",
        root_path="/api",
    )
    env = r.environ
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.org", "443")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/api", "/api/score")
    assert "REMOTE_ADDR" not in env
    assert r.url == "https://example.org/api/api/score"
    r = build_request("GET", "/score", b"", [(b"host", b"h:8080")], b"", remote_addr=None)
    assert (r.environ["SERVER_NAME"], r.environ["SERVER_PORT"]) == ("h", "8080")


def test_repeated_headers_are_joined_with_commas_as_gunicorn_does() -> None:
    r = req(headers=[(b"X-Repeated", b"one"), (b"x-repeated", b"two"), (b"X-Repeated", b"3")])
    assert r.headers.get("X-Repeated") == "one,two,3"
    assert r.headers.getlist("X-Repeated") == ["one,two,3"]
    assert r.environ["HTTP_X_REPEATED"] == "one,two,3"
    assert dict(r.headers)["X-Repeated"] == "one,two,3"  # run(data, request_headers) sees this


def test_header_names_with_underscores_are_dropped() -> None:
    """gunicorn's header_map="drop": X_Forwarded_For must not pose as X-Forwarded-For."""
    r = req(headers=[(b"X_Forwarded_For", b"evil"), (b"X-Forwarded-For", b"1.1.1.1")])
    assert r.headers.get("X-Forwarded-For") == "1.1.1.1"
    assert r.access_route == ["1.1.1.1"]


def test_cookies_and_user_agent() -> None:
    r = req(headers=[(b"Cookie", b"a=1; session=x%20y"), (b"User-Agent", b"tester/1.0 (x)")])
    assert r.cookies.to_dict() == {"a": "1", "session": "x%20y"}  # werkzeug keeps %
    assert r.user_agent.string == "tester/1.0 (x)"
    assert req().cookies.to_dict() == {}


def test_input_stream_stream_and_get_data() -> None:
    body = b"\x00\x01 binary body"
    r = req(headers=[(b"Content-Type", b"application/octet-stream")], body=body)
    assert r.input_stream.read(3) == body[:3]  # the raw wsgi.input
    assert r.stream.read() == body[3:]  # the same stream
    r = req(body=body)
    assert r.get_data() == body
    assert r.get_data(as_text=True) == body.decode()
    assert r.data == body
    assert r.stream.read() == b""  # as in Flask: read once, then cached by get_data
    assert req(body=body).stream.read() == body


def test_chunked_request_without_content_length_is_read_whole() -> None:
    r = req(headers=[(b"Transfer-Encoding", b"chunked")], body=b"abc")
    assert "CONTENT_LENGTH" not in r.environ
    assert (r.content_length, r.get_data()) == (None, b"abc")


def test_get_json_and_its_errors_as_in_flask() -> None:
    ok = req(headers=[(b"Content-Type", b"application/vnd.x+json")], body=b'{"k": [1]}')
    assert (ok.is_json, ok.get_json(), ok.json) == (True, {"k": [1]}, {"k": [1]})
    text = req(headers=[(b"Content-Type", b"text/plain")], body=b'{"k": 1}')
    assert text.get_json(silent=True) is None
    assert text.get_json(force=True) == {"k": 1}
    text = req(headers=[(b"Content-Type", b"text/plain")], body=b'{"k": 1}')  # uncached
    with pytest.raises(UnsupportedMediaType) as unsupported:  # werkzeug >= 2.3, Flask 3
        text.get_json()
    assert unsupported.value.code == 415
    bad = req(headers=[(b"Content-Type", b"application/json")], body=b"{bad")
    assert bad.get_json(silent=True) is None
    with pytest.raises(BadRequest) as bad_request:
        bad.get_json()
    # Flask (not in debug mode) replaces werkzeug's message with the generic one.
    assert bad_request.value.code == 400
    assert bad_request.value.description == BadRequest.description


def test_urlencoded_form_and_values() -> None:
    r = req(
        query=b"q=1",
        headers=[(b"Content-Type", b"application/x-www-form-urlencoded")],
        body=b"x=1&x=2&y=%C3%BC",
    )
    assert r.form.to_dict(flat=False) == {"x": ["1", "2"], "y": ["ü"]}
    assert r.values.to_dict(flat=False) == {"q": ["1"], "x": ["1", "2"], "y": ["ü"]}


def multipart(boundary: str, content: bytes, field: bytes = b"value") -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="field"\r\n\r\n'.encode()
        + field
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="upload"; '
            f'filename="img.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )


def test_multipart_files_keep_binary_content_exact() -> None:
    content = bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n"
    ctype = b"multipart/form-data; boundary=XyZ"
    r = req(headers=[(b"Content-Type", ctype)], body=multipart("XyZ", content))
    upload = r.files["upload"]
    assert (upload.filename, upload.mimetype, upload.read()) == ("img.png", "image/png", content)
    assert r.form["field"] == "value"


def test_form_limits_are_flasks() -> None:
    """Flask 3.1: a non-file field over 500 kB is a 413, raised into run() (a 500)."""
    ctype = b"multipart/form-data; boundary=b"
    r = req(headers=[(b"Content-Type", ctype)], body=multipart("b", b"x", b"f" * 500_001))
    with pytest.raises(RequestEntityTooLarge):
        r.form  # noqa: B018
    assert (AMLRequest.max_form_parts, AMLRequest.max_content_length) == (1000, None)


# The response: Azure ML's constructor -------------------------------------------------------------
def test_response_is_a_werkzeug_response_with_azure_ml_defaults() -> None:
    r = AMLResponse("text", 200)
    assert isinstance(r, Response)
    assert parts(r) == (
        200,
        [("Content-Type", HTML), ("x-ms-run-function-failed", "False")],
        b"text",
    )
    assert AMLResponse(b"x", "201").status == "201 CREATED"  # a str status, as werkzeug takes


def test_response_constructor_json_none_and_headers() -> None:
    r = AMLResponse({"a": 1}, 201, json_str=True)
    assert (r.status_code, r.get_data(), r.headers["Content-Type"]) == (
        201,
        b'{"a": 1}',
        "application/json",
    )
    none = AMLResponse(None, 200)
    assert (none.get_data(), none.mimetype) == (b"{}", "application/json")
    r = AMLResponse("text", 200, {"Content-Type": "text/plain", "X-A": "1, 2"})
    assert r.headers.getlist("Content-Type") == ["text/plain"]
    assert r.headers.getlist("X-A") == ["1", "2"]
    failed = AMLResponse(b"x", 500, run_function_failed=True)
    assert failed.headers.getlist("x-ms-run-function-failed") == ["True"]


def test_response_constructor_quirks_kept_from_azure_ml() -> None:
    # Only the exact key "Content-Type" replaces the default: other spellings add one.
    lower = AMLResponse("x", 200, {"content-type": "text/plain"})
    assert lower.headers.getlist("Content-Type") == [HTML, "text/plain"]
    # With json_str or None, the JSON type stays beside the one given.
    none = AMLResponse(None, 200, {"Content-Type": "text/plain"})
    assert none.headers.getlist("Content-Type") == ["application/json", "text/plain"]
    # Header values must be str (.split): anything else fails in run(), a 500.
    with pytest.raises(AttributeError):
        AMLResponse("x", 200, {"X-N": 3})  # type: ignore[dict-item]


# The response: Flask idioms, as the server sends them ---------------------------------------------
def test_mimetype_setter_as_in_the_binary_payload_sample() -> None:
    resp = AMLResponse(b"\x89PNG", 200)
    resp.mimetype = "image/png"
    status, headers, body = parts(resp)
    assert (status, values(headers, "Content-Type"), body) == (200, ["image/png"], b"\x89PNG")


def test_content_type_setter() -> None:
    resp = AMLResponse("a,b\n", 200)
    resp.content_type = "text/csv; charset=utf-8"
    assert values(parts(resp)[1], "content-type") == ["text/csv; charset=utf-8"]


def test_status_setters() -> None:
    resp = AMLResponse("made", 200)
    resp.status = "201 CREATED"
    assert parts(resp)[0] == 201
    resp.status_code = 202
    assert (resp.status, parts(resp)[0]) == ("202 ACCEPTED", 202)


def test_headers_extend_and_add() -> None:
    resp = AMLResponse("x", 200, {"X-Split": "a, b"})
    resp.headers.extend([("X-One", "1"), ("X-Two", "2")])
    resp.headers.extend({"X-Three": "3"})
    resp.headers.add("X-One", "again")
    assert parts(resp)[1][2:] == [
        ("X-Split", "a"),
        ("X-Split", "b"),
        ("X-One", "1"),
        ("X-Two", "2"),
        ("X-Three", "3"),
        ("X-One", "again"),
    ]


def test_set_cookie() -> None:
    resp = AMLResponse("x", 200)
    resp.set_cookie("session", "abc", httponly=True, path="/")
    resp.delete_cookie("old")
    assert values(parts(resp)[1], "Set-Cookie") == [
        "session=abc; HttpOnly; Path=/",
        "old=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/",
    ]


def test_get_json_on_a_json_response() -> None:
    made = AMLResponse({"a": [1, 2]}, 200, json_str=True)
    assert (made.get_json(), made.is_json, made.status, made.content_length) == (
        {"a": [1, 2]},
        True,
        "200 OK",
        13,
    )
    assert AMLResponse("nope", 200).get_json(silent=True) is None


def test_set_data_and_list_bodies() -> None:
    resp = AMLResponse("first", 200)
    resp.set_data(b"second")
    assert parts(resp)[2] == b"second"
    listed = parts(AMLResponse(["a", b"b", "c"], 200))
    assert (listed[2], values(listed[1], "Content-Length")) == (b"abc", [])


# response_parts: what werkzeug and gunicorn would send --------------------------------------------
def test_a_5xx_is_marked_failed_as_azure_ml_does() -> None:
    status, headers, _ = parts(AMLResponse("unavailable", 503, {"Retry-After": "5"}))
    assert status == 503
    assert values(headers, "x-ms-run-function-failed") == ["True"]
    assert values(headers, "Retry-After") == ["5"]
    plain = Response("boom", status=500)  # a Flask Response has no such header: one is added
    assert values(parts(plain)[1], "x-ms-run-function-failed") == ["True"]
    assert values(parts(Response("ok"))[1], "x-ms-run-function-failed") == []


def test_framing_and_gunicorns_hop_by_hop_headers_are_dropped() -> None:
    resp = AMLResponse("x", 200, {"Connection": "keep-alive", "Keep-Alive": "5", "X-Ok": "1"})
    for name in ("Transfer-Encoding", "Server", "Date", "Upgrade", "Trailers", "TE"):
        resp.headers[name] = "v"
    assert parts(resp)[1] == [
        ("Content-Type", HTML),
        ("x-ms-run-function-failed", "False"),
        ("X-Ok", "1"),
    ]


def test_a_content_length_set_by_the_script_is_honoured_as_gunicorn_does() -> None:
    resp = AMLResponse("hello world", 200)
    resp.headers["Content-Length"] = "5"
    assert parts(resp)[2] == b"hello"  # gunicorn sends no more than it
    streamed = AMLResponse(iter([b"abc", b"def"]), 200)
    streamed.headers["Content-Length"] = "4"
    _, headers, chunks = response_parts(streamed)
    assert values(headers, "Content-Length") == []
    assert list(chunks) == [b"abc", b"d"]


def test_no_body_for_204_and_304() -> None:
    status, headers, body = parts(AMLResponse("dropped", 204))
    assert (status, body, values(headers, "Content-Type")) == (204, b"", [HTML])

    def gen() -> Iterator[bytes]:
        yield b"never"

    closed: list[bool] = []
    not_modified = AMLResponse(gen(), 304, {"Content-Language": "en", "ETag": "x"})
    not_modified.call_on_close(lambda: closed.append(True))
    status, headers, body = parts(not_modified)
    assert (status, body, closed) == (304, b"", [True])
    # werkzeug drops entity headers from a 304
    assert values(headers, "Content-Language") == values(headers, "Content-Type") == []
    assert values(headers, "ETag") == ["x"]


def test_location_is_made_a_uri() -> None:
    headers = parts(AMLResponse("", 302, {"Location": "/elsewhere/ü"}))[1]
    assert values(headers, "Location") == ["/elsewhere/%C3%BC"]


def test_headers_that_cannot_be_sent_raise() -> None:
    resp = AMLResponse("x", 200)
    resp.headers["X-Bad"] = "a\x01b"
    with pytest.raises(ValueError, match="X-Bad"):
        response_parts(resp)
    with pytest.raises(ValueError, match="newline"):  # werkzeug refuses one already
        resp.headers["X-Split"] = "a\r\nSet-Cookie: x=1"


def test_objects_with_the_response_attributes_still_work() -> None:
    class Duck:
        status_code = 502
        headers = (("X-Duck", "1"),)

        def get_data(self) -> bytes:
            return b"quack"

    assert parts(Duck()) == (502, [("X-Duck", "1"), ("x-ms-run-function-failed", "True")], b"quack")


# Streaming ----------------------------------------------------------------------------------------
class Probe:
    """A generator body that records how far it got and whether it was closed."""

    def __init__(self, items: list[Any], fail_at: int | None = None):
        self.items, self.fail_at = items, fail_at
        self.produced: list[Any] = []
        self.finally_ran = False

    def __call__(self) -> Iterator[Any]:
        try:
            for i, item in enumerate(self.items):
                if i == self.fail_at:
                    raise RuntimeError("failed mid-stream")
                self.produced.append(item)
                yield item
        finally:
            self.finally_ran = True


def test_a_generator_body_is_streamed_chunk_by_chunk_and_closed() -> None:
    probe = Probe(["a", b"b", "ü"])
    resp = AMLResponse(probe(), 200, {"Content-Type": "text/plain"})
    on_close: list[bool] = []
    resp.call_on_close(lambda: on_close.append(True))
    assert resp.is_streamed
    status, headers, body = response_parts(resp)
    assert status == 200
    assert values(headers, "Content-Type") == ["text/plain"]
    assert values(headers, "Content-Length") == values(headers, "Transfer-Encoding") == []
    assert not isinstance(body, bytes)
    assert probe.produced == []  # nothing runs before the server asks
    assert next(body) == b"a"
    assert probe.produced == ["a"]
    assert next(body) == b"b"
    assert next(body) == "ü".encode()  # str chunks encoded as werkzeug does
    assert not on_close
    with pytest.raises(StopIteration):
        next(body)
    assert probe.finally_ran
    assert on_close == [True]
    body.close()  # type: ignore[attr-defined]  # again: a no-op
    assert on_close == [True]


def test_closing_a_stream_early_closes_the_generator_and_the_response() -> None:
    probe = Probe([b"a", b"b", b"c"])
    resp = AMLResponse(probe(), 200)
    on_close: list[bool] = []
    resp.call_on_close(lambda: on_close.append(True))
    body = response_parts(resp)[2]
    assert next(body) == b"a"  # type: ignore[call-overload]
    body.close()  # type: ignore[union-attr]  # the client went away
    assert (probe.produced, probe.finally_ran, on_close) == ([b"a"], True, [True])
    assert list(body) == []


def test_a_stream_never_started_is_still_closed() -> None:
    """HEAD, or a client gone before the first chunk: close() without iterating."""
    resp = AMLResponse(Probe([b"a"])(), 200)
    on_close: list[bool] = []
    resp.call_on_close(lambda: on_close.append(True))
    body = response_parts(resp)[2]
    body.close()  # type: ignore[union-attr]
    assert on_close == [True]


def test_an_exception_mid_stream_comes_out_of_next_and_closes() -> None:
    probe = Probe([b"a", b"b", b"c"], fail_at=2)
    resp = AMLResponse(probe(), 200)
    on_close: list[bool] = []
    resp.call_on_close(lambda: on_close.append(True))
    body = response_parts(resp)[2]
    assert next(body) == b"a"  # type: ignore[call-overload]
    assert next(body) == b"b"  # type: ignore[call-overload]
    with pytest.raises(RuntimeError, match="mid-stream"):
        next(body)  # type: ignore[call-overload]
    assert (probe.finally_ran, on_close) == (True, [True])


def test_empty_chunks_are_skipped() -> None:
    body = response_parts(AMLResponse(iter([b"", b"a", "", b"b"]), 200))[2]
    assert list(body) == [b"a", b"b"]


def test_direct_passthrough_sends_the_iterable_as_is() -> None:
    resp = AMLResponse(iter([b"a", "b"]), 200)
    resp.direct_passthrough = True
    body = response_parts(resp)[2]
    assert next(body) == b"a"  # type: ignore[call-overload]
    with pytest.raises(TypeError):  # gunicorn fails on a str chunk too
        next(body)  # type: ignore[call-overload]


def test_chunks_arrive_as_a_slow_generator_produces_them() -> None:
    release = threading.Event()

    def slow() -> Iterator[bytes]:
        yield b"first"
        release.wait(5)
        yield b"second"

    body = response_parts(AMLResponse(slow(), 200))[2]
    assert next(body) == b"first"  # type: ignore[call-overload]
    threading.Timer(0.05, release.set).start()
    assert next(body) == b"second"  # type: ignore[call-overload]


# With the real package installed ------------------------------------------------------------------
def test_response_parts_on_real_flask_responses(azureml_python: Path) -> None:
    """A script that imports the real azureml package returns Flask's objects."""
    code = (
        "import json\n"
        "from flask import Response\n"
        "from azureml_inference_server_http.api.aml_response import AMLResponse\n"
        "from deployer.serving.aml_response import response_parts\n"
        "r = Response('plain flask', headers={'X-A': '1'})\n"
        "r.status = '201 CREATED'\n"
        "a = AMLResponse(b'img', 200)\n"
        "a.mimetype = 'image/png'\n"
        "s = AMLResponse((c for c in ['x', 'y']), 503)\n"
        "st, hs, body = response_parts(s)\n"
        "print(json.dumps([response_parts(r)[:2], response_parts(r)[2].decode(),\n"
        "                  response_parts(a)[1], [st, hs, [c.decode() for c in body]]]))\n"
    )
    out = subprocess.run(
        [str(azureml_python), "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    flask_parts, flask_body, png_headers, streamed = json.loads(out.stdout)
    assert flask_parts == [201, [["X-A", "1"], ["Content-Type", HTML]]]
    assert flask_body == "plain flask"
    assert png_headers == [["Content-Type", "image/png"], ["x-ms-run-function-failed", "False"]]
    assert streamed == [
        503,
        [["Content-Type", HTML], ["x-ms-run-function-failed", "True"]],
        ["x", "y"],
    ]


# The plain path stays without werkzeug ------------------------------------------------------------
def test_plain_scripts_do_not_import_werkzeug(serve: ServeFactory, tmp_path: Path) -> None:
    script = tmp_path / "plain.py"
    script.write_text(
        "import sys\n\ndef init():\n    pass\n\n"
        "def run(data):\n    return {'werkzeug': 'werkzeug' in sys.modules}\n"
    )
    server = serve(script)
    assert server.post({"a": 1}).json() == {"werkzeug": False}
    assert server.request("GET", "/score").json() == {"werkzeug": False}


def test_importing_the_server_does_not_import_werkzeug() -> None:
    code = (
        "import sys\n"
        "import deployer.serving.cli, deployer.serving.worker, deployer.serving.compat\n"
        "from deployer.serving import compat\n"
        "compat.install(); compat.raw_http_requested()\n"
        "assert 'werkzeug' not in sys.modules, sorted(m for m in sys.modules if 'serving' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=REPO)
