"""``local``: the scoring image run by the local Docker engine on the host network.

``container.json`` is the body of the Docker Engine API's ``POST /containers/create``, ready
for ``docker.APIClient.create_container_from_config(body, name=...)``. It names no container:
the deploy step names it ``<base-name>-<version>`` so that the old and the new container can
run side by side while traffic switches, and finds them again by their labels.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field

from deployer.buildcontext import BuildContext
from deployer.config.fields import Port, PositiveFloat
from deployer.containers import LogFollower, free_port, stop_and_remove, wait_ready
from deployer.errors import DeployFailed
from deployer.events import Event
from deployer.targets.base import (
    DeployContext,
    DeployOutcome,
    RenderContext,
    TargetConfig,
    TargetContext,
)

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

KIND = "local"

NANO_CPUS_PER_CORE = 1_000_000_000
# memory_gb counts GiB, as Docker's own "--memory 1g" does.
BYTES_PER_GB = 1024**3
# Slack on top of the longest request when stopping, for the server's own shutdown.
SHUTDOWN_MARGIN_S = 5

LABEL_SERVICE = "ai.deployer.service"
LABEL_TARGET = "ai.deployer.target"
LABEL_BASE_NAME = "ai.deployer.base-name"
LABEL_MODEL_NAME = "ai.deployer.model.name"
LABEL_MODEL_VERSION = "ai.deployer.model.version"
# Set at deploy time: which rendered spec a container runs, and whether it serves traffic.
LABEL_SPEC = "ai.deployer.spec"
LABEL_ROLE = "ai.deployer.role"
SPEC_HASH_LENGTH = 12


class Config(TargetConfig):
    model_config = ConfigDict(title="local target")

    type: Literal["local"]
    port: Port = Field(default=8080, description="Host port the scoring server listens on.")
    host: Literal["127.0.0.1", "0.0.0.0"] = Field(
        default="127.0.0.1", description="Interface to listen on (host network)."
    )
    cpu_cores: PositiveFloat = 1.0
    memory_gb: PositiveFloat = 1.0


def own_image(ctx: TargetContext) -> BuildContext | None:
    return None


def render(ctx: RenderContext) -> dict[str, str]:
    target = _config_of(ctx)
    return {
        "container.json": ctx.templates.render(
            "container.json.j2",
            image=str(ctx.image),
            env=_environment(target),
            labels=labels(ctx),
            nano_cpus=nano_cpus(target.cpu_cores),
            memory_bytes=memory_bytes(target.memory_gb),
            stop_timeout_s=_stop_timeout_s(ctx),
        )
    }


def base_name(service: str, target_name: str) -> str:
    """The container's name without the version suffix the deploy step adds."""
    return f"{service}-{target_name}"


def labels(ctx: RenderContext) -> dict[str, str]:
    """The container's labels, sorted by key."""
    values = {
        LABEL_SERVICE: ctx.config.name,
        LABEL_TARGET: ctx.name,
        LABEL_BASE_NAME: base_name(ctx.config.name, ctx.name),
        LABEL_MODEL_NAME: ctx.config.model_name,
        LABEL_MODEL_VERSION: ctx.model_version,
    }
    return dict(sorted(values.items()))


def nano_cpus(cores: float) -> int:
    return round(cores * NANO_CPUS_PER_CORE)


def memory_bytes(gigabytes: float) -> int:
    return round(gigabytes * BYTES_PER_GB)


def _environment(target: Config) -> list[str]:
    """Env entries as the Engine API takes them ("NAME=value"), sorted.

    On the host network there is no port mapping: the server itself listens on the
    host's interface and port, so the image's defaults (0.0.0.0:5001) are overridden.
    """
    values = {"DEPLOYER_SERVER_HOST": target.host, "DEPLOYER_SERVER_PORT": str(target.port)}
    return [f"{name}={value}" for name, value in sorted(values.items())]


def _stop_timeout_s(ctx: RenderContext) -> int:
    """How long ``docker stop`` waits after SIGTERM: long enough for the longest request
    allowed (server.scoring_timeout_ms) to finish, so that retiring the old container after
    a switch drops no request. Docker's default, 10 s, is shorter than most timeouts."""
    return math.ceil(ctx.config.server.scoring_timeout_ms / 1000) + SHUTDOWN_MARGIN_S


def _config_of(ctx: RenderContext) -> Config:
    if not isinstance(ctx.target, Config):
        raise TypeError(f"target {ctx.name!r} is not a local target")
    return ctx.target


# Deploying. The service port is on the host network, so two containers cannot both
# listen on it: the new version is first started as a *candidate* on a free port and
# tested there. Only when it passes is the previous container stopped and the new one
# started on the service port; should that fail, the previous one is started again.
# The switch costs one server start-up (about a second for the example) without traffic.


@dataclass(frozen=True)
class _Release:
    """One deploy of one rendered container spec: what every step of it shares."""

    ctx: DeployContext
    client: docker.DockerClient
    spec: dict[str, Any]
    spec_hash: str

    @property
    def base(self) -> str:
        return str(self.spec["Labels"][LABEL_BASE_NAME])

    def start(self, role: str, port: int) -> tuple[Container, LogFollower]:
        body = json.loads(json.dumps(self.spec))  # a copy to adjust
        body["Labels"] = {**body["Labels"], LABEL_SPEC: self.spec_hash, LABEL_ROLE: role}
        body["Env"] = [e for e in body["Env"] if not e.startswith("DEPLOYER_SERVER_PORT=")]
        body["Env"].append(f"DEPLOYER_SERVER_PORT={port}")
        name = f"{self.base}-{self.spec_hash}"
        if role == "candidate":
            name += "-candidate"
            # A candidate that dies must stay dead, so that its exit and log can be reported.
            body["HostConfig"]["RestartPolicy"] = {"Name": "no", "MaximumRetryCount": 0}
        with contextlib.suppress(Exception):
            self.client.containers.get(name).remove(force=True)
        created = self.client.api.create_container_from_config(body, name=name)
        container = self.client.containers.get(created["Id"])
        container.start()
        return container, LogFollower(container, self.ctx.progress)


def deploy(ctx: DeployContext) -> DeployOutcome:
    body = ctx.artifacts["container.json"]
    release = _Release(
        ctx,
        ctx.docker(),
        json.loads(body),
        hashlib.sha256(body.encode()).hexdigest()[:SPEC_HASH_LENGTH],
    )
    port = _config_of_target(ctx.target).port
    existing = release.client.containers.list(
        all=True, filters={"label": f"{LABEL_BASE_NAME}={release.base}"}
    )
    for leftover in [c for c in existing if c.labels.get(LABEL_ROLE) != "service"]:
        leftover.remove(force=True)  # a candidate from an interrupted deploy
    serving = [c for c in existing if c.labels.get(LABEL_ROLE) == "service"]
    uri, swagger = _uris(port)

    current = [
        c
        for c in serving
        if c.status == "running" and c.labels.get(LABEL_SPEC) == release.spec_hash
    ]
    if current:
        ctx.progress(
            Event("step", f"{ctx.name}: {current[0].name} already runs this version; no restart")
        )
        tests = ctx.verify(uri)
        if not tests.passed:
            raise DeployFailed(f"{ctx.name}: the running version fails its tests", tests=tests)
        return DeployOutcome("unchanged", uri, swagger, tests)

    logs = _try_candidate(release)
    return _switch(release, serving, port, logs)


def _try_candidate(release: _Release) -> list[str]:
    """Start the new version on a free port and test it there; return its log."""
    ctx = release.ctx
    port = free_port()
    ctx.progress(Event("step", f"{ctx.name}: starting the new version on port {port} to test it"))
    candidate, follower = release.start("candidate", port)
    try:
        wait_ready(candidate, _ready_url(port), ctx.ready_timeout_s, follower)
        tests = ctx.verify(_uris(port)[0])
        if not tests.passed:
            raise DeployFailed(
                f"{ctx.name}: the new version fails its tests ({tests.summary}); "
                "the previous version is still serving",
                follower.lines(candidate),
                tests,
            )
        return follower.lines(candidate)
    except DeployFailed as failure:
        if not failure.logs:
            failure.logs = follower.lines(candidate)
        raise
    finally:
        candidate.remove(force=True)


def _switch(
    release: _Release, serving: list[Container], port: int, logs: list[str]
) -> DeployOutcome:
    ctx = release.ctx
    stop_timeout = int(release.spec.get("StopTimeout", 10))
    for old in serving:
        if old.status == "running":
            ctx.progress(Event("step", f"{ctx.name}: stopping the previous version {old.name}"))
            old.stop(timeout=stop_timeout)
    ctx.progress(Event("step", f"{ctx.name}: starting the new version on port {port}"))
    final, follower = release.start("service", port)
    try:
        wait_ready(final, _ready_url(port), ctx.ready_timeout_s, follower)
        uri, swagger = _uris(port)
        tests = ctx.verify(uri)
        if not tests.passed:
            raise DeployFailed(
                f"{ctx.name}: the new version fails its tests on port {port}",
                follower.lines(final),
                tests,
            )
    except DeployFailed as failure:
        final.remove(force=True)
        for old in serving:
            with contextlib.suppress(Exception):
                old.start()
        failure.args = (f"{failure.args[0]}; the previous version was started again",)
        raise
    for old in serving:
        old.remove(force=True)
    return DeployOutcome("deployed", uri, swagger, tests, logs)


def down(ctx: DeployContext, remove_images: bool) -> list[str]:
    base = base_name(ctx.config.name, ctx.name)
    client = ctx.docker()
    removed: list[str] = []
    images: set[str] = set()
    for container in client.containers.list(
        all=True, filters={"label": f"{LABEL_BASE_NAME}={base}"}
    ):
        images.add(container.image.id if container.image else "")
        stop_and_remove(container, int(container.attrs.get("Config", {}).get("StopTimeout") or 10))
        removed.append(f"container {container.name}")
    if remove_images:
        import docker.errors

        for image in sorted(i for i in images if i):
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image, force=True)
                removed.append(f"image {image[:19]}")
    return removed


def _uris(port: int) -> tuple[str, str]:
    return f"http://127.0.0.1:{port}/score", f"http://127.0.0.1:{port}/swagger.json"


def _ready_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/ready"


def _config_of_target(target: TargetConfig) -> Config:
    if not isinstance(target, Config):
        raise TypeError("not a local target")
    return target
