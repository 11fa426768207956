"""``iot_edge``'s driver: the rendered deployment manifest, sent through IoT Hub, and the
device's edgeAgent watched until it reports the new module running.

IoT Edge replaces a module in place (``in-place`` replacement): the device runs one version
at a time, and the edgeAgent swaps it when its desired properties change.

- One device (``device_id``): ``apply`` sends the manifest with ``applyConfigurationContent``
  (``az iot edge set-modules``). The previous manifest is read from the device's
  ``$edgeAgent`` and ``$edgeHub`` desired properties first; a rollback sends it back.
- At scale (``deployment``): each revision is a configuration of its own,
  ``<id>-<revision>`` (configurations are immutable), with deploy.yaml's target condition and
  priority. Of two configurations with the same priority, IoT Hub applies the newer one; so
  ``confirm`` deletes the older ones, and a rollback deletes the new one, letting the previous
  configuration apply again.

``wait`` polls the ``$edgeAgent`` module twin until its reported ``lastDesiredVersion`` has
caught up with the desired one and the model module reports ``running`` with the new image;
a module in ``backoff`` (it crashed) fails at once with its ``exitCode``, ``statusDescription``
and ``lastExitTime``. Registry credentials are ``${ENV}`` placeholders in the rendered manifest,
filled here at send time only. The model module carries ``DEPLOYER_REVISION`` in its
environment: the device's own record of which revision it runs.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.iot.hub.models import CloudToDeviceMethod, Configuration, ConfigurationContent
from msrest.exceptions import ClientRequestError, HttpOperationError

from deployer.errors import DeployFailed, UserError
from deployer.events import Event, Level
from deployer.placeholders import PLACEHOLDER
from deployer.targets.contract import (
    Deadline,
    Endpoint,
    Health,
    Release,
    Replacement,
    Session,
    TargetRef,
    Version,
    follow_by_polling,
    nothing_to_retire,
    nothing_to_tidy,
    probe_ready,
    promoted_in_place,
)
from deployer.targets.iot_edge.hub import Hub, connect_hub, explain
from deployer.targets.iot_edge.schema import Config

EDGE_AGENT = "$edgeAgent"
EDGE_HUB = "$edgeHub"
REVISION_ENV = "DEPLOYER_REVISION"
POLL_S = 2.0
PROGRESS_EVERY_S = 10.0
LOG_LINES = 40
REMOVE_WAIT_S = 120.0
# A module the edgeAgent restarted this many times while we waited has crashed for good.
CRASHES_TO_FAIL = 2


def connect(target: TargetRef, session: Session) -> IotEdgeDriver:
    if not isinstance(target.settings, Config):
        raise TypeError(f"target {target.name!r} is not an iot_edge target")
    hub = connect_hub(target.settings, session.env, target.azure_cloud, Path.cwd())
    return IotEdgeDriver(target, target.settings, session, hub)


@dataclass
class IotEdgeDriver:
    target: TargetRef
    settings: Config
    session: Session
    hub: Hub

    replacement: Replacement = "in-place"
    platform_errors: tuple[type[BaseException], ...] = (HttpOperationError, ClientRequestError)
    tidy = nothing_to_tidy  # a device converges on its last desired manifest by itself
    promote = promoted_in_place
    retire = nothing_to_retire

    def __post_init__(self) -> None:
        self.module = self.settings.module_name
        self._previous: dict[str, Any] | None = None  # modulesContent before apply
        self._configuration: str | None = None  # the at-scale configuration applied

    # The hub ---------------------------------------------------------------------------------
    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except (HttpOperationError, ClientRequestError) as error:
            raise explain(error, what, self.hub) from error

    def _agent_twin(self, device: str) -> dict[str, Any]:
        twin = self._call(
            f"reading the $edgeAgent twin of device {device}",
            self.hub.protocol.modules.get_twin,
            device,
            EDGE_AGENT,
        )
        return _as_dict(twin)

    def _device_twin(self, device: str) -> dict[str, Any]:
        twin = self._call(
            f"reading the twin of device {device}", self.hub.protocol.devices.get_twin, device
        )
        return _as_dict(twin)

    # What is there ---------------------------------------------------------------------------
    def live(self) -> Version | None:
        if self.settings.deployment is not None:
            return self._live_at_scale()
        device = self.settings.device_id or ""
        agent = self._agent_twin(device)
        desired = agent.get("properties", {}).get("desired", {})
        module = (desired.get("modules") or {}).get(self.module)
        if module is None:
            return None
        self._previous = self._modules_content(device, agent)
        return self._version_of(device, agent, module)

    def _modules_content(self, device: str, agent: dict[str, Any]) -> dict[str, Any]:
        """The device's current manifest, as its desired properties hold it (secrets
        included, as IoT Hub stores them): what a rollback sends back."""
        hub_twin = _as_dict(
            self._call(
                f"reading the $edgeHub twin of device {device}",
                self.hub.protocol.modules.get_twin,
                device,
                EDGE_HUB,
            )
        )
        return {
            EDGE_AGENT: {"properties.desired": _without_metadata(agent["properties"]["desired"])},
            EDGE_HUB: {"properties.desired": _without_metadata(hub_twin["properties"]["desired"])},
        }

    def _version_of(
        self, device: str, agent: dict[str, Any], desired_module: dict[str, Any]
    ) -> Version:
        reported = agent.get("properties", {}).get("reported", {})
        state = (reported.get("modules") or {}).get(self.module) or {}
        revision = str(
            ((desired_module.get("env") or {}).get(REVISION_ENV) or {}).get("value", "unknown")
        )
        image = str(desired_module.get("settings", {}).get("image", ""))
        connection = self._device_twin(device).get("connectionState", "Disconnected")
        caught_up = reported.get("lastDesiredVersion") == agent["properties"]["desired"].get(
            "$version"
        )
        status = state.get("runtimeStatus", "unknown")
        health: Health
        if connection != "Connected":
            health, detail = "unhealthy", f"device {device} is {connection}"
        elif not caught_up:
            health, detail = "starting", "the device has not applied the latest manifest yet"
        elif status == "running":
            health, detail = "healthy", f"module {self.module} running on {device}, {connection}"
        elif status in ("stopped",):
            health, detail = "stopped", f"module {self.module} stopped"
        else:
            health, detail = "unhealthy", _describe_module(self.module, state)
        return Version(
            revision, image, self._endpoint(device), health, detail, ref=f"device {device}"
        )

    def _live_at_scale(self) -> Version | None:
        configurations = self._our_configurations()
        if not configurations:
            return None
        newest = configurations[-1]
        content = (
            newest.get("content", {}).get("modulesContent")
            or newest.get("content", {}).get("modules_content")
            or {}
        )
        module = (
            content.get(EDGE_AGENT, {})
            .get("properties.desired", {})
            .get("modules", {})
            .get(self.module, {})
        )
        revision = str(((module.get("env") or {}).get(REVISION_ENV) or {}).get("value", "unknown"))
        metrics = (newest.get("systemMetrics") or {}).get("results") or {}
        targeted, applied = metrics.get("targetedCount", 0), metrics.get("appliedCount", 0)
        failed = metrics.get("reportedFailedCount", 0)
        health: Health = (
            "healthy"
            if applied >= targeted and not failed
            else ("unhealthy" if failed else "starting")
        )
        detail = (
            f"configuration {newest['id']}: {applied}/{targeted} devices applied, {failed} failed"
        )
        image = str(module.get("settings", {}).get("image", ""))
        return Version(
            revision,
            image,
            self._endpoint(None),
            health,
            detail,
            ref=f"configuration {newest['id']}",
        )

    def _our_configurations(self) -> list[dict[str, Any]]:
        """This target's configurations, oldest first."""
        found = self._call("listing configurations", self.hub.manager.get_configurations)
        ours = []
        for configuration in found or []:
            item = _as_dict(configuration)
            labels = item.get("labels") or {}
            if (
                labels.get("service") == self.target.service
                and labels.get("target") == self.target.name
            ):
                ours.append(item)
        return sorted(ours, key=lambda c: (c.get("createdTimeUtc") or "", c["id"]))

    def _endpoint(self, device: str | None) -> Endpoint:
        host = self.settings.device_address or device or "<device-address>"
        base = f"http://{host}:{self.settings.port}"
        test = self.settings.test_uri or ""
        if test:
            note = f"the module answers on the device's network; tested through {test}"
        else:
            note = (
                "the module answers on the device's network, out of this machine's reach: "
                "set test_uri on the target to run deploy.yaml's tests"
            )
        return Endpoint(
            f"{base}/score", f"{base}/swagger.json", test_uri=test, note=note, reachable=bool(test)
        )

    # A new version ---------------------------------------------------------------------------
    def apply(self, release: Release) -> Version:
        document = json.loads(release.artifacts["deployment.json"])
        content = document.get("modulesContent") or document["content"]["modulesContent"]
        module = content[EDGE_AGENT]["properties.desired"]["modules"][self.module]
        module.setdefault("env", {})[REVISION_ENV] = {"value": release.revision}
        filled = self._fill_secrets(content)
        if self.settings.deployment is None:
            device = self.settings.device_id or ""
            self._progress(f"sending the manifest to device {device}")
            self._call(
                f"applying the manifest to device {device}",
                self.hub.manager.apply_configuration_on_edge_device,
                device,
                ConfigurationContent(modules_content=filled),
            )
            ref = f"device {device}"
        else:
            at_scale = self.settings.deployment
            name = f"{at_scale.id}-{release.revision}"[:128]
            labels = {
                **document.get("labels", {}),
                "service": self.target.service,
                "target": self.target.name,
            }
            configuration = Configuration(
                id=name,
                schema_version="1.0",
                labels=labels,
                content=ConfigurationContent(modules_content=filled),
                target_condition=at_scale.target_condition,
                priority=at_scale.priority,
            )
            self._progress(
                f"creating configuration {name} for devices where {at_scale.target_condition}"
            )
            self._call(
                f"creating configuration {name}",
                self.hub.manager.create_configuration,
                configuration,
            )
            self._configuration = name
            ref = f"configuration {name}"
        return Version(
            release.revision, str(module["settings"]["image"]), None, "starting", ref=ref
        )

    def _fill_secrets(self, content: dict[str, Any]) -> dict[str, Any]:
        """``${NAME}`` placeholders (the registry's credentials) from the environment, at
        send time only; each value becomes a secret of the run."""
        env = self.session.env

        def fill(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: fill(v) for k, v in value.items()}
            if isinstance(value, list):
                return [fill(v) for v in value]
            if isinstance(value, str):
                found = PLACEHOLDER.fullmatch(value)
                if found:
                    if found[1] not in env:
                        raise UserError(
                            f"the manifest of {self.target.name} needs {found[1]} (the registry's "
                            "credentials, for the device to pull the image), which is not set"
                        )
                    secret = env[found[1]]
                    if "password" in found[1].lower() or "key" in found[1].lower():
                        self.session.secrets.add(secret)
                    return secret
            return value

        filled: dict[str, Any] = fill(copy.deepcopy(content))
        for login in (
            filled[EDGE_AGENT]["properties.desired"]
            .get("runtime", {})
            .get("settings", {})
            .get("registryCredentials")
            or {}
        ).values():
            if login.get("password"):
                self.session.secrets.add(str(login["password"]))
        return filled

    def wait(self, version: Version, deadline: Deadline) -> Version:
        if self.settings.deployment is not None:
            return self._wait_at_scale(version, deadline)
        device = self.settings.device_id or ""
        started = last_report = time.monotonic()
        while True:
            agent = self._agent_twin(device)
            desired = agent["properties"]["desired"]
            reported = agent["properties"].get("reported", {})
            state = (reported.get("modules") or {}).get(self.module) or {}
            caught_up = reported.get("lastDesiredVersion") == desired.get("$version")
            applied = reported.get("lastDesiredStatus") or {}
            if caught_up and applied.get("code", 200) not in (200,):
                raise DeployFailed(
                    f"the edgeAgent of {device} rejected the manifest ({applied.get('code')}: "
                    f"{applied.get('description', 'no description')})"
                )
            image_now = (state.get("settings") or {}).get("image")
            status = state.get("runtimeStatus")
            if caught_up and image_now == version.image:
                if status == "running" and self._ready(deadline):
                    return Version(
                        version.revision,
                        version.image,
                        self._endpoint(device),
                        "healthy",
                        ref=version.ref,
                    )
                if (
                    status in ("backoff", "failed")
                    or int(state.get("restartCount", 0) or 0) >= CRASHES_TO_FAIL
                ):
                    raise DeployFailed(
                        f"module {self.module} on {device} {_describe_module(self.module, state)}; "
                        f"edgeAgent: {_agent_status(reported)}",
                        self.logs(version.revision, LOG_LINES),
                    )
            if deadline.expired:
                connection = self._device_twin(device).get("connectionState", "unknown")
                raise deadline.exceeded(
                    f"device {device} did not report module {self.module} running with "
                    f"{version.image} (device {connection}, reported manifest version "
                    f"{reported.get('lastDesiredVersion')} of {desired.get('$version')}, module "
                    f"{status or 'not reported'})"
                )
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                self._progress(
                    f"device {device}: manifest version {reported.get('lastDesiredVersion')} of "
                    f"{desired.get('$version')} applied, module {status or 'not reported'} "
                    f"({now - started:.0f} s)",
                    "progress",
                )
            deadline.sleep(POLL_S)

    def _ready(self, deadline: Deadline) -> bool:
        """With test_uri, the module's GET /ready too (init() may still be loading)."""
        if not self.settings.test_uri:
            return True
        base = self.settings.test_uri.rsplit("/score", 1)[0]
        health, _ = probe_ready(base + "/ready", min(3.0, max(deadline.remaining(), 0.1)))
        return health == "healthy"

    def _wait_at_scale(self, version: Version, deadline: Deadline) -> Version:
        name = self._configuration or ""
        while True:
            item = _as_dict(
                self._call(
                    f"reading configuration {name}", self.hub.manager.get_configuration, name
                )
            )
            metrics = (item.get("systemMetrics") or {}).get("results") or {}
            targeted = metrics.get("targetedCount", 0)
            applied = metrics.get("appliedCount", 0)
            succeeded = metrics.get("reportedSuccessfulCount", 0)
            failed = metrics.get("reportedFailedCount", 0)
            if failed:
                raise DeployFailed(
                    f"configuration {name}: {failed} of {targeted} devices report a failure"
                )
            if targeted and applied >= targeted and succeeded >= targeted:
                return Version(
                    version.revision,
                    version.image,
                    self._endpoint(None),
                    "healthy",
                    ref=version.ref,
                )
            if deadline.expired:
                raise deadline.exceeded(
                    f"configuration {name} was not applied everywhere ({applied}/{targeted} "
                    f"applied, {succeeded} reported success)"
                )
            self._progress(
                f"configuration {name}: {applied}/{targeted} applied, {succeeded} succeeded",
                "progress",
            )
            deadline.sleep(POLL_S)

    def confirm(self, version: Version) -> None:
        """One device: its twin holds the manifest, nothing to record. At scale: the older
        configurations of this target go, so the new one is the only one left to apply."""
        if self.settings.deployment is None:
            return
        for item in self._our_configurations():
            if item["id"] != self._configuration:
                self._progress(f"removing the previous configuration {item['id']}")
                self._delete_configuration(item["id"])

    def roll_back(self, release: Release, previous: Version | None) -> None:
        if self.settings.deployment is not None:
            if self._configuration:
                self._delete_configuration(self._configuration)
            return
        device = self.settings.device_id or ""
        if self._previous is None:
            content = self._without_model(release)
            what = f"removing module {self.module} from device {device}"
        else:
            content = self._previous
            revision = previous.revision if previous else "?"
            what = f"sending the previous manifest (revision {revision}) to device {device}"
        self._progress(what)
        self._call(
            what,
            self.hub.manager.apply_configuration_on_edge_device,
            device,
            ConfigurationContent(modules_content=content),
        )
        if previous is not None and self._previous is not None:
            again = Version(
                previous.revision, previous.image, None, "starting", ref=f"device {device}"
            )
            self.wait(again, Deadline(self.settings.ready_timeout_s))

    def _without_model(self, release: Release) -> dict[str, Any]:
        document = json.loads(release.artifacts["deployment.json"])
        content = document.get("modulesContent") or document["content"]["modulesContent"]
        content[EDGE_AGENT]["properties.desired"]["modules"].pop(self.module, None)
        return self._fill_secrets(content)

    def _delete_configuration(self, name: str) -> None:
        try:
            self.hub.manager.delete_configuration(name, etag="*")
        except HttpOperationError as error:
            if error.response is None or error.response.status_code != 404:
                raise explain(error, f"deleting configuration {name}", self.hub) from error

    # Logs and removal ------------------------------------------------------------------------
    def logs(self, revision: str, tail: int) -> list[str]:
        """The module's last lines through the edgeAgent's GetModuleLogs direct method."""
        device = self.settings.device_id
        if not device:
            return []
        request = CloudToDeviceMethod(
            method_name="GetModuleLogs",
            payload={
                "schemaVersion": "1.0",
                "items": [{"id": self.module, "filter": {"tail": tail}}],
                "encoding": "none",
                "contentType": "text",
            },
            response_timeout_in_seconds=30,
            connect_timeout_in_seconds=10,
        )
        try:
            result = self.hub.protocol.modules.invoke_method(device, EDGE_AGENT, request)
        except (HttpOperationError, ClientRequestError) as error:
            # Not an error of the deploy: where the hub cannot ask the device, say what to
            # run on the device itself.
            return [
                f"[deployer] the edgeAgent of {device} did not answer GetModuleLogs "
                f"({_short(error)}); on the device: sudo iotedge logs {self.module} --tail {tail}"
            ]
        payload = _as_dict(result).get("payload") or []
        lines: list[str] = []
        for item in payload if isinstance(payload, list) else []:
            text = item.get("payload") or ""
            lines += str(text).splitlines()
        return lines[-tail:]

    def follow(self, revision: str, tail: int) -> Iterator[str]:
        return follow_by_polling(lambda last: self.logs(revision, last), POLL_S)

    def remove(self, images: bool) -> list[str]:
        if self.settings.deployment is not None:
            removed = []
            for item in self._our_configurations():
                self._delete_configuration(item["id"])
                removed.append(f"configuration {item['id']}")
            return removed
        live = self.live()
        if live is None or self._previous is None:
            return []
        device = self.settings.device_id or ""
        content = copy.deepcopy(self._previous)
        content[EDGE_AGENT]["properties.desired"]["modules"].pop(self.module, None)
        self._call(
            f"removing module {self.module} from device {device}",
            self.hub.manager.apply_configuration_on_edge_device,
            device,
            ConfigurationContent(modules_content=content),
        )
        self._wait_removed(device, Deadline(REMOVE_WAIT_S))
        return [f"module {self.module} on device {device}"]

    def _wait_removed(self, device: str, deadline: Deadline) -> None:
        """Until the device reports the module gone (an offline device: until the deadline,
        then the hub keeps the manifest for when it connects)."""
        while not deadline.expired:
            agent = self._agent_twin(device)
            reported = agent["properties"].get("reported", {})
            caught_up = reported.get("lastDesiredVersion") == agent["properties"]["desired"].get(
                "$version"
            )
            if caught_up and self.module not in (reported.get("modules") or {}):
                return
            deadline.sleep(POLL_S / 4)
        self._progress(
            f"device {device} has not reported module {self.module} gone yet; it goes when "
            "the device applies its manifest",
            "warning",
        )

    def close(self) -> None:
        """The REST client holds no connection open between calls."""

    def _progress(self, message: str, level: Level = "step") -> None:
        key = self.target.name if level == "progress" else ""
        self.session.progress(Event(level, f"{self.target.name}: {message}", key=key))


def _as_dict(model: Any) -> dict[str, Any]:
    """An msrest model (or a dict) as the service's JSON."""
    if isinstance(model, dict):
        return model
    if hasattr(model, "serialize"):
        found: dict[str, Any] = model.serialize(keep_readonly=True)
        return found
    return dict(vars(model))


def _without_metadata(desired: dict[str, Any]) -> dict[str, Any]:
    """Desired properties as they were sent: no ``$metadata`` or ``$version``."""
    return {k: v for k, v in desired.items() if not k.startswith("$")}


def _describe_module(name: str, state: dict[str, Any]) -> str:
    status = state.get("runtimeStatus", "not reported")
    parts = [f"is {status}"]
    if state.get("exitCode") is not None:
        parts.append(f"exit code {state['exitCode']}")
    if state.get("statusDescription"):
        parts.append(str(state["statusDescription"]))
    if state.get("lastExitTimeUtc"):
        parts.append(f"last exit {state['lastExitTimeUtc']}")
    if state.get("restartCount"):
        parts.append(f"restarted {state['restartCount']} times")
    return ", ".join(parts)


def _agent_status(reported: dict[str, Any]) -> str:
    agent = (reported.get("systemModules") or {}).get("edgeAgent") or {}
    applied = reported.get("lastDesiredStatus") or {}
    return (
        f"{agent.get('runtimeStatus', 'not reported')}, last manifest status "
        f"{applied.get('code', '?')} {applied.get('description', '')}".rstrip()
    )


def _short(error: Exception) -> str:
    status = getattr(getattr(error, "response", None), "status_code", None)
    return f"{status}" if status else type(error).__name__
