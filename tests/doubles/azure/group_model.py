"""A container group as the ACI double keeps it, and the resource it answers for it.

What is kept is the body the client sent, without its secrets (``secureValue``s and registry
passwords are held apart: ACI uses them and never returns them), plus what the service adds:
``provisioningState``, the instance views, and the address. In Azure each group has an IP of
its own; here every group shares 127.0.0.1, so each gets a host port of its own, kept across
updates, and its containers are told through ``DEPLOYER_SERVER_PORT`` and
``DEPLOYER_SERVER_HOST`` (overriding the group's values). The resource reports
``ipAddress.ip = 127.0.0.1``, ``ipAddress.ports[0].port = <host port>`` and, with a
``dnsNameLabel``, ``ipAddress.fqdn = localhost``: ``http://{fqdn or ip}:{port}/score`` answers.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.doubles.azure.containers import RunningContainer, now

GROUP_TYPE = "Microsoft.ContainerInstance/containerGroups"


@dataclass(frozen=True)
class GroupKey:
    subscription: str
    resource_group: str
    name: str

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{GROUP_TYPE}/{self.name}"
        )

    def folded(self) -> tuple[str, str, str]:
        """ARM's names are case-insensitive."""
        return (self.subscription.lower(), self.resource_group.lower(), self.name.lower())


@dataclass
class Operation:
    """A long-running operation, polled at its Azure-AsyncOperation and Location URLs."""

    id: str
    key: GroupKey
    location: str
    status: str = "InProgress"  # then Succeeded, Failed or Canceled
    error: dict[str, Any] | None = None
    start_time: str = field(default_factory=now)
    end_time: str | None = None
    deleted: bool = False  # the operation deleted its group (its result is then empty)

    def finish(self, status: str, error: dict[str, Any] | None = None) -> None:
        self.status, self.error, self.end_time = status, error, now()

    def status_body(self, path: str) -> dict[str, Any]:
        body: dict[str, Any] = {"id": path, "name": self.id, "status": self.status}
        body["startTime"] = self.start_time
        if self.end_time:
            body["endTime"] = self.end_time
        if self.error:
            body["error"] = self.error
        return body


@dataclass
class Group:
    key: GroupKey
    body: dict[str, Any]  # as sent, secrets removed
    secrets: dict[str, dict[str, str]]  # container name -> secure environment variables
    passwords: dict[str, str]  # registry server -> password
    port: int
    containers: list[RunningContainer] = field(default_factory=list)
    provisioning_state: str = "Pending"
    state: str = "Pending"  # the group's instanceView.state: Pending, Running, Stopped
    events: list[dict[str, Any]] = field(default_factory=list)
    generation: int = 0  # bumped by each change; a provisioning of an older one gives up
    operation: Operation | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def properties(self) -> dict[str, Any]:
        return dict(self.body["properties"])

    def container_specs(self) -> list[dict[str, Any]]:
        return list(self.properties.get("containers", []))

    def public_port(self) -> int | None:
        ports = self.properties.get("ipAddress", {}).get("ports") or []
        return int(ports[0]["port"]) if ports else None

    def environment(self, spec: dict[str, Any]) -> dict[str, str]:
        """What the container runs with: its values, its secure values, and the address the
        double gave the group (for the container that serves the group's public port)."""
        values = {
            item["name"]: str(item.get("value", ""))
            for item in spec["properties"].get("environmentVariables", [])
        }
        values.update(self.secrets.get(spec["name"], {}))
        declared = {int(p["port"]) for p in spec["properties"].get("ports", [])}
        # A body read back from the double and put again carries the host port it reported
        # as the public port: that is the same public port.
        public = self.public_port()
        if public in declared or public == self.port or not public:
            values["DEPLOYER_SERVER_PORT"] = str(self.port)
            values["DEPLOYER_SERVER_HOST"] = "127.0.0.1"
        return values

    def resource(self, views: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
        """The resource as GET answers it; ``views`` (container name -> instanceView) are
        left out of lists, as ACI's list leaves them out."""
        properties = copy.deepcopy(self.properties)
        properties["provisioningState"] = self.provisioning_state
        for spec in properties.get("containers", []):
            if views is not None and spec["name"] in views:
                spec["properties"]["instanceView"] = views[spec["name"]]
        address = properties.get("ipAddress")
        if address:
            address["ip"] = "127.0.0.1"
            if address.get("ports"):
                address["ports"][0] = {**address["ports"][0], "port": self.port}
            if address.get("dnsNameLabel"):
                address["fqdn"] = "localhost"
        if views is not None:
            properties["instanceView"] = {"events": list(self.events), "state": self.state}
        resource: dict[str, Any] = {
            "id": self.key.id,
            "name": self.key.name,
            "type": GROUP_TYPE,
            "location": self.body["location"],
            "properties": properties,
        }
        for optional in ("tags", "identity", "zones"):
            if optional in self.body:
                resource[optional] = copy.deepcopy(self.body[optional])
        return resource


def without_secrets(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(the body without secrets, secure environment values by container, passwords by
    registry server)."""
    kept = copy.deepcopy(body)
    secrets: dict[str, dict[str, str]] = {}
    for spec in kept["properties"].get("containers", []):
        for item in spec["properties"].get("environmentVariables", []):
            if "secureValue" in item:
                secrets.setdefault(spec["name"], {})[item["name"]] = item.pop("secureValue")
    passwords = {}
    for credential in kept["properties"].get("imageRegistryCredentials", []):
        if "password" in credential:
            passwords[credential["server"].lower()] = credential.pop("password")
    return kept, secrets, passwords


def registry_of(image: str) -> str:
    """The registry an image reference names, as Docker reads it."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return "index.docker.io"


def immutable_settings(body: dict[str, Any]) -> Any:
    """What ACI cannot change in place (os type, restart policy, network, CPU, memory)."""
    properties = body["properties"]
    return (
        properties.get("osType"),
        properties.get("restartPolicy", "Always"),
        properties.get("subnetIds"),
        sorted(
            (c["name"], _requests(c["properties"].get("resources", {}).get("requests") or {}))
            for c in properties.get("containers", [])
        ),
    )


def _requests(requests: dict[str, Any]) -> tuple[tuple[str, float | str], ...]:
    """A container's resource requests, comparable whatever the key order and number type
    (1 and 1.0 are the same request)."""
    return tuple(
        sorted(
            (key, float(value) if isinstance(value, int | float) else str(value))
            for key, value in requests.items()
        )
    )


def requested_cores(body: dict[str, Any]) -> float:
    return sum(
        float(c["properties"].get("resources", {}).get("requests", {}).get("cpu", 0))
        for c in body["properties"].get("containers", [])
    )
