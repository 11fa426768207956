"""The iot_edge target: its deployment manifest, checked against the official IoT Edge schemas.

The schemas (from SchemaStore, in shared/reference/iot-edge/) describe ``modulesContent``:
the deployment schema 2.0 as a whole, the edgeAgent 1.1 and edgeHub 1.2 schemas for each
system module's desired properties, and the deployment template 4.0, which ties the two
versions together through references between the files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from deployer.config.loader import load_config
from deployer.plan import make_plan
from deployer.targets.iot_edge import render as iot_edge
from deployer.targets.iot_edge.render import compact_json, create_options_fields
from tests.conftest import EXAMPLE, reference_dir

Manifest = dict[str, Any]
AT_SCALE = (
    "device_id: edge-01",
    "deployment: {id: diabetes-fleet, target_condition: \"tags.environment='prod'\", priority: 20}",
)
SCHEMA_FILES = {
    "deployment": "azure-iot-edge-deployment-2.0.json",
    "edge_agent": "azure-iot-edgeagent-deployment-1.1.json",
    "edge_hub": "azure-iot-edgehub-deployment-1.2.json",
    "template": "azure-iot-edge-deployment-template-4.0.json",
}


@pytest.fixture(scope="module")
def validators() -> dict[str, Draft4Validator]:
    folder = reference_dir() / "iot-edge"
    schemas = {key: json.loads((folder / name).read_text()) for key, name in SCHEMA_FILES.items()}
    # The template's "$ref"s name the other files relative to its draft-04 "id": resolve them
    # from the files themselves, never from the network.
    registry: Registry[Any] = Registry().with_resources(
        (schema["id"], Resource.from_contents(schema, default_specification=DRAFT4))
        for schema in schemas.values()
    )
    for schema in schemas.values():
        Draft4Validator.check_schema(schema)
    return {key: Draft4Validator(schema, registry=registry) for key, schema in schemas.items()}


def render_text(config_path: Path) -> str:
    plan = make_plan(load_config(config_path), config_path, ["edge"])
    return plan.targets[0].artifacts["deployment.json"]


def render(config_path: Path) -> Manifest:
    manifest: Manifest = json.loads(render_text(config_path))
    return manifest


def assert_valid(modules_content: Manifest, validators: dict[str, Draft4Validator]) -> None:
    validators["deployment"].validate({"modulesContent": modules_content})
    validators["template"].validate({"modulesContent": modules_content})
    validators["edge_agent"].validate({"$edgeAgent": modules_content["$edgeAgent"]})
    validators["edge_hub"].validate({"$edgeHub": modules_content["$edgeHub"]})
    # The schemas only declare createOptions' media type, which draft 4 does not check.
    for settings in all_settings(modules_content):
        json.loads(joined_create_options(settings) or "{}")


def desired(modules_content: Manifest, twin: str) -> Manifest:
    properties: Manifest = modules_content[twin]["properties.desired"]
    return properties


def all_settings(modules_content: Manifest) -> list[Manifest]:
    agent = desired(modules_content, "$edgeAgent")
    modules = [*agent["systemModules"].values(), *agent["modules"].values()]
    return [module["settings"] for module in modules]


def model_module(modules_content: Manifest) -> Manifest:
    module: Manifest = desired(modules_content, "$edgeAgent")["modules"]["diabetes"]
    return module


def joined_create_options(settings: Manifest) -> str:
    """What the edgeAgent parses: createOptions, createOptions01, ... concatenated in order."""
    keys = sorted(key for key in settings if key.startswith("createOptions"))
    return "".join(settings[key] for key in keys)


@pytest.fixture
def example_manifest() -> Manifest:
    return render(EXAMPLE / "deploy.yaml")


@pytest.fixture
def at_scale_config(example_copy: Callable[..., Path]) -> Path:
    config: Path = example_copy(AT_SCALE)
    return config


# The two forms of the manifest


def test_device_manifest_is_set_modules_content_and_valid(
    example_manifest: Manifest, validators: dict[str, Draft4Validator]
) -> None:
    assert list(example_manifest) == ["modulesContent"]
    assert_valid(example_manifest["modulesContent"], validators)


def test_at_scale_manifest_is_a_hub_configuration(
    at_scale_config: Path, validators: dict[str, Draft4Validator]
) -> None:
    manifest = render(at_scale_config)
    assert list(manifest) == ["id", "labels", "targetCondition", "priority", "content"]
    assert manifest["id"] == "diabetes-fleet"
    assert manifest["targetCondition"] == "tags.environment='prod'"
    assert manifest["priority"] == 20
    inputs = make_plan(load_config(at_scale_config), at_scale_config, ["edge"]).inputs
    assert manifest["labels"] == {
        "service": "diabetes",
        "target": "edge",
        "model": "diabetes-ridge",
        "model-version": inputs.model_version,
    }
    assert list(manifest["content"]) == ["modulesContent"]
    assert_valid(manifest["content"]["modulesContent"], validators)


def test_both_forms_deploy_the_same_modules(at_scale_config: Path) -> None:
    manifest = render(at_scale_config)
    example = render(EXAMPLE / "deploy.yaml")
    # Same model files, so the same image; only the placement differs.
    assert manifest["content"]["modulesContent"] == example["modulesContent"]


def test_schemas_are_strict_enough_to_catch_a_mistake(
    example_manifest: Manifest, validators: dict[str, Draft4Validator]
) -> None:
    settings = model_module(example_manifest["modulesContent"])["settings"]
    settings["createOption"] = "{}"  # a typo: the agent would ignore it silently
    assert not validators["deployment"].is_valid(example_manifest)


# The modules


def test_model_module_runs_the_image_on_the_target_port(
    example_copy: Callable[..., Path],
) -> None:
    config = example_copy(("port: 5001}", "port: 6000}"))
    image = str(make_plan(load_config(config), config, ["edge"]).targets[0].image)
    module = model_module(render(config)["modulesContent"])
    assert module["settings"]["image"] == image
    assert (module["type"], module["status"], module["restartPolicy"]) == (
        "docker",
        "running",
        "always",
    )
    assert module["env"] == {"DEPLOYER_SERVER_PORT": {"value": "6000"}}
    assert json.loads(module["settings"]["createOptions"]) == {
        "ExposedPorts": {"6000/tcp": {}},
        "HostConfig": {"PortBindings": {"6000/tcp": [{"HostPort": "6000"}]}},
    }


def test_system_modules_are_the_1_5_runtime(example_manifest: Manifest) -> None:
    agent = desired(example_manifest["modulesContent"], "$edgeAgent")
    assert agent["schemaVersion"] == "1.1"
    system = agent["systemModules"]
    assert system["edgeAgent"]["settings"] == {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}
    hub = system["edgeHub"]
    assert hub["settings"]["image"] == "mcr.microsoft.com/azureiotedge-hub:1.5"
    bindings = json.loads(hub["settings"]["createOptions"])["HostConfig"]["PortBindings"]
    assert bindings == {
        f"{port}/tcp": [{"HostPort": str(port)}] for port in ("5671", "8883", "443")
    }


# Routes


def test_default_route_sends_the_module_outputs_upstream(example_manifest: Manifest) -> None:
    hub = desired(example_manifest["modulesContent"], "$edgeHub")
    assert hub["schemaVersion"] == "1.2"
    assert hub["routes"] == {
        "diabetesToIoTHub": "FROM /messages/modules/diabetes/outputs/* INTO $upstream"
    }
    assert hub["storeAndForwardConfiguration"] == {"timeToLiveSecs": 7200}


def test_configured_routes_replace_the_default_sorted_by_name(
    example_copy: Callable[..., Path], validators: dict[str, Draft4Validator]
) -> None:
    routes = (
        'routes: {toCloud: "FROM /messages/modules/diabetes/outputs/scores INTO $upstream", '
        'alerts: "FROM /messages/modules/diabetes/outputs/alerts INTO '
        'BrokeredEndpoint(\\"/modules/alerter/inputs/in\\")"}, port: 5001}'
    )
    modules_content = render(example_copy(("port: 5001}", routes)))["modulesContent"]
    assert desired(modules_content, "$edgeHub")["routes"] == {
        "alerts": "FROM /messages/modules/diabetes/outputs/alerts INTO "
        'BrokeredEndpoint("/modules/alerter/inputs/in")',
        "toCloud": "FROM /messages/modules/diabetes/outputs/scores INTO $upstream",
    }
    assert_valid(modules_content, validators)


# Registry credentials


def runtime_settings(manifest: Manifest) -> Manifest:
    settings: Manifest = desired(manifest["modulesContent"], "$edgeAgent")["runtime"]["settings"]
    return settings


def test_public_registry_gets_no_credentials(example_copy: Callable[..., Path]) -> None:
    manifest = render(example_copy(("auth: basic", "auth: none")))
    assert runtime_settings(manifest) == {}


def test_registry_credentials_are_placeholders_never_the_secret(
    example_copy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = 'pa$$-Wörd-"quoted"-that-must-not-leak'
    monkeypatch.setenv("REGISTRY_USERNAME", "edge-puller")
    monkeypatch.setenv("REGISTRY_PASSWORD", secret)
    text = render_text(example_copy())
    assert secret not in text
    assert json.dumps(secret)[1:-1] not in text  # not even JSON-escaped
    assert "edge-puller" not in text
    assert runtime_settings(json.loads(text)) == {
        "registryCredentials": {
            "127-0-0-1-5000": {
                "username": "${REGISTRY_USERNAME}",
                "password": "${REGISTRY_PASSWORD}",
                "address": "127.0.0.1:5000",
            }
        }
    }


def test_credentials_name_and_address_follow_the_registry(
    example_copy: Callable[..., Path], validators: dict[str, Draft4Validator]
) -> None:
    config = example_copy(
        ("address: 127.0.0.1:5000", "address: myacr.azurecr.io/ml"),
        ("auth: basic", "auth: acr"),
        ("username_env: REGISTRY_USERNAME", "username_env: ACR_CLIENT_ID"),
    )
    manifest = render(config)
    assert runtime_settings(manifest)["registryCredentials"] == {
        "myacr-azurecr-io": {
            "username": "${ACR_CLIENT_ID}",
            "password": "${REGISTRY_PASSWORD}",
            # Docker logs in to the host; the namespace belongs to the image name.
            "address": "myacr.azurecr.io",
        }
    }
    assert model_module(manifest["modulesContent"])["settings"]["image"].startswith(
        "myacr.azurecr.io/ml/diabetes:"
    )
    assert_valid(manifest["modulesContent"], validators)


def test_credentials_name_can_be_set(example_copy: Callable[..., Path]) -> None:
    config = example_copy(("port: 5001}", "port: 5001, registry_credentials_name: lab-registry}"))
    assert list(runtime_settings(render(config))["registryCredentials"]) == ["lab-registry"]


# The file itself


def test_rendering_is_deterministic(at_scale_config: Path) -> None:
    assert render_text(EXAMPLE / "deploy.yaml") == render_text(EXAMPLE / "deploy.yaml")
    assert render_text(at_scale_config) == render_text(at_scale_config)


@pytest.mark.parametrize("form", ["device", "at scale"])
def test_manifest_is_laid_out_as_two_space_json(form: str, at_scale_config: Path) -> None:
    text = render_text(EXAMPLE / "deploy.yaml" if form == "device" else at_scale_config)
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


# createOptions chunks


@pytest.mark.parametrize(
    ("length", "fields"),
    [
        (0, []),
        (1, ["createOptions"]),
        (511, ["createOptions"]),
        (512, ["createOptions"]),
        (513, ["createOptions", "createOptions01"]),
        (1024, ["createOptions", "createOptions01"]),
        (1025, ["createOptions", "createOptions01", "createOptions02"]),
        (4096, ["createOptions", *(f"createOptions0{n}" for n in range(1, 8))]),
    ],
)
def test_create_options_split_at_512_characters(length: int, fields: list[str]) -> None:
    text = "".join(chr(ord("a") + n % 26) for n in range(length))
    chunks = create_options_fields(text)
    assert list(chunks) == fields
    assert all(len(chunk) <= 512 for chunk in chunks.values())
    assert all(len(chunk) == 512 for chunk in list(chunks.values())[:-1])
    assert "".join(chunks.values()) == text


def test_create_options_beyond_eight_chunks_are_refused() -> None:
    with pytest.raises(ValueError, match="4097 characters; at most 4096 fit"):
        create_options_fields("x" * 4097)


def test_chunks_of_any_text_join_back_unchanged() -> None:
    text = 'é"\\ü€😀' * 200  # 1200 code points, cut inside runs of escapes and emoji
    assert "".join(create_options_fields(text).values()) == text


def test_unicode_and_quotes_stay_within_512_bytes_per_chunk() -> None:
    options = {"Labels": {f"label-{n}": 'a "quoted" Wert: Größe ≥ 5 😀 \\ end' for n in range(40)}}
    serialised = compact_json(options)
    assert serialised.isascii()  # so 512 characters are 512 bytes, as the twin counts
    chunks = create_options_fields(serialised)
    assert len(chunks) > 2
    assert all(len(chunk.encode()) <= 512 for chunk in chunks.values())
    assert json.loads("".join(chunks.values())) == options


def test_long_create_options_reach_the_manifest_in_chunks(
    monkeypatch: pytest.MonkeyPatch, validators: dict[str, Draft4Validator]
) -> None:
    # No deploy.yaml field makes createOptions long, so the module's options are padded with
    # Docker labels to check the chunks end to end, through the template and the schemas.
    real = iot_edge.model_create_options

    def long_options(port: int) -> dict[str, Any]:
        labels = {f"deployer.test-{n:02d}": 'Größe "x" 😀' * 3 for n in range(8)}
        return {**real(port), "Labels": labels}

    monkeypatch.setattr(iot_edge, "model_create_options", long_options)
    modules_content = render(EXAMPLE / "deploy.yaml")["modulesContent"]
    settings = model_module(modules_content)["settings"]
    assert [key for key in settings if key.startswith("createOptions")] == [
        "createOptions",
        "createOptions01",
        "createOptions02",
    ]
    assert json.loads(joined_create_options(settings)) == long_options(5001)
    assert_valid(modules_content, validators)
