"""An engine that runs a manifest's custom modules on the local Docker engine, as a device's
IoT Edge agent would (the manifest as ``deployer.targets.iot_edge.manifest`` reads it), and
reports each module as the agent reports it in its twin (``runtimeStatus``, ``exitCode``,
``statusDescription``...). ``deployer simulate`` and the IoT Hub double's devices run it.

What the device does, from Microsoft's own code and documentation (IoT Edge 1.5):

- The agent joins the createOptions chunks and sends the module's image, createOptions and
  env to the security daemon (aziot-edged), which creates the container
  (``edgelet/edgelet-docker/src/runtime.rs``, ``create``): the body is createOptions as
  given, with ``Image``, the ``Env`` merged from both (by name, sorted; a name in both keeps
  the value of createOptions' ``Env``: ``merge_env`` extends the module's variables with
  createOptions' own), and the ``Labels`` of createOptions plus
  ``net.azure-devices.edge.owner=Microsoft.Azure.Devices.Edge.Agent`` and
  ``net.azure-devices.edge.original-image``. The container is named after the module
  (``docker_create_body``).
- The agent adds the device's network (``NetworkingConfig.EndpointsConfig``
  ``azure-iot-edge``) when createOptions name none (``CombinedEdgeletConfigProvider``).
  What depends on the device itself (the workload socket mount, the ``IOTEDGE_*`` identity
  variables, the device's certificates) is left out here. This machine's Docker has the
  host network only, so ``host_network_body`` runs every module there: PortBindings stay
  in the body as a record, and the server listens on its own port.
- Restarts (``RestartPolicyManager``): a module that exited with code 0 is ``stopped``,
  otherwise ``failed``; with restartPolicy ``always`` (any exit) or ``on-failure`` /
  ``on-unhealthy`` (a failed one) it is ``backoff`` until a cool-off of 10 s x 2^restarts
  (at most 5 minutes) has passed, then restarted; after 5 restarts it stays ``failed``.
  ``never`` never restarts it. A module that has run for 10 minutes starts counting again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from deployer.targets.iot_edge.manifest import (
    EdgeManifest,
    EdgeModule,
    credentials_for,
    in_startup_order,
)

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

RuntimeStatus = Literal["running", "backoff", "stopped", "failed", "unknown"]
OWNER_LABEL = "net.azure-devices.edge.owner"
OWNER_VALUE = "Microsoft.Azure.Devices.Edge.Agent"
ORIGINAL_IMAGE_LABEL = "net.azure-devices.edge.original-image"
EDGE_NETWORK = "azure-iot-edge"
# The engine's own labels, beside the agent's: which simulate started a container, for
# which module, and from what create body (a different body means replacing it).
LABEL_SESSION = "ai.deployer.simulate.session"
LABEL_MODULE = "ai.deployer.simulate.module"
LABEL_SPEC = "ai.deployer.simulate.spec"

# RestartPolicyManager's settings in the agent (MaxRestartCount, CoolOffTimeUnitInSeconds,
# IntensiveCareTimeInMinutes).
MAX_RESTART_COUNT = 5
COOL_OFF_UNIT_S = 10.0
MAX_COOL_OFF_S = 300.0
INTENSIVE_CARE_S = 600.0

_DOCKER_MIN_DATE = "0001-01-01T00:00:00Z"


def docker_create_body(module: EdgeModule, *, labels: Mapping[str, str]) -> dict[str, Any]:
    """The Docker Engine API create body (``POST /containers/create?name=<module>``) the
    device makes from ``module``: its createOptions as given, with ``Image``, ``Env``
    (createOptions' ``Env`` and the manifest's ``env`` merged by name and sorted, a name in
    both keeping createOptions' value, as aziot-edged's ``merge_env`` does), ``Labels``
    (createOptions', then ``labels``, then the agent's owner and original-image labels) and,
    when createOptions name no network, the device's ``azure-iot-edge`` network."""
    body: dict[str, Any] = json.loads(json.dumps(module.create_options))  # a deep copy
    merged: dict[str, str] = dict(module.env)
    for entry in body.get("Env") or []:
        name, _, value = str(entry).partition("=")
        merged[name] = value
    labels_out = {
        **(body.get("Labels") or {}),
        **labels,
        OWNER_LABEL: OWNER_VALUE,
        ORIGINAL_IMAGE_LABEL: module.image,
    }
    body["Image"] = module.image
    body["Env"] = [f"{name}={value}" for name, value in sorted(merged.items())]
    body["Labels"] = labels_out
    if not (body.get("NetworkingConfig") or {}).get("EndpointsConfig"):
        body["NetworkingConfig"] = {"EndpointsConfig": {EDGE_NETWORK: {}}}
    return body


def host_network_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` as this machine runs it: on the host network (``HostConfig.NetworkMode =
    "host"``, no ``NetworkingConfig``), because its Docker engine is host-network only and
    no bridge network may be created. The ``PortBindings`` stay in the body as a record of
    what the device publishes, but Docker ignores them on the host network: a module's
    server listens on its own port of this machine directly (the model module's
    ``DEPLOYER_SERVER_PORT``)."""
    adapted: dict[str, Any] = json.loads(json.dumps(body))
    adapted.pop("NetworkingConfig", None)
    host_config = adapted.setdefault("HostConfig", {})
    host_config["NetworkMode"] = "host"
    return adapted


# Running a manifest ----------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleStatus:
    """A module as the agent reports it in its twin (``modules.<name>``)."""

    runtime_status: RuntimeStatus
    exit_code: int | None
    status_description: str
    last_exit_time: str | None
    last_start_time: str | None
    restart_count: int
    image: str


@dataclass
class _Tracked:
    module: EdgeModule
    container_id: str | None = None
    pull_error: str | None = None
    create_error: str | None = None
    restart_count: int = 0
    last_restart_time: str | None = None
    body: dict[str, Any] = field(default_factory=dict)


Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


class Engine:
    """Runs a manifest's custom modules as containers on the local Docker engine, as the edge
    agent would (edgeAgent and edgeHub themselves are not run).

    **Network.** This machine's Docker engine is host-network only, and Docker bridge
    networks must never be created here: every container is created with
    ``HostConfig.NetworkMode = "host"`` and without the device's ``azure-iot-edge`` network.
    The ``PortBindings`` of createOptions stay in the body only as documentation (Docker
    ignores them on the host network); a module's server listens on its own port of this
    machine (the model module's ``DEPLOYER_SERVER_PORT``).

    **Restarts.** Containers get no Docker restart policy of their own (unless createOptions
    give one): the engine restarts them itself, as the agent's ``RestartPolicyManager``
    does. A module that exits is reported ``backoff`` (with its exit code) while its cool-off
    runs (``cool_off_unit_s`` x 2^restarts, at most 5 minutes), and restarted on the first
    ``apply``, ``reconcile`` or ``status`` after it; after ``max_restart_count`` restarts, or
    with ``restartPolicy: never``, it is ``failed`` (or ``stopped``, for exit code 0).

    ``session`` labels every container the engine starts (``ai.deployer.simulate.session``),
    so that ``remove_all`` removes exactly those. Containers are named after their module
    (``name_prefix`` first, to keep concurrent sessions apart).
    """

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        session: str,
        name_prefix: str = "",
        cool_off_unit_s: float = COOL_OFF_UNIT_S,
        max_restart_count: int = MAX_RESTART_COUNT,
        clock: Clock = _now,
    ) -> None:
        self.client = client
        self.session = session
        self.name_prefix = name_prefix
        self.cool_off_unit_s = cool_off_unit_s
        self.max_restart_count = max_restart_count
        self._clock = clock
        self._tracked: dict[str, _Tracked] = {}
        self.manifest: EdgeManifest | None = None

    # Converging --------------------------------------------------------------------------
    def apply(
        self,
        manifest: EdgeManifest,
        *,
        extra_env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> dict[str, ModuleStatus]:
        """Converge to ``manifest``: remove the modules it no longer has, replace those whose
        image, createOptions or env changed (the agent replaces a module in place), create
        and start the new ones in startup order (then by name). ``extra_env``: per module,
        variables this machine adds (not the device's). A pull that fails is the module's
        state (``failed``, the error as its statusDescription), as the agent reports it, not
        an exception. Returns ``status()``."""
        self.manifest = manifest
        extra = extra_env or {}
        wanted = {
            module.name: self._body(module, extra.get(module.name, {}))
            for module in manifest.modules.values()
        }
        for name in [name for name in self._tracked if name not in wanted]:
            del self._tracked[name]
        kept: dict[str, str] = {}  # module -> the id of its container, left as it is
        for container in self._containers():
            module_name = container.labels.get(LABEL_MODULE, "")
            body = wanted.get(module_name)
            if body is None or container.labels.get(LABEL_SPEC) != body["Labels"][LABEL_SPEC]:
                self._remove(container)
                self._tracked.pop(module_name, None)
            else:
                kept[module_name] = str(container.id)
        for module in in_startup_order(manifest.modules.values()):
            tracked = self._tracked.get(module.name)
            if module.name in kept:
                if tracked is None or tracked.container_id != kept[module.name]:
                    # Started by another engine of this session: adopted as it is.
                    tracked = _Tracked(module, container_id=kept[module.name])
                    self._tracked[module.name] = tracked
                tracked.module = module
                continue
            self._tracked[module.name] = self._start(module, wanted[module.name])
        return self.status()

    def _body(self, module: EdgeModule, extra_env: Mapping[str, str]) -> dict[str, Any]:
        if extra_env:
            module = replace(module, env={**module.env, **extra_env})
        labels = {LABEL_SESSION: self.session, LABEL_MODULE: module.name}
        body = host_network_body(docker_create_body(module, labels=labels))
        # What makes the agent replace a module: its create body, and its desired status,
        # restart and pull policies.
        spec = [body, module.status, module.restart_policy, module.image_pull_policy]
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        body["Labels"][LABEL_SPEC] = digest
        return body

    def _start(self, module: EdgeModule, body: dict[str, Any]) -> _Tracked:
        import docker.errors

        tracked = _Tracked(module, body=body)
        if module.image_pull_policy == "on-create":
            tracked.pull_error = self._pull(module.image)
            if tracked.pull_error is not None:
                return tracked
        name = self.name_prefix + module.name
        try:
            self._free_name(name)
            created = self.client.api.create_container_from_config(body, name=name)
            tracked.container_id = str(created["Id"])
            if module.status == "running":
                self.client.api.start(tracked.container_id)
        except (docker.errors.APIError, _NameTaken) as exc:
            tracked.create_error = _docker_reason(exc)
        return tracked

    def _pull(self, image: str) -> str | None:
        """Pull ``image`` with the manifest's matching credentials; the error text, or None."""
        import docker.errors
        from docker.utils import parse_repository_tag

        assert self.manifest is not None
        entry = credentials_for(self.manifest, image)
        auth = (
            {"username": entry["username"], "password": entry["password"]}
            if entry is not None
            else None
        )
        repository, tag = parse_repository_tag(image)
        try:
            for message in self.client.api.pull(
                repository, tag=tag or "latest", stream=True, decode=True, auth_config=auth
            ):
                error = message.get("error") or (message.get("errorDetail") or {}).get("message")
                if error:
                    return str(error)
        except docker.errors.APIError as exc:
            return _docker_reason(exc)
        return None

    def _free_name(self, name: str) -> None:
        """Make way for a module's container: a leftover of an earlier simulate (stopped) is
        removed; anyone else's container is left alone, and the module fails to start."""
        import docker.errors

        try:
            existing = self.client.containers.get(name)
        except docker.errors.NotFound:
            return
        mine = existing.labels.get(LABEL_SESSION) == self.session
        stale = LABEL_SESSION in existing.labels and existing.status != "running"
        if mine or stale:
            self._remove(existing)
            return
        raise _NameTaken(
            f"a container named {name} already exists and was not started by this simulate: "
            f"remove it (docker rm -f {name}) and run again"
        )

    def reconcile(self) -> None:
        """One turn of the agent's loop: restart the modules whose cool-off has passed, and
        forget the restarts of modules that have run for 10 minutes."""
        import docker.errors

        now = self._clock()
        for tracked in self._tracked.values():
            container = self._container_of(tracked)
            if container is None or tracked.module.status != "running":
                continue
            state = container.attrs.get("State", {})
            if state.get("Status") == "running":
                started = _parse_time(state.get("StartedAt"))
                if started and (now - started).total_seconds() >= INTENSIVE_CARE_S:
                    tracked.restart_count = 0
                continue
            if self._runtime_status(tracked, state) != "backoff":
                continue
            finished = _parse_time(state.get("FinishedAt"))
            cool_off = self.cool_off_s(tracked.restart_count)
            if finished is None or (now - finished).total_seconds() > cool_off:
                with contextlib.suppress(docker.errors.APIError):
                    container.start()
                    tracked.restart_count += 1
                    tracked.last_restart_time = _format_time(now)

    def cool_off_s(self, restart_count: int) -> float:
        """How long the agent waits before the next restart of a module restarted that often."""
        return float(min(self.cool_off_unit_s * 2.0**restart_count, MAX_COOL_OFF_S))

    # Reporting ---------------------------------------------------------------------------
    def status(self, *, reconcile: bool = True) -> dict[str, ModuleStatus]:
        """Each custom module as the agent reports it. ``reconcile`` first runs one turn of
        the agent's loop (``reconcile``), as the agent does before each report."""
        if reconcile:
            self.reconcile()
        return {name: self._status(tracked) for name, tracked in sorted(self._tracked.items())}

    def _status(self, tracked: _Tracked) -> ModuleStatus:
        image = tracked.module.image
        if tracked.pull_error is not None:
            reason = f"could not pull {image}: {tracked.pull_error}"
            return ModuleStatus("failed", None, reason, None, None, 0, image)
        if tracked.create_error is not None:
            return ModuleStatus(
                "failed",
                None,
                f"could not create or start its container: {tracked.create_error}",
                None,
                None,
                0,
                image,
            )
        container = self._container_of(tracked)
        if container is None:
            return ModuleStatus(
                "unknown", None, "its container is gone", None, None, tracked.restart_count, image
            )
        state = container.attrs.get("State", {})
        runtime = self._runtime_status(tracked, state)
        finished = _time_or_none(state.get("FinishedAt"))
        exit_code = int(state.get("ExitCode", 0)) if finished is not None else None
        return ModuleStatus(
            runtime_status=runtime,
            exit_code=exit_code,
            status_description=self._describe(tracked, runtime, state),
            last_exit_time=finished,
            last_start_time=_time_or_none(state.get("StartedAt")),
            restart_count=tracked.restart_count,
            image=image,
        )

    def _runtime_status(self, tracked: _Tracked, state: Mapping[str, Any]) -> RuntimeStatus:
        docker_status = state.get("Status")
        if docker_status == "running":
            return "running"
        if docker_status == "restarting":  # a Docker restart policy from createOptions
            return "backoff"
        if docker_status in ("created", "paused"):
            return "stopped"
        if docker_status not in ("exited", "dead", "removing"):
            return "unknown"
        exited: RuntimeStatus = "stopped" if int(state.get("ExitCode", 0)) == 0 else "failed"
        policy = tracked.module.restart_policy
        if tracked.module.status != "running" or policy == "never":
            return exited
        if policy == "always" or exited == "failed":
            return "failed" if tracked.restart_count >= self.max_restart_count else "backoff"
        return exited

    def _describe(self, tracked: _Tracked, runtime: RuntimeStatus, state: Mapping[str, Any]) -> str:
        code = state.get("ExitCode")
        error = str(state.get("Error") or "")
        exited = f"exited with code {code}" + (f" ({error})" if error else "")
        count = tracked.restart_count
        if runtime == "running":
            return "running"
        if runtime == "backoff":
            if state.get("Status") == "restarting":
                return f"{exited}; Docker restarts it (a restart policy in createOptions)"
            return (
                f"{exited}; the agent restarts it after a cool-off of "
                f"{self.cool_off_s(count):g} s (restart {count + 1} of {self.max_restart_count})"
            )
        if runtime == "failed":
            if tracked.module.restart_policy == "never":
                return f"{exited}; restartPolicy never: it is not restarted"
            return f"{exited}; restarted {count} times, the most the agent does: not again"
        if runtime == "stopped":
            if state.get("Status") in ("created", "paused"):
                return "not started (desired status: stopped)"
            return exited
        return f"Docker reports the container {state.get('Status')!r}"

    # Logs and clean-up -------------------------------------------------------------------
    def container(self, module: str) -> Container | None:
        """The container of ``module``, inspected now (None when it has none)."""
        tracked = self._tracked.get(module)
        return None if tracked is None else self._container_of(tracked)

    def logs(self, module: str, tail: int) -> list[str]:
        """The last ``tail`` lines of the module's output (stdout and stderr)."""
        container = self.container(module)
        if container is None:
            return []
        text = container.logs(tail=tail).decode("utf-8", "replace")
        return [line.rstrip() for line in text.splitlines()]

    def follow(
        self, module: str, *, stop: Callable[[], bool], poll_s: float = 1.0
    ) -> Iterator[str]:
        """The module's new log lines as they come, across its restarts, until ``stop()``."""
        last = ""  # the timestamp of the last line yielded
        while not stop():
            container = self.container(module)
            if container is None:
                time.sleep(poll_s)
                continue
            since = _parse_time(last)
            stream = container.logs(
                stream=True,
                follow=True,
                timestamps=True,
                since=int(since.timestamp()) if since else None,
                tail=0 if not last else "all",
            )
            buffer = b""
            for chunk in stream:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    stamp, _, text = raw.decode("utf-8", "replace").partition(" ")
                    if _stamp_key(stamp) > _stamp_key(last):
                        last = stamp
                        yield text.rstrip()
                if stop():
                    return
            time.sleep(poll_s)  # the container stopped: wait for the agent to restart it

    def remove_all(self) -> list[str]:
        """Remove every container this engine's session started, whatever its state; return
        their names."""
        removed = []
        for container in self._containers():
            self._remove(container)
            removed.append(str(container.name))
        self._tracked.clear()
        return removed

    # Helpers -----------------------------------------------------------------------------
    def _containers(self) -> list[Container]:
        found: list[Container] = self.client.containers.list(
            all=True, filters={"label": f"{LABEL_SESSION}={self.session}"}
        )
        return found

    def _container_of(self, tracked: _Tracked) -> Container | None:
        import docker.errors

        if tracked.container_id is None:
            return None
        try:
            return self.client.containers.get(tracked.container_id)
        except docker.errors.NotFound:
            return None

    def _remove(self, container: Container) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


class _NameTaken(Exception):
    """Another container holds the module's name."""


def _docker_reason(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip()


def _parse_time(value: Any) -> datetime | None:
    """A Docker (RFC 3339, nanoseconds) time; None for none or Docker's zero time."""
    text = str(value or "")
    if not text or text.startswith("0001-01-01"):
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", text)
    if match is None:
        return None
    fraction = (match[2] or ".0")[:7]
    zone = match[3] or "Z"
    parsed = datetime.fromisoformat(f"{match[1]}{fraction}{'+00:00' if zone == 'Z' else zone}")
    return parsed.astimezone(UTC)


def _stamp_key(stamp: str) -> str:
    """A Docker log timestamp (RFC 3339, UTC, up to 9 fraction digits with trailing zeros
    cut) as a string that sorts in time order: the fraction padded to 9 digits."""
    if not stamp:
        return ""
    head, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{head}.{fraction:0<9}"


def _time_or_none(value: Any) -> str | None:
    parsed = _parse_time(value)
    return None if parsed is None else _format_time(parsed)


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
