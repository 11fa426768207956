"""Microsoft.ContainerInstance/containerGroups as the service behaves: what it checks before
it accepts a group (synchronous 400s), and the provisioning that follows in the background
(pull, start: ``Pending`` -> ``Succeeded`` or ``Failed``), polled by the client through a
long-running operation.

Changing a group's containers restarts it, as ACI does (the old containers stop, the new ones
are pulled and started, on the same port); a change of tags only does not.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from deployer.targets.local.driver import free_port
from tests.doubles.azure import admission, errors
from tests.doubles.azure.containers import DockerRuntime, RunningContainer
from tests.doubles.azure.faults import Stall
from tests.doubles.azure.group_model import (
    GROUP_TYPE,
    Group,
    GroupKey,
    Operation,
    immutable_settings,
    registry_of,
    without_secrets,
)
from tests.doubles.azure.registries import Registries

CRASH_COMMAND = ["/bin/sh", "-c", "echo 'crashing on purpose (test double)' >&2; exit 1"]


@dataclass
class Settings:
    """The faults and limits a test sets on the service (see AzureDouble)."""

    taken_dns_labels: set[str] = field(default_factory=set)  # taken by someone else
    core_quota: float | None = None  # StandardCores per subscription and region
    stalls: list[Stall] = field(default_factory=list)
    crash_loops: list[str] = field(default_factory=list)  # group names: their next start crashes


class ContainerGroups:
    def __init__(self, runtime: DockerRuntime, registries: Registries) -> None:
        self.runtime = runtime
        self.registries = registries
        self.settings = Settings()
        self.groups: dict[tuple[str, str, str], Group] = {}
        self.operations: dict[str, Operation] = {}
        self._lock = threading.RLock()
        self._closing = threading.Event()

    # Reading ------------------------------------------------------------------------------
    def find(self, key: GroupKey) -> Group:
        with self._lock:
            group = self.groups.get(key.folded())
        if group is None:
            raise errors.resource_not_found(GROUP_TYPE, key.name, key.resource_group)
        return group

    def view(self, group: Group) -> dict[str, Any]:
        views = {c.name: self.runtime.instance_view(c) for c in group.containers}
        return group.resource(views)

    def in_resource_group(self, subscription: str, resource_group: str) -> list[Group]:
        with self._lock:
            return [
                g
                for (s, rg, _), g in sorted(self.groups.items())
                if (s, rg) == (subscription.lower(), resource_group.lower())
            ]

    # Writing ------------------------------------------------------------------------------
    def put(self, key: GroupKey, body: dict[str, Any]) -> tuple[int, Group, Operation]:
        """Create or update; (201 or 200, the group, its operation). Raises ArmError."""
        with self._lock:
            existing = self.groups.get(key.folded())
            if existing is not None and _transitioning(existing):
                raise errors.ArmError(
                    409,
                    "ContainerGroupTransitioning",
                    f"The container group '{key.name}' is still transitioning, please retry later.",
                )
            if existing and immutable_settings(existing.body) != immutable_settings(body):
                raise errors.invalid_update(key.name)
            admission.check_dns_label(key, body, self.groups.values(), self.settings)
            admission.check_quota(key, body, self.groups.values(), self.settings)
            kept, secrets, passwords = without_secrets(body)
            candidate = Group(key, kept, secrets, passwords, existing.port if existing else 0)
            auths = admission.registry_auths(
                candidate, self.registries, self.runtime
            )  # raises before anything changes
            if existing is not None:
                restart = existing.container_specs() != candidate.container_specs() or (
                    existing.passwords != passwords or existing.secrets != secrets
                )
                existing.body, existing.secrets, existing.passwords = kept, secrets, passwords
                operation = self._operation(existing)
                if restart:
                    self._provision(existing, operation, auths)
                else:
                    operation.finish("Succeeded")
                return 200, existing, operation
            candidate.port = free_port()
            self.groups[key.folded()] = candidate
            operation = self._operation(candidate)
            self._provision(candidate, operation, auths)
            return 201, candidate, operation

    def patch_tags(self, key: GroupKey, tags: dict[str, str] | None) -> Group:
        group = self.find(key)
        with group.lock:
            if tags is not None:
                group.body["tags"] = dict(tags)
        return group

    def delete(self, key: GroupKey) -> Group | None:
        """Deleted (its containers removed before the answer), or None if there was none."""
        with self._lock:
            group = self.groups.pop(key.folded(), None)
        if group is None:
            return None
        group.generation += 1  # a provisioning under way gives up
        for container in group.containers:
            self.runtime.stop(container)
        group.provisioning_state = "Deleting"
        return group

    def restart(self, key: GroupKey) -> Operation:
        group = self.find(key)
        operation = self._operation(group)
        self._provision(
            group, operation, admission.registry_auths(group, self.registries, self.runtime)
        )
        return operation

    def stop(self, key: GroupKey) -> None:
        group = self.find(key)
        group.generation += 1
        for container in group.containers:
            self.runtime.stop(container, remove=False)
        group.state = "Stopped"

    def close(self) -> None:
        self._closing.set()
        for stall in self.settings.stalls:
            stall.released.set()
        with self._lock:
            groups, self.groups = list(self.groups.values()), {}
        for group in groups:
            for container in group.containers:
                self.runtime.stop(container)

    # Provisioning ---------------------------------------------------------------------------
    def _operation(self, group: Group) -> Operation:
        operation = Operation(str(uuid.uuid4()), group.key, group.body["location"])
        with self._lock:
            self.operations[operation.id] = operation
        group.operation = operation
        return operation

    def _provision(
        self, group: Group, operation: Operation, auths: dict[str, dict[str, str] | None]
    ) -> None:
        group.generation += 1
        group.provisioning_state, group.state = "Pending", "Pending"
        args = (group, operation, auths, group.generation)
        threading.Thread(target=self._run, args=args, daemon=True).start()

    def _run(
        self,
        group: Group,
        operation: Operation,
        auths: dict[str, dict[str, str] | None],
        generation: int,
    ) -> None:
        def superseded() -> bool:
            return group.generation != generation or self._closing.is_set()

        stall = self._take(group.key.name)
        if stall is not None:
            stall.matched.set()
            while not stall.released.wait(0.1):
                if superseded():
                    break
        with group.lock:
            if superseded():
                operation.finish("Canceled")
                return
            for container in group.containers:
                self.runtime.stop(container)  # ACI restarts a group to change it
            crash = self._take_crash(group.key.name)
            group.containers = []
            for spec in group.container_specs():
                image = spec["properties"]["image"]
                container = RunningContainer(spec["name"], image)
                group.containers.append(container)
                if not self.runtime.pull(container, auths.get(registry_of(image))):
                    self._fail(group, operation)
                    return
            restart_policy = group.properties.get("restartPolicy", "Always")
            for spec, container in zip(group.container_specs(), group.containers, strict=True):
                properties = dict(spec["properties"])
                if crash:
                    properties["command"] = CRASH_COMMAND
                environment = group.environment(spec)
                self.runtime.start(container, group.key.id, properties, environment, restart_policy)
            group.provisioning_state, group.state = "Succeeded", "Running"
            operation.finish("Succeeded")

    def _fail(self, group: Group, operation: Operation) -> None:
        group.provisioning_state = "Failed"
        messages = ";".join(
            event["message"] for c in group.containers for event in c.events.listed()
        )
        operation.finish(
            "Failed",
            {
                "code": "ResourceOperationFailure",
                "message": "The resource operation completed with terminal provisioning state "
                "'Failed'.",
                "details": [{"message": messages}],
            },
        )

    def _take(self, name: str) -> Stall | None:
        with self._lock:
            for stall in self.settings.stalls:
                if stall.seen < stall.times and re.search(stall.group, name):
                    stall.seen += 1
                    return stall
        return None

    def _take_crash(self, name: str) -> bool:
        with self._lock:
            if name in self.settings.crash_loops:
                self.settings.crash_loops.remove(name)
                return True
        return False


def _transitioning(group: Group) -> bool:
    return group.operation is not None and group.operation.status == "InProgress"
