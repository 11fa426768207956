"""The one harness every driver's conformance tests go through (pre-commit's
``testing/language_helpers.py`` is the model).

A ``Platform`` is a driver's side of it: the target's settings in deploy.yaml, the
environment that points deployer at the platform's double (``DOCKER_HOST``, a kubeconfig,
a cloud endpoint), what is running there, and faults on demand, injected through the
double. Everything else is shared: the model repo whose versions misbehave on purpose,
deployer run as a subprocess (as users run it, so that SIGINT and SIGKILL are real), and
an independent load loop that counts failed requests while versions switch.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from tests.conftest import EXAMPLE, GUARD_PATH, REPO

# The example's rows and the answer the example model gives (train/expected.json).
ROW = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
ANSWER = 4640.521
TOLERANCE = 1e-3

# Appended to the example's score.py: faults chosen by environment variables, which
# deploy.yaml's environment.variables set, so each fault is a version of its own.
FAULTS = """

# --- the conformance suite's faults, chosen by environment variables ---------------------
import time as _time

_example_init, _example_run = init, run
_calls = 0


def init():
    delay = float(os.environ.get("CONFORMANCE_INIT_DELAY_S") or 0)
    if delay:
        _time.sleep(delay)  # a version that never becomes ready
    _example_init()


def run(raw_data):
    global _calls  # noqa: PLW0603
    _calls += 1
    crash_after = int(os.environ.get("CONFORMANCE_CRASH_AFTER") or 0)
    if crash_after and _calls > crash_after:
        os._exit(1)  # a version that passes its tests, then dies under traffic
    result = _example_run(raw_data)
    if os.environ.get("CONFORMANCE_WRONG_ANSWERS"):
        return [value + 1000 for value in result]  # a version that fails its tests
    return result
"""


class Step(Protocol):
    """A fault or hold placed at one step of a deploy; ``matched`` is set when it fired."""

    matched: threading.Event
    released: threading.Event


class Platform(Protocol):
    """What a driver brings to the conformance suite."""

    kind: str
    # How the platform replaces a version (the driver's declaration): what to expect of
    # requests during a switch and of rollbacks.
    replacement: str
    # True where moving the service to another version restarts it (ACI restarts a group
    # to change its image): requests fail during a switch, and the suite counts them
    # instead of asserting none did.
    switch_drops_requests: bool
    # The steps of the driver's protocol that ``fail`` and ``hold`` can stop (a platform
    # without a step, such as ACI's ``pause``, skips the scenarios at it).
    steps: tuple[str, ...]

    def target_yaml(self, ready_timeout_s: float) -> str:
        """The target's mapping in deploy.yaml (flow style, one line)."""
        ...

    def env(self) -> dict[str, str]:
        """What deployer's environment needs to reach the platform's double."""
        ...

    def service_url(self) -> str:
        """The scoring URI the service answers on once deployed."""
        ...

    def live_versions(self, service: str, target: str) -> list[str]:
        """Each version running and able to serve (not candidates): its revision."""
        ...

    def leftovers(self, service: str, target: str) -> list[str]:
        """Anything of the target besides the live versions (candidates, stopped ones)."""
        ...

    def fail(self, step: str) -> Step:
        """Make the platform fail the next time a deploy reaches ``step`` (one of
        ``apply``, ``promote``, ``confirm``): an API error, as the platform answers them."""
        ...

    def hold(self, step: str) -> Step:
        """Make the next deploy stop at ``step`` (or ``retire``) until released or killed."""
        ...


@dataclass
class Deployed:
    code: int
    output: str
    report: dict[str, Any]

    @property
    def target(self) -> dict[str, Any]:
        (only,) = self.report["targets"]
        return dict(only)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set (the registry's credentials, which deploy.yaml names
    and the deployer subprocesses read), as it was again afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def failed_with(deployed: Deployed, *phrases: str) -> str:
    """The target's error, after checking the deploy failed (exit 1, no traceback of
    deployer's own) with it and these phrases in it."""
    assert deployed.code == 1, deployed.output
    assert not re.search("^Traceback", deployed.output, re.M), deployed.output
    target = deployed.target
    assert target["status"] == "failed", target
    for phrase in phrases:
        assert phrase in target["error"], (phrase, target["error"])
    return str(target["error"])


def copy_model_repo(root: Path) -> str:
    """Copy the example repo to ``root`` with the faults in its score.py; return the text of
    its deploy.yaml, the template of ``deploy_yaml``."""
    shutil.copytree(
        EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", "tests", "train", "out")
    )
    script = root / "score.py"
    script.write_text(script.read_text() + FAULTS)
    return (root / "deploy.yaml").read_text()


def deploy_yaml(
    template: str, service: str, target: str, target_yaml: str, variables: dict[str, str]
) -> str:
    """The example's deploy.yaml for ``service``, with one target and these environment
    variables (the fault switches) in the image."""
    text = template.replace("name: diabetes\n", f"name: {service}\n", 1)
    pairs = {"OMP_NUM_THREADS": "1", **variables}
    text = text.replace('variables: {OMP_NUM_THREADS: "1"}', "variables: " + json.dumps(pairs))
    head, _, _ = text.partition("\ntargets:\n")
    return f"{head}\ntargets:\n  {target}: {target_yaml}\n"


class ModelRepo:
    """A copy of the example repo whose score.py can misbehave, for one service."""

    def __init__(self, root: Path, platform: Platform, target: str = "conformance") -> None:
        self.root = root
        self.platform = platform
        self.target = target
        self.service = f"cf-{uuid.uuid4().hex[:8]}"
        self.template = copy_model_repo(root)
        self.config = root / "deploy.yaml"
        self.reports = root / "reports"
        # Variables set (or, None, removed) in deployer's environment on top of the
        # platform's: a wrong credential, a missing kubeconfig.
        self.extra_env: dict[str, str | None] = {}

    def write(self, ready_timeout_s: float = 60, **variables: str) -> None:
        """deploy.yaml with one target on the platform and these fault variables."""
        target = self.platform.target_yaml(ready_timeout_s)
        text = deploy_yaml(self.template, self.service, self.target, target, variables)
        self.config.write_text(text)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update(self.platform.env())
        env["PYTHONPATH"] = os.pathsep.join([str(GUARD_PATH), str(REPO)])
        for key, value in self.extra_env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "deployer", args[0], "-c", str(self.config), *args[1:]]

    def start_deploy(self, *extra: str) -> subprocess.Popen[str]:
        """``deployer deploy`` in a process of its own, as a CI job runs it."""
        argv = self.command("deploy", "-t", self.target, "--report-dir", str(self.reports), *extra)
        return subprocess.Popen(
            argv,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def deploy(self, *extra: str, timeout: float = 600) -> Deployed:
        proc = self.start_deploy(*extra)
        output, _ = proc.communicate(timeout=timeout)
        return Deployed(proc.returncode, output, self.report())

    def report(self) -> dict[str, Any]:
        path = self.reports / "deploy-report.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def live(self) -> list[str]:
        return self.platform.live_versions(self.service, self.target)

    def leftovers(self) -> list[str]:
        return self.platform.leftovers(self.service, self.target)


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    output, _ = proc.communicate(timeout=timeout)
    return output


def interrupt(proc: subprocess.Popen[str], signum: int = signal.SIGINT) -> None:
    """A real signal to the deploy's process (its group: as a terminal's Ctrl-C does)."""
    os.killpg(proc.pid, signum)


def score_once(url: str, timeout: float = 5) -> float:
    host, port, path = _split(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        body = json.dumps({"data": [ROW]})
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"status {response.status}: {body[:200]!r}")
        return float(json.loads(body)[0])
    finally:
        conn.close()


def wait_until_answers(url: str, within_s: float = 30) -> float:
    """Seconds until ``url`` answers correctly (for 'answers again within seconds')."""
    started = time.monotonic()
    while True:
        try:
            if abs(score_once(url, timeout=2) - ANSWER) <= TOLERANCE:
                return time.monotonic() - started
        except (OSError, RuntimeError, http.client.HTTPException, ValueError):
            pass
        if time.monotonic() - started > within_s:
            raise AssertionError(f"{url} did not answer correctly within {within_s} s")
        time.sleep(0.05)


@dataclass
class Load:
    """An independent client that keeps scoring on keep-alive connections and counts every
    request that does not get the right answer: an exception, a reset, a wrong status or a
    wrong number. Like a well-behaved HTTP client, it reconnects after ``Connection:
    close`` (http.client does so by itself)."""

    url: str
    threads: int = 2
    ok: int = 0
    failed: int = 0
    reasons: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _loop(self) -> None:
        host, port, path = _split(self.url)
        body = json.dumps({"data": [ROW]})
        headers = {"Content-Type": "application/json"}
        conn = http.client.HTTPConnection(host, port, timeout=30)
        while not self._stop.is_set():
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                data = response.read()
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}")
                value = float(json.loads(data)[0])
                if abs(value - ANSWER) > TOLERANCE:
                    raise RuntimeError(f"wrong answer {value}")
            except (OSError, RuntimeError, http.client.HTTPException, ValueError) as error:
                conn.close()
                with self._lock:
                    self.failed += 1
                    if len(self.reasons) < 20:
                        self.reasons.append(f"{type(error).__name__}: {error}")
                time.sleep(0.01)
                continue
            with self._lock:
                self.ok += 1
        conn.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        wait_until_answers(self.url)
        workers = [threading.Thread(target=self._loop, daemon=True) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        try:
            yield self
        finally:
            self._stop.set()
            for worker in workers:
                worker.join(timeout=60)

    def __str__(self) -> str:
        return f"{self.ok} ok, {self.failed} failed {self.reasons[:5]}"


def _split(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 80, parts.path
