"""Fixtures for the scoring-server tests: real server processes on 127.0.0.1.

Every server is a subprocess on a free port, in its own session so teardown can
signal its whole process group; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
START_TIMEOUT_S = 60.0


def metric(text: str, name: str) -> float:
    """One sample's value in a Prometheus scrape."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics:\n{text}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    logdir: Path
    name: str
    extra: dict[str, Any] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            return Reply(response.status, response.getheaders(), response.read())
        finally:
            conn.close()

    def post(self, body: Any, path: str = "/score", **kw: Any) -> Reply:
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return self.request("POST", path, data, headers, **kw)

    def stdout(self) -> str:
        return (self.logdir / f"{self.name}.out").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.logdir / f"{self.name}.err").read_text(errors="replace")

    def wait_exit(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):  # stragglers of the group too
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def wait_until_up(server: Server, probe: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode} before "
                f"answering:\n{server.stderr()[-4000:]}"
            )
        with contextlib.suppress(OSError, http.client.HTTPException):
            if server.request("GET", probe, timeout=2).status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{server.name} not up after {timeout} s:\n{server.stderr()[-4000:]}")


def launch(
    argv: list[str],
    logdir: Path,
    name: str,
    port: int,
    *,
    cwd: Path = REPO,
    env: Mapping[str, str] | None = None,
) -> Server:
    logdir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    with (logdir / f"{name}.out").open("wb") as out, (logdir / f"{name}.err").open("wb") as err:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Server(proc, port, logdir, name)


ServeFactory = Callable[..., Server]


def _ours(logdir: Path, started: list[Server]) -> ServeFactory:
    def serve(
        script: str | Path,
        *,
        args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        python: str = sys.executable,
        model_dir: Path | None = None,
        name: str = "ours",
        probe: str = "/ready",
    ) -> Server:
        port = free_port()
        path = script if isinstance(script, Path) else SCRIPTS / script
        argv = [
            python,
            "-m",
            "deployer.serving",
            "--entry-script",
            str(path),
            "--model-dir",
            str(model_dir or logdir),
            "--port",
            str(port),
            *args,
        ]
        server = launch(argv, logdir, f"{name}-{port}", port, env=env)
        started.append(server)
        if wait:
            wait_until_up(server, probe)
        return server

    return serve


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeFactory]:
    """Start our server on a script from tests/serving/scripts (stopped at teardown)."""
    started: list[Server] = []
    yield _ours(tmp_path, started)
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def serve_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeFactory]:
    """Like ``serve``, for servers shared by a module's tests."""
    started: list[Server] = []
    yield _ours(tmp_path_factory.mktemp("servers"), started)
    for server in started:
        server.stop()


def _load_azureml_venv_helper() -> Any:
    spec = importlib.util.spec_from_file_location(
        "azureml_venv", REPO / "benchmarks" / "azureml_venv.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def azureml_python() -> Path:
    """The python of the separate venv with azureml-inference-server-http (created once)."""
    helper = _load_azureml_venv_helper()
    try:
        python: Path = helper.ensure()
    except Exception as exc:  # fail loudly: the compatibility suite must not skip silently
        pytest.fail(
            f"could not create the azureml-inference-server-http venv at {helper.DEFAULT_DIR} "
            f"(needs PyPI access; create it by hand with `python benchmarks/azureml_venv.py`):"
            f"\n{exc}",
            pytrace=False,
        )
    return python


@pytest.fixture(scope="module")
def azureml_serve(
    azureml_python: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServeFactory]:
    """Start Microsoft's azmlinfsrv on a script, as its command line does."""
    logdir = tmp_path_factory.mktemp("azureml")
    started: list[Server] = []

    def serve(
        script: str,
        *,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        model_dir: Path | None = None,
    ) -> Server:
        port = free_port()
        argv = [
            str(azureml_python.parent / "azmlinfsrv"),
            "--entry_script",
            script,
            "--model_dir",
            str(model_dir or logdir),
            "--port",
            str(port),
        ]
        # Its app root is the working directory; its access log is noisy but harmless.
        server = launch(argv, logdir, f"azureml-{port}", port, cwd=SCRIPTS, env=env)
        started.append(server)
        if wait:
            wait_until_up(server, "/")
        return server

    yield serve
    for server in started:
        server.stop()
