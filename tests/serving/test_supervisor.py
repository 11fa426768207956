"""``--workers N``: the supervisor restarts a worker that dies, and gives up on a crash loop.

Real servers on 127.0.0.1 (conftest.py). Workers are found as the supervisor's child
processes; what the supervisor did is read from its log (JSON lines on stderr). Every
wait is bounded; no test asserts how long something took.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deployer.serving import control, supervisor

from .clients import stopped
from .conftest import ServeFactory, Server, free_port, metric, wait_until_up

WAIT_S = 60.0  # bound on every wait for a state change


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``check`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def messages(server: Server) -> list[tuple[int, str]]:
    """(pid, message) of each of the server's log records so far: the supervisor's and
    its workers' (they share stderr)."""
    found = []
    for line in server.stderr().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "message" in record:
                found.append((int(record["pid"]), str(record["message"])))
    return found


def logged(server: Server, pattern: str) -> re.Match[str] | None:
    """The first of the server's log messages that ``pattern`` matches (from its start)."""
    regex = re.compile(pattern)
    for _, message in messages(server):
        match = regex.match(message)
        if match:
            return match
    return None


def count_logged(server: Server, pattern: str) -> int:
    regex = re.compile(pattern)
    return sum(1 for _, message in messages(server) if regex.match(message))


def ready_pids(server: Server) -> set[int]:
    """The workers that logged the end of their init()."""
    return {pid for pid, message in messages(server) if message.startswith("ready: serving")}


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.update(int(child) for child in path.read_text().split())
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start(serve: ServeFactory, *args: str, workers: int = 2, wait: bool = True) -> Server:
    return serve("echo.py", args=("--workers", str(workers), *args), wait=wait)


def ready_workers(server: Server, count: int = 2) -> set[int]:
    """Wait until ``count`` workers run and finished init(); their pids."""

    def check() -> set[int] | None:
        pids = children(server.proc.pid)
        return pids if len(pids) == count and pids <= ready_pids(server) else None

    pids: set[int] = wait_for(check, f"{count} ready workers")
    return pids


def whoami(port: int, timeout: float = 30) -> int:
    """The pid of the worker that answers a request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/score", body=b'{"kind": "whoami"}')
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        pid: int = json.loads(body)["pid"]
        return pid
    finally:
        conn.close()


def restarted(server: Server, pid: int, cause: str) -> tuple[int, int]:
    """Wait until the supervisor has logged the death of worker ``pid`` and started its
    replacement; (the slot's index, the new pid)."""
    death = wait_for(
        lambda: logged(server, rf"worker (\d+) \(pid {pid}\) {cause}; restarting it"),
        f"the death of pid {pid} logged",
    )
    index = int(death.group(1))
    begun = wait_for(
        lambda: logged(server, rf"worker {index} restarted: pid (\d+) \(was pid {pid}\)$"),
        f"worker {index} restarted",
    )
    return index, int(begun.group(1))


def stop(server: Server) -> int:
    server.proc.send_signal(signal.SIGTERM)
    return server.wait_exit(timeout=WAIT_S)


# Restarts --------------------------------------------------------------------------------------
def test_a_killed_worker_is_restarted_while_the_other_keeps_answering(
    serve: ServeFactory,
) -> None:
    server = start(serve)
    first = ready_workers(server)
    victim, survivor = sorted(first)
    for _ in range(5):
        assert whoami(server.port) in first
    os.kill(victim, signal.SIGKILL)  # as the OOM killer does
    # Every request is answered meanwhile (fresh connections: the kill cut none of ours).
    answered = 0
    while not logged(server, rf"worker \d+ restarted: pid \d+ \(was pid {victim}\)$"):
        assert whoami(server.port) != victim
        answered += 1
        assert answered < 10_000, "no restart logged"
    index, new = restarted(server, victim, "was killed by signal SIGKILL")
    assert ready_workers(server) == {survivor, new}
    assert 0 <= index < 2
    # The new worker serves: with the survivor stopped, it answers alone.
    with stopped({survivor}):
        assert {whoami(server.port) for _ in range(5)} == {new}
    for _ in range(20):
        assert whoami(server.port) in (survivor, new)
    text = server.request("GET", "/metrics").body.decode()
    assert metric(text, "deployer_workers") == 2
    assert metric(text, "deployer_worker_restarts_total") == 1
    assert stop(server) == 0
    assert not alive(new)
    assert not alive(survivor)


def test_a_worker_that_exits_in_run_is_restarted(serve: ServeFactory) -> None:
    server = start(serve)
    first = ready_workers(server)
    try:
        reply = server.post({"kind": "exit", "status": 1}, timeout=WAIT_S)
    except (http.client.HTTPException, ConnectionError):
        pass  # the worker died with the request: no answer
    else:
        assert reply.status >= 500
    death = wait_for(
        lambda: logged(server, r"worker (\d+) \(pid (\d+)\) exited with status 1; restarting it"),
        "the death logged",
    )
    victim = int(death.group(2))
    assert victim in first
    _, new = restarted(server, victim, "exited with status 1")
    assert ready_workers(server) == (first - {victim}) | {new}
    for _ in range(20):
        assert server.post({"kind": "list"}).status == 200
    assert stop(server) == 0
    assert "giving up" not in server.stderr()


def test_a_restarted_worker_gets_the_listeners_as_they_are_now(
    serve: ServeFactory, tmp_path: Path
) -> None:
    """With --instance: the service listener came later (join), the candidate one was
    dropped (promote), and the service port is paused: a new worker starts just so."""
    name = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    candidate = free_port()
    args = ("--instance", name, "--candidate-port", str(candidate))
    server = start(serve, *args, "--state-dir", str(tmp_path / "state"), wait=False)
    port, server.port = server.port, candidate
    wait_until_up(server, "/ready")
    wait_for(lambda: control.call(name, "status")["ready"], "every worker ready")
    assert control.call(name, "join")["ok"] is True
    assert control.call(name, "promote")["ok"] is True
    assert control.call(name, "pause")["listeners"] == [{"port": port, "accepting": False}]
    first = ready_workers(server)
    victim, survivor = sorted(first)

    os.kill(victim, signal.SIGKILL)
    _, new = restarted(server, victim, "was killed by signal SIGKILL")
    wait_for(lambda: control.call(name, "status")["ready"], "the new worker ready")
    status = control.call(name, "status")
    assert status["ok"] is True
    assert status["listeners"] == [{"port": port, "accepting": False}]
    assert status["candidate_port"] is None
    listening = [m for pid, m in messages(server) if pid == new and m.startswith("listening")]
    assert listening == [f"listening on http://127.0.0.1:{port} (service, worker pid {new})"]
    # Paused: a connection is queued, never accepted, so never answered.
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(TimeoutError):
            sock.recv(1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", candidate), timeout=5).close()

    # A change reaches the new worker too: resumed, it answers alone.
    assert control.call(name, "resume")["listeners"] == [{"port": port, "accepting": True}]
    with stopped({survivor}):
        assert {whoami(port) for _ in range(5)} == {new}
    assert stop(server) == 0


def test_a_change_while_a_worker_is_dead_is_no_error(serve: ServeFactory) -> None:
    """A pause that reaches a worker just killed succeeds: the worker started in its
    place starts paused."""
    name = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    server = start(serve, "--instance", name)
    wait_for(lambda: control.call(name, "status")["ready"], "every worker ready")
    victim, survivor = sorted(ready_workers(server))
    os.kill(victim, signal.SIGKILL)
    # Noticed; most likely not restarted yet (it died young: the restart waits a second).
    wait_for(lambda: logged(server, rf"worker \d+ \(pid {victim}\) .*; restarting it"), "death")
    reply = control.call(name, "pause")
    assert reply["ok"] is True, reply
    assert reply["listeners"] == [{"port": server.port, "accepting": False}]
    _, new = restarted(server, victim, "was killed by signal SIGKILL")
    wait_for(lambda: control.call(name, "status")["ready"], "the new worker ready")
    with stopped({survivor}), socket.create_connection(("127.0.0.1", server.port), 1) as sock:
        sock.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(TimeoutError):
            sock.recv(1)  # the new worker does not accept: paused
    assert control.call(name, "resume")["ok"] is True
    with stopped({survivor}):
        assert whoami(server.port) == new
    assert stop(server) == 0


def test_a_crash_loop_makes_the_supervisor_give_up(serve: ServeFactory) -> None:
    server = start(serve)
    deadline = time.monotonic() + WAIT_S
    while server.proc.poll() is None:  # every request kills the worker that takes it
        assert time.monotonic() < deadline, "the supervisor did not give up"
        with contextlib.suppress(OSError, http.client.HTTPException):
            server.post({"kind": "exit", "status": 1}, timeout=10)
    assert server.wait_exit() == 1
    limit = supervisor.MAX_RESTARTS
    window = f"{supervisor.RESTART_WINDOW_S:g}"
    assert count_logged(server, r"worker \d+ \(pid \d+\) exited with status 1; restarting it") == (
        limit
    )
    assert logged(
        server,
        rf"worker \d+ \(pid \d+\) exited with status 1; giving up: {limit + 1} workers died "
        rf"within {window} s, more than the {limit} restarts allowed \(a crash loop\); "
        "stopping the others$",
    )


@pytest.mark.parametrize("moment", ["death logged", "replacement started"])
def test_sigterm_during_a_restart_stops_everything(serve: ServeFactory, moment: str) -> None:
    server = start(serve)
    first = ready_workers(server)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    if moment == "death logged":  # most likely before the restart: in its backoff, or not
        wait_for(lambda: logged(server, rf"worker \d+ \(pid {victim}\) .*; restarting it"), moment)
        new = None
    else:  # the new worker is starting: importing, or in init()
        _, new = restarted(server, victim, "was killed by signal SIGKILL")
    assert stop(server) == 0
    for pid in first | ({new} if new else set()):
        assert not alive(pid), f"worker pid {pid} outlived the supervisor"
    assert logged(server, r"signal SIGTERM: stopping [12] workers$")
