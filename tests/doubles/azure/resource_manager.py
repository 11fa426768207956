"""The ARM double's routes: container groups (Microsoft.ContainerInstance), the polling URLs
of their long-running operations, registries (Microsoft.ContainerRegistry, small), and
Microsoft.Web's plans and function apps (web.py, which answers its own requests).

Answers follow the spec's responses and the service's habits: PUT 201 (created) or 200
(updated) with ``Azure-AsyncOperation``, ``Location`` and ``Retry-After``; DELETE 200 with
the deleted group, 204 when there was none; restart 204 and start 202 with ``Location``;
stop 204; logs ``{"content": ...}``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.doubles.azure import errors
from tests.doubles.azure.arm import ArmGate, Request
from tests.doubles.azure.container_groups import ContainerGroups
from tests.doubles.azure.entra import EntraDouble
from tests.doubles.azure.faults import Faults
from tests.doubles.azure.group_model import Group, GroupKey, Operation
from tests.doubles.azure.registries import Registries
from tests.doubles.azure.web import WebApps

Answer = tuple[int, Any, dict[str, str]]

SCOPE = r"^/subscriptions/(?P<s>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
GROUPS = re.compile(SCOPE + r"Microsoft\.ContainerInstance/containerGroups$", re.I)
GROUP = re.compile(SCOPE + r"Microsoft\.ContainerInstance/containerGroups/(?P<name>[^/]+)$", re.I)
ACTION = re.compile(GROUP.pattern[:-1] + r"/(?P<action>restart|stop|start)$", re.I)
LOGS = re.compile(GROUP.pattern[:-1] + r"/containers/(?P<container>[^/]+)/logs$", re.I)
OPERATION = re.compile(
    SCOPE + r"Microsoft\.ContainerInstance/locations/(?P<loc>[^/]+)/"
    r"(?P<kind>operations|operationResults)/(?P<id>[^/]+)$",
    re.I,
)
RESOURCE_GROUP = re.compile(r"^/subscriptions/(?P<s>[^/]+)/resourcegroups/(?P<rg>[^/]+)$", re.I)
REGISTRY = re.compile(
    SCOPE + r"Microsoft\.ContainerRegistry/registries/(?P<name>[^/]+)(?P<list>/listCredentials)?$",
    re.I,
)


class ArmDouble:
    def __init__(
        self,
        entra: EntraDouble,
        groups: ContainerGroups,
        registries: Registries,
        web: WebApps | None = None,
    ):
        self.faults = Faults()
        self.gate = ArmGate(entra, self.faults)
        self.groups = groups
        self.registries = registries
        self.web = web or WebApps()  # Microsoft.Web (tests/doubles/azure/web.py)
        self.poll_interval_s = 1  # Retry-After of the polling URLs (azure-core obeys it)

    @property
    def url(self) -> str:
        return self.gate.url

    def serve(self, request: Request, authorization: str) -> Answer:
        try:
            self.gate.admit(request, authorization)
            return self._route(request)
        except errors.ArmError as exc:
            return exc.status, exc.body(), exc.headers

    def _route(self, request: Request) -> Answer:
        method, path = request.method, request.path
        if found := GROUP.match(path):
            return self._group(method, _key(found), request)
        if (found := ACTION.match(path)) and method == "POST":
            return self._action(_key(found), found["action"].lower(), request)
        if (found := LOGS.match(path)) and method == "GET":
            return self._logs(_key(found), found["container"], request.query)
        if (found := GROUPS.match(path)) and method == "GET":
            listed = self.groups.in_resource_group(found["s"], found["rg"])
            return 200, {"value": [g.resource(None) for g in listed]}, {}
        if (found := RESOURCE_GROUP.match(path)) and method == "GET":
            return 200, self._resource_group(found["s"], found["rg"]), {}
        if (found := OPERATION.match(path)) and method == "GET":
            return self._operation(found["id"], found["kind"].lower(), request)
        if found := REGISTRY.match(path):
            registry = self.registries.find(found["s"], found["rg"], found["name"])
            if found["list"] and method == "POST":
                return 200, registry.credentials(), {}
            if not found["list"] and method == "GET":
                return 200, registry.resource(), {}
        if (answer := self.web.route(request, self.url)) is not None:
            return answer
        raise errors.ArmError(
            404, "NotFound", f"No HTTP resource was found that matches the request URI '{path}'."
        )

    def _resource_group(self, subscription: str, name: str) -> dict[str, Any]:
        """A resource group as Microsoft.Resources answers it (the gate found it exists)."""
        known = self.gate.subscriptions[subscription.lower()]
        return {
            "id": f"/subscriptions/{subscription}/resourceGroups/{name}",
            "name": name,
            "type": "Microsoft.Resources/resourceGroups",
            "location": known.locations.get(name.lower(), "westeurope"),
            "properties": {"provisioningState": "Succeeded"},
        }

    def _group(self, method: str, key: GroupKey, request: Request) -> Answer:
        if method == "GET":
            return 200, self.groups.view(self.groups.find(key)), {}
        if method == "PUT":
            status, group, operation = self.groups.put(key, json.loads(request.body))
            return status, self.groups.view(group), self._polling(operation, request, True)
        if method == "PATCH":
            group = self.groups.patch_tags(key, json.loads(request.body).get("tags"))
            return 200, self.groups.view(group), {}
        if method == "DELETE":
            deleted = self.groups.delete(key)
            return (200, deleted.resource(None), {}) if deleted else (204, None, {})
        raise errors.ArmError(405, "MethodNotAllowed", f"{method} is not allowed here.")

    def _action(self, key: GroupKey, action: str, request: Request) -> Answer:
        if action == "stop":
            self.groups.stop(key)
            return 204, None, {}
        operation = self.groups.restart(key)  # start re-provisions a stopped group, too
        status = 204 if action == "restart" else 202
        return status, None, self._polling(operation, request, False)

    def _logs(self, key: GroupKey, name: str, query: dict[str, str]) -> Answer:
        group = self.groups.find(key)
        container = next((c for c in group.containers if c.name == name), None)
        if container is None:
            raise errors.ArmError(
                404,
                "ContainerNotFound",
                f"The container '{name}' cannot be found in container group '{key.name}'.",
            )
        tail = int(query["tail"]) if query.get("tail") else None
        timestamps = query.get("timestamps", "").lower() == "true"
        return 200, {"content": self.groups.runtime.logs(container, tail, timestamps)}, {}

    def _operation(self, operation_id: str, kind: str, request: Request) -> Answer:
        operation = self.groups.operations.get(operation_id)
        if operation is None:
            raise errors.ArmError(
                404, "OperationNotFound", f"Operation '{operation_id}' not found."
            )
        retry = {"Retry-After": str(self.poll_interval_s)}
        if kind == "operations":  # Azure-AsyncOperation: the status, until it is final
            body = operation.status_body(request.path)
            return 200, body, retry if operation.status == "InProgress" else {}
        if operation.status == "InProgress":  # Location: 202 until done, then the result
            return 202, None, {"Location": self.url + request.target, **retry}
        if operation.status != "Succeeded":
            return 400, {"error": operation.error or {"code": operation.status}}, {}
        try:
            group = self.groups.find(operation.key)
        except errors.ArmError:
            return 204, None, {}
        return 200, self.groups.view(group), {}

    def _polling(
        self, operation: Operation, request: Request, async_header: bool
    ) -> dict[str, str]:
        key = operation.key
        location = operation.location.replace(" ", "").lower()
        base = (
            f"{self.url}/subscriptions/{key.subscription}/resourceGroups/{key.resource_group}"
            f"/providers/Microsoft.ContainerInstance/locations/{location}"
        )
        version = request.query.get("api-version", "")
        headers = {
            "Location": f"{base}/operationResults/{operation.id}?api-version={version}",
            "Retry-After": str(self.poll_interval_s),
        }
        if async_header:
            headers["Azure-AsyncOperation"] = (
                f"{base}/operations/{operation.id}?api-version={version}"
            )
        return headers


def _key(found: re.Match[str]) -> GroupKey:
    return GroupKey(found["s"], found["rg"], found["name"])


def summary(group: Group) -> dict[str, Any]:
    """What ``AzureDouble.groups`` lists of a group."""
    return {
        "name": group.key.name,
        "provisioning_state": group.provisioning_state,
        "state": group.state,
        "tags": dict(group.body.get("tags") or {}),
        "images": [c["properties"]["image"] for c in group.container_specs()],
        "port": group.port,
        "docker_ids": [c.docker_id for c in group.containers],
    }
