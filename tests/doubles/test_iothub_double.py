"""The IoT Hub double driven by the real SDK (azure-iot-hub: ``IoTHubConfigurationManager``,
``IoTHubRegistryManager``, from a connection string, trusting the test CA through
REQUESTS_CA_BUNDLE), every connection on loopback (tests/conftest.py's guard): SAS checks,
configurations, applyConfigurationContent, twins, direct methods, faults; a simulated edge
agent with a stand-in engine; and (with Docker) the agent running the example's rendered
manifest with deployer's own engine."""

from __future__ import annotations

import base64
import gzip
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import (
    CloudToDeviceMethod,
    Configuration,
    ConfigurationContent,
    Twin,
)
from msrest.exceptions import HttpOperationError

from deployer.targets.iot_edge.engine import ModuleStatus
from tests.docker.conftest import dev_env, free_port
from tests.doubles.example_build import build_and_render
from tests.doubles.iothub import IoTHubDouble
from tests.doubles.iothub.conditions import Condition, ConditionError

__all__ = ["dev_env"]  # fixtures used here

DEVICE = "edge-01"


def manifest(image: str = "127.0.0.1:5000/model:1", module: str = "model") -> dict[str, Any]:
    """A small modulesContent, in the form deployer renders (edgeAgent schema 1.1)."""
    return {
        "$edgeAgent": {
            "properties.desired": {
                "schemaVersion": "1.1",
                "runtime": {
                    "type": "docker",
                    "settings": {
                        "registryCredentials": {
                            "local": {"username": "u", "password": "p", "address": "127.0.0.1:5000"}
                        }
                    },
                },
                "systemModules": {
                    "edgeAgent": {
                        "type": "docker",
                        "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"},
                    },
                    "edgeHub": {
                        "type": "docker",
                        "status": "running",
                        "restartPolicy": "always",
                        "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"},
                    },
                },
                "modules": {
                    module: {
                        "type": "docker",
                        "status": "running",
                        "restartPolicy": "always",
                        "settings": {"image": image, "createOptions": "{}"},
                        "env": {"DEPLOYER_SERVER_PORT": {"value": "5001"}},
                    }
                },
            }
        },
        "$edgeHub": {
            "properties.desired": {
                "schemaVersion": "1.2",
                "routes": {"up": f"FROM /messages/modules/{module}/outputs/* INTO $upstream"},
                "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
            }
        },
    }


def status_of(error: HttpOperationError) -> int:
    return int(error.response.status_code)


def body_of(error: HttpOperationError) -> dict[str, Any]:
    return dict(error.response.json())


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[IoTHubDouble]:
    """A double without a device runtime, with the edge device edge-01; the SDK trusts its
    CA as it trusts a proxy's."""
    with IoTHubDouble(tmp_path) as double:
        double.add_device(DEVICE, tags={"environment": "prod"})
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(double.ca_bundle))
        yield double
        assert not double.contract_errors, double.contract_errors


def configurations(double: IoTHubDouble, key: str | None = None) -> Any:
    return IoTHubConfigurationManager.from_connection_string(double.connection_string_with(key=key))


def registry(double: IoTHubDouble) -> Any:
    return IoTHubRegistryManager.from_connection_string(double.connection_string)


def deployment(config_id: str, condition: str, priority: int = 10, **kw: Any) -> Any:
    return Configuration(
        id=config_id,
        target_condition=condition,
        priority=priority,
        labels={"service": "diabetes"},
        content=ConfigurationContent(modules_content=kw.get("content", manifest())),
    )


# The connection ---------------------------------------------------------------------------


def test_it_is_reached_through_the_connection_strings_host_name(hub: IoTHubDouble) -> None:
    assert hub.connection_string.startswith(f"HostName=localhost:{hub.port};")
    assert "SharedAccessKeyName=iothubowner;SharedAccessKey=" in hub.connection_string
    env = hub.env()
    assert env["IOTHUB_CONNECTION_STRING"] == hub.connection_string
    assert env["REQUESTS_CA_BUNDLE"] == str(hub.ca_bundle)
    configurations(hub).get_configurations()
    sent = hub.requests[-1]
    assert sent.method == "GET"
    assert sent.path == "/configurations"
    assert sent.query == {"api-version": "2021-04-12"}
    scheme, _, token = sent.headers["Authorization"].partition(" ")
    assert scheme == "SharedAccessSignature"
    fields = dict(part.split("=", 1) for part in token.split("&"))
    assert fields["sr"] == f"localhost%3A{hub.port}"
    assert fields["skn"] == "iothubowner"
    assert sent.status == 200


def test_a_wrong_key_is_401_as_iot_hub_words_it(hub: IoTHubDouble) -> None:
    with pytest.raises(HttpOperationError) as raised:
        configurations(hub, key=hub.wrong_key()).get_configuration("anything")
    assert status_of(raised.value) == 401
    body = body_of(raised.value)
    assert body["Message"] == "ErrorCode:IotHubUnauthorizedAccess;Unauthorized"
    assert body["ExceptionMessage"].startswith("Tracking ID:")
    assert raised.value.response.headers["iothub-errorcode"] == "IotHubUnauthorizedAccess"
    assert "invalid signature" in hub.requests[-1].detail


def test_the_secondary_key_works_and_other_policies_do_not(hub: IoTHubDouble) -> None:
    secondary = hub.policies["iothubowner"].secondary_key
    configurations(hub, key=secondary).get_configurations()
    other = hub.connection_string_with(policy="service")
    with pytest.raises(HttpOperationError) as raised:
        IoTHubConfigurationManager.from_connection_string(other).get_configurations()
    assert status_of(raised.value) == 401
    assert "no shared access policy named 'service'" in hub.requests[-1].detail


def test_an_expired_token_is_401(hub: IoTHubDouble) -> None:
    manager = configurations(hub)
    manager.get_configurations()
    hub.advance_clock(2 * 3600)  # the SDK's tokens live an hour
    with pytest.raises(HttpOperationError) as raised:
        manager.get_configurations()
    assert status_of(raised.value) == 401
    assert "expired" in hub.requests[-1].detail


def test_a_token_for_another_hub_is_401(hub: IoTHubDouble) -> None:
    other = hub.connection_string_with(host="otherhub.azure-devices.net")
    manager = IoTHubConfigurationManager.from_connection_string(other)
    # Reach the double with the other hub's token: the SDK builds the token from HostName.
    manager.protocol.config.base_url = f"https://{hub.host}"
    with pytest.raises(HttpOperationError) as raised:
        manager.get_configurations()
    assert status_of(raised.value) == 401
    assert "not this hub" in hub.requests[-1].detail


def test_a_bearer_token_the_test_gave_is_accepted(hub: IoTHubDouble) -> None:
    from azure.core.credentials import AccessToken

    class Credential:
        def __init__(self, token: str) -> None:
            self.token = token

        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            assert scopes == ("https://iothubs.azure.net/.default",)
            return AccessToken(self.token, int(time.time()) + 3600)

    token = "entra-" + uuid.uuid4().hex
    hub.accept_bearer(token)
    manager = IoTHubConfigurationManager.from_token_credential(hub.host, Credential(token))
    assert manager.get_configurations() == []
    assert hub.requests[-1].headers["Authorization"] == f"Bearer {token}"
    stranger = IoTHubConfigurationManager.from_token_credential(hub.host, Credential("nope"))
    with pytest.raises(HttpOperationError) as raised:
        stranger.get_configurations()
    assert status_of(raised.value) == 401


# Configurations ----------------------------------------------------------------------------


def test_configurations_are_created_read_listed_and_deleted(hub: IoTHubDouble) -> None:
    manager = configurations(hub)
    created = manager.create_configuration(deployment("diabetes-r1", "tags.environment='prod'"))
    assert created.id == "diabetes-r1"
    assert created.etag == base64.b64encode(b"1").decode()
    assert created.created_time_utc is not None
    assert created.last_updated_time_utc == created.created_time_utc
    assert created.priority == 10
    assert created.labels == {"service": "diabetes"}
    assert created.content.modules_content == manifest()
    got = manager.get_configuration("diabetes-r1")
    assert got.system_metrics.results["targetedCount"] == 1
    assert got.system_metrics.results["appliedCount"] == 1
    assert set(got.system_metrics.queries) == {
        "targetedCount",
        "appliedCount",
        "reportedSuccessfulCount",
        "reportedFailedCount",
    }
    manager.create_configuration(deployment("diabetes-r2", "tags.environment='test'", 5))
    assert [c.id for c in manager.get_configurations()] == ["diabetes-r1", "diabetes-r2"]
    assert [c.id for c in manager.get_configurations(max_count=1)] == ["diabetes-r1"]
    assert hub.requests[-1].query == {"top": "1", "api-version": "2021-04-12"}
    manager.delete_configuration("diabetes-r1")
    assert hub.requests[-1].headers["If-Match"] == "*"
    assert [c.id for c in manager.get_configurations()] == ["diabetes-r2"]
    with pytest.raises(HttpOperationError) as raised:
        manager.get_configuration("diabetes-r1")
    assert status_of(raised.value) == 404
    assert body_of(raised.value)["Message"].startswith("ErrorCode:ConfigurationNotFound;")
    with pytest.raises(HttpOperationError) as raised:
        manager.delete_configuration("diabetes-r1")
    assert status_of(raised.value) == 404


def test_a_configuration_id_is_taken_once_and_content_never_changes(hub: IoTHubDouble) -> None:
    manager = configurations(hub)
    created = manager.create_configuration(deployment("diabetes-r1", "tags.environment='prod'"))
    with pytest.raises(HttpOperationError) as raised:
        manager.create_configuration(deployment("diabetes-r1", "tags.environment='prod'"))
    assert status_of(raised.value) == 409
    assert body_of(raised.value)["Message"] == (
        "ErrorCode:ConfigurationAlreadyExists;Configuration with id 'diabetes-r1' already "
        "exist on IotHub."
    )
    # The SDK sends the etag as the body has it (unquoted): the service takes that for a
    # create, as users of update_configuration report (azure-iot-hub-python#2).
    created.priority = 20
    with pytest.raises(HttpOperationError) as raised:
        manager.update_configuration(created, created.etag)
    assert status_of(raised.value) == 409
    updated = manager.update_configuration(created, f'"{created.etag}"')
    assert updated.priority == 20
    assert updated.etag == base64.b64encode(b"2").decode()
    with pytest.raises(HttpOperationError) as raised:  # the etag is stale now
        manager.update_configuration(created, f'"{created.etag}"')
    assert status_of(raised.value) == 412
    updated.content = ConfigurationContent(modules_content=manifest(image="other:2"))
    with pytest.raises(HttpOperationError) as raised:
        manager.update_configuration(updated, "*")
    assert status_of(raised.value) == 400
    assert "cannot be updated" in body_of(raised.value)["Message"]
    with pytest.raises(HttpOperationError) as raised:
        manager.delete_configuration("diabetes-r1", etag="MQ==")
    assert status_of(raised.value) == 412
    manager.delete_configuration("diabetes-r1", etag=updated.etag)
    assert hub.configuration_ids() == []


def test_configurations_are_validated_against_the_contract(hub: IoTHubDouble) -> None:
    manager = configurations(hub)
    request = deployment("diabetes-r1", "tags.environment='prod'")
    body = manager.protocol._serialize.body(request, "Configuration")
    body["targetCondtion"] = body.pop("targetCondition")  # a typo
    response = manager.protocol._client.send(
        manager.protocol._client.put(
            "/configurations/diabetes-r1",
            {"api-version": "2021-04-12"},
            {"Content-Type": "application/json"},
            content=body,
        )
    )
    assert response.status_code == 400
    assert "targetCondtion" in response.json()["Message"]
    wrong_version = manager.protocol._client.send(
        manager.protocol._client.get("/configurations", {"api-version": "2018-06-30"})
    )
    assert wrong_version.status_code == 400
    assert wrong_version.json()["Message"].startswith("ErrorCode:InvalidProtocolVersion;")
    bad_id = deployment("Diabetes", "tags.environment='prod'")
    with pytest.raises(HttpOperationError) as raised:
        manager.create_configuration(bad_id)
    assert status_of(raised.value) == 400
    with pytest.raises(HttpOperationError) as raised:
        manager.create_configuration(deployment("d", "tags.environment=='prod'"))
    assert "Invalid target condition" in body_of(raised.value)["Message"]


def test_the_highest_priority_deployment_applies_to_each_device(hub: IoTHubDouble) -> None:
    hub.add_device("edge-02", tags={"environment": "prod", "ring": 1})
    hub.add_device("edge-03", tags={"environment": "test"})
    hub.add_device("leaf", edge=False, tags={"environment": "prod"})
    manager = configurations(hub)
    manager.create_configuration(
        deployment("low", "tags.environment='prod'", 1, content=manifest(image="low:1"))
    )
    manager.create_configuration(
        deployment(
            "high",
            "tags.environment = 'prod' AND (tags.ring = 1 OR deviceId = 'edge-03')",
            5,
            content=manifest(image="high:1"),
        )
    )

    def image(device: str) -> str:
        return str(hub.desired(device)["modules"]["model"]["settings"]["image"])

    assert image(DEVICE) == "low:1"
    assert image("edge-02") == "high:1"
    assert hub.desired("edge-03") == {}
    assert hub.twin("edge-02", "$edgeAgent")["configurations"] == {
        "high": {"status": "Applied"},
        "low": {"status": "Targeted"},
    }
    low = manager.get_configuration("low").system_metrics.results
    assert (low["targetedCount"], low["appliedCount"]) == (2, 1)  # not the leaf device
    # A tag changes: the deployments are evaluated again.
    registry(hub).update_twin("edge-02", Twin(tags={"ring": None}), "*")
    assert image("edge-02") == "low:1"
    # A deployment goes: its devices keep their modules.
    manager.delete_configuration("low")
    assert image(DEVICE) == "low:1"


def test_condition_subset() -> None:
    twin = {"deviceId": "d1", "tags": {"env": "prod", "n": 3, "site": {"city": "Oslo"}}}
    assert Condition("tags.env='prod' and deviceId=\"d1\"").matches(twin)
    assert Condition("tags.site.city IN ['Oslo', 'Bergen'] AND NOT tags.n > 5").matches(twin)
    assert not Condition("tags.missing != 'x'").matches(twin)
    assert Condition("tags.missing = 'x' OR tags.n >= 3").matches(twin)
    for bad in ("tags.env == 'prod'", "STARTSWITH(tags.env, 'p')", "tags.env = 'prod' AND"):
        with pytest.raises(ConditionError):
            Condition(bad)


# applyConfigurationContent and twins --------------------------------------------------------


def test_apply_on_an_edge_device_sets_the_runtime_twins(hub: IoTHubDouble) -> None:
    manager = configurations(hub)
    before = registry(hub).get_module_twin(DEVICE, "$edgeAgent").properties.desired["$version"]
    result = manager.apply_configuration_on_edge_device(
        DEVICE, ConfigurationContent(modules_content=manifest())
    )
    assert result is None  # 204
    sent = hub.requests_to("POST", "/applyConfigurationContent$")[-1]
    assert sent.status == 204
    assert sent.path == f"/devices/{DEVICE}/applyConfigurationContent"
    agent = registry(hub).get_module_twin(DEVICE, "$edgeAgent")
    assert hub.requests[-1].target.startswith(f"/twins/{DEVICE}/modules/%24edgeAgent?")
    desired = agent.properties.desired
    assert desired["$version"] == before + 1
    assert desired["modules"]["model"]["settings"]["image"] == "127.0.0.1:5000/model:1"
    assert "$lastUpdated" in desired["$metadata"]
    edge_hub = registry(hub).get_module_twin(DEVICE, "$edgeHub").properties.desired
    assert edge_hub["routes"] == manifest()["$edgeHub"]["properties.desired"]["routes"]
    assert agent.connection_state == "Disconnected"  # no runtime without docker_env


def test_apply_is_refused_as_iot_hub_refuses_it(hub: IoTHubDouble) -> None:
    manager = configurations(hub)
    with pytest.raises(HttpOperationError) as raised:
        manager.apply_configuration_on_edge_device(
            "nobody", ConfigurationContent(modules_content=manifest())
        )
    assert status_of(raised.value) == 404
    assert body_of(raised.value)["Message"].startswith("ErrorCode:DeviceNotFound;")
    hub.add_device("leaf", edge=False)
    with pytest.raises(HttpOperationError) as raised:
        manager.apply_configuration_on_edge_device(
            "leaf", ConfigurationContent(modules_content=manifest())
        )
    assert status_of(raised.value) == 400
    with pytest.raises(HttpOperationError) as raised:
        manager.apply_configuration_on_edge_device(DEVICE, ConfigurationContent())
    assert status_of(raised.value) == 400
    too_long = manifest()
    settings = too_long["$edgeAgent"]["properties.desired"]["modules"]["model"]["settings"]
    settings["createOptions"] = json.dumps({"Env": ["X=" + "x" * 5000]})
    with pytest.raises(HttpOperationError) as raised:
        manager.apply_configuration_on_edge_device(
            DEVICE, ConfigurationContent(modules_content=too_long)
        )
    assert status_of(raised.value) == 400
    assert "over the limit of 4096" in body_of(raised.value)["Message"]
    bad_key = manifest()
    bad_key["$edgeAgent"]["properties.desired"]["modules"]["my.model"] = {}
    with pytest.raises(HttpOperationError) as raised:
        manager.apply_configuration_on_edge_device(
            DEVICE, ConfigurationContent(modules_content=bad_key)
        )
    assert "Invalid character '.'" in body_of(raised.value)["Message"]


def test_device_twin_tags_and_etags(hub: IoTHubDouble) -> None:
    manager = registry(hub)
    twin = manager.get_twin(DEVICE)
    assert twin.device_id == DEVICE
    assert twin.tags == {"environment": "prod"}
    assert twin.status == "enabled"
    assert twin.connection_state == "Disconnected"
    assert twin.capabilities.iot_edge is True
    updated = manager.update_twin(DEVICE, Twin(tags={"site": {"city": "Oslo"}}), twin.etag)
    assert updated.tags == {"environment": "prod", "site": {"city": "Oslo"}}
    assert updated.version == twin.version + 1
    with pytest.raises(HttpOperationError) as raised:
        manager.update_twin(DEVICE, Twin(tags={"x": 1}), twin.etag)  # stale
    assert status_of(raised.value) == 412
    assert [m.module_id for m in manager.get_modules(DEVICE)] == ["$edgeAgent", "$edgeHub"]
    with pytest.raises(HttpOperationError) as raised:
        manager.get_module_twin(DEVICE, "nothing")
    assert status_of(raised.value) == 404


# Faults -------------------------------------------------------------------------------------


def test_throttling_then_success(hub: IoTHubDouble) -> None:
    manager = configurations(hub)
    content = ConfigurationContent(modules_content=manifest())
    rule = hub.fail("POST", "/applyConfigurationContent$", status=429, retry_after=2)
    with pytest.raises(HttpOperationError) as raised:  # urllib3 retries no POST
        manager.apply_configuration_on_edge_device(DEVICE, content)
    assert status_of(raised.value) == 429
    assert raised.value.response.headers["Retry-After"] == "2"
    assert body_of(raised.value)["Message"].startswith("ErrorCode:ThrottlingException;")
    assert rule.matched.is_set()
    manager.apply_configuration_on_edge_device(DEVICE, content)
    assert [r.status for r in hub.requests_to("POST", "/applyConfigurationContent$")] == [429, 204]
    # A PUT (idempotent) is retried by urllib3 itself, after Retry-After.
    hub.fail("PUT", r"^/configurations/diabetes-r1$", status=429, retry_after=1)
    started = time.monotonic()
    manager.create_configuration(deployment("diabetes-r1", "tags.environment='prod'"))
    assert time.monotonic() - started >= 1
    assert [r.status for r in hub.requests_to("PUT", "^/configurations/")] == [429, 200]


def test_a_passing_server_error_is_retried_by_the_sdk(hub: IoTHubDouble) -> None:
    manager = configurations(hub)
    hub.fail("GET", r"^/configurations$", status=500)
    assert manager.get_configurations() == []  # urllib3 retried the GET
    assert [r.status for r in hub.requests_to("GET", "^/configurations$")] == [500, 200]
    hub.fail("POST", "/applyConfigurationContent", status=503, times=1)
    with pytest.raises(HttpOperationError) as raised:  # POST is not retried
        manager.apply_configuration_on_edge_device(
            DEVICE, ConfigurationContent(modules_content=manifest())
        )
    assert status_of(raised.value) == 503


def test_methods_on_a_device_without_a_runtime_are_404_device_not_online(
    hub: IoTHubDouble,
) -> None:
    request = CloudToDeviceMethod(method_name="ping", connect_timeout_in_seconds=1)
    started = time.monotonic()
    with pytest.raises(HttpOperationError) as raised:
        registry(hub).invoke_device_module_method(DEVICE, "$edgeAgent", request)
    assert time.monotonic() - started >= 1  # it waited for the device to connect
    assert status_of(raised.value) == 404
    inner = json.loads(body_of(raised.value)["Message"])
    assert inner["errorCode"] == 404103
    assert inner["message"] == "Timed out waiting for device to connect."
    assert inner["info"] == {"timeout": "00:00:01"}


# A simulated device with a stand-in engine ---------------------------------------------------


@dataclass
class StandInEngine:
    """Engine's API without Docker: every module runs, but images named ``crash:*`` exit 3
    and back off, and ``missing:*`` do not pull."""

    applied: list[Any] = field(default_factory=list)
    removed: bool = False

    def apply(self, manifest: Any) -> dict[str, ModuleStatus]:
        self.applied.append(manifest)
        return self.status()

    def status(self) -> dict[str, ModuleStatus]:
        if not self.applied:
            return {}
        found = {}
        for name, module in self.applied[-1].modules.items():
            if module.image.startswith("crash:"):
                found[name] = ModuleStatus(
                    "backoff", 3, "exited with code 3", "t1", "t0", 1, module.image
                )
            elif module.image.startswith("missing:"):
                description = f"could not pull {module.image}: not found"
                found[name] = ModuleStatus("failed", None, description, None, None, 0, module.image)
            else:
                found[name] = ModuleStatus("running", None, "running", None, "t0", 0, module.image)
        return found

    def logs(self, module: str, tail: int) -> list[str]:
        return [f"{module} line {i}" for i in range(20)][-tail:]

    def remove_all(self) -> list[str]:
        self.removed = True
        return []


@pytest.fixture
def device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[IoTHubDouble]:
    engines: dict[str, StandInEngine] = {}

    def factory(device_id: str) -> StandInEngine:
        return engines.setdefault(device_id, StandInEngine())

    with IoTHubDouble(tmp_path, engine_factory=factory, agent_interval=0.05) as double:
        double.engines = engines  # type: ignore[attr-defined]
        double.add_device(DEVICE, tags={"environment": "prod"})
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(double.ca_bundle))
        yield double
        assert not double.contract_errors, double.contract_errors
        assert not double.agent_errors, double.agent_errors
    assert engines[DEVICE].removed


def reported_version(double: IoTHubDouble) -> int | None:
    return double.reported(DEVICE).get("lastDesiredVersion")


def test_the_agent_reports_what_it_applied(device: IoTHubDouble) -> None:
    device.wait_for(lambda: "lastDesiredStatus" in device.reported(DEVICE), 10, "a report")
    assert device.reported(DEVICE)["lastDesiredStatus"]["code"] == 417
    assert registry(device).get_twin(DEVICE).connection_state == "Connected"
    configurations(device).apply_configuration_on_edge_device(
        DEVICE, ConfigurationContent(modules_content=manifest(image="127.0.0.1:5000/m:1"))
    )
    version = registry(device).get_module_twin(DEVICE, "$edgeAgent").properties.desired["$version"]
    device.wait_for(lambda: reported_version(device) == version, 10, "the new version")
    reported = registry(device).get_module_twin(DEVICE, "$edgeAgent").properties.reported
    assert reported["lastDesiredStatus"] == {"code": 200}
    assert reported["schemaVersion"] == "1.1"
    assert reported["runtime"]["platform"]["os"] == "linux"
    assert reported["runtime"]["settings"]["registryCredentials"] == {}
    assert [m.module_id for m in registry(device).get_modules(DEVICE)] == [
        "$edgeAgent",
        "$edgeHub",
        "model",
    ]
    assert reported["systemModules"]["edgeHub"]["runtimeStatus"] == "running"
    module = reported["modules"]["model"]
    assert module["runtimeStatus"] == "running"
    assert module["settings"]["image"] == "127.0.0.1:5000/m:1"
    assert module["exitCode"] == 0
    assert module["lastExitTimeUtc"] == "0001-01-01T00:00:00Z"
    assert reported["deviceHealth"] == "healthy"
    edge_hub = device.reported(DEVICE, "$edgeHub")
    assert edge_hub["lastDesiredStatus"] == {"code": 200}


def test_a_crashing_module_reports_backoff_and_a_failed_pull_500(device: IoTHubDouble) -> None:
    manager = configurations(device)
    manager.apply_configuration_on_edge_device(
        DEVICE, ConfigurationContent(modules_content=manifest(image="crash:1"))
    )
    device.wait_for(
        lambda: (
            device.reported(DEVICE).get("modules", {}).get("model", {}).get("runtimeStatus")
            == "backoff"
        ),
        10,
        "backoff",
    )
    module = device.reported(DEVICE)["modules"]["model"]
    assert (module["exitCode"], module["restartCount"]) == (3, 1)
    assert device.reported(DEVICE)["deviceHealth"] == "unhealthy"
    manager.apply_configuration_on_edge_device(
        DEVICE, ConfigurationContent(modules_content=manifest(image="missing:1"))
    )
    device.wait_for(
        lambda: device.reported(DEVICE).get("lastDesiredStatus", {}).get("code") == 500, 10, "500"
    )
    assert "could not pull missing:1" in device.reported(DEVICE)["lastDesiredStatus"]["description"]


def test_an_unreadable_manifest_is_reported_400(device: IoTHubDouble) -> None:
    broken = manifest()
    broken["$edgeAgent"]["properties.desired"]["modules"]["model"]["restartPolicy"] = "sometimes"
    configurations(device).apply_configuration_on_edge_device(
        DEVICE, ConfigurationContent(modules_content=broken)
    )
    device.wait_for(
        lambda: device.reported(DEVICE).get("lastDesiredStatus", {}).get("code") == 400, 10, "400"
    )
    assert "restartPolicy" in device.reported(DEVICE)["lastDesiredStatus"]["description"]


def test_an_offline_device_neither_applies_nor_reports_nor_answers(device: IoTHubDouble) -> None:
    device.wait_for(lambda: reported_version(device) is not None, 10, "a report")
    device.device_offline(DEVICE)
    assert registry(device).get_twin(DEVICE).connection_state == "Disconnected"
    configurations(device).apply_configuration_on_edge_device(
        DEVICE, ConfigurationContent(modules_content=manifest())
    )
    time.sleep(0.5)
    desired = device.twin(DEVICE, "$edgeAgent")["properties"]["desired"]["$version"]
    assert reported_version(device) != desired
    with pytest.raises(HttpOperationError) as raised:
        registry(device).invoke_device_module_method(
            DEVICE, "$edgeAgent", CloudToDeviceMethod(method_name="ping")
        )
    assert status_of(raised.value) == 404
    assert json.loads(body_of(raised.value)["Message"])["errorCode"] == 404103
    device.device_online(DEVICE)
    device.wait_for(lambda: reported_version(device) == desired, 10, "catching up")


def test_edge_agent_methods(device: IoTHubDouble) -> None:
    configurations(device).apply_configuration_on_edge_device(
        DEVICE, ConfigurationContent(modules_content=manifest())
    )
    device.wait_for(lambda: "model" in device.reported(DEVICE).get("modules", {}), 10, "model")
    manager = registry(device)
    pong = manager.invoke_device_module_method(
        DEVICE, "$edgeAgent", CloudToDeviceMethod(method_name="ping")
    )
    assert (pong.status, pong.payload) == (200, None)
    request = {
        "schemaVersion": "1.0",
        "items": [{"id": "^model$", "filter": {"tail": 3}}],
        "encoding": "none",
        "contentType": "text",
    }
    logs = manager.invoke_device_module_method(
        DEVICE,
        "$edgeAgent",
        CloudToDeviceMethod(
            method_name="GetModuleLogs", payload=request, response_timeout_in_seconds=30
        ),
    )
    assert logs.status == 200
    assert logs.payload == [
        {"id": "model", "payload": "model line 17\nmodel line 18\nmodel line 19\n"}
    ]
    zipped = manager.invoke_device_module_method(
        DEVICE,
        "$edgeAgent",
        CloudToDeviceMethod(
            method_name="GetModuleLogs",
            payload={**request, "encoding": "gzip", "items": [{"id": "edge"}]},
        ),
    )
    assert [item["id"] for item in zipped.payload] == ["edgeAgent", "edgeHub"]
    text = gzip.decompress(base64.b64decode(zipped.payload[0]["payloadBytes"])).decode()
    assert "Plan execution" in text
    unknown = manager.invoke_device_module_method(
        DEVICE, "$edgeAgent", CloudToDeviceMethod(method_name="Reboot")
    )
    assert unknown.status == 404
    with pytest.raises(HttpOperationError) as raised:  # a custom module is no IoT Hub client
        manager.invoke_device_module_method(DEVICE, "model", CloudToDeviceMethod(method_name="x"))
    assert status_of(raised.value) == 404


def test_deployment_metrics_follow_the_reports(device: IoTHubDouble) -> None:
    manager = configurations(device)
    manager.create_configuration(deployment("diabetes-r1", "tags.environment='prod'"))

    def results() -> dict[str, int]:
        return dict(manager.get_configuration("diabetes-r1").system_metrics.results)

    device.wait_for(lambda: results()["reportedSuccessfulCount"] == 1, 10, "a successful report")
    assert results() == {
        "targetedCount": 1,
        "appliedCount": 1,
        "reportedSuccessfulCount": 1,
        "reportedFailedCount": 0,
    }
    assert device.reported(DEVICE)["configurationHealth"] == {"diabetes-r1": {"health": "healthy"}}


# A simulated device on Docker, with deployer's engine ----------------------------------------

BASE_IMAGE = "python:3.11-slim"  # scripts/dev-env makes sure it is there


@pytest.fixture(scope="module")
def example_edge(
    tmp_path_factory: pytest.TempPathFactory, dev_env: dict[str, str]
) -> dict[str, Any]:
    """The example, built and pushed, rendered for ``edge`` (one device) with
    ``deployer render -t edge``; its registry credentials filled in as the driver does at
    send time, and its server moved to a free port of this machine (the engine runs modules
    on the host network)."""
    root = tmp_path_factory.mktemp("iothub-example")
    _, out = build_and_render(root / "repo", "edge", dev_env, "iothub")
    text = (out / "deployment.json").read_text()
    text = text.replace("${REGISTRY_USERNAME}", dev_env["REGISTRY_USERNAME"])
    text = text.replace("${REGISTRY_PASSWORD}", dev_env["REGISTRY_PASSWORD"])
    content = json.loads(text)["modulesContent"]
    agent = content["$edgeAgent"]["properties.desired"]
    (module_name,) = agent["modules"]
    port = free_port()
    agent["modules"][module_name]["env"]["DEPLOYER_SERVER_PORT"] = {"value": str(port)}
    image = agent["modules"][module_name]["settings"]["image"]
    return {"content": content, "module": module_name, "image": image, "port": port}


@pytest.fixture
def edge_device(
    tmp_path: Path, dev_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[IoTHubDouble]:
    environment = {k: v for k, v in dev_env.items() if k == "DOCKER_HOST"}
    with IoTHubDouble(tmp_path, docker_env=environment) as double:
        double.add_device(DEVICE)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(double.ca_bundle))
        yield double
        assert not double.contract_errors, double.contract_errors
        assert not double.agent_errors, double.agent_errors
        session = double.session
    left = client_of(dev_env).containers.list(
        all=True, filters={"label": f"ai.deployer.simulate.session={session}"}
    )
    assert left == [], "the double's containers were not removed on close()"


def client_of(dev_env: dict[str, str]) -> Any:
    import docker

    return docker.from_env(environment={**os.environ, **dev_env})


def module_report(double: IoTHubDouble, module: str) -> dict[str, Any]:
    return dict(double.reported(DEVICE).get("modules", {}).get(module, {}))


def with_crasher(content: dict[str, Any]) -> dict[str, Any]:
    """The content with a second module that prints a line and exits 3 at once."""
    content = json.loads(json.dumps(content))
    options = {"Cmd": ["python", "-c", "import sys; print('crashing now'); sys.exit(3)"]}
    content["$edgeAgent"]["properties.desired"]["modules"]["crasher"] = {
        "type": "docker",
        "status": "running",
        "restartPolicy": "always",
        "imagePullPolicy": "never",
        "settings": {"image": BASE_IMAGE, "createOptions": json.dumps(options)},
    }
    return content


@pytest.mark.docker
@pytest.mark.slow
def test_the_device_runs_the_rendered_manifest(
    edge_device: IoTHubDouble, example_edge: dict[str, Any]
) -> None:
    module, image, port = example_edge["module"], example_edge["image"], example_edge["port"]
    content = with_crasher(example_edge["content"])
    configurations(edge_device).apply_configuration_on_edge_device(
        DEVICE, ConfigurationContent(modules_content=content)
    )
    desired = registry(edge_device).get_module_twin(DEVICE, "$edgeAgent").properties.desired
    edge_device.wait_for(
        lambda: (
            reported_version(edge_device) == desired["$version"]
            and module_report(edge_device, module).get("runtimeStatus") == "running"
        ),
        300,
        f"{module} running",
    )
    reported = registry(edge_device).get_module_twin(DEVICE, "$edgeAgent").properties.reported
    assert reported["lastDesiredStatus"] == {"code": 200}
    model = reported["modules"][module]
    assert model["settings"]["image"] == image
    assert model["lastStartTimeUtc"] != "0001-01-01T00:00:00Z"
    assert registry(edge_device).get_twin(DEVICE).connection_state == "Connected"
    # The module really serves.
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/score",
        data=json.dumps({"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    # The crashing module backs off, with its exit code, as edgeAgent reports it.
    edge_device.wait_for(
        lambda: module_report(edge_device, "crasher").get("runtimeStatus") == "backoff",
        60,
        "crasher in backoff",
    )
    crasher = module_report(edge_device, "crasher")
    assert crasher["exitCode"] == 3
    assert crasher["lastExitTimeUtc"] != "0001-01-01T00:00:00Z"
    assert edge_device.reported(DEVICE)["deviceHealth"] == "unhealthy"
    # GetModuleLogs returns the containers' own lines.
    logs = registry(edge_device).invoke_device_module_method(
        DEVICE,
        "$edgeAgent",
        CloudToDeviceMethod(
            method_name="GetModuleLogs",
            payload={
                "schemaVersion": "1.0",
                "items": [{"id": "^crasher$", "filter": {"tail": 10}}],
                "encoding": "none",
                "contentType": "text",
            },
            response_timeout_in_seconds=30,
        ),
    )
    assert logs.status == 200
    assert logs.payload[0]["id"] == "crasher"
    assert "crashing now" in logs.payload[0]["payload"]


@pytest.mark.docker
@pytest.mark.slow
def test_a_module_that_cannot_be_pulled_is_a_failed_deployment(
    edge_device: IoTHubDouble, example_edge: dict[str, Any]
) -> None:
    content = json.loads(json.dumps(example_edge["content"]))
    module = example_edge["module"]
    settings = content["$edgeAgent"]["properties.desired"]["runtime"]["settings"]
    settings.pop("registryCredentials")  # the device could not log in to the registry
    configurations(edge_device).apply_configuration_on_edge_device(
        DEVICE, ConfigurationContent(modules_content=content)
    )
    edge_device.wait_for(
        lambda: edge_device.reported(DEVICE).get("lastDesiredStatus", {}).get("code") == 500,
        120,
        "a failed deployment",
    )
    report = module_report(edge_device, module)
    assert report["runtimeStatus"] == "failed"
    assert "could not pull" in report["statusDescription"]
