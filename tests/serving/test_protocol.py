"""The HTTP/1.1 layer at the byte level: order of answers, limits, deadlines, probes.

Real ``python -m deployer.serving`` processes on 127.0.0.1 (conftest.py), driven through
raw sockets where the bytes matter. Several cases are ported from uvicorn's tests of its
httptools protocol (encode/uvicorn tests/protocols/test_http.py): pipelining, invalid
requests, HEAD, keep-alive and ``Connection: close``, HTTP/1.0, 100-continue, fragmented
input, early disconnects, unsupported upgrades.

Where a test needs run() to be busy, scripts/gate.py blocks it until the test creates a
file, and tells the test (another file) that it has started: "X is answered while run()
is busy" is then checked without guessing how long anything takes. Every wait is bounded:
sockets have timeouts, polls have deadlines.

The clients (Raw, Gates, block_workers, ...) are in clients.py.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from .clients import (
    MAX_HEADER_BYTES,
    Answer,
    Gates,
    Raw,
    block_workers,
    http_request,
    post_bounded,
    probe,
    score_request,
    wait_for,
)
from .conftest import Reply, ServeFactory, Server, wait_until_up


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[Gates]:
    with Gates(tmp_path / "gates") as made:
        yield made


@pytest.fixture(scope="module")
def echo(serve_module: ServeFactory) -> Server:
    return serve_module("echo.py", env={"DEPLOYER_MAX_REQUEST_BYTES": "1000000"})


@pytest.fixture(scope="module")
def gated(serve_module: ServeFactory) -> Server:
    return serve_module("gate.py", args=("--workers", "1"))


LIST_BODY = b'[1, 2.5, "three", null, true]'  # echo.py's answer to {"kind": "list"}


# 1. Answers in request order ----------------------------------------------------------------
@dataclass
class Slow:
    """A server whose first /score request on a connection stays unanswered until
    ``release()``: init() still running (slow_init.py) or run() blocked (gate.py)."""

    kind: str
    server: Server
    first: bytes  # the slow request
    wait_started: Callable[[], object]  # returns once the slow request is being handled
    release: Callable[[], None]
    check_first: Callable[[Answer], None]

    def send_behind(self, conn: Raw, data: bytes) -> None:
        """Send the slow request, then ``data`` on the same connection: for init(), in
        the same send (parsed in one go while the first waits); for run(), once run()
        has started (it arrives while run() executes)."""
        if self.kind == "init":
            conn.send(self.first + data)
        else:
            conn.send(self.first)
            self.wait_started()
            conn.send(data)


@pytest.fixture(params=["init", "run"])
def slow(
    request: pytest.FixtureRequest, serve: ServeFactory, gates: Gates, tmp_path: Path
) -> Iterator[Slow]:
    limit = ("--max-request-bytes", "1000")
    if request.param == "init":
        gate = tmp_path / "init-gate"
        server = serve("slow_init.py", args=limit, env={"SLOW_INIT_GATE": str(gate)}, wait=False)
        wait_until_up(server, "/")  # liveness answers while init() runs

        def check_init(answer: Answer) -> None:
            assert (answer.status, answer.json()) == (200, {"ready": True})

        try:
            yield Slow(
                "init", server, score_request({"x": 1}), lambda: None, gate.touch, check_init
            )
        finally:
            gate.touch()
    else:
        server = serve("gate.py", args=("--workers", "1", *limit))

        def check_run(answer: Answer) -> None:
            assert answer.status == 200
            assert answer.json()["opened"] is True

        yield Slow(
            "run",
            server,
            score_request(gates.request("slow")),
            lambda: gates.wait_started("slow"),
            lambda: gates.open("slow"),
            check_run,
        )


def test_413_pipelined_behind_a_slow_request_comes_after_its_answer(slow: Slow) -> None:
    too_big = http_request("POST", "/score", headers=(b"Content-Length: 5000",))
    with Raw(slow.server.port, timeout=30) as conn:
        slow.send_behind(conn, too_big)
        early = conn.quiet_for(0.5)
        assert early == b"", f"answered before the first request's answer: {early[:300]!r}"
        slow.release()
        slow.check_first(conn.answer())
        second = conn.answer()
        assert second.status == 413
        assert second.closes
        assert second.json() == {"message": "Request body is larger than the limit of 1000 bytes."}
        assert conn.closed() == b""


def test_malformed_request_pipelined_behind_a_slow_one_is_400_after_its_answer(
    slow: Slow,
) -> None:
    with Raw(slow.server.port, timeout=30) as conn:
        slow.send_behind(conn, b"NOT HTTP AT ALL\r\n\r\n")
        early = conn.quiet_for(0.5)
        assert early == b"", f"answered before the first request's answer: {early[:300]!r}"
        slow.release()
        slow.check_first(conn.answer())
        second = conn.answer()
        assert second.status == 400
        assert second.closes
        assert conn.closed() == b""


def test_probe_pipelined_behind_a_slow_request_answers_after_it(slow: Slow) -> None:
    """Same connection, so in order: the probe waits (on a new connection it would not)."""
    with Raw(slow.server.port, timeout=30) as conn:
        slow.send_behind(conn, http_request("GET", "/"))
        early = conn.quiet_for(0.5)
        assert early == b"", f"answered before the first request's answer: {early[:300]!r}"
        slow.release()
        slow.check_first(conn.answer())
        probe_answer = conn.answer()
        assert (probe_answer.status, probe_answer.body) == (200, b"Healthy")


def test_keep_alive_and_pipelining(echo: Server) -> None:
    """uvicorn's test_pipelined_requests / test_keepalive / test_close."""
    with Raw(echo.port) as conn:
        conn.send(http_request("GET", "/") * 3)
        for _ in range(3):
            answer = conn.answer()
            assert (answer.status, answer.body, answer.closes) == (200, b"Healthy", False)
        conn.send(score_request({"kind": "list"}))
        answer = conn.answer()
        assert (answer.status, answer.body, answer.closes) == (200, LIST_BODY, False)
        conn.send(http_request("GET", "/ready", headers=(b"Connection: close",)))
        answer = conn.answer()
        assert (answer.status, answer.body, answer.closes) == (200, b"Ready", True)
        assert conn.closed() == b""


def test_request_after_connection_close_is_not_answered(echo: Server) -> None:
    """uvicorn's REQUEST_AFTER_CONNECTION_CLOSE."""
    with Raw(echo.port) as conn:
        conn.send(
            http_request("GET", "/", headers=(b"Connection: close",)) + http_request("GET", "/")
        )
        answer = conn.answer()
        assert (answer.status, answer.closes) == (200, True)
        assert conn.closed() == b""


def test_http10_request_is_answered_then_closed(echo: Server) -> None:
    with Raw(echo.port) as conn:
        conn.send(b"GET / HTTP/1.0\r\n\r\n")
        answer = conn.answer()
        assert (answer.status, answer.body) == (200, b"Healthy")
        assert conn.closed() == b""


def test_head_has_the_headers_of_get_and_no_body(echo: Server) -> None:
    """uvicorn's test_head_request; the GET behind it shows no body bytes were sent."""
    with Raw(echo.port) as conn:
        conn.send(http_request("HEAD", "/") + http_request("GET", "/"))
        head = conn.answer(head=True)
        get = conn.answer()
        assert head.status == get.status == 200
        assert head.header("content-length") == get.header("content-length") == "7"
        assert get.body == b"Healthy"
        assert conn.quiet_for(0.2) == b""


@pytest.mark.parametrize(
    "request_line",
    [
        pytest.param(b"G?T / HTTP/1.1", id="invalid-method"),
        pytest.param(b"GET /?x=y z HTTP/1.1", id="invalid-path"),
        pytest.param(b"GET / HTTP1.1", id="invalid-http-version"),
    ],
)
def test_invalid_request_line_is_400_and_closed(echo: Server, request_line: bytes) -> None:
    """uvicorn's test_invalid_http_request."""
    with Raw(echo.port) as conn:
        conn.send(request_line + b"\r\nHost: example.org\r\n\r\n")
        answer = conn.answer()
        assert (answer.status, answer.closes) == (400, True)
        assert conn.closed() == b""


def test_garbage_is_refused_and_closed(echo: Server) -> None:
    """uvicorn's test_invalid_http (100 000 bytes of 'x')."""
    with Raw(echo.port) as conn:
        conn.send(b"x" * 100_000)
        answer = conn.answer()
        assert answer.status in (400, 431)
        assert answer.closes
        conn.closed()


def test_unsupported_upgrade_is_answered_as_plain_http(echo: Server) -> None:
    """uvicorn's test_unsupported_ws_upgrade_request / test_http2_upgrade_request."""
    for protocol in (b"websocket", b"h2c"):
        with Raw(echo.port) as conn:
            conn.send(
                http_request("GET", "/", headers=(b"Connection: upgrade", b"Upgrade: " + protocol))
            )
            answer = conn.answer()
            assert (answer.status, answer.body) == (200, b"Healthy")


def test_fragmented_request_is_answered(echo: Server) -> None:
    """uvicorn's test_fragmentation, down to one byte per send."""
    body = json.dumps({"kind": "list"}).encode()
    data = http_request(
        "POST", "/score?param=" + "q" * 10, body, headers=(b"Content-Type: application/json",)
    )
    with Raw(echo.port) as conn:
        split = 20
        conn.send(data[:split])
        time.sleep(0.01)
        conn.send(data[split:])
        answer = conn.answer()
        assert (answer.status, answer.body) == (200, LIST_BODY)
        for i in range(len(data)):
            conn.send(data[i : i + 1])
            time.sleep(0.002)
        answer = conn.answer()
        assert (answer.status, answer.body) == (200, LIST_BODY)


def test_chunked_body_with_extensions_and_trailers(echo: Server) -> None:
    payload = json.dumps({"kind": "list"}).encode()
    body = (
        b"%x;name=value\r\n%s\r\n" % (5, payload[:5])
        + b"%X\r\n%s\r\n" % (len(payload) - 5, payload[5:])
        + b"0\r\nX-Trailer: yes\r\n\r\n"
    )
    head = b"POST /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with Raw(echo.port) as conn:
        for cut in (len(head) + 3, len(head) + len(body) - 4):  # inside a size, the trailer
            conn.send((head + body)[:cut])
            time.sleep(0.01)
            conn.send((head + body)[cut:])
            answer = conn.answer()
            assert (answer.status, answer.body) == (200, LIST_BODY)


def test_client_gone_before_its_answer(gated: Server, gates: Gates) -> None:
    """uvicorn's test_early_disconnect: the client leaves while run() works on its request."""
    with Raw(gated.port) as conn:
        conn.send(score_request(gates.request("gone")))
        gates.wait_started("gone")
    gates.open("gone")
    # The answer has nowhere to go; the server carries on.
    assert post_bounded(gated, {}, timeout=30).status == 200
    assert "Traceback" not in gated.stderr()


@pytest.mark.parametrize("followed", [False, True], ids=["alone", "followed"])
def test_a_half_closed_client_still_gets_its_answers(
    gated: Server, gates: Gates, followed: bool
) -> None:
    """A client may shut its side once its requests are sent (``shutdown(SHUT_WR)``):
    end-of-file is not a disconnect. The complete requests are answered, in order, then
    the server closes; an incomplete one after them is dropped."""
    tag = f"half-{followed}"
    after = http_request("GET", "/") + b"GET / HT" if followed else b""
    with Raw(gated.port) as conn:
        conn.send(score_request(gates.request(tag)) + after)
        gates.wait_started(tag)
        conn.shut()  # while run() works on the first request
        early = conn.quiet_for(0.3)
        assert early == b"", f"answered before run() returned: {early[:300]!r}"
        gates.open(tag)
        first = conn.answer(timeout=30)
        assert (first.status, first.json()["opened"]) == (200, True)
        if followed:
            second = conn.answer()
            assert (second.status, second.body) == (200, b"Healthy")
        assert conn.closed() == b""


def test_client_gone_mid_body_or_mid_head(echo: Server) -> None:
    for partial in (
        http_request("POST", "/score", headers=(b"Content-Length: 100",)) + b'{"kind"',
        b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Le",
    ):
        with Raw(echo.port) as conn:
            conn.send(partial)
        with Raw(echo.port) as conn:  # half-closed: the server closes too, at once
            conn.send(partial)
            conn.shut()
            conn.closed(timeout=10)
    assert post_bounded(echo, {"kind": "list"}).body == LIST_BODY
    assert "Traceback" not in echo.stderr()


# 2. Header bytes counted as they arrive -----------------------------------------------------
def big_header_request(header_bytes: int, body: bytes = b'{"kind": "list"}') -> bytes:
    """A /score request whose request line + headers take about ``header_bytes``."""
    pad = [b"X-Pad-%03d: %s" % (i, b"p" * 986) for i in range(header_bytes // 1000)]
    return http_request("POST", "/score", body, headers=(b"Content-Type: application/json", *pad))


def test_70k_header_in_one_send_is_431(echo: Server) -> None:
    body = b'{"kind": "list"}'
    data = http_request(
        "POST", "/score", body, headers=(b"X-Big: " + b"a" * 70_000,)
    )  # one header, the body in the same send
    with Raw(echo.port) as conn:
        conn.send(data)
        answer = conn.answer()
        assert answer.status == 431
        assert answer.closes
        assert conn.closed() == b""


def test_70k_of_headers_in_small_sends_is_431(echo: Server) -> None:
    data = big_header_request(70_000)
    with Raw(echo.port) as conn:
        conn.send_pieces(data, 1000, wait=0.01)
        answer = conn.answer()
        assert answer.status == 431
        assert answer.closes
        conn.closed()


@pytest.mark.parametrize("pieces", [0, 1000], ids=["one-send", "small-sends"])
def test_60k_of_headers_is_accepted(echo: Server, pieces: int) -> None:
    data = big_header_request(60_000)
    assert 59_000 < data.index(b"\r\n\r\n") < MAX_HEADER_BYTES
    with Raw(echo.port) as conn:
        if pieces:
            conn.send_pieces(data, pieces, wait=0.002)
        else:
            conn.send(data)
        answer = conn.answer()
        assert (answer.status, answer.body) == (200, LIST_BODY)


def test_many_small_pipelined_requests_are_not_one_big_header(echo: Server) -> None:
    """The limit is per request: 80 KB of small pipelined requests, cut mid-request."""
    one = http_request("GET", "/ready")
    data = one * 2500 + http_request("GET", "/", headers=(b"Connection: close",))
    assert len(data) > MAX_HEADER_BYTES
    cut = len(one) * 2400 + len(one) // 2
    with Raw(echo.port, timeout=30) as conn:
        conn.send(data[:cut])
        time.sleep(0.2)
        conn.send(data[cut:])
        answers = [conn.answer() for _ in range(2501)]
        assert conn.closed(timeout=30) == b""
    assert [a.status for a in answers] == [200] * 2501
    assert answers[-1].body == b"Healthy"


# 3. Header deadline, idle connections ---------------------------------------------------------
HEADER_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def impatient(serve_module: ServeFactory) -> Server:
    return serve_module("echo.py", args=("--header-timeout", str(HEADER_TIMEOUT_S)))


def test_slowloris_is_cut_with_408(impatient: Server) -> None:
    with Raw(impatient.port, timeout=5) as conn:
        started = time.monotonic()
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while time.monotonic() - started < HEADER_TIMEOUT_S + 6:
            if conn.readable(0.5):
                break
            if not conn.send(b"a"):  # one byte every 0.5 s, never finishing the head
                break
        elapsed = time.monotonic() - started
        answer = conn.answer(timeout=5)
        assert answer.status == 408
        assert answer.closes
        conn.closed(timeout=5)
    assert HEADER_TIMEOUT_S - 1 <= elapsed <= HEADER_TIMEOUT_S + 4, elapsed


def test_stalled_head_is_cut_with_408(impatient: Server) -> None:
    with Raw(impatient.port, timeout=HEADER_TIMEOUT_S + 6) as conn:
        conn.send(b"POST /score HTTP/1.1\r\nHost: x\r\n")
        answer = conn.answer()
        assert answer.status == 408
        assert answer.closes
        conn.closed(timeout=5)


@pytest.mark.slow
def test_the_deadline_counts_from_the_request_and_not_the_body(impatient: Server) -> None:
    body = json.dumps({"kind": "list"}).encode()
    data = score_request({"kind": "list"})
    head = data[: -len(body)]
    with Raw(impatient.port, timeout=10) as conn:
        conn.send(data)
        assert conn.answer().body == LIST_BODY
        # Idle longer than the header timeout (not past the keep-alive timeout): the
        # next request's clock starts at its first byte.
        time.sleep(HEADER_TIMEOUT_S + 0.5)
        conn.send_pieces(head, len(head) // 4 + 1, wait=0.1)
        # A body slower than the header timeout is not cut by it.
        for i in range(len(body) - 1):  # over 3 s, one byte at a time
            assert conn.send(body[i : i + 1])
            if conn.readable(0.2):
                pytest.fail(f"cut {i} bytes into the body: {conn.quiet_for(0.2)[:300]!r}")
        conn.send(body[-1:])
        answer = conn.answer()
        assert (answer.status, answer.body) == (200, LIST_BODY)


@pytest.mark.slow
def test_idle_connections_are_closed_silently(echo: Server) -> None:
    with Raw(echo.port, timeout=15) as used, Raw(echo.port, timeout=15) as fresh:
        used.send(http_request("GET", "/"))
        assert used.answer().status == 200
        started = time.monotonic()
        assert used.closed(timeout=12) == b""
        assert fresh.closed(timeout=12) == b""
        elapsed = time.monotonic() - started
    assert 2 <= elapsed <= 12, elapsed


# 4. Max connections ---------------------------------------------------------------------------
def request_on_new_connection(port: int, path: str = "/") -> tuple[Raw, Answer | None]:
    """A new connection and the answer to a GET on it (None if the server closed it
    without one). Answered when accepted, or when its request comes: both are fine."""
    conn = Raw(port)
    try:
        if not conn.readable(0.2):
            conn.send(http_request("GET", path))
        return conn, conn.answer(timeout=5)
    except AssertionError:
        return conn, None


def test_connections_over_the_limit_get_503_and_close(serve: ServeFactory) -> None:
    server = serve("echo.py", args=("--workers", "1", "--max-connections", "4"))
    held: list[Raw] = []
    try:
        # Fill up to the limit. The server may still count a probe connection that
        # wait_until_up has just closed, so a refusal here is retried (not asserted).
        deadline = time.monotonic() + 10
        while len(held) < 4:
            assert time.monotonic() < deadline, "could not open 4 connections"
            conn, answer = request_on_new_connection(server.port)
            if answer is not None and answer.status == 200:
                held.append(conn)  # set up on the server, then idle
            else:
                conn.close()
                time.sleep(0.05)
        extra, answer = request_on_new_connection(server.port)
        with extra:
            assert answer is not None, f"closed without an answer: {extra.buf!r}"
            assert answer.status == 503
            assert answer.header("retry-after")
            assert answer.closes
            extra.closed()
        for conn in held[2:]:  # the connections it holds are still served
            conn.send(http_request("GET", "/ready"))
            assert conn.answer().status == 200
        for conn in held[:2]:
            conn.close()

        def served() -> bool:
            conn, answer = request_on_new_connection(server.port)
            conn.close()
            return answer is not None and answer.status == 200

        wait_for(served, "a new connection to be served after two were closed", 10)
    finally:
        for conn in held:
            conn.close()


# 5. 100 Continue -------------------------------------------------------------------------------
def test_continue_is_sent_to_http11_before_the_body(echo: Server) -> None:
    body = json.dumps({"kind": "list"}).encode()
    with Raw(echo.port) as conn:
        conn.send(
            b"POST /score HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        go = conn.answer(timeout=5)
        assert go.status_line == b"HTTP/1.1 100 Continue"
        conn.send(body)
        answer = conn.answer()
        assert (answer.status, answer.body) == (200, LIST_BODY)


def test_no_continue_for_http10(echo: Server) -> None:
    body = json.dumps({"kind": "list"}).encode()
    with Raw(echo.port) as conn:
        conn.send(
            b"POST /score HTTP/1.0\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        early = conn.quiet_for(1.0)  # an HTTP/1.0 client waits a moment, then sends anyway
        assert early == b"", f"an HTTP/1.0 client got {early[:200]!r}"
        conn.send(body)
        answer = conn.answer()
        assert (answer.status, answer.body) == (200, LIST_BODY)
        assert conn.closed() == b""


def test_continue_for_a_pipelined_request_is_written_in_turn(slow: Slow) -> None:
    body = b'{"kind": "second"}'
    with Raw(slow.server.port, timeout=30) as conn:
        slow.send_behind(
            conn,
            b"POST /score HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body),
        )
        early = conn.quiet_for(0.5)
        assert early == b"", f"written before the first request's answer: {early[:300]!r}"
        slow.release()
        slow.check_first(conn.answer())
        go = conn.answer(timeout=5)
        assert go.status_line == b"HTTP/1.1 100 Continue"
        conn.send(body)
        assert conn.answer().status == 200


# 6. Probes never wait behind run() ------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_probes_answer_while_every_worker_is_in_run(
    serve: ServeFactory, gates: Gates, workers: int
) -> None:
    server = serve("gate.py", args=("--workers", str(workers)))
    with ThreadPoolExecutor(8) as pool, gates:
        blocked, started = block_workers(server, gates, pool, workers)
        assert len(set(started.values())) == workers
        for path in ("/", "/ready", "/metrics", "/swagger.json"):
            assert probe(server, path, timeout=5).status == 200, path
        assert not any(f.done() for f in blocked), "a gated request finished with its gate shut"
        gates.open_all()
        assert [f.result(timeout=60).status for f in blocked] == [200] * len(blocked)


# 7. /swagger.json waits for init() like /score --------------------------------------------------
def test_swagger_waits_for_init_like_score(serve: ServeFactory, tmp_path: Path) -> None:
    gate = tmp_path / "init-gate"
    server = serve("slow_init.py", env={"SLOW_INIT_GATE": str(gate)}, wait=False)
    try:
        wait_until_up(server, "/")
        assert probe(server, "/").status == 200
        assert probe(server, "/ready").status == 503
        with ThreadPoolExecutor(1) as pool:
            early = pool.submit(server.request, "GET", "/swagger.json", timeout=30)
            time.sleep(0.5)
            assert not early.done(), (
                f"/swagger.json answered {early.result().status} while init() runs"
            )
            gate.touch()
            reply = early.result(timeout=30)
    finally:
        gate.touch()
    assert reply.status == 200
    assert reply.json()["swagger"] == "2.0"


# 8. Scoring timeout ---------------------------------------------------------------------------
TIMEOUT_MESSAGE = {"message": "Scoring timeout after 500 ms"}


def assert_timeout_answer(reply: Reply) -> None:
    assert reply.status == 500
    assert reply.json() == TIMEOUT_MESSAGE
    assert reply.header("x-ms-run-function-failed") == "True"


def test_scoring_timeout_in_python_code(serve: ServeFactory) -> None:
    server = serve("gate.py", args=("--scoring-timeout-ms", "500"))
    assert_timeout_answer(post_bounded(server, {"sleep": 5}, timeout=30))
    assert post_bounded(server, {}).status == 200


def test_scoring_timeout_in_native_code_is_answered_before_it_returns(
    serve: ServeFactory, tmp_path: Path
) -> None:
    server = serve("gate.py", args=("--workers", "1", "--scoring-timeout-ms", "500"))
    started, done = tmp_path / "native.started", tmp_path / "native.done"
    request = {"started": str(started), "native_sleep": 3, "done": str(done)}
    reply = post_bounded(server, request, timeout=30)
    returned_first = done.exists()
    assert started.exists()
    assert not returned_first, "answered only once the native call had returned"
    assert_timeout_answer(reply)
    wait_for(lambda: "scoring timeout" in server.stderr().lower(), "the timeout in the log", 10)

    # Then it serves again: the same worker once the call returns, or a new one.
    def serves() -> bool:
        with contextlib.suppress(AssertionError):
            return post_bounded(server, {}, timeout=2).status == 200
        return False

    wait_for(serves, "the server to score again", 30)


def test_other_worker_serves_while_one_is_stuck_in_native_code(
    serve: ServeFactory, tmp_path: Path
) -> None:
    server = serve("gate.py", args=("--workers", "2", "--scoring-timeout-ms", "500"))
    started, done = tmp_path / "native.started", tmp_path / "native.done"
    request = {"started": str(started), "native_sleep": 4, "done": str(done)}
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(server.post, request, timeout=30)
        wait_for(started.exists, "the native call to start", 30)
        stuck_pid = int(started.read_text())
        for _ in range(4):  # each on a new connection
            reply = post_bounded(server, {}, timeout=3)
            assert reply.status == 200
            assert reply.json()["pid"] != stuck_pid
        assert not done.exists(), "the other requests waited for the native call"
        assert_timeout_answer(stuck.result(timeout=30))
