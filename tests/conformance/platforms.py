"""Each driver's side of the conformance suite: one ``Platform`` per kind with a driver.

The cloud drivers add theirs here, each backed by its test double on 127.0.0.1; the suite
(test_conformance.py) runs every scenario against every platform in ``PLATFORMS``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.conformance.harness import Platform, Step
from tests.doubles.docker_engine import DockerEngineDouble

# The local driver's protocol, step by step, as Engine API calls (deployer/targets/local).
LOCAL_STEPS = {
    # apply: the candidate container is started
    "apply": ("POST", r"^/v[0-9.]+/containers/[^/]+/start", ""),
    # promote: the candidate joins the service port (an exec of the control command)
    "promote": ("POST", r"^/v[0-9.]+/containers/[^/]+/exec$", '"join"'),
    # after the join, before the previous version stops accepting
    "pause": ("POST", r"^/v[0-9.]+/containers/[^/]+/exec$", '"pause"'),
    # confirm: the candidate is renamed as the live version
    "confirm": ("POST", r"^/v[0-9.]+/containers/[^/]+/rename", ""),
    # retire: the previous version is stopped
    "retire": ("POST", r"^/v[0-9.]+/containers/[^/]+/stop", ""),
}


class LocalPlatform:
    """``local``: the real Docker engine behind a faulting proxy (tests/doubles)."""

    kind = "local"
    replacement = "candidate"

    def __init__(self, engine: DockerEngineDouble, client: Any, port: int) -> None:
        self.engine = engine
        self.client = client  # docker-py, straight to the real engine
        self.port = port

    def target_yaml(self, ready_timeout_s: float) -> str:
        return f"{{type: local, port: {self.port}, ready_timeout_s: {ready_timeout_s}}}"

    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.engine.docker_host}

    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/score"

    def _containers(self, service: str, target: str) -> list[Any]:
        label = f"ai.deployer.base-name={service}-{target}"
        return list(self.client.containers.list(all=True, filters={"label": label}))

    def live_versions(self, service: str, target: str) -> list[str]:
        return [
            str(c.labels.get("ai.deployer.revision"))
            for c in self._containers(service, target)
            if c.status == "running" and not c.name.endswith("-candidate")
        ]

    def leftovers(self, service: str, target: str) -> list[str]:
        return [
            f"{c.name} ({c.status})"
            for c in self._containers(service, target)
            if c.status != "running" or c.name.endswith("-candidate")
        ]

    def fail(self, step: str) -> Step:
        method, path, body = LOCAL_STEPS[step]
        return self.engine.fail(method, path, body)

    def hold(self, step: str) -> Step:
        method, path, body = LOCAL_STEPS[step]
        return self.engine.hold(method, path, body)


@contextlib.contextmanager
def local_platform(tmp: Path, dev_env: dict[str, str], client: Any) -> Iterator[Platform]:
    from deployer.targets.local.driver import free_port

    upstream = dev_env.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    with DockerEngineDouble(tmp / "docker.sock", upstream) as engine:
        yield LocalPlatform(engine, client, free_port())


PlatformFactory = Callable[[Path, dict[str, str], Any], contextlib.AbstractContextManager[Platform]]

# The one list of platforms the suite runs against.
PLATFORMS: dict[str, PlatformFactory] = {"local": local_platform}
