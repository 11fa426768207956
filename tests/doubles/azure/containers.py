"""The containers of the ACI double's container groups, run for real on the local Docker
engine (docker-py; ``DOCKER_HOST`` from the environment).

Each ACI container is one Docker container on the host network, labelled so that a session
can remove whatever a test left (``remove_leftovers``). Its image is pulled from its
registry with the group's credentials, as ACI pulls it; its ``instanceView`` is read from
``docker inspect``; its restart policy is Docker's own (``Always`` -> ``always``), so a
crashing container is restarted with a back-off and its restarts are counted, as in ACI.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import docker
from docker.errors import APIError, NotFound
from docker.utils import parse_repository_tag

LABEL = "ai.deployer.test-double"  # every container the double starts has it
LABEL_VALUE = "azure-container-instances"
LABEL_GROUP = "ai.deployer.test-double.group"  # the group's resource id
LABEL_SESSION = "ai.deployer.test-double.session"  # the double that started it
RESTART_POLICIES = {"Always": "always", "OnFailure": "on-failure", "Never": "no"}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class InaccessibleImage(Exception):
    """The registry refused the image to these credentials, or does not have it."""


@dataclass
class Events:
    """A container's events as ACI lists them: one entry per name, with a count."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, name: str, message: str, kind: str = "Normal") -> None:
        stamp = now()
        event = self.items.get(name)
        if event is None:
            self.items[name] = {
                "count": 1,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "name": name,
                "message": message,
                "type": kind,
            }
        else:
            event.update(count=event["count"] + 1, lastTimestamp=stamp, message=message)

    def listed(self) -> list[dict[str, Any]]:
        return [dict(event) for event in self.items.values()]


@dataclass
class RunningContainer:
    """One ACI container and the Docker container that runs it (once started)."""

    name: str
    image: str
    events: Events = field(default_factory=Events)
    docker_id: str | None = None
    waiting_reason: str = ""  # while no Docker container runs it: why


class DockerRuntime:
    def __init__(self, session: str, environment: dict[str, str] | None = None) -> None:
        self.session = session
        self._environment = environment
        self._client: Any = None

    @property
    def client(self) -> Any:
        """docker-py's client, made on first use: a double used without container groups
        (tokens only) needs no engine."""
        if self._client is None:
            self._client = docker.from_env(environment=self._environment, timeout=300)
        return self._client

    # Images ---------------------------------------------------------------------------------
    def check_access(self, image: str, auth: dict[str, str] | None) -> None:
        """What ACI checks before it accepts a group: that the registry serves the image's
        manifest to these credentials (raises InaccessibleImage)."""
        try:
            self.client.api.inspect_distribution(image, auth_config=auth)
        except (APIError, NotFound) as exc:
            raise InaccessibleImage(_reason(exc)) from None

    def pull(self, container: RunningContainer, auth: dict[str, str] | None) -> bool:
        """Pull as ACI does, recording the events it records; False when it failed."""
        container.events.add("Pulling", f'pulling image "{container.image}"')
        repository, tag = parse_repository_tag(container.image)
        try:
            self.client.images.pull(repository, tag=tag or "latest", auth_config=auth)
        except (APIError, NotFound) as exc:
            message = f'Failed to pull image "{container.image}": {_reason(exc)}'
            container.events.add("Failed", message, "Warning")
            container.waiting_reason = "ImagePullBackOff"
            return False
        container.events.add("Pulled", f'Successfully pulled image "{container.image}"')
        return True

    # Containers -----------------------------------------------------------------------------
    def start(
        self,
        container: RunningContainer,
        group_id: str,
        properties: dict[str, Any],
        environment: dict[str, str],
        restart_policy: str,
    ) -> None:
        """Run one ACI container: its command replaces the image's entrypoint (as ACI's
        ``command`` does), its resources requests become Docker limits."""
        requests = properties.get("resources", {}).get("requests", {})
        policy = RESTART_POLICIES.get(restart_policy, "always")
        created = self.client.containers.run(
            container.image,
            entrypoint=properties.get("command") or None,
            environment=environment,
            network_mode="host",
            detach=True,
            labels={LABEL: LABEL_VALUE, LABEL_GROUP: group_id, LABEL_SESSION: self.session},
            restart_policy={"Name": policy} if policy != "no" else None,
            mem_limit=f"{int(float(requests.get('memoryInGB', 1.5)) * 1024)}m",
            nano_cpus=int(float(requests.get("cpu", 1)) * 1e9),
        )
        container.docker_id = created.id
        container.waiting_reason = ""
        container.events.add("Started", "Started container")

    def stop(self, container: RunningContainer, remove: bool = True) -> None:
        if container.docker_id is None:
            return
        container.events.add("Killing", "Killing container with id " + container.docker_id[:12])
        with contextlib.suppress(NotFound):
            found = self.client.containers.get(container.docker_id)
            found.stop(timeout=2)
            if remove:
                found.remove(force=True)
        if remove:
            container.docker_id = None

    def instance_view(self, container: RunningContainer) -> dict[str, Any]:
        """``instanceView`` from ``docker inspect``: currentState, previousState (after a
        restart), restartCount and the events."""
        if container.docker_id is None:
            state = {"state": "Waiting", "detailStatus": container.waiting_reason}
            return {"restartCount": 0, "currentState": state, "events": container.events.listed()}
        try:
            attrs = self.client.api.inspect_container(container.docker_id)
        except NotFound:
            return {"restartCount": 0, "currentState": {"state": "Terminated"}, "events": []}
        docker_state = attrs["State"]
        restarts = int(attrs.get("RestartCount", 0))
        view: dict[str, Any] = {"restartCount": restarts, "events": container.events.listed()}
        terminated = {
            "state": "Terminated",
            "exitCode": docker_state.get("ExitCode", 0),
            "startTime": docker_state.get("StartedAt"),
            "finishTime": docker_state.get("FinishedAt"),
            "detailStatus": "Completed" if docker_state.get("ExitCode") == 0 else "Error",
        }
        if docker_state.get("Restarting"):
            # between two runs of a crashing container: what ACI (Kubernetes) calls it
            view["currentState"] = {
                "state": "Waiting",
                "detailStatus": "CrashLoopBackOff: Back-off restarting failed",
            }
            view["previousState"] = terminated
        elif docker_state.get("Running"):
            view["currentState"] = {
                "state": "Running",
                "startTime": docker_state.get("StartedAt"),
                "detailStatus": "",
            }
            if restarts:
                # A running container's State.ExitCode is reset to 0; the exit before this
                # run is in the engine's last "die" event, as ACI keeps it in previousState.
                exit_code = self._last_exit_code(container.docker_id, attrs.get("Created"))
                view["previousState"] = terminated | {
                    "startTime": None,
                    "exitCode": exit_code,
                    "detailStatus": "Completed" if exit_code == 0 else "Error",
                }
        else:
            view["currentState"] = terminated
        if restarts:
            view["events"] = [
                e | {"count": restarts + 1} if e["name"] == "Started" else e for e in view["events"]
            ]
            view["events"].append(
                {
                    "count": restarts,
                    "firstTimestamp": docker_state.get("FinishedAt"),
                    "lastTimestamp": docker_state.get("FinishedAt"),
                    "name": "BackOff",
                    "message": "Back-off restarting failed container",
                    "type": "Warning",
                }
            )
        return view

    def _last_exit_code(self, docker_id: str, created: str | None) -> int:
        since = _epoch(created) if created else 0
        events = self.client.api.events(
            since=since,
            until=int(time.time()) + 1,
            filters={"container": docker_id, "event": "die"},
            decode=True,
        )
        codes = [int(e.get("Actor", {}).get("Attributes", {}).get("exitCode", 0)) for e in events]
        return codes[-1] if codes else 0

    def logs(self, container: RunningContainer, tail: int | None, timestamps: bool) -> str:
        if container.docker_id is None:
            return ""
        try:
            found = self.client.containers.get(container.docker_id)
        except NotFound:
            return ""
        data = found.logs(tail=tail if tail else "all", timestamps=timestamps)
        return bytes(data).decode("utf-8", "replace")

    def crash(self, container: RunningContainer) -> None:
        """Kill the running container's process, as a crash does (Docker restarts it under
        the group's restart policy)."""
        if container.docker_id is not None:
            with contextlib.suppress(NotFound, APIError):
                self.client.api.kill(container.docker_id)

    def remove_leftovers(self) -> list[str]:
        """Remove every container this double started that is still there; their names.
        (Only this session's: other test sessions may share the engine.)"""
        removed = []
        label = f"{LABEL_SESSION}={self.session}"
        for found in self.client.containers.list(all=True, filters={"label": label}):
            with contextlib.suppress(NotFound, APIError):
                found.remove(force=True)
                removed.append(found.name)
        return removed

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _epoch(timestamp: str) -> int:
    """Seconds since the epoch of an engine timestamp (RFC 3339, nanoseconds)."""
    import datetime

    trimmed = timestamp.split(".", maxsplit=1)[0].rstrip("Z")
    return int(datetime.datetime.fromisoformat(trimmed).replace(tzinfo=datetime.UTC).timestamp())


def _reason(exc: Exception) -> str:
    """The registry's own words from a Docker API error (``unauthorized: ...``)."""
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


def wait_until(predicate: Any, timeout: float = 30, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
