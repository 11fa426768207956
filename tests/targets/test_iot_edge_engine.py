"""The IoT Edge engine without Docker: reading manifests as the edge agent does, the
createOptions chunks, what a device would fail on, the Docker create body (golden cases from
Microsoft's documentation), and the agent's restart policy against a fake engine."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deployer.config.loader import load_config
from deployer.plan import make_plan
from deployer.targets.iot_edge import engine
from deployer.targets.iot_edge import manifest as agent_reading
from deployer.targets.iot_edge.engine import Engine, docker_create_body, host_network_body
from deployer.targets.iot_edge.manifest import (
    DOCKER_HUB_ADDRESS,
    EdgeManifest,
    EdgeModule,
    ManifestError,
    join_create_options,
    problems,
    read_manifest,
    registry_of,
)
from deployer.targets.iot_edge.render import (
    compact_json,
    create_options_fields,
    model_create_options,
    module_settings,
)
from tests.conftest import EXAMPLE

AGENT_LABELS = {"net.azure-devices.edge.owner": "Microsoft.Azure.Devices.Edge.Agent"}
EDGE_NETWORK = {"EndpointsConfig": {"azure-iot-edge": {}}}


def rendered(config_path: Path = EXAMPLE / "deploy.yaml") -> str:
    plan = make_plan(load_config(config_path), config_path, ["edge"])
    return plan.targets[0].artifacts["deployment.json"]


def manifest_with(modules: dict[str, Any], **agent: Any) -> dict[str, Any]:
    """A modulesContent with edgeHub as deployer renders it and the given custom modules."""
    hub_options = {
        "HostConfig": {
            "PortBindings": {f"{p}/tcp": [{"HostPort": str(p)}] for p in (5671, 8883, 443)}
        }
    }
    return {
        "$edgeAgent": {
            "properties.desired": {
                "schemaVersion": "1.1",
                "runtime": {"type": "docker", "settings": agent.get("runtime_settings", {})},
                "systemModules": {
                    "edgeAgent": {
                        "type": "docker",
                        "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"},
                    },
                    "edgeHub": {
                        "type": "docker",
                        "status": "running",
                        "restartPolicy": "always",
                        "settings": module_settings(
                            "mcr.microsoft.com/azureiotedge-hub:1.5", hub_options
                        ),
                    },
                },
                "modules": modules,
            }
        },
        "$edgeHub": {
            "properties.desired": {
                "schemaVersion": "1.2",
                "routes": agent.get("routes", {}),
                "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
            }
        },
    }


def module_spec(image: str = "contoso.azurecr.io/model:1", **fields: Any) -> dict[str, Any]:
    settings = fields.pop("settings", {"image": image})
    return {
        "type": "docker",
        "status": "running",
        "restartPolicy": "always",
        "settings": settings,
        **fields,
    }


def module(create_options: dict[str, Any] | None = None, **fields: Any) -> EdgeModule:
    values: dict[str, Any] = {
        "name": "modulea",
        "image": "contoso.azurecr.io/modulea:1.0",
        "status": "running",
        "restart_policy": "always",
        "env": {},
        "create_options": create_options or {},
        "startup_order": 0,
        "system": False,
    }
    values.update(fields)
    return EdgeModule(**values)


# Reading a manifest ----------------------------------------------------------------------


def test_reads_the_example_manifest_as_the_agent_does() -> None:
    manifest = read_manifest(rendered())
    assert set(manifest.modules) == {"diabetes"}
    model = manifest.modules["diabetes"]
    assert model.image.startswith("127.0.0.1:5000/diabetes:")
    assert (model.status, model.restart_policy, model.system) == ("running", "always", False)
    assert model.env == {"DEPLOYER_SERVER_PORT": "5001"}
    assert model.create_options == model_create_options(5001)
    assert model.startup_order == agent_reading.DEFAULT_STARTUP_ORDER  # none given: started last
    assert set(manifest.system_modules) == {"edgeAgent", "edgeHub"}
    assert all(m.system for m in manifest.system_modules.values())
    assert manifest.registry_credentials == {
        "127-0-0-1-5000": {
            "address": "127.0.0.1:5000",
            "username": "${REGISTRY_USERNAME}",
            "password": "${REGISTRY_PASSWORD}",
        }
    }
    assert manifest.routes == {
        "diabetesToIoTHub": "FROM /messages/modules/diabetes/outputs/* INTO $upstream"
    }
    assert "$edgeAgent" in manifest.raw


def test_reads_every_form_of_the_document(example_copy: Callable[..., Path]) -> None:
    one_device = json.loads(rendered())
    at_scale = json.loads(
        rendered(
            example_copy(
                (
                    "device_id: edge-01",
                    "deployment: {id: fleet, target_condition: \"tags.env='prod'\"}",
                )
            )
        )
    )
    assert at_scale["id"] == "fleet"
    forms = [one_device, at_scale, one_device["modulesContent"], json.dumps(one_device)]
    readings = [read_manifest(form) for form in forms]
    assert all(r.modules == readings[0].modules for r in readings)
    assert all(r.routes == readings[0].routes for r in readings)


def test_defaults_and_env_values() -> None:
    spec = module_spec(
        env={"A": {"value": "x"}, "N": {"value": 3}, "B": {"value": True}},
        startupOrder=2,
    )
    del spec["restartPolicy"], spec["status"]
    manifest = read_manifest(manifest_with({"m": spec}))
    m = manifest.modules["m"]
    assert (m.status, m.restart_policy, m.startup_order) == ("running", "on-unhealthy", 2)
    assert m.env == {"A": "x", "N": "3", "B": "true"}
    assert m.create_options == {}


def test_routes_in_the_object_form_of_edge_hub_1_1() -> None:
    routes = {"r": {"route": "FROM /messages/* INTO $upstream", "priority": 0}}
    assert read_manifest(manifest_with({}, routes=routes)).routes == {
        "r": "FROM /messages/* INTO $upstream"
    }


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"nothing": 1}, "not an IoT Edge deployment manifest"),
        ("{not json", "the deployment manifest is not valid JSON"),
        (manifest_with({"m": module_spec(settings={})}), "module m: settings.image is missing"),
        (manifest_with({"m": module_spec(status="paused")}), "module m: status is 'paused'"),
        (
            manifest_with({"m": module_spec(restartPolicy="sometimes")}),
            "module m: restartPolicy is 'sometimes'",
        ),
        (
            manifest_with({"m": module_spec(env={"A": "x"})}),
            'module m: env.A must be {"value": ...}',
        ),
    ],
)
def test_refuses_what_the_agent_refuses(document: Any, message: str) -> None:
    with pytest.raises(ManifestError, match="^" + _escaped(message)):
        read_manifest(document)


def _escaped(text: str) -> str:
    return re.escape(text)


# createOptions chunks --------------------------------------------------------------------


def test_joins_chunks_in_order() -> None:
    settings = {"image": "x", "createOptions01": "bc", "createOptions": "a", "createOptions02": "d"}
    assert join_create_options(settings) == "abcd"
    assert join_create_options({"image": "x"}) == ""


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"createOptions": "{", "createOptions02": "}"}, "out of order or with a gap"),
        ({"createOptions01": "{}"}, "missing createOptions"),
        ({"createOptions": "x" * 513}, "settings.createOptions is 513 characters"),
        (
            {"createOptions" if i == 0 else f"createOptions{i:02d}": "x" for i in range(9)},
            "createOptions come in 9 chunks; at most 8",
        ),
        ({"createOptions1": "{}"}, "settings.createOptions1: not a createOptions chunk"),
        ({"createOptions": {"HostConfig": {}}}, "settings.createOptions is an object"),
    ],
)
def test_chunk_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=_escaped(message)):
        join_create_options(settings)
    # The same error, reading a manifest, names the module.
    with pytest.raises(ManifestError, match=r"^module m: "):
        read_manifest(manifest_with({"m": module_spec(settings={"image": "i", **settings})}))


def test_createoptions_that_do_not_parse_say_which_module_and_where() -> None:
    options = compact_json({"Labels": {f"label{i:02d}": "v" * 20 for i in range(40)}})
    comma = options.index(',"label', 700)  # in the second chunk
    broken = options[:comma] + " " + options[comma + 1 :]  # a missing comma
    settings = {"image": "i", **create_options_fields(broken)}
    with pytest.raises(ManifestError) as raised:
        read_manifest(manifest_with({"model": module_spec(settings=settings)}))
    text = str(raised.value)
    assert text.startswith(
        f"module model: createOptions are not valid JSON: Expecting ',' delimiter at "
        f"character {comma + 2} (createOptions01, character {comma + 2 - 512}): ..."
    )


def test_createoptions_must_be_an_object() -> None:
    settings = {"image": "i", "createOptions": "[1]"}
    with pytest.raises(ManifestError, match="createOptions are an array"):
        read_manifest(manifest_with({"m": module_spec(settings=settings)}))


def test_long_createoptions_split_by_render_are_joined_back_exactly() -> None:
    """More than 512 characters: render.py cuts them into chunks (anywhere, even inside an
    escape sequence) and the engine joins them back byte for byte."""
    prefix = '{"Env":["NOTE='
    # Put a \\u escape of a non-ASCII character right across the first chunk boundary.
    filler = "x" * (512 - len(prefix) - 3)
    options = {
        "Env": ["NOTE=" + filler + "é" + "y" * 300, "MORE=" + "ü" * 200],
        "HostConfig": {
            "Binds": ["/etc/iotedge/storage/:/iotedge/storage/"],
            "Memory": 268435456,
        },
        "Labels": {f"label{i}": "v" * 40 for i in range(10)},
    }
    serialised = compact_json(options)
    assert serialised.startswith(prefix)
    assert serialised[509:515] == "\\u00e9"  # the boundary (512) cuts the escape
    settings = module_settings("contoso.azurecr.io/model:1", options)
    chunk_keys = [k for k in settings if k.startswith("createOptions")]
    count = -(-len(serialised) // 512)
    assert count > 2
    assert chunk_keys == ["createOptions"] + [f"createOptions{i:02d}" for i in range(1, count)]
    assert all(len(settings[k]) <= 512 for k in chunk_keys)

    assert join_create_options(settings) == serialised  # exactly, byte for byte
    assert join_create_options(settings).encode() == serialised.encode()
    manifest = read_manifest(manifest_with({"model": module_spec(settings=settings)}))
    assert manifest.modules["model"].create_options == options


# What a device would fail on -------------------------------------------------------------


def test_the_example_has_no_problems() -> None:
    assert problems(read_manifest(rendered())) == []


def test_a_module_port_clashing_with_edge_hub(example_copy: Callable[..., Path]) -> None:
    manifest = read_manifest(rendered(example_copy(("port: 5001", "port: 8883"))))
    (problem,) = problems(manifest)
    assert problem.startswith("module diabetes publishes host port 8883/tcp, which edgeHub")
    assert "choose another port" in problem


def test_two_modules_on_one_host_port() -> None:
    options = {"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}}
    udp = {"HostConfig": {"PortBindings": {"80/udp": [{"HostPort": "8080"}]}}}
    random = {"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": ""}]}}}
    modules = {
        name: module_spec(settings=module_settings("mcr.microsoft.com/x:1", o))
        for name, o in (("a", options), ("b", options), ("c", udp), ("d", random), ("e", random))
    }
    (problem,) = problems(read_manifest(manifest_with(modules)))
    assert problem.startswith("modules a and b both publish host port 8080/tcp")


def test_an_image_no_registry_credentials_match(example_copy: Callable[..., Path]) -> None:
    manifest = read_manifest(rendered(example_copy(("auth: basic", "auth: none"))))
    (problem,) = problems(manifest)
    assert problem.startswith("module diabetes: the device could not pull 127.0.0.1:5000/diabetes:")
    assert "the manifest has no registryCredentials, none for 127.0.0.1:5000" in problem
    assert "set registry.auth (basic or acr)" in problem
    assert problems(manifest, anonymous_registries=["127.0.0.1:5000"]) == []


def test_registry_matching_is_the_agents() -> None:
    creds = {
        "acr": {"address": "Contoso.AzureCR.io", "username": "u", "password": "p"},
        "hub": {"address": "docker.io", "username": "u", "password": "p"},
    }
    modules = {
        "private": module_spec("contoso.azurecr.io/model:1"),  # matches, ignoring case
        "mcr": module_spec("mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5"),
        "library": module_spec("python:3.11-slim"),  # Docker Hub library image: anonymous
        "org": module_spec("contoso/model:1"),  # Docker Hub: the agent looks for its v1 URL
        "other": module_spec("ghcr.io/contoso/model:1"),
    }
    found = problems(
        read_manifest(manifest_with(modules, runtime_settings={"registryCredentials": creds}))
    )
    assert [p.split(":")[0] for p in found] == ["module org", "module other"]
    assert f"none for {DOCKER_HUB_ADDRESS}" in found[0]
    assert "registryCredentials are for Contoso.AzureCR.io, docker.io" in found[0]
    assert registry_of("localhost:5000/m:1") == "localhost:5000"
    assert registry_of("localhost/m:1") == DOCKER_HUB_ADDRESS  # as TryParseDomainFromImage
    assert registry_of("m:1") is None


def test_routes_naming_modules_that_do_not_exist(example_copy: Callable[..., Path]) -> None:
    routes = (
        "module_name: diabetes,",
        "module_name: diabetes, routes: {"
        'up: "FROM /messages/modules/diabetes/outputs/* INTO $upstream", '
        'typo: "FROM /messages/modules/Diabetes/outputs/* INTO $upstream", '
        "feed: 'FROM /messages/modules/diabetes/outputs/out INTO "
        'BrokeredEndpoint("/modules/filter/inputs/in")\'},',
    )
    manifest = read_manifest(rendered(example_copy(routes)))
    found = problems(manifest)
    assert found == [
        "route feed sends to module filter, which the manifest does not have (edgeHub would "
        "route nothing there): the modules are diabetes; fix targets.<name>.routes in "
        "deploy.yaml",
        "route typo reads from module Diabetes, which the manifest does not have (edgeHub "
        "would route nothing there): module names are case-sensitive: did you mean diabetes?; "
        "fix targets.<name>.routes in deploy.yaml",
    ]


# The create body: golden cases -----------------------------------------------------------
#
# The createOptions are the examples of Microsoft's "How to configure container create
# options for IoT Edge modules"
# (https://learn.microsoft.com/azure/iot-edge/how-to-use-create-options) and "Give modules
# access to a device's local storage"
# (https://learn.microsoft.com/azure/iot-edge/how-to-access-host-storage-from-module), as
# the docs print them stringified for the deployment manifest. The expected bodies are what
# aziot-edged's create (edgelet/edgelet-docker/src/runtime.rs in Azure/iotedge) sends to
# Docker: createOptions as given, plus Image, the merged Env and the agent's labels, plus
# the device network the agent adds (CombinedEdgeletConfigProvider).

IMAGE = "contoso.azurecr.io/modulea:1.0"
LABELS = {**AGENT_LABELS, "net.azure-devices.edge.original-image": IMAGE}

GOLDEN = [
    pytest.param(
        # "Format create options": what every edgeHub module gets.
        '{"HostConfig":{"PortBindings":{"5671/tcp":[{"HostPort":"5671"}],'
        '"8883/tcp":[{"HostPort":"8883"}],"443/tcp":[{"HostPort":"443"}]}}}',
        {},
        {
            "HostConfig": {
                "PortBindings": {
                    "5671/tcp": [{"HostPort": "5671"}],
                    "8883/tcp": [{"HostPort": "8883"}],
                    "443/tcp": [{"HostPort": "443"}],
                }
            },
            "Image": IMAGE,
            "Env": [],
            "Labels": LABELS,
            "NetworkingConfig": EDGE_NETWORK,
        },
        id="edgehub-port-bindings",
    ),
    pytest.param(
        # "Map host port to module port": port 8080 of the module on port 80 of the device.
        '{"HostConfig":{"PortBindings":{"8080/tcp":[{"HostPort":"80"}]}}}',
        {},
        {
            "HostConfig": {"PortBindings": {"8080/tcp": [{"HostPort": "80"}]}},
            "Image": IMAGE,
            "Env": [],
            "Labels": LABELS,
            "NetworkingConfig": EDGE_NETWORK,
        },
        id="map-host-port",
    ),
    pytest.param(
        # "Restrict module memory and CPU usage", in the template.json form.
        '{"HostConfig":{"Memory":268435456,"MemorySwap":536870912,"NanoCpus":250000000}}',
        {},
        {
            "HostConfig": {"Memory": 268435456, "MemorySwap": 536870912, "NanoCpus": 250000000},
            "Image": IMAGE,
            "Env": [],
            "Labels": LABELS,
            "NetworkingConfig": EDGE_NETWORK,
        },
        id="memory-and-cpu",
    ),
    pytest.param(
        # The same section's stringified example, verbatim (the page gives CpuPeriod there,
        # not NanoCpus: both are Docker create options, passed through as they are).
        '{"HostConfig":{"Memory":268435456,"MemorySwap":536870912,"CpuPeriod":25000}}',
        {},
        {
            "HostConfig": {"Memory": 268435456, "MemorySwap": 536870912, "CpuPeriod": 25000},
            "Image": IMAGE,
            "Env": [],
            "Labels": LABELS,
            "NetworkingConfig": EDGE_NETWORK,
        },
        id="memory-and-cpu-stringified",
    ),
    pytest.param(
        # "GPU-optimize an IoT Edge module".
        '{"HostConfig": {"DeviceRequests": [{"Count": -1,"Capabilities": [["gpu"]]}]}}',
        {},
        {
            "HostConfig": {"DeviceRequests": [{"Count": -1, "Capabilities": [["gpu"]]}]},
            "Image": IMAGE,
            "Env": [],
            "Labels": LABELS,
            "NetworkingConfig": EDGE_NETWORK,
        },
        id="gpu",
    ),
    pytest.param(
        # Local storage: a bind mount, and the env variable pointing the module at it.
        '{"HostConfig":{"Binds":["/etc/iotedge/storage/:/iotedge/storage/"]}}',
        {"storageFolder": {"value": "/iotedge/storage/"}},
        {
            "HostConfig": {"Binds": ["/etc/iotedge/storage/:/iotedge/storage/"]},
            "Image": IMAGE,
            "Env": ["storageFolder=/iotedge/storage/"],
            "Labels": LABELS,
            "NetworkingConfig": EDGE_NETWORK,
        },
        id="host-storage-bind",
    ),
    pytest.param(
        # Env from both, merged by name and sorted; createOptions' own value wins (aziot-edged
        # extends the module's env with createOptions' Env); createOptions' labels are kept,
        # the agent's are its own; a network createOptions name is kept.
        '{"Env":["B=from-create-options","A=1"],"Labels":{"app":"m",'
        '"net.azure-devices.edge.owner":"someone"},'
        '"NetworkingConfig":{"EndpointsConfig":{"host":{}}},'
        '"HostConfig":{"LogConfig":{"Type":"json-file","Config":{"max-size":"10m"}}}}',
        {"B": {"value": "from-env"}, "C": {"value": 3}},
        {
            "Env": ["A=1", "B=from-create-options", "C=3"],
            "Labels": {"app": "m", **LABELS},
            "NetworkingConfig": {"EndpointsConfig": {"host": {}}},
            "HostConfig": {"LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}}},
            "Image": IMAGE,
        },
        id="env-labels-network",
    ),
]


@pytest.mark.parametrize(("create_options", "env", "expected"), GOLDEN)
def test_create_body_golden(create_options: str, env: dict[str, Any], expected: Any) -> None:
    spec = module_spec(IMAGE, settings={"image": IMAGE, "createOptions": create_options}, env=env)
    manifest = read_manifest(manifest_with({"modulea": spec}))
    assert docker_create_body(manifest.modules["modulea"], labels={}) == expected


def test_create_body_of_the_example_model_module() -> None:
    model = read_manifest(rendered()).modules["diabetes"]
    body = docker_create_body(model, labels={"ai.deployer.simulate.session": "s1"})
    assert body == {
        "ExposedPorts": {"5001/tcp": {}},
        "HostConfig": {"PortBindings": {"5001/tcp": [{"HostPort": "5001"}]}},
        "Image": model.image,
        "Env": ["DEPLOYER_SERVER_PORT=5001"],
        "Labels": {
            "ai.deployer.simulate.session": "s1",
            **AGENT_LABELS,
            "net.azure-devices.edge.original-image": model.image,
        },
        "NetworkingConfig": EDGE_NETWORK,
    }


def test_host_network_body_keeps_port_bindings_as_a_record() -> None:
    body = docker_create_body(module(model_create_options(5001)), labels={})
    adapted = host_network_body(body)
    assert "NetworkingConfig" not in adapted
    assert adapted["HostConfig"] == {
        "PortBindings": {"5001/tcp": [{"HostPort": "5001"}]},
        "NetworkMode": "host",
    }
    assert body["NetworkingConfig"] == EDGE_NETWORK  # the device's body is left as it was


# The agent's restart policy, against a fake engine ---------------------------------------


class FakeContainer:
    def __init__(self, engine: FakeDocker, cid: str, name: str, body: dict[str, Any]) -> None:
        self.engine, self.id, self.name, self.body = engine, cid, name, body
        self.labels: dict[str, str] = dict(body.get("Labels") or {})
        self.state: dict[str, Any] = {
            "Status": "created",
            "ExitCode": 0,
            "StartedAt": "0001-01-01T00:00:00Z",
            "FinishedAt": "0001-01-01T00:00:00Z",
        }
        self.starts = 0

    @property
    def attrs(self) -> dict[str, Any]:
        return {"State": dict(self.state)}

    @property
    def status(self) -> str:
        return str(self.state["Status"])

    def start(self) -> None:
        self.starts += 1
        self.state.update(Status="running", StartedAt=_stamp(self.engine.now))

    def exit(self, code: int) -> None:
        self.state.update(Status="exited", ExitCode=code, FinishedAt=_stamp(self.engine.now))

    def remove(self, force: bool = False) -> None:
        self.engine.containers_by_id.pop(self.id, None)

    def logs(self, **kwargs: Any) -> bytes:
        return b"line 1\nline 2\n"


class FakeDocker:
    """The few Engine API calls the engine makes, with a clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)
        self.containers_by_id: dict[str, FakeContainer] = {}
        self.created = 0
        self.pulls: list[tuple[str, str, Any]] = []
        self.pull_error: str | None = None
        self.api = self
        self.containers = self

    # client.api
    def pull(self, repository: str, tag: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.pulls.append((repository, tag, kwargs.get("auth_config")))
        if self.pull_error:
            yield {"error": self.pull_error}
        yield {"status": "Downloaded"}

    def create_container_from_config(self, body: dict[str, Any], name: str) -> dict[str, str]:
        self.created += 1
        cid = f"c{self.created}"
        self.containers_by_id[cid] = FakeContainer(self, cid, name, body)
        return {"Id": cid}

    def start(self, cid: str) -> None:
        self.containers_by_id[cid].start()

    # client.containers
    def get(self, key: str) -> FakeContainer:
        import docker.errors

        for container in self.containers_by_id.values():
            if key in (container.id, container.name):
                return container
        raise docker.errors.NotFound(f"no container {key}")

    def list(self, all: bool, filters: dict[str, str]) -> list[FakeContainer]:
        key, _, value = filters["label"].partition("=")
        return [c for c in self.containers_by_id.values() if c.labels.get(key) == value]


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def one_module_manifest(**fields: Any) -> EdgeManifest:
    creds = {"acr": {"address": "contoso.azurecr.io", "username": "u", "password": "p"}}
    return read_manifest(
        manifest_with(
            {"model": module_spec(**fields)}, runtime_settings={"registryCredentials": creds}
        )
    )


@pytest.fixture
def fake() -> FakeDocker:
    return FakeDocker()


def make_engine(fake: FakeDocker) -> Engine:
    return Engine(fake, session="s1", clock=lambda: fake.now)


def test_pulls_with_the_matching_credentials_and_starts(fake: FakeDocker) -> None:
    statuses = make_engine(fake).apply(one_module_manifest())
    assert fake.pulls == [("contoso.azurecr.io/model", "1", {"username": "u", "password": "p"})]
    (container,) = fake.containers_by_id.values()
    assert container.name == "model"
    assert container.body["HostConfig"]["NetworkMode"] == "host"
    assert "NetworkingConfig" not in container.body
    assert container.labels["ai.deployer.simulate.session"] == "s1"
    assert statuses["model"].runtime_status == "running"
    assert statuses["model"].exit_code is None


def test_a_pull_failure_is_the_modules_state(fake: FakeDocker) -> None:
    fake.pull_error = "unauthorized: authentication required"
    status = make_engine(fake).apply(one_module_manifest())["model"]
    assert status.runtime_status == "failed"
    assert status.status_description == (
        "could not pull contoso.azurecr.io/model:1: unauthorized: authentication required"
    )
    assert fake.containers_by_id == {}


def test_a_crash_backs_off_then_restarts_then_fails(fake: FakeDocker) -> None:
    eng = make_engine(fake)
    eng.apply(one_module_manifest())
    (container,) = fake.containers_by_id.values()
    cool_offs = []
    for restart in range(engine.MAX_RESTART_COUNT):
        container.exit(3)
        status = eng.status()["model"]
        assert (status.runtime_status, status.exit_code) == ("backoff", 3)
        assert status.restart_count == restart
        cool_off = eng.cool_off_s(restart)
        cool_offs.append(cool_off)
        assert f"cool-off of {cool_off:g} s" in status.status_description
        fake.now += timedelta(seconds=cool_off - 1)
        assert eng.status()["model"].runtime_status == "backoff"  # not yet
        fake.now += timedelta(seconds=2)
        assert eng.status()["model"].runtime_status == "running"  # restarted
    assert cool_offs == [10, 20, 40, 80, 160]
    container.exit(3)
    status = eng.status()["model"]
    assert (status.runtime_status, status.restart_count) == ("failed", 5)
    assert "restarted 5 times, the most the agent does" in status.status_description
    fake.now += timedelta(hours=1)
    assert eng.status()["model"].runtime_status == "failed"
    assert container.starts == 6


@pytest.mark.parametrize(
    ("policy", "code", "expected"),
    [
        ("never", 1, "failed"),
        ("never", 0, "stopped"),
        ("on-failure", 0, "stopped"),
        ("on-failure", 2, "backoff"),
        ("on-unhealthy", 2, "backoff"),
        ("always", 0, "backoff"),
    ],
)
def test_restart_policies(fake: FakeDocker, policy: str, code: int, expected: str) -> None:
    eng = make_engine(fake)
    eng.apply(one_module_manifest(restartPolicy=policy))
    (container,) = fake.containers_by_id.values()
    container.exit(code)
    status = eng.status()["model"]
    assert (status.runtime_status, status.exit_code) == (expected, code)


def test_a_stopped_module_is_created_not_started(fake: FakeDocker) -> None:
    status = make_engine(fake).apply(one_module_manifest(status="stopped"))["model"]
    assert status.runtime_status == "stopped"
    (container,) = fake.containers_by_id.values()
    assert container.starts == 0


def test_apply_replaces_changed_modules_and_removes_dropped_ones(fake: FakeDocker) -> None:
    eng = make_engine(fake)
    eng.apply(one_module_manifest())
    first = set(fake.containers_by_id)
    eng.apply(one_module_manifest())  # the same: left as it is
    assert set(fake.containers_by_id) == first
    eng.apply(one_module_manifest(env={"X": {"value": "1"}}))  # changed: replaced in place
    assert set(fake.containers_by_id).isdisjoint(first)
    (container,) = fake.containers_by_id.values()
    assert "X=1" in container.body["Env"]
    empty = read_manifest(manifest_with({}))
    assert eng.apply(empty) == {}
    assert fake.containers_by_id == {}


def test_remove_all_removes_only_its_session(fake: FakeDocker) -> None:
    other = Engine(fake, session="s2", name_prefix="other-", clock=lambda: fake.now)
    other.apply(one_module_manifest())
    eng = make_engine(fake)
    eng.apply(one_module_manifest())
    assert eng.remove_all() == ["model"]
    assert [c.name for c in fake.containers_by_id.values()] == ["other-model"]


def test_someone_elses_container_is_left_alone(fake: FakeDocker) -> None:
    fake.create_container_from_config({"Labels": {}}, name="model")
    status = make_engine(fake).apply(one_module_manifest())["model"]
    assert status.runtime_status == "failed"
    assert "a container named model already exists" in status.status_description
    assert len(fake.containers_by_id) == 1


def test_a_second_engine_of_the_session_adopts_what_is_running(fake: FakeDocker) -> None:
    make_engine(fake).apply(one_module_manifest())
    first = set(fake.containers_by_id)
    statuses = make_engine(fake).apply(one_module_manifest())  # a new engine, same session
    assert set(fake.containers_by_id) == first
    assert statuses["model"].runtime_status == "running"
    make_engine(fake).apply(one_module_manifest(restartPolicy="never"))  # a policy change
    assert set(fake.containers_by_id).isdisjoint(first)


def test_modules_dropped_after_a_pull_failure_are_forgotten(fake: FakeDocker) -> None:
    eng = make_engine(fake)
    fake.pull_error = "manifest unknown"
    assert eng.apply(one_module_manifest())["model"].runtime_status == "failed"
    assert eng.apply(read_manifest(manifest_with({}))) == {}
    fake.pull_error = None
    assert eng.apply(one_module_manifest())["model"].runtime_status == "running"
