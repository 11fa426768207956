"""Streamed answers: an AMLResponse over a generator is sent as it is produced.

run() returns the response; the scoring thread then iterates the generator (the script's
code) and the event loop writes each chunk as it comes (chunked transfer coding, or the
raw bytes and a close for an HTTP/1.0 client).
"""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path

import pytest

from deployer.serving.invocation import MSG_RUN_FAILED

from .clients import wait_for
from .conftest import ServeFactory, Server, metric

READ_TIMEOUT_S = 30


@pytest.fixture
def streaming(serve: ServeFactory) -> Server:
    return serve("stream_gate.py")


def _open(server: Server, body: bytes, version: bytes = b"1.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT_S)
    sock.sendall(
        b"POST /score HTTP/%s\r\nHost: t\r\nContent-Type: text/plain\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (version, len(body), body)
    )
    return sock


def _read_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_the_first_chunk_arrives_while_the_generator_still_runs(
    streaming: Server, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with _open(streaming, str(gate).encode()) as sock:
        head = _read_until(sock, b"first\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\ntransfer-encoding: chunked\r\n" in head.lower()
        assert b"content-length" not in head.lower()
        assert b"second" not in head, "the generator is still waiting for the gate"
        gate.touch()
        rest = _read_until(sock, b"\r\n0\r\n\r\n", head)
    assert rest.endswith(b"6\r\nfirst\n\r\n7\r\nsecond\n\r\n0\r\n\r\n")


def test_a_client_reads_the_stream_as_a_normal_answer_and_keeps_the_connection(
    streaming: Server, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    conn = http.client.HTTPConnection("127.0.0.1", streaming.port, timeout=READ_TIMEOUT_S)
    for _ in range(2):  # the same connection serves the next request after the stream
        conn.request("POST", "/score", body=str(gate), headers={"Content-Type": "text/plain"})
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"first\nsecond\n")
        assert response.getheader("x-ms-run-function-failed") == "False"
    conn.close()


def test_an_http_1_0_client_gets_the_bytes_and_a_close(streaming: Server, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    with _open(streaming, str(gate).encode(), version=b"1.0") as sock:
        answer = _read_until(sock, b"\x00never")  # until the server closes
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"first\nsecond\n"


def test_a_generator_that_raises_cuts_the_answer_short_and_is_logged(
    streaming: Server, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    conn = http.client.HTTPConnection("127.0.0.1", streaming.port, timeout=READ_TIMEOUT_S)
    conn.request("POST", "/score", body=f"{gate}!raise", headers={"Content-Type": "text/plain"})
    response = conn.getresponse()
    assert response.status == 200  # sent with the head, before the failure
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    assert cut.value.partial == b"first\n"
    conn.close()
    # The worker goes on serving.
    again = streaming.request("POST", "/score", str(gate).encode(), {"Content-Type": "text/plain"})
    assert again.body == b"first\nsecond\n"
    wait_for(lambda: "the stream failed after its first chunk" in streaming.stderr(), "the log")


def test_a_client_that_leaves_mid_stream_closes_the_generator(serve: ServeFactory) -> None:
    server = serve("streaming.py")
    sock = _open(server, b"")
    _read_until(sock, b"item 0")
    sock.close()  # after the first item of four, 0.3 s apart
    closed = server.request("GET", "/score?case=closed", None, {})
    assert closed.json() == {"closed": 1}, "the generator's finally ran"


def test_the_access_log_and_metrics_time_the_whole_stream(
    serve: ServeFactory, tmp_path: Path
) -> None:
    server = serve("streaming.py")  # four items, 0.3 s apart: at least 0.9 s in all
    answer = server.request("POST", "/score", b"", {"Content-Type": "text/plain"})
    assert answer.body.count(b"item") == 4
    scrape = server.request("GET", "/metrics", None, {}).body.decode()
    seconds = metric(scrape, "deployer_score_duration_seconds_sum")
    assert seconds >= 0.9


def test_a_generator_that_fails_before_its_first_chunk_is_a_500(
    serve: ServeFactory,
) -> None:
    server = serve("streaming.py")
    answer = server.request("POST", "/score", b"raise-at-once", {"Content-Type": "text/plain"})
    assert answer.status == 500
    assert answer.header("x-ms-run-function-failed") == "True"
    assert answer.json() == {"message": MSG_RUN_FAILED}


def test_head_gets_the_head_alone_and_the_generator_never_starts(serve: ServeFactory) -> None:
    server = serve("streaming.py")
    server.request("GET", "/score?case=reset")
    answer = server.request("HEAD", "/score")
    assert (answer.status, answer.body) == (200, b"")
    assert answer.header("transfer-encoding") is None
    assert server.request("GET", "/score?case=closed").json() == {"closed": 0}


def test_a_client_that_does_not_read_pauses_the_generator(
    serve: ServeFactory, tmp_path: Path
) -> None:
    server = serve("stream_flood.py")
    counter = tmp_path / "produced"
    sock = _open(server, str(counter).encode())
    try:
        # The client reads nothing: once the buffers are full, the generator must wait.
        wait_for(counter.exists, "the first chunk")
        last, steady_since = -1, time.monotonic()
        give_up = steady_since + READ_TIMEOUT_S  # a generator that never waits ends here
        while time.monotonic() - steady_since < 1.0 and time.monotonic() < give_up:
            produced = int(counter.read_text() or 0)
            if produced != last:
                last, steady_since = produced, time.monotonic()
            time.sleep(0.05)
        assert last < 100, f"{last} MiB produced for a client that reads nothing"
    finally:
        sock.close()
