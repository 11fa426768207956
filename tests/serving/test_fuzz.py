"""Seeded fuzzing of the HTTP layer against one running server (scripts/echo.py).

Cases: malformed request lines, bad header names and values, bad chunk encodings,
conflicting Content-Length / Transfer-Encoding, truncated requests (the client then
half-closes or just leaves), garbage bytes, and valid requests - alone, as pipelined
pairs, chunked - sent in random pieces with tiny pauses. Each case gets a connection of
its own.

For every case the connection must end within END_S: the server answers and/or closes
(a hung connection is a failure). A valid request must get exactly its expected answer;
anything else may be answered with anything well-formed below 500, or not at all. At
the end the server is alive, ready, and has logged no traceback (no case reaches run()
with input that makes echo.py raise).

The random generator is seeded, so a failing case can be replayed: its index and bytes
are in the failure message.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from .clients import HOST, Answer, probe
from .conftest import ServeFactory

SEED = 20261201
CASES = 500
END_S = 15.0  # every connection must end within this after the client's last byte
PAUSES = (0.0, 0.0, 0.0, 0.0005, 0.001, 0.002)
CRLF = b"\r\n"
TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
TEXT = "abc xyz 0123 _-+=/\\\"'\n\tüßé€中文😀"
LIST_BODY = b'[1, 2.5, "three", null, true]'


@dataclass
class Expected:
    status: int
    body: bytes
    head: bool = False  # answers a HEAD: no body on the wire


@dataclass
class Case:
    index: int
    kind: str
    data: bytes
    # Valid cases: the exact answers, in order (None: anything well-formed below 500).
    answers: list[Expected] | None = None
    # The first answers are exact, the rest may be anything (valid then malformed).
    prefix: list[Expected] = field(default_factory=list)
    # "read": read until the server closes; "shut": half-close, then read until it closes;
    # "drop": close without reading.
    finish: str = "shut"
    split: bool = True
    # How it is sent (drawn when the case is made, so that the cases do not depend on
    # how the server's answers went): the pieces, and the pause before each but the first.
    pieces: list[bytes] = field(default_factory=list)
    pauses: list[float] = field(default_factory=list)


@dataclass
class Outcome:
    answered: int = 0
    server_closed: bool = False
    dropped: bool = False
    problem: str | None = None


# Generators ----------------------------------------------------------------------------------
def token(rng: random.Random, low: int = 1, high: int = 12) -> str:
    return "".join(rng.choice(TOKEN) for _ in range(rng.randint(low, high)))


def cased(rng: random.Random, name: bytes) -> bytes:
    return rng.choice([name, name.lower(), name.upper(), name.title()])


def extra_headers(rng: random.Random) -> list[bytes]:
    headers = [b"Host: " + rng.choice([b"x", b"localhost:5001", b"example.org"])]
    for _ in range(rng.randint(0, 4)):
        headers.append(b"X-Fuzz-%s: %s" % (token(rng).encode(), token(rng, 0, 40).encode()))
    if rng.random() < 0.2:
        headers.append(b"User-Agent: fuzz/1.0 (+" + token(rng).encode() + b")")
    rng.shuffle(headers)
    return headers


def chunked(rng: random.Random, body: bytes) -> bytes:
    cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randint(0, 4))))
    out = []
    for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
        size = b"%x" % (end - start)
        size = size.upper() if rng.random() < 0.3 else size
        ext = rng.choice([b"", b"", b"", b";x=1", b";name", b';q="a b"'])
        out.append(size + ext + CRLF + body[start:end] + CRLF)
    trailer = rng.choice([b"", b"", b"X-Trailer: " + token(rng).encode() + CRLF])
    return b"".join(out) + b"0" + CRLF + trailer + CRLF


def valid_request(rng: random.Random, last: bool) -> tuple[bytes, Expected]:
    """A request echo.py answers with a known body; ``last`` closes the connection."""
    headers = extra_headers(rng)
    if last:
        if rng.random() < 0.1:  # HTTP/1.0 without keep-alive: answered, then closed
            return b"GET / HTTP/1.0" + CRLF + CRLF, Expected(200, b"Healthy")
        headers.append(cased(rng, b"Connection") + b": " + rng.choice([b"close", b"Close"]))
    roll = rng.random()
    if roll < 0.6:
        payload: dict[str, Any] = {
            "kind": "dict",
            "n": rng.randrange(10**9),
            "s": "".join(rng.choice(TEXT) for _ in range(rng.randint(0, 60))),
            "l": [rng.random() for _ in range(rng.randint(0, 5))],
        }
        body = json.dumps(payload, ensure_ascii=rng.random() < 0.5).encode()
        expected = Expected(200, json.dumps({"echo": payload, "nested": {"ok": True}}).encode())
        if rng.random() < 0.4:
            headers.append(cased(rng, b"Transfer-Encoding") + b": chunked")
            body = chunked(rng, body)
        else:
            headers.append(cased(rng, b"Content-Length") + b": %d" % len(body))
        if rng.random() < 0.7:
            headers.append(cased(rng, b"Content-Type") + b": application/json")
        line = b"POST /score HTTP/1.1"
    elif roll < 0.75:
        line, body, expected = b"GET /score?kind=list HTTP/1.1", b"", Expected(200, LIST_BODY)
    elif roll < 0.85:
        line, body, expected = b"GET / HTTP/1.1", b"", Expected(200, b"Healthy")
    elif roll < 0.92:
        line, body, expected = b"HEAD / HTTP/1.1", b"", Expected(200, b"", head=True)
    else:
        line, body, expected = b"GET /ready HTTP/1.1", b"", Expected(200, b"Ready")
    return line + CRLF + CRLF.join(headers) + CRLF + CRLF + body, expected


# Requests that must not reach run(): their paths are not /score.
BAD_LINES = [
    b"G?T / HTTP/1.1",
    b"GET /?x=y z HTTP/1.1",
    b"GET / HTTP1.1",
    b"GET / HTTP/1.1 extra",
    b"GET  / HTTP/1.1",
    b"GET /",
    b"/ HTTP/1.1",
    b"GET\t/\tHTTP/1.1",
    b"GET / HTTP/1.1\x00",
    b"GET /\x7f HTTP/1.1",
    b"GET /\x00 HTTP/1.1",
    b"get / http/1.1",
    b" GET / HTTP/1.1",
    b"GET / HTTP/9.9",
    b"GET / HTTP/1.12",
    b"PRI * HTTP/2.0",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS client hello
    b"CONNECT nope:443 HTTP/1.1",
    b"GET http://[::1 HTTP/1.1",
    b"GET " + b"/" * 5000 + b" HTTP/1.1",
    b"A" * 200 + b" / HTTP/1.1",
    b"GET / HTTP/1.1\r",
]
BAD_HEADERS = [
    b"Bad Header: x",
    b": novalue",
    b"X-A\x00: b",
    b"X-A: b\x00c",
    b"NoColon",
    b" X-Leading-Space: a",
    b"X-A : b",
    b"X-\x7f: c",
    b"X-A: \x01",
    b"X-A: b\rX-B: c",
    b"X-A: b\nX-B: c",
    b"\tfolded continuation",
    b"X-\xff\xfe: c",
    b"X-Big: " + b"v" * 70_000,
    b"Content-Length: abc",
    b"Content-Length: -1",
    b"Content-Length: 1e3",
    b"Content-Length: 99999999999999999999999",
    b"Content-Length: 0x10",
    b"Content-Length: 2 2",
    b"Transfer-Encoding: gzip",
    b"Transfer-Encoding: chunked, gzip",
    b"Transfer-Encoding: \x00chunked",
    b"Expect: 100-continue-please",
]
CONFLICTS = [
    [b"Content-Length: 2", b"Content-Length: 3"],
    [b"Content-Length: 2", b"Content-Length: 2"],
    [b"Content-Length: 2, 2"],
    [b"Content-Length: 2", b"Transfer-Encoding: chunked"],
    [b"Transfer-Encoding: chunked", b"Content-Length: 2"],
    [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
    [b"Transfer-Encoding: identity", b"Content-Length: 2"],
    [b"Transfer-Encoding: chunked, identity"],
    [b"Transfer-Encoding: identity, chunked"],
    [b"Transfer-Encoding : chunked", b"Content-Length: 2"],
    [b"Transfer-Encoding:\tchunked", b"Content-Length: 2"],
]
BAD_CHUNKS = [
    b"zz\r\n{}\r\n0\r\n\r\n",
    b"2\r\n{}0\r\n\r\n",
    b"-2\r\n{}\r\n0\r\n\r\n",
    b"ffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
    b"3\r\n{}\r\n0\r\n\r\n",
    b"2 ;\r\n{}\r\n0\r\n\r\n",
    b"2\n{}\n0\n\n",
    b"0x2\r\n{}\r\n0\r\n\r\n",
    b"\r\n",
    b"2\r\n{}\r\n0\r\nBad Trailer\r\n\r\n",
    b"2;\x00\r\n{}\r\n0\r\n\r\n",
    b"1\r\n{\r\n1\r\n}\r\n0\r\n",  # no final CRLF: incomplete
    b"2\r\n{}\r\n0\r\n\r\nGARBAGE AFTER\r\n\r\n",
]
PATHS = [b"/", b"/ready", b"/nope", b"/metrics", b"/swagger.json"]


def mutate(rng: random.Random, data: bytes, flips: int) -> bytes:
    raw = bytearray(data)
    for _ in range(flips):
        raw[rng.randrange(len(raw))] = rng.randrange(256)
    return bytes(raw)


def malformed(rng: random.Random) -> tuple[str, bytes]:
    """A request the server should refuse (or may answer, but never with run())."""
    path = rng.choice(PATHS)
    kind = rng.choice(["line", "line", "header", "header", "conflict", "chunks"])
    if kind == "line":
        line = rng.choice(BAD_LINES)
        if rng.random() < 0.4:  # or a valid line with a few random bytes
            line = mutate(rng, b"GET " + path + b" HTTP/1.1", rng.randint(1, 3))
        return "bad-line", line + CRLF + b"Host: x" + CRLF + CRLF
    if kind == "header":
        bad = rng.choice(BAD_HEADERS)
        headers = [b"Host: x", bad]
        if not bad.lower().startswith((b"content-length", b"transfer-encoding")):
            headers.append(b"Content-Length: 2")
        rng.shuffle(headers)
        return "bad-header", b"POST " + path + b" HTTP/1.1" + CRLF + CRLF.join(headers) + (
            CRLF + CRLF + b"{}"
        )
    if kind == "conflict":
        headers = [b"Host: x", *rng.choice(CONFLICTS)]
        body = rng.choice([b"{}", b"2\r\n{}\r\n0\r\n\r\n", b"{}" + b"2\r\n{}\r\n0\r\n\r\n"])
        return "conflict", b"POST " + path + b" HTTP/1.1" + CRLF + CRLF.join(headers) + (
            CRLF + CRLF + body
        )
    head = b"POST " + path + b" HTTP/1.1" + CRLF + b"Host: x" + CRLF
    head += b"Transfer-Encoding: chunked" + CRLF + CRLF
    return "bad-chunks", head + rng.choice(BAD_CHUNKS)


def make_case(rng: random.Random, index: int) -> Case:
    case = draw_case(rng, index)
    case.pieces = pieces_of(rng, case.data) if case.split else [case.data]
    case.pauses = [rng.choice(PAUSES) for _ in case.pieces[1:]]
    return case


def draw_case(rng: random.Random, index: int) -> Case:
    roll = rng.random()
    if roll < 0.30:  # one valid request, closing
        data, expected = valid_request(rng, last=True)
        # Sometimes the client shuts its side once all is sent: it still gets its answer.
        finish = rng.choice(["read", "read", "shut"])
        return Case(index, "valid", data, [expected], finish=finish)
    if roll < 0.42:  # a pipelined pair (sometimes three)
        requests = [valid_request(rng, last=False) for _ in range(rng.choice([1, 1, 2]))]
        requests.append(valid_request(rng, last=True))
        return Case(
            index,
            "valid-pipelined",
            b"".join(data for data, _ in requests),
            [expected for _, expected in requests],
            finish=rng.choice(["read", "read", "shut"]),
        )
    if roll < 0.70:
        kind, data = malformed(rng)
        return Case(index, kind, data)
    if roll < 0.82:  # cut short: the client half-closes, or leaves
        data, _ = valid_request(rng, last=rng.random() < 0.5)
        cut = rng.randrange(1, len(data))
        return Case(index, "truncated", data[:cut], finish=rng.choice(["shut", "shut", "drop"]))
    if roll < 0.89:
        if rng.random() < 0.5:
            garbage = rng.randbytes(rng.randint(1, 3000))
        else:
            garbage = "".join(
                rng.choice(TOKEN + " :/\r\n\t") for _ in range(rng.randint(1, 500))
            ).encode()
        return Case(index, "garbage", garbage)
    if roll < 0.95:  # a valid request, then a malformed one on the same connection
        data, expected = valid_request(rng, last=False)
        _, bad = malformed(rng)
        return Case(index, "valid-then-malformed", data + bad, prefix=[expected], split=False)
    # A client that leaves while run() works on its request.
    payload = json.dumps({"kind": "sleep", "seconds": 0.05}).encode()
    data = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(payload),
        payload,
    )
    return Case(index, "early-close", data, finish="drop", split=False)


# Running a case ------------------------------------------------------------------------------
def pieces_of(rng: random.Random, data: bytes) -> list[bytes]:
    if len(data) < 2:
        return [data]
    count = rng.randint(0, min(25, len(data) - 1))
    cuts = sorted(rng.sample(range(1, len(data)), count))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def parse_answers(data: bytes, heads: list[bool]) -> tuple[list[Answer], bytes]:
    """The responses in ``data`` (``heads[i]``: the i-th answers a HEAD), and what is left
    that is not a complete response."""
    answers: list[Answer] = []
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status_line = lines[0]
        if status_line[:9] != b"HTTP/1.1 " or not status_line[9:12].isdigit():
            break
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        answer = Answer(int(status_line[9:12]), status_line, headers, b"")
        is_head = len(answers) < len(heads) and heads[len(answers)]
        length = 0 if is_head else int(answer.header("content-length") or 0)
        if len(rest) < length:
            break
        answer.body = rest[:length]
        answers.append(answer)
        data = rest[length:]
    return answers, data


def run_case(port: int, case: Case) -> Outcome:
    outcome = Outcome()
    with socket.create_connection((HOST, port), timeout=END_S) as sock:
        for piece, pause in zip(case.pieces, [0.0, *case.pauses], strict=True):
            if pause:
                time.sleep(pause)
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server has given up on this connection: fine
        if case.finish == "drop":
            outcome.dropped = True
            return outcome
        if case.finish == "shut":
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        received = []
        deadline = time.monotonic() + END_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                outcome.problem = f"hung: not closed within {END_S} s"
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                outcome.server_closed = True
                break
            if not chunk:
                outcome.server_closed = True
                break
            received.append(chunk)
    data = b"".join(received)
    exact = case.answers if case.answers is not None else case.prefix
    heads = [e.head for e in exact]
    answers, rest = parse_answers(data, heads)
    outcome.answered = len(answers)
    if outcome.problem is None:
        outcome.problem = check(case, answers, rest)
    return outcome


def check(case: Case, answers: list[Answer], rest: bytes) -> str | None:
    if case.answers is not None:  # valid: exactly these, then the close
        got = [(a.status, a.body) for a in answers]
        want = [(e.status, e.body) for e in case.answers]
        if got != want or rest:
            return f"expected {want!r}, got {got!r} and {rest[:200]!r} more"
        return None
    if rest:
        return f"not a well-formed response: {rest[:300]!r}"
    for answer, expected in zip(answers, case.prefix, strict=False):
        if (answer.status, answer.body) != (expected.status, expected.body):
            return (
                f"expected {(expected.status, expected.body)!r} first, "
                f"got {(answer.status, answer.body)!r}"
            )
    if len(answers) < len(case.prefix):
        return f"the valid request before the malformed one was not answered: {answers!r}"
    server_errors = [a.status for a in answers if a.status >= 500]
    if server_errors:
        return f"answered {server_errors} (a server error) to a client's mistake"
    return None


@pytest.mark.slow
def test_fuzz(serve: ServeFactory) -> None:
    server = serve("echo.py", args=("--workers", "1"))
    rng = random.Random(SEED)
    counts: Counter[str] = Counter()
    failures: list[str] = []
    for index in range(CASES):
        case = make_case(rng, index)
        counts[f"kind:{case.kind}"] += 1
        outcome = run_case(server.port, case)
        counts["cases"] += 1
        counts["answered"] += outcome.answered > 0
        counts["closed"] += outcome.server_closed
        counts["dropped by the client"] += outcome.dropped
        if outcome.problem is not None:
            failures.append(
                f"case {index} ({case.kind}): {outcome.problem}; sent {case.data[:300]!r}"
            )
        if server.proc.poll() is not None:
            failures.append(f"the server exited after case {index}")
            break
    print("\nfuzz:", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:25])
    assert server.proc.poll() is None
    assert probe(server, "/ready").status == 200
    assert "Traceback" not in server.stderr(), server.stderr()[-3000:]
