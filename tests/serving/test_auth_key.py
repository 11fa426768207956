"""Scoring keys (auth: key): /score and /swagger.json need 'Authorization: Bearer <key>'.

A real ``python -m deployer.serving`` on 127.0.0.1 with DEPLOYER_SCORING_KEY (and the
secondary key) in its environment; the probes stay open, the key never reaches the logs.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from .conftest import ServeFactory, Server, wait_until_up

PRIMARY = "primary-k3y-0123456789abcdef"
SECONDARY = "second-K3Y-fedcba9876543210"
WRONG = "wrong-key-00000000000000000"
KEYS = {"DEPLOYER_SCORING_KEY": PRIMARY, "DEPLOYER_SCORING_KEY_SECONDARY": SECONDARY}
ROWS = {"data": [[1.0, 2.0, 3.0]]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed(serve_module: ServeFactory) -> Server:
    return serve_module("schema.py", env=KEYS)


def _refused(server: Server, method: str, path: str, headers: dict[str, str]) -> str:
    """Assert the 401 and return its challenge."""
    body = '{"data": [[1.0, 2.0, 3.0]]}' if method == "POST" else None
    reply = server.request(method, path, body, {"Content-Type": "application/json", **headers})
    assert reply.status == 401, (method, path, headers, reply.body)
    assert reply.header("Content-Type") == "text/plain; charset=utf-8"
    assert reply.body == (b"" if method == "HEAD" else b"key_auth_access_denied")
    assert len(reply.header("x-request-id") or "") == 36  # ids as on every answer
    challenge = reply.header("WWW-Authenticate")
    assert challenge is not None
    return challenge


@pytest.mark.parametrize("path", ["/score", "/swagger.json"])
def test_without_a_key_the_answer_is_401_with_a_bearer_challenge(keyed: Server, path: str) -> None:
    assert _refused(keyed, "POST" if path == "/score" else "GET", path, {}) == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {WRONG}",
        f"Bearer {PRIMARY}x",  # a prefix of the key sent is not the key
        f"Bearer {PRIMARY[:-1]}",
        f"Bearer {PRIMARY} {SECONDARY}",
        "Bearer ",
    ],
)
def test_a_wrong_key_is_an_invalid_token(keyed: Server, authorization: str) -> None:
    challenge = _refused(keyed, "POST", "/score", {"Authorization": authorization})
    assert challenge == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("authorization", [PRIMARY, f"Basic {PRIMARY}", f"Token {PRIMARY}"])
def test_a_key_without_the_bearer_scheme_is_refused(keyed: Server, authorization: str) -> None:
    assert _refused(keyed, "POST", "/score", {"Authorization": authorization}) == "Bearer"


def test_other_methods_and_head_are_refused_too(keyed: Server) -> None:
    for method in ("GET", "HEAD", "OPTIONS", "PUT"):
        _refused(keyed, method, "/score", {})


@pytest.mark.parametrize("key", [PRIMARY, SECONDARY])
def test_either_key_scores(keyed: Server, key: str) -> None:
    reply = keyed.post(ROWS, headers=bearer(key))
    assert reply.status == 200, reply.body
    assert reply.json() == [6.0]
    assert reply.header("WWW-Authenticate") is None


def test_the_scheme_is_case_insensitive(keyed: Server) -> None:
    assert keyed.post(ROWS, headers={"Authorization": f"bearer {PRIMARY}"}).status == 200
    assert keyed.post(ROWS, headers={"Authorization": f"BEARER  {SECONDARY} "}).status == 200


def test_the_probes_and_metrics_stay_open(keyed: Server) -> None:
    for path, status in (("/", 200), ("/ready", 200), ("/metrics", 200), ("/nope", 404)):
        assert keyed.request("GET", path).status == status, path


def test_swagger_with_a_key(keyed: Server) -> None:
    reply = keyed.request("GET", "/swagger.json", headers=bearer(SECONDARY))
    assert reply.status == 200
    assert reply.json()["swagger"] == "2.0"


def test_keep_alive_connection_checks_each_request(keyed: Server) -> None:
    """The key is a request's, not a connection's: pipelined requests each need it."""
    body = b'{"data": [[1.0, 2.0, 3.0]]}'
    head = b"POST /score HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    length = b"Content-Length: %d\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=30) as sock:
        sock.sendall(
            head + f"Authorization: Bearer {PRIMARY}\r\n".encode() + length + b"\r\n" + body
            + head + length + b"Connection: close\r\n\r\n" + body
        )  # fmt: skip
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 200 OK") == 1
    assert answer.count(b"HTTP/1.1 401 Unauthorized") == 1
    assert answer.index(b"200 OK") < answer.index(b"401 Unauthorized")


def test_keys_never_reach_the_logs(serve: ServeFactory) -> None:
    server = serve("schema.py", env=KEYS)
    assert server.post(ROWS, headers=bearer(PRIMARY)).status == 200
    assert server.post(ROWS, headers=bearer(SECONDARY)).status == 200
    assert server.post(ROWS, headers=bearer(WRONG)).status == 401
    assert server.request("GET", "/swagger.json?version=2", headers=bearer(WRONG)).status == 401
    server.stop()  # flushes the access log
    logs = server.stdout() + server.stderr()
    assert '"status":401' in logs  # refusals are logged, without the header
    assert '"status":200' in logs
    assert "auth: key" in logs  # the start says key auth is on, not with which keys
    for secret in (PRIMARY, SECONDARY, WRONG):
        assert secret not in logs
    assert not re.search(r"Bearer (?!<key>)", logs)  # no header value either


def test_refused_at_once_while_init_runs(serve: ServeFactory, tmp_path: Path) -> None:
    """A request without the key does not wait for init(): it is answered at once."""
    server = serve(
        "slow_init.py", env={**KEYS, "SLOW_INIT_GATE": str(tmp_path / "never")}, wait=False
    )
    wait_until_up(server, "/")
    assert server.request("GET", "/ready").status == 503
    assert server.post({}, headers=bearer(WRONG), timeout=5).status == 401


def test_several_workers_each_check_the_key(serve: ServeFactory) -> None:
    server = serve("schema.py", args=("--workers", "2"), env=KEYS)
    for _ in range(6):  # connections spread over both workers
        assert server.post(ROWS).status == 401
        assert server.post(ROWS, headers=bearer(PRIMARY)).status == 200


def test_without_keys_the_header_is_ignored(serve: ServeFactory) -> None:
    server = serve("schema.py", env={"DEPLOYER_SCORING_KEY": ""})  # empty: no key
    assert server.post(ROWS).status == 200
    assert server.post(ROWS, headers=bearer(WRONG)).status == 200


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"DEPLOYER_SCORING_KEY": "short-key"}, "shorter than 16 characters"),
        ({"DEPLOYER_SCORING_KEY": "${SCORING_KEY_OF_STAGING}"}, "unfilled ${...} placeholder"),
        ({"DEPLOYER_SCORING_KEY": "a key with spaces inside"}, "printable ASCII without spaces"),
        (
            {"DEPLOYER_SCORING_KEY": PRIMARY, "DEPLOYER_SCORING_KEY_SECONDARY": "tiny"},
            "DEPLOYER_SCORING_KEY_SECONDARY: the scoring key is shorter",
        ),
        (
            {"DEPLOYER_SCORING_KEY_SECONDARY": SECONDARY},
            "DEPLOYER_SCORING_KEY_SECONDARY is set but DEPLOYER_SCORING_KEY is not",
        ),
    ],
)
def test_unusable_keys_are_refused_at_start(
    serve: ServeFactory, env: dict[str, str], error: str
) -> None:
    server = serve("schema.py", env={"DEPLOYER_SCORING_KEY": "", **env}, wait=False)
    assert server.wait_exit() == 2
    stderr = server.stderr()
    assert error in stderr
    for value in env.values():
        assert value not in stderr  # the error never repeats a key
