"""Handing the service port from one version to the next: the control socket, end to end.

Real servers on 127.0.0.1, driven through the control client (control.py) as a deploy
tool would drive them; the switch and rollback tests run an independent load against the
service port throughout and count every request that fails.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer.serving import control

from .conftest import REPO, SCRIPTS, ServeFactory, Server, free_port, launch, wait_until_up

WAIT_S = 60.0  # bound on every wait for a state change
LOAD_STEP = 500  # requests the load makes between two steps of a switch


def wait_for(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def instance_name(role: str) -> str:
    return f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}-{role}"


class Fleet:
    """The servers a test starts; all stopped at teardown."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.servers: list[Server] = []

    def start(
        self,
        instance: str | None,
        port: int,
        *,
        candidate_port: int | None = None,
        workers: int = 1,
        tag: str = "",
        script: str = "echo.py",
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> Server:
        argv = [
            sys.executable,
            "-m",
            "deployer.serving",
            "--entry-script",
            str(SCRIPTS / script),
            "--model-dir",
            str(self.logdir),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--state-dir",
            str(self.logdir / "state"),
        ]
        if instance:
            argv += ["--instance", instance]
        if candidate_port is not None:
            argv += ["--candidate-port", str(candidate_port)]
        probe_port = port if candidate_port is None else candidate_port
        name = f"{tag or 'server'}-{len(self.servers)}"
        server = launch(argv, self.logdir, name, probe_port, env={"ECHO_TAG": tag, **(env or {})})
        self.servers.append(server)
        if wait:
            wait_until_up(server, "/ready")
            if instance:  # /ready answers from one worker; joining needs all of them
                wait_for(lambda: ctl(instance, "status")["ready"], f"{instance} ready")
        return server


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    servers = Fleet(tmp_path)
    yield servers
    for server in servers.servers:
        server.stop()


def ctl(instance: str, op: str, **fields: Any) -> dict[str, Any]:
    return control.call(instance, op, timeout=WAIT_S, **fields)


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | None, str]:
    """Run ``python -m deployer.serving.control``: (exit status, reply or None, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if k != "DEPLOYER_INSTANCE"}
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "deployer.serving.control", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=WAIT_S + 30,
        check=False,
    )
    reply = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, reply, done.stderr


def whoami(port: int, timeout: float = 30) -> str:
    """The tag of the server that answers a request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/score", body=b'{"kind": "whoami"}')
        response = conn.getresponse()
        assert response.status == 200
        tag: str = json.loads(response.read())["tag"]
        return tag
    finally:
        conn.close()


def refused(port: int) -> bool:
    """Nothing listens on ``port`` (a connect racing the listener's close is reset)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    return False


# The control socket and its CLI ---------------------------------------------------------------
def test_status_of_a_candidate(fleet: Fleet) -> None:
    port, candidate = free_port(), free_port()
    name = instance_name("n")
    server = fleet.start(name, port, candidate_port=candidate, tag="new")
    status, reply, _ = cli("--instance", name, "status")
    assert status == 0
    assert reply == {
        "ok": True,
        "instance": name,
        "pid": server.proc.pid,
        "ready": True,
        "failed": False,
        "promoted": False,
        "service_port": port,
        "candidate_port": candidate,
        "listeners": [{"port": candidate, "accepting": True}],
        "leases": [],
    }
    assert refused(port)  # a candidate leaves the service port alone
    # The name can come from the environment, as in the container.
    assert cli("status", env={"DEPLOYER_INSTANCE": name})[1] == reply


def test_join_pause_resume_promote(fleet: Fleet, tmp_path: Path) -> None:
    port, candidate = free_port(), free_port()
    name = instance_name("n")
    fleet.start(name, port, candidate_port=candidate, tag="new")
    status, reply, _ = cli("--instance", name, "join")  # no --from: bind the port itself
    assert status == 0
    assert reply is not None
    assert reply["listeners"] == [
        {"port": port, "accepting": True},
        {"port": candidate, "accepting": True},
    ]
    assert whoami(port) == "new"
    assert ctl(name, "join") == reply  # again: nothing changes
    assert cli("--instance", name, "share")[:2] == (0, {"ok": True, "port": port})
    assert ctl(name, "status")["leases"] == []  # a share without a holder is no lease

    # A keep-alive connection, idle when the pause comes, is not cut: its next request
    # is answered, with connection: close (so its client reconnects to whoever accepts).
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    with contextlib.closing(conn):
        conn.request("POST", "/score", body=b'{"kind": "whoami"}')
        conn.getresponse().read()
        paused = ctl(name, "pause")
        assert paused["listeners"][0] == {"port": port, "accepting": False}
        conn.request("POST", "/score", body=b'{"kind": "whoami"}')
        answer = conn.getresponse()
        assert (answer.status, answer.getheader("connection")) == (200, "close")
    assert ctl(name, "pause") == paused
    assert ctl(name, "resume")["listeners"][0] == {"port": port, "accepting": True}
    assert whoami(port) == "new"

    promoted = ctl(name, "promote")
    assert promoted["promoted"] is True
    assert promoted["candidate_port"] is None
    assert promoted["listeners"] == [{"port": port, "accepting": True}]
    assert (tmp_path / "state" / f"{name}.promoted").is_file()
    assert refused(candidate)
    assert ctl(name, "promote") == promoted  # idempotent


def test_join_fails_clearly_when_the_port_is_taken(fleet: Fleet) -> None:
    port, candidate = free_port(), free_port()
    name = instance_name("n")
    fleet.start(name, port, candidate_port=candidate)
    with socket.create_server(("127.0.0.1", port)):  # someone else's listener
        status, reply, _ = cli("--instance", name, "join")
    assert status == 1
    assert reply == {"ok": False, "error": f"port {port} is in use by another program"}
    assert ctl(name, "status")["listeners"] == [{"port": candidate, "accepting": True}]


def test_join_is_refused_until_init_finished(fleet: Fleet, tmp_path: Path) -> None:
    port, candidate = free_port(), free_port()
    name = instance_name("n")
    gate = tmp_path / "gate"
    server = fleet.start(
        name,
        port,
        candidate_port=candidate,
        script="slow_init.py",
        env={"SLOW_INIT_GATE": str(gate)},
        wait=False,
    )
    wait_until_up(server, "/")  # alive, init() still running
    assert ctl(name, "status")["ready"] is False
    status, reply, _ = cli("--instance", name, "join")
    assert (status, reply) == (1, {"ok": False, "error": "init() has not finished"})
    gate.touch()
    wait_for(lambda: ctl(name, "status")["ready"], "init() to finish")
    assert ctl(name, "join")["ok"] is True


def test_join_from_an_instance_that_is_not_there(fleet: Fleet) -> None:
    name = instance_name("n")
    fleet.start(name, free_port(), candidate_port=free_port())
    missing = instance_name("missing")
    status, reply, _ = cli("--instance", name, "join", "--from", missing)
    assert status == 1
    assert reply is not None
    assert reply["error"].startswith(f"instance {missing} does not answer")
    assert f"@deployer-serving/{missing}" in reply["error"]


def test_cli_usage_and_unreachable_server() -> None:
    assert cli("status")[0] == 2  # no instance named
    assert cli("--instance", "x", "launch")[0] == 2
    assert cli("--instance", "x", "pause", "--from", "y")[0] == 2
    assert cli("--instance", "bad/name", "status")[0] == 2
    name = instance_name("nobody")
    status, reply, _ = cli("--instance", name, "status")
    assert status == 1
    assert reply is not None
    assert reply["ok"] is False
    assert f"@deployer-serving/{name}" in reply["error"]


def test_a_second_server_with_the_same_instance_name_exits(fleet: Fleet) -> None:
    name = instance_name("n")
    fleet.start(name, free_port(), candidate_port=free_port())
    second = fleet.start(name, free_port(), candidate_port=free_port(), wait=False)
    assert second.wait_exit(timeout=WAIT_S) == 1
    assert f"cannot open the control socket @deployer-serving/{name}" in second.stderr()


def test_peer_uid_is_the_connecting_process_uid() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert control.peer_uid(left) == os.geteuid()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another uid")
def test_a_peer_with_another_uid_is_refused(fleet: Fleet) -> None:
    name = instance_name("n")
    fleet.start(name, free_port(), candidate_port=free_port())
    # A forked child that drops to uid 65534 and asks for the listener. (Not a new
    # interpreter: that one might not be readable by the other uid.)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest, no exceptions escaping
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(control.address(name))
                sock.sendall(b'{"op": "share"}\n')
                data, fds, _, _ = socket.recv_fds(sock, 65536, 4)
            os.write(write_end, json.dumps({"reply": data.decode(), "fds": len(fds)}).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            got = json.loads(pipe.read() or b"{}")
    finally:
        os.waitpid(pid, 0)
    assert got["fds"] == 0
    reply = json.loads(got["reply"])
    assert reply["ok"] is False
    assert "peer uid 65534 refused" in reply["error"]
    assert ctl(name, "status")["ok"] is True  # and it still serves its own uid


# Switching under load ---------------------------------------------------------------------
class Load:
    """Keep-alive clients hammering a port, as a well-behaved client pool would: reconnect
    after ``connection: close`` or when the server closed an idle connection cleanly.
    Anything else - an exception, a reset, a status other than 200 - is a failure."""

    def __init__(self, port: int, threads: int = 3):
        self.port = port
        self.requests = 0
        self.failures: list[str] = []
        self.tags: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=WAIT_S)

    def more(self, count: int = LOAD_STEP) -> None:
        """Wait until ``count`` more requests have been made."""
        target = self.requests + count
        wait_for(lambda: self.requests >= target, f"{count} more requests")

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        body = b'{"kind": "whoami"}'
        while not self._stop.is_set():
            failure, tag = None, None
            try:
                if _closed_by_server(conn):
                    conn.close()  # the next request opens a new connection
                conn.request("POST", "/score", body=body)
                response = conn.getresponse()  # closes conn after a connection: close
                data = response.read()
                if response.status == 200:
                    tag = json.loads(data)["tag"]
                else:
                    failure = f"status {response.status}: {data[:200]!r}"
            except Exception as exc:
                failure = f"{type(exc).__name__}: {exc}"
                conn.close()
            with self._lock:
                self.requests += 1
                if failure is not None:
                    self.failures.append(failure)
                else:
                    self.tags[str(tag)] += 1
        conn.close()


def _closed_by_server(conn: http.client.HTTPConnection) -> bool:
    """The server closed this idle keep-alive connection (end of stream is readable)."""
    sock = conn.sock
    if sock is None or not select.select([sock], [], [], 0)[0]:
        return False
    return bool(sock.recv(1, socket.MSG_PEEK) == b"")  # a reset raises: a failure


def start_pair(fleet: Fleet, workers: int) -> tuple[int, str, Server, str, Server]:
    port = free_port()
    old_name, new_name = instance_name("old"), instance_name("new")
    old = fleet.start(old_name, port, workers=workers, tag="old")
    new = fleet.start(new_name, port, candidate_port=free_port(), workers=workers, tag="new")
    return port, old_name, old, new_name, new


@pytest.mark.parametrize("workers", [1, 2])
def test_switch_under_load_fails_no_request(fleet: Fleet, workers: int) -> None:
    port, old_name, old, new_name, _ = start_pair(fleet, workers)
    with Load(port) as load:
        load.more()
        assert ctl(new_name, "join", **{"from": old_name})["ok"] is True
        load.more()
        assert ctl(old_name, "pause")["ok"] is True
        # Only the new version accepts now: fresh connections all reach it.
        assert {whoami(port) for _ in range(20)} == {"new"}
        load.more()
        old.proc.send_signal(signal.SIGTERM)
        assert old.wait_exit(timeout=WAIT_S) == 0
        load.more()
    assert load.failures == []
    assert load.requests >= 4 * LOAD_STEP
    assert load.tags["old"] > 0
    assert load.tags["new"] > 0
    assert {whoami(port) for _ in range(10)} == {"new"}
    assert ctl(new_name, "promote")["promoted"] is True


@pytest.mark.parametrize("workers", [1, 2])
def test_rollback_under_load_fails_no_request(fleet: Fleet, workers: int) -> None:
    port, old_name, old, new_name, new = start_pair(fleet, workers)
    with Load(port) as load:
        load.more()
        assert ctl(new_name, "join", **{"from": old_name})["ok"] is True
        assert ctl(old_name, "status")["leases"] == [new_name]
        assert ctl(old_name, "pause")["ok"] is True
        load.more()
        assert whoami(port) == "new"
        # The new version fails its checks: back to the old one.
        assert ctl(old_name, "resume")["ok"] is True
        load.more()
        new.proc.send_signal(signal.SIGTERM)
        assert new.wait_exit(timeout=WAIT_S) == 0
        load.more()
    assert load.failures == []
    assert load.requests >= 4 * LOAD_STEP
    assert load.tags["new"] > 0
    assert {whoami(port) for _ in range(10)} == {"old"}
    status = ctl(old_name, "status")
    assert status["listeners"] == [{"port": port, "accepting": True}]
    assert status["leases"] == []  # the new version's ended as it stopped
    assert "is gone" not in old.stderr()  # it ended while the old one accepted: no takeover


# Leases: a paused instance takes over when the one it handed the socket to is gone ------------
def kill_group(server: Server) -> None:
    """SIGKILL a server's whole process group (the supervisor and its workers too)."""
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.wait_exit(timeout=WAIT_S)


def answered_by(port: int, tag: str) -> bool:
    with contextlib.suppress(OSError, http.client.HTTPException):
        return whoami(port, timeout=2) == tag
    return False


@pytest.mark.parametrize("workers", [1, 2])
def test_a_paused_instance_takes_over_when_the_new_one_dies(fleet: Fleet, workers: int) -> None:
    port, old_name, old, new_name, new = start_pair(fleet, workers)
    with Load(port) as load:
        load.more()
        assert ctl(new_name, "join", **{"from": old_name})["ok"] is True
        assert ctl(old_name, "pause")["ok"] is True
        load.more()
        assert whoami(port) == "new"
        served_by_old = load.tags["old"]
        kill_group(new)  # a crash under traffic, an OOM kill; no one sends resume
        # The service answers again, soon: no request waits for a deploy tool's timeout.
        wait_for(lambda: answered_by(port, "old"), "the old version to answer", timeout=10)
        load.more()
    kinds = Counter(failure.split(":")[0] for failure in load.failures)
    print(f"\nworkers={workers}: {len(load.failures)} of {load.requests} failed {dict(kinds)}")
    assert load.tags["old"] > served_by_old
    # The new version's in-flight requests die with it; no more than that.
    assert len(load.failures) <= 10
    assert len(load.failures) * 50 < load.requests
    status = ctl(old_name, "status")
    assert status["listeners"] == [{"port": port, "accepting": True}]
    assert status["leases"] == []
    assert f"{new_name} is gone: accepting on port {port} again" in old.stderr()


def test_a_lease_that_ends_while_accepting_changes_nothing(fleet: Fleet) -> None:
    port, old_name, old, new_name, new = start_pair(fleet, 1)
    before = ctl(old_name, "status")
    assert ctl(new_name, "join", **{"from": old_name})["ok"] is True
    assert ctl(old_name, "status")["leases"] == [new_name]
    kill_group(new)
    wait_for(lambda: ctl(old_name, "status")["leases"] == [], "the lease to end")
    assert ctl(old_name, "status") == before
    assert whoami(port) == "old"
    assert ctl(old_name, "resume")["ok"] is True  # not stopping: a resume is still taken
    assert old.proc.poll() is None
    assert "is gone" not in old.stderr()


def test_a_pause_after_the_joiner_died_is_refused(fleet: Fleet) -> None:
    """The new version dies between its join and the pause: pausing would leave nobody
    accepting, so the old version refuses and keeps serving."""
    port, old_name, _old, new_name, new = start_pair(fleet, 1)
    assert ctl(new_name, "join", **{"from": old_name})["ok"] is True
    kill_group(new)
    wait_for(lambda: ctl(old_name, "status")["leases"] == [], "the lease to end")
    reply = ctl(old_name, "pause")
    assert reply == {
        "ok": False,
        "error": "the instance that took a copy of the port's socket is gone",
    }
    assert ctl(old_name, "status")["listeners"] == [{"port": port, "accepting": True}]
    assert whoami(port) == "old"


def test_a_paused_instance_waits_for_the_last_lease(fleet: Fleet) -> None:
    port = free_port()
    old_name, first_name, second_name = (instance_name(r) for r in ("old", "n1", "n2"))
    old = fleet.start(old_name, port, tag="old")
    first = fleet.start(first_name, port, candidate_port=free_port(), tag="n1")
    second = fleet.start(second_name, port, candidate_port=free_port(), tag="n2")
    assert ctl(first_name, "join", **{"from": old_name})["ok"] is True
    assert ctl(second_name, "join", **{"from": old_name})["ok"] is True
    assert ctl(old_name, "pause")["leases"] == [first_name, second_name]
    kill_group(first)
    wait_for(lambda: ctl(old_name, "status")["leases"] == [second_name], "n1's lease to end")
    # n2 still holds the socket (and accepts): the old version stays as it was left.
    assert ctl(old_name, "status")["listeners"] == [{"port": port, "accepting": False}]
    assert whoami(port) == "n2"
    kill_group(second)
    wait_for(lambda: answered_by(port, "old"), "the old version to answer", timeout=10)
    status = ctl(old_name, "status")
    assert status["listeners"] == [{"port": port, "accepting": True}]
    assert status["leases"] == []
    assert f"{second_name} is gone: accepting on port {port} again" in old.stderr()
    assert f"{first_name} is gone; still paused" in old.stderr()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_paused_instance_takes_over_when_the_new_one_stops(fleet: Fleet, workers: int) -> None:
    # A SIGTERM to the new version, with no resume first: the lease ends as it stops.
    port, old_name, old, new_name, new = start_pair(fleet, workers)
    assert ctl(new_name, "join", **{"from": old_name})["ok"] is True
    assert ctl(old_name, "pause")["ok"] is True
    new.proc.send_signal(signal.SIGTERM)
    assert new.wait_exit(timeout=WAIT_S) == 0
    wait_for(lambda: answered_by(port, "old"), "the old version to answer", timeout=10)
    assert ctl(old_name, "status")["listeners"] == [{"port": port, "accepting": True}]
    assert f"{new_name} is gone: accepting on port {port} again" in old.stderr()


def test_promoted_instance_restarts_on_the_service_port(fleet: Fleet) -> None:
    port, candidate = free_port(), free_port()
    old_name, new_name = instance_name("old"), instance_name("new")
    old = fleet.start(old_name, port, tag="old")
    new = fleet.start(new_name, port, candidate_port=candidate, tag="new")
    assert ctl(new_name, "join", **{"from": old_name})["ok"] is True
    assert ctl(old_name, "pause")["ok"] is True
    assert ctl(new_name, "promote")["promoted"] is True
    old.proc.send_signal(signal.SIGTERM)
    assert old.wait_exit(timeout=WAIT_S) == 0
    new.proc.send_signal(signal.SIGKILL)  # a crash
    new.wait_exit(timeout=WAIT_S)

    # Restarted with the same arguments (candidate port included), while another program
    # still holds the port for a moment: it waits for the port, then serves it.
    with socket.create_server(("127.0.0.1", port)):
        restarted = fleet.start(new_name, port, candidate_port=candidate, tag="new", wait=False)
        wait_for(lambda: "in use; retrying" in restarted.stderr(), "the wait to be logged")
    restarted.port = port
    wait_until_up(restarted, "/ready")
    assert whoami(port) == "new"
    status = ctl(new_name, "status")
    assert status["promoted"] is True
    assert status["candidate_port"] is None
    assert status["listeners"] == [{"port": port, "accepting": True}]
    assert refused(candidate)
    assert restarted.stderr().count("in use; retrying") == 1  # logged once


# Draining --------------------------------------------------------------------------------------
def test_sigterm_answers_an_idle_keep_alive_connection_before_closing(
    serve: ServeFactory,
) -> None:
    server = serve("echo.py")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    with contextlib.closing(conn):
        conn.request("POST", "/score", body=b'{"kind": "list"}')
        first = conn.getresponse()
        first.read()
        assert first.getheader("connection") is None  # kept alive
        sock = conn.sock
        server.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: refused(server.port), "the listener to close")
        # Idle when the signal came, and not cut: its next request is answered, with close.
        conn.request("POST", "/score", body=b'{"kind": "list"}')
        assert conn.sock is sock
        second = conn.getresponse()
        assert (second.status, second.read()) == (200, b'[1, 2.5, "three", null, true]')
        assert second.getheader("connection") == "close"
    assert server.wait_exit(timeout=WAIT_S) == 0
