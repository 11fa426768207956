"""Running a scoring container with the Docker engine: start it, follow its log, wait
until it is ready (or has died, and why), stop it gracefully."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from typing import TYPE_CHECKING, Any

from deployer.errors import DeployFailed
from deployer.events import Event, Sink

if TYPE_CHECKING:
    from docker.models.containers import Container

LOG_TAIL = 40
# The scoring server's access-log records (deployer/serving/logs.py).
_ACCESS_LOG = '"event":"access"'
POLL_S = 0.2


def free_port() -> int:
    """A port free on 127.0.0.1 now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LogFollower:
    """Reads a container's log in a thread: shows it as progress and keeps the tail."""

    def __init__(self, container: Container, progress: Sink) -> None:
        self.tail: deque[str] = deque(maxlen=LOG_TAIL)
        self._progress = progress
        self._thread = threading.Thread(target=self._run, args=(container,), daemon=True)
        self._thread.start()

    def _run(self, container: Container) -> None:
        buffer = b""
        try:
            for chunk in container.logs(stream=True, follow=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    self._add(raw)
        except Exception:
            pass
        if buffer:
            self._add(buffer)

    def _add(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if _ACCESS_LOG in line.replace(" ", ""):
            return  # one line per request: the tests' own traffic, not news
        self.tail.append(line)
        self._progress(Event("detail", f"  | {line}", key="log"))

    def lines(self, container: Container | None = None) -> list[str]:
        """The last lines; read again from the engine when the follower may lag behind."""
        if container is not None:
            try:
                text = container.logs(tail=LOG_TAIL).decode("utf-8", "replace")
                return [line.rstrip() for line in text.splitlines()]
            except Exception:
                pass
        return list(self.tail)


def wait_ready(container: Container, url: str, timeout_s: float, follower: LogFollower) -> None:
    """Poll ``url`` until it answers 200; fail early if the container exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        container.reload()
        if container.status in ("exited", "dead"):
            state: dict[str, Any] = container.attrs.get("State", {})
            code = state.get("ExitCode")
            time.sleep(POLL_S)  # let the log follower catch the last lines
            raise DeployFailed(
                f"container {container.name} exited with code {code} before it was ready",
                follower.lines(container),
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(POLL_S)
    raise DeployFailed(
        f"container {container.name} was not ready at {url} after {timeout_s:.0f} s",
        follower.lines(container),
    )


def stop_and_remove(container: Container, timeout_s: int) -> None:
    """SIGTERM (the server drains in-flight requests), SIGKILL after ``timeout_s``."""
    try:
        container.stop(timeout=timeout_s)
    finally:
        container.remove(force=True)
