"""The hub's state and what its service API does with it: devices and their twins,
configurations (automatic deployments, with their target conditions, priorities and
metrics), ``applyConfigurationContent`` and direct methods.

Deployments at scale, as IoT Hub documents them ("Understand IoT Edge automatic deployments
for single devices or at scale"): each edge device gets the base deployment of highest
priority whose target condition it meets (the newest one on a tie), then every layered
deployment it meets, in priority order (a higher priority wins a conflict). The hub
evaluates them again whenever a configuration is created, updated or deleted, or a device's
tags change (the real hub also does so every few minutes). A device that meets no
deployment any more keeps its modules. A single-device ``applyConfigurationContent`` replaces
the runtime twins' desired properties at once, until the next evaluation that changes what
applies to the device.
"""

from __future__ import annotations

import base64
import copy
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tests.doubles.iothub import errors
from tests.doubles.iothub.conditions import Condition, ConditionError
from tests.doubles.iothub.twins import Twin, check_document, device_etag, merge, now_utc

RUNTIME_MODULES = ("$edgeAgent", "$edgeHub")
# Configuration ids: up to 128 lowercase ASCII letters, digits and - : + % _ # * ? ! ( ) , = @ ; '
CONFIGURATION_ID = re.compile(r"^[a-z0-9\-:+%_#*?!(),=@;']{1,128}$")
MAX_CONFIGURATIONS = 100
METHOD_TIMEOUT = (5, 300)  # responseTimeoutInSeconds bounds
CONNECT_TIMEOUT = (0, 300)
# ``*``, and ``"*"``: azure-iot-hub's registry manager quotes every etag it sends, ``*`` too.
WILDCARDS = ("*", '"*"')


class MethodHandler(Protocol):
    """What answers direct methods on a device's module (the simulated edge agent)."""

    def invoke(self, method: str, payload: Any) -> tuple[int, Any]: ...


@dataclass
class Device:
    device_id: str
    twin: Twin
    modules: dict[str, Twin] = field(default_factory=dict)
    primary_key: str = field(
        default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode()
    )
    secondary_key: str = field(
        default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode()
    )
    generation_id: str = field(default_factory=lambda: str(int(time.time() * 1e6)))
    offline: bool = False  # a fault: the device lost its connection
    runtime_running: bool = False  # a simulated edge agent runs for it
    handlers: dict[str, MethodHandler] = field(default_factory=dict)  # module id -> handler
    applied: tuple[str, ...] = ()  # the at-scale configurations whose content it holds
    direct: int = 0  # how many applyConfigurationContent it received

    @property
    def edge(self) -> bool:
        return self.twin.edge

    @property
    def connected(self) -> bool:
        return self.runtime_running and not self.offline


@dataclass
class Configuration:
    id: str
    content: dict[str, Any]
    target_condition: str
    priority: int
    labels: dict[str, str]
    schema_version: str
    metrics_queries: dict[str, str]
    created: str
    updated: str
    sequence: int  # creation order: a tie in priority goes to the newest
    version: int = 1

    @property
    def etag(self) -> str:
        return base64.b64encode(str(self.version).encode()).decode()

    @property
    def modules_content(self) -> dict[str, Any] | None:
        return self.content.get("modulesContent")

    @property
    def layered(self) -> bool:
        """A layered deployment sets paths under the runtime twins, not their whole desired
        properties."""
        agent = (self.modules_content or {}).get("$edgeAgent", {})
        return "properties.desired" not in agent

    def condition(self) -> Condition | None:
        if not self.target_condition.strip():
            return None
        return Condition(self.target_condition)


class Hub:
    """The state of one IoT hub; every method takes the lock and raises HubError."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # notified on every state change
        self.devices: dict[str, Device] = {}
        self.configurations: dict[str, Configuration] = {}
        self._sequence = 0

    # Devices --------------------------------------------------------------------------------
    def add_device(
        self, device_id: str, *, edge: bool = True, tags: dict[str, Any] | None = None
    ) -> Device:
        with self.lock:
            if device_id in self.devices:
                raise ValueError(f"device {device_id} is already registered")
            twin = Twin(device_id, edge=edge, device_etag=device_etag(device_id))
            if tags:
                check_document("tags", tags)
                twin.tags = copy.deepcopy(tags)
            device = Device(device_id, twin)
            if edge:
                for module_id in RUNTIME_MODULES:
                    device.modules[module_id] = self._module_twin(device, module_id)
            self.devices[device_id] = device
            self._reconcile()
            self.changed.notify_all()
            return device

    def _module_twin(self, device: Device, module_id: str) -> Twin:
        return Twin(
            device.device_id,
            module_id,
            connection_state="Connected" if device.connected else "Disconnected",
            device_etag=device.twin.device_etag,
        )

    def device(self, device_id: str) -> Device:
        with self.lock:
            found = self.devices.get(device_id)
            if found is None:
                raise errors.device_not_found(device_id)
            return found

    def module(self, device_id: str, module_id: str) -> Twin:
        with self.lock:
            found = self.device(device_id).modules.get(module_id)
            if found is None:
                raise errors.module_not_found(device_id, module_id)
            return found

    def set_connection(
        self, device_id: str, *, runtime: bool | None = None, offline: bool | None = None
    ) -> None:
        """The simulated runtime started or stopped, or a test took the device offline: the
        device's and its runtime modules' connection state follow."""
        with self.lock:
            device = self.device(device_id)
            if runtime is not None:
                device.runtime_running = runtime
            if offline is not None:
                device.offline = offline
            state = "Connected" if device.connected else "Disconnected"
            stamp = now_utc()
            for twin in [device.twin, *(device.modules.get(m) for m in RUNTIME_MODULES)]:
                if twin is None:
                    continue
                if twin.connection_state != state and state == "Connected":
                    twin.last_activity = stamp
                twin.connection_state = state
            self.changed.notify_all()

    def device_identity(self, device_id: str) -> dict[str, Any]:
        with self.lock:
            device = self.device(device_id)
            twin = device.twin
            identity: dict[str, Any] = {
                "deviceId": device.device_id,
                "generationId": device.generation_id,
                "etag": twin.device_etag,
                "connectionState": twin.connection_state,
                "status": twin.status,
                "statusReason": None,
                "connectionStateUpdatedTime": twin.last_activity,
                "statusUpdatedTime": "0001-01-01T00:00:00Z",
                "lastActivityTime": twin.last_activity,
                "cloudToDeviceMessageCount": 0,
                "authentication": {
                    "symmetricKey": {
                        "primaryKey": device.primary_key,
                        "secondaryKey": device.secondary_key,
                    },
                    "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
                    "type": "sas",
                },
                "capabilities": {"iotEdge": device.edge},
            }
            if device.edge:
                identity["deviceScope"] = twin.view()["deviceScope"]
            return {k: v for k, v in identity.items() if v is not None}

    def list_devices(self, top: int | None) -> list[dict[str, Any]]:
        with self.lock:
            ids = sorted(self.devices)[: top or None]
            return [self.device_identity(i) for i in ids]

    def module_identity(self, device_id: str, module_id: str) -> dict[str, Any]:
        with self.lock:
            twin = self.module(device_id, module_id)
            return {
                "moduleId": module_id,
                **({} if module_id in RUNTIME_MODULES else {"managedBy": "IotEdge"}),
                "deviceId": device_id,
                "generationId": self.device(device_id).generation_id,
                "etag": twin.device_etag,
                "connectionState": twin.connection_state,
                "connectionStateUpdatedTime": twin.last_activity,
                "lastActivityTime": twin.last_activity,
                "cloudToDeviceMessageCount": 0,
                "authentication": {"type": "sas"},
            }

    def list_modules(self, device_id: str) -> list[dict[str, Any]]:
        with self.lock:
            modules = self.device(device_id).modules
            return [
                {k: v for k, v in self.module_identity(device_id, m).items() if v is not None}
                for m in modules
            ]

    def sync_module_identities(self, device_id: str, modules: list[str]) -> None:
        """What the edge agent does after a deployment: an identity (and twin) for each
        custom module, none for those no longer deployed."""
        with self.lock:
            device = self.device(device_id)
            for module_id in list(device.modules):
                if module_id not in RUNTIME_MODULES and module_id not in modules:
                    del device.modules[module_id]
            for module_id in modules:
                if module_id not in device.modules:
                    twin = device.modules[module_id] = self._module_twin(device, module_id)
                    twin.connection_state = "Disconnected"  # not an IoT Hub client
            self.changed.notify_all()

    # Twins ----------------------------------------------------------------------------------
    def twin_view(self, device_id: str, module_id: str | None = None) -> dict[str, Any]:
        with self.lock:
            twin = self.module(device_id, module_id) if module_id else self.device(device_id).twin
            return twin.view()

    def update_twin(
        self,
        device_id: str,
        module_id: str | None,
        body: dict[str, Any],
        if_match: str | None,
        *,
        replace: bool,
    ) -> dict[str, Any]:
        """PATCH (merge) or PUT (replace) a twin's tags and desired properties. Reported
        properties in the body are the device's: ignored, as the service does."""
        with self.lock:
            device = self.device(device_id)
            twin = self.module(device_id, module_id) if module_id else device.twin
            _check_etag(if_match, twin.etag, f"twin {device_id}")
            tags = body.get("tags")
            desired = (body.get("properties") or {}).get("desired")
            if tags is not None and module_id is not None:
                raise errors.argument_invalid("A module twin has no tags.")
            desired = _without_system(desired) if desired is not None else None
            if tags is not None:
                check_document("tags", tags, patch=not replace)
            if desired is not None:
                check_document("desired", desired, patch=not replace)
            changed = False
            if tags is not None or (replace and module_id is None):
                new_tags = (tags or {}) if replace else merge(twin.tags, tags or {})
                check_document("tags", new_tags)
                changed |= new_tags != twin.tags
                twin.tags = new_tags
            if desired is not None or replace:
                new_desired = (
                    (desired or {}) if replace else merge(twin.desired.document, desired or {})
                )
                check_document("desired", new_desired)
                twin.desired.replace(new_desired)
                changed = True
            if changed:
                twin.touch()
            if module_id is None and (tags is not None or replace):
                self._reconcile()
            self.changed.notify_all()
            return twin.view()

    def report(self, device_id: str, module_id: str, reported: dict[str, Any]) -> bool:
        """The device replaces a module twin's reported properties (what the edge agent's
        full report amounts to); False when nothing changed or the device is offline."""
        with self.lock:
            device = self.device(device_id)
            if not device.connected:
                return False
            twin = device.modules.get(module_id)
            if twin is None:
                twin = device.modules[module_id] = self._module_twin(device, module_id)
            twin.last_activity = device.twin.last_activity = now_utc()
            if twin.reported.document == reported:
                return False
            check_document("reported", reported)
            twin.reported.replace(reported)
            twin.touch()
            self.changed.notify_all()
            return True

    def desired(self, device_id: str) -> tuple[int, dict[str, Any]]:
        """What the edge agent reads: its twin's desired ``$version``, and the runtime
        twins' desired properties as a modulesContent."""
        with self.lock:
            device = self.device(device_id)
            agent = device.modules["$edgeAgent"]
            content = {
                module_id: {"properties.desired": copy.deepcopy(twin.desired.document)}
                for module_id, twin in device.modules.items()
                if module_id in RUNTIME_MODULES
            }
            return agent.desired.version, content

    # Configurations -------------------------------------------------------------------------
    def get_configuration(self, config_id: str) -> dict[str, Any]:
        with self.lock:
            found = self.configurations.get(config_id)
            if found is None:
                raise errors.configuration_not_found(config_id)
            return self._configuration_view(found)

    def list_configurations(self, top: int | None) -> list[dict[str, Any]]:
        with self.lock:
            found = sorted(self.configurations.values(), key=lambda c: c.sequence)
            limit = MAX_CONFIGURATIONS if top is None else min(top, MAX_CONFIGURATIONS)
            return [self._configuration_view(c) for c in found[:limit]]

    def put_configuration(
        self, config_id: str, body: dict[str, Any], if_match: str | None
    ) -> tuple[int, dict[str, Any]]:
        """Create (no If-Match) or update (If-Match ``*`` or the etag, quoted) a
        configuration. Only its target condition, priority, labels and metrics change on an
        update: the id and the content are fixed at creation."""
        with self.lock:
            existing = self.configurations.get(config_id)
            if body.get("id") is not None and body["id"] != config_id:
                raise errors.argument_invalid(
                    f"The configuration id in the body ({body['id']!r}) does not match the "
                    f"one in the request URI ({config_id!r})."
                )
            if not CONFIGURATION_ID.match(config_id):
                raise errors.argument_invalid(
                    f"Invalid configuration id '{config_id}': up to 128 lowercase letters, "
                    "digits and - : + % _ # * ? ! ( ) , = @ ; ' are allowed."
                )
            precondition = _precondition(if_match)
            if existing is None:
                if precondition is not None and precondition != "*":
                    raise errors.configuration_not_found(config_id)
                return 200, self._create_configuration(config_id, body)
            if precondition is None:
                raise errors.configuration_exists(config_id)
            _check_etag(if_match, existing.etag, f"configuration {config_id}")
            content = body.get("content")
            if content is not None and _content(content) != existing.content:
                raise errors.argument_invalid(
                    f"The content of configuration '{config_id}' cannot be updated; create a "
                    "new configuration (with a new id) instead."
                )
            fields = self._fields(body, existing)
            existing.target_condition = fields["target_condition"]
            existing.priority = fields["priority"]
            existing.labels = fields["labels"]
            existing.metrics_queries = fields["metrics_queries"]
            existing.updated = now_utc()
            existing.version += 1
            self._reconcile()
            self.changed.notify_all()
            return 200, self._configuration_view(existing)

    def _create_configuration(self, config_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if len(self.configurations) >= MAX_CONFIGURATIONS:
            raise errors.HubError(
                403,
                "IotHubQuotaExceeded",
                f"The hub holds {MAX_CONFIGURATIONS} configurations, the most it may.",
            )
        content = _content(body.get("content"))
        modules = content.get("modulesContent")
        if modules is not None:
            _check_modules_content(modules, layered_allowed=True)
        fields = self._fields(body, None)
        stamp = now_utc()
        self._sequence += 1
        configuration = Configuration(
            id=config_id,
            content=content,
            schema_version=str(body.get("schemaVersion") or "1.0"),
            created=stamp,
            updated=stamp,
            sequence=self._sequence,
            **fields,
        )
        self.configurations[config_id] = configuration
        self._reconcile()
        self.changed.notify_all()
        return self._configuration_view(configuration)

    def _fields(self, body: dict[str, Any], existing: Configuration | None) -> dict[str, Any]:
        condition = body.get("targetCondition")
        if condition is None:
            condition = existing.target_condition if existing else ""
        try:
            Condition(condition) if condition.strip() else None
        except ConditionError as exc:
            raise errors.argument_invalid(
                f"Invalid target condition {condition!r}: {exc} (the double supports "
                "comparisons of twin paths joined by AND, OR, NOT; see conditions.py)"
            ) from None
        priority = body.get("priority")
        if priority is None:
            priority = existing.priority if existing else 0
        if priority < 0:
            raise errors.argument_invalid("The priority of a configuration is 0 or more.")
        labels = body.get("labels")
        if labels is None:
            labels = existing.labels if existing else {}
        metrics = (body.get("metrics") or {}).get("queries")
        if metrics is None:
            metrics = existing.metrics_queries if existing else {}
        return {
            "target_condition": condition,
            "priority": priority,
            "labels": dict(labels),
            "metrics_queries": dict(metrics),
        }

    def delete_configuration(self, config_id: str, if_match: str | None) -> None:
        with self.lock:
            existing = self.configurations.get(config_id)
            if existing is None:
                raise errors.configuration_not_found(config_id)
            _check_etag(if_match, existing.etag, f"configuration {config_id}", lenient=True)
            del self.configurations[config_id]
            self._reconcile()
            self.changed.notify_all()

    def test_queries(self, body: dict[str, Any]) -> dict[str, Any]:
        condition = body.get("targetCondition") or ""
        result: dict[str, Any] = {"targetConditionError": "", "customMetricQueryErrors": {}}
        try:
            Condition(condition) if condition.strip() else None
        except ConditionError as exc:
            result["targetConditionError"] = str(exc)
        for name, query in (body.get("customMetricQueries") or {}).items():
            if _metric_query(query) is None:
                result["customMetricQueryErrors"][name] = "not a query the double evaluates"
        return result

    def _configuration_view(self, configuration: Configuration) -> dict[str, Any]:
        return {
            "id": configuration.id,
            "schemaVersion": configuration.schema_version,
            "labels": dict(configuration.labels),
            "content": copy.deepcopy(configuration.content),
            "targetCondition": configuration.target_condition,
            "createdTimeUtc": configuration.created,
            "lastUpdatedTimeUtc": configuration.updated,
            "priority": configuration.priority,
            "systemMetrics": self._system_metrics(configuration),
            "metrics": self._custom_metrics(configuration),
            "etag": configuration.etag,
        }

    def _system_metrics(self, configuration: Configuration) -> dict[str, Any]:
        cid = configuration.id
        condition = configuration.target_condition
        edge = configuration.modules_content is not None
        applied = f"configurations.[[{cid}]].status = 'Applied'"
        caught_up = "properties.desired.$version = properties.reported.lastDesiredVersion"
        if edge:
            base = "select deviceId from devices.modules where moduleId = '$edgeAgent' and "
            queries = {
                "targetedCount": "select deviceId from devices where capabilities.iotEdge = "
                f"true and {condition}",
                "appliedCount": base + applied,
                "reportedSuccessfulCount": f"{base}{applied} and {caught_up} and "
                "properties.reported.lastDesiredStatus.code = 200",
                "reportedFailedCount": f"{base}{applied} and {caught_up} and "
                "properties.reported.lastDesiredStatus.code != 200",
            }
        else:
            queries = {
                "targetedCount": f"select deviceId from devices where {condition}",
                "appliedCount": f"select deviceId from devices where {applied}",
            }
        targeted = [d for d in self.devices.values() if self._targets(configuration, d)]
        results = {"targetedCount": len(targeted), "appliedCount": 0}
        if edge:
            results |= {"reportedSuccessfulCount": 0, "reportedFailedCount": 0}
            for device in self.devices.values():
                agent = device.modules.get("$edgeAgent")
                if agent is None or agent.configurations.get(cid, {}).get("status") != "Applied":
                    continue
                results["appliedCount"] += 1
                reported = agent.reported.document
                if reported.get("lastDesiredVersion") != agent.desired.version:
                    continue
                code = (reported.get("lastDesiredStatus") or {}).get("code")
                key = "reportedSuccessfulCount" if code == 200 else "reportedFailedCount"
                results[key] += 1
        return {"results": results, "queries": queries}

    def _custom_metrics(self, configuration: Configuration) -> dict[str, Any]:
        results: dict[str, int] = {}
        for name, query in configuration.metrics_queries.items():
            parsed = _metric_query(query)
            if parsed is None:
                continue
            modules, condition = parsed
            count = 0
            for device in self.devices.values():
                twins = list(device.modules.values()) if modules else [device.twin]
                count += any(condition.matches(t.query_view()) for t in twins)
            results[name] = count
        return {"results": results, "queries": dict(configuration.metrics_queries)}

    def _targets(self, configuration: Configuration, device: Device) -> bool:
        if configuration.modules_content is not None and not device.edge:
            return False
        condition = configuration.condition()
        return condition is not None and condition.matches(device.twin.query_view())

    def _reconcile(self) -> None:
        """Evaluate the at-scale deployments again for every edge device."""
        for device in self.devices.values():
            if not device.edge:
                continue
            matching = [
                c
                for c in self.configurations.values()
                if c.modules_content is not None and self._targets(c, device)
            ]
            bases = sorted(
                (c for c in matching if not c.layered),
                key=lambda c: (c.priority, c.sequence),
                reverse=True,
            )
            layers = sorted(
                (c for c in matching if c.layered), key=lambda c: (c.priority, c.sequence)
            )
            winners = (bases[0], *layers) if bases else ()
            agent = device.modules["$edgeAgent"]
            agent.configurations = {
                c.id: {"status": "Applied" if c in winners else "Targeted"} for c in matching
            }
            applied = tuple(c.id for c in winners)
            if applied == device.applied:
                continue
            device.applied = applied
            if not winners:
                continue  # the device keeps its modules
            content: dict[str, dict[str, Any]] = {}
            for configuration in winners:
                for module_id, entries in (configuration.modules_content or {}).items():
                    content[module_id] = _desired_of(entries, content.get(module_id, {}))
            self._set_desired(device, content)

    # applyConfigurationContent -------------------------------------------------------------
    def apply_content(self, device_id: str, body: dict[str, Any]) -> None:
        with self.lock:
            device = self.device(device_id)
            if not device.edge:
                raise errors.argument_invalid(
                    f"Device {device_id} is not an IoT Edge device: configuration content "
                    "applies to edge devices only."
                )
            content = _content(body)
            modules = content.get("modulesContent")
            if not modules:
                raise errors.HubError(
                    400, "ArgumentNull", "Modules content is mandatory (modulesContent)."
                )
            _check_modules_content(modules, layered_allowed=False)
            desired = {
                module_id: _desired_of(entries, {}) for module_id, entries in modules.items()
            }
            self._set_desired(device, desired)
            device.direct += 1
            device.applied = ("<applyConfigurationContent>", str(device.direct))
            self.changed.notify_all()

    def _set_desired(self, device: Device, content: dict[str, dict[str, Any]]) -> None:
        for document in content.values():
            check_document("desired", document)
        for module_id, document in content.items():
            twin = device.modules.get(module_id)
            if twin is None:
                twin = device.modules[module_id] = self._module_twin(device, module_id)
                twin.connection_state = "Disconnected"  # custom modules do not connect here
            twin.desired.replace(document)
            twin.touch()

    # Direct methods -------------------------------------------------------------------------
    def invoke(
        self,
        device_id: str,
        module_id: str | None,
        body: dict[str, Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> dict[str, Any]:
        name = body.get("methodName")
        if not name:
            raise errors.HubError(400, "ArgumentNull", "methodName is required.")
        response_timeout = body.get("responseTimeoutInSeconds", 30)
        connect_timeout = body.get("connectTimeoutInSeconds", 0)
        if not METHOD_TIMEOUT[0] <= response_timeout <= METHOD_TIMEOUT[1]:
            raise errors.argument_invalid(
                f"responseTimeoutInSeconds is {response_timeout}; it is "
                f"{METHOD_TIMEOUT[0]} to {METHOD_TIMEOUT[1]}."
            )
        if not CONNECT_TIMEOUT[0] <= connect_timeout <= CONNECT_TIMEOUT[1]:
            raise errors.argument_invalid(
                f"connectTimeoutInSeconds is {connect_timeout}; it is "
                f"{CONNECT_TIMEOUT[0]} to {CONNECT_TIMEOUT[1]}."
            )
        with self.lock:
            device = self.device(device_id)
            if module_id is not None:
                self.module(device_id, module_id)
            deadline = clock() + connect_timeout
            while not device.connected and clock() < deadline:
                self.changed.wait(timeout=max(0.0, min(0.5, deadline - clock())))
            handler = device.handlers.get(module_id or "") if device.connected else None
        if handler is None:
            # Offline, or online without a handler for methods (a device-level method on an
            # edge device, a custom module that is no IoT Hub client): IoT Hub answers the same.
            raise errors.device_not_online(connect_timeout)
        status, payload = handler.invoke(name, body.get("payload"))
        return {"status": status, "payload": payload}


def _precondition(if_match: str | None) -> str | None:
    """The If-Match value IoT Hub heeds: ``*`` or a quoted etag; anything else (an unquoted
    etag, as azure-iot-hub's ``update_configuration`` sends it) counts as none, which is our
    reading of the ``Conflict`` users report for that call (azure-iot-hub-python#2)."""
    if if_match is None:
        return None
    value = if_match.strip()
    if value in WILDCARDS:
        return "*"
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return None


def _check_etag(if_match: str | None, etag: str, what: str, *, lenient: bool = False) -> None:
    if if_match is None:
        return
    value = if_match.strip()
    if value in WILDCARDS:
        return
    unquoted = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else None
    if unquoted is None and lenient:
        unquoted = value
    if unquoted is None:
        return
    if unquoted != etag:
        raise errors.precondition_failed(f"the etag {value} is not the current one of {what}")


def _content(content: Any) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise errors.HubError(400, "ArgumentNull", "The configuration content is required.")
    kept = {k: v for k, v in content.items() if v is not None}
    kinds = [k for k in ("deviceContent", "modulesContent", "moduleContent") if k in kept]
    if len(kinds) != 1:
        raise errors.argument_invalid(
            "Configuration content holds exactly one of deviceContent, modulesContent and "
            f"moduleContent (this one: {', '.join(kinds) or 'none'})."
        )
    return copy.deepcopy(kept)


def _check_modules_content(modules: Any, *, layered_allowed: bool) -> None:
    if not isinstance(modules, dict) or not modules:
        raise errors.HubError(400, "ArgumentNull", "Modules content is mandatory.")
    for module_id, entries in modules.items():
        if not isinstance(entries, dict) or not entries:
            raise errors.argument_invalid(f"modulesContent.{module_id} is empty.")
        for key in entries:
            if key != "properties.desired" and not key.startswith("properties.desired."):
                raise errors.argument_invalid(
                    f"modulesContent.{module_id}: {key!r} is neither 'properties.desired' nor "
                    "a path under it ('properties.desired.<name>')."
                )
    agent = modules.get("$edgeAgent", {})
    base = "properties.desired" in agent
    if not base and not layered_allowed:
        raise errors.argument_invalid(
            "modulesContent.$edgeAgent['properties.desired'] is required: the edge agent's "
            "whole desired properties."
        )
    if base and "properties.desired" not in modules.get("$edgeHub", {}):
        raise errors.argument_invalid(
            "modulesContent.$edgeHub['properties.desired'] is required beside $edgeAgent's."
        )


def _desired_of(entries: dict[str, Any], start: dict[str, Any]) -> dict[str, Any]:
    """A module's desired properties from its modulesContent entries: ``properties.desired``
    replaces them, ``properties.desired.<a>.<b>`` sets a path (layered deployments)."""
    document = (
        copy.deepcopy(entries["properties.desired"])
        if "properties.desired" in entries
        else copy.deepcopy(start)
    )
    for key, value in sorted(entries.items()):
        if key == "properties.desired":
            continue
        path = key.removeprefix("properties.desired.").split(".")
        node = document
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise errors.argument_invalid(f"{key}: {part} is not an object")
        node[path[-1]] = copy.deepcopy(value)
    return document


def _without_system(document: dict[str, Any]) -> dict[str, Any]:
    """A desired patch without ``$version``/``$metadata`` (read-only: sent back by clients
    that GET a twin, change it and PUT it)."""
    return {k: v for k, v in document.items() if k not in ("$version", "$metadata")}


METRIC_QUERY = re.compile(
    r"^\s*select\s+deviceid\s+from\s+devices(?P<modules>\.modules)?\s+where\s+(?P<where>.+)$",
    re.IGNORECASE | re.DOTALL,
)


def _metric_query(query: str) -> tuple[bool, Condition] | None:
    """``SELECT deviceId FROM devices[.modules] WHERE <condition>``, if the condition is one
    the double evaluates."""
    match = METRIC_QUERY.match(query)
    if match is None:
        return None
    try:
        return bool(match["modules"]), Condition(match["where"])
    except ConditionError:
        return None
