"""The aci target's container group: what Azure's SDK reads from it, and what it means."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.containerinstance import models as aci

from deployer.config.loader import load_config
from deployer.errors import ConfigError, UserError
from deployer.plan import make_plan
from tests.conftest import EXAMPLE

TARGET = "staging"
ARTIFACT = "container-group.json"
SECRETS = {
    "REGISTRY_USERNAME": "ci-robot-user",
    "REGISTRY_PASSWORD": "s3cret-Passw0rd",
    "DEPLOYER_SCORING_KEY": "k3y-from-the-environment",
    "SCORING_KEY": "scoring-k3y-from-a-CI-secret",
}


def _artifacts(config_path: Path) -> dict[str, str]:
    plan = make_plan(load_config(config_path), config_path, [TARGET])
    return plan.targets[0].artifacts


def _body(config_path: Path) -> dict[str, Any]:
    artifacts = _artifacts(config_path)
    assert sorted(artifacts) == [ARTIFACT]
    body = json.loads(artifacts[ARTIFACT])
    assert isinstance(body, dict)
    return body


def _group(body: dict[str, Any]) -> aci.ContainerGroup:
    """The body as the SDK reads it; serialising it back must give the body unchanged,
    which holds only if every key is one of the model's fields (unknown keys are dropped)."""
    group = aci.ContainerGroup.deserialize(body)
    assert group.serialize() == body
    return group


# The SDK types every field as optional; these fail the test when one is missing.


def _container(group: aci.ContainerGroup) -> aci.Container:
    (container,) = group.containers
    assert isinstance(container, aci.Container)
    return container


def _env(group: aci.ContainerGroup) -> dict[str, aci.EnvironmentVariable]:
    variables = _container(group).environment_variables
    assert variables is not None
    return {variable.name: variable for variable in variables}


def _ports(ports: list[aci.ContainerPort] | list[aci.Port] | None) -> list[int]:
    assert ports is not None
    return [port.port for port in ports]


def _http_get(probe: aci.ContainerProbe | None) -> aci.ContainerHttpGet:
    assert probe is not None
    assert isinstance(probe.http_get, aci.ContainerHttpGet)
    return probe.http_get


def _address(group: aci.ContainerGroup) -> aci.IpAddress:
    assert isinstance(group.ip_address, aci.IpAddress)
    return group.ip_address


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    return _body(EXAMPLE / "deploy.yaml")


def test_example_is_a_container_group_with_the_expected_settings(
    example: dict[str, Any],
) -> None:
    group = _group(example)
    plan = make_plan(load_config(EXAMPLE / "deploy.yaml"), EXAMPLE / "deploy.yaml", [TARGET])
    assert group.location == "westeurope"
    assert group.os_type == aci.OperatingSystemTypes.LINUX
    assert group.restart_policy == aci.ContainerGroupRestartPolicy.ALWAYS
    assert group.tags == {
        "ai.deployer.service": "diabetes",
        "ai.deployer.target": "staging",
        "ai.deployer.model.name": "diabetes-ridge",
        "ai.deployer.model.version": plan.inputs.model_version,
    }
    container = _container(group)
    assert container.name == "diabetes"
    assert container.image == str(plan.targets[0].image)
    assert container.resources.requests.cpu == 1.0
    assert container.resources.requests.memory_in_gb == 1.5
    assert _ports(container.ports) == [5001]
    env = _env(group)
    assert env["DEPLOYER_SERVER_HOST"].value == "0.0.0.0"
    assert env["DEPLOYER_SERVER_PORT"].value == "5001"


def test_probes_ask_the_servers_health_endpoints_on_its_port(
    example_copy: Callable[..., Path],
) -> None:
    config = example_copy(("auth: key}", "auth: key, port: 8000}"))
    group = _group(_body(config))
    container = _container(group)
    readiness, liveness = _http_get(container.readiness_probe), _http_get(container.liveness_probe)
    assert readiness.path == "/ready"
    assert liveness.path == "/"
    for http_get in (readiness, liveness):
        assert http_get.port == 8000
        assert http_get.scheme == aci.Scheme.HTTP
    assert _ports(container.ports) == [8000]
    assert _ports(_address(group).ports) == [8000]
    assert _env(group)["DEPLOYER_SERVER_PORT"].value == "8000"


def test_liveness_does_not_depend_on_the_scoring_timeout(
    example_copy: Callable[..., Path],
) -> None:
    """The server answers GET / while run() is busy, so a long scoring timeout needs no
    longer liveness budget."""
    config = example_copy(("scoring_timeout_ms: 60000", "scoring_timeout_ms: 300000"))
    probe = _container(_group(_body(config))).liveness_probe
    assert probe is not None
    assert probe.period_seconds == 10
    assert probe.failure_threshold == 3


def test_dns_name_label_names_the_public_address(example: dict[str, Any]) -> None:
    address = _address(_group(example))
    assert address.type == aci.ContainerGroupIpAddressType.PUBLIC
    assert address.dns_name_label == "diabetes-staging"


def test_without_a_dns_name_label_the_address_is_public_and_unnamed(
    example_copy: Callable[..., Path],
) -> None:
    config = example_copy(("dns_name_label: diabetes-staging, ", ""))
    address = _address(_group(_body(config)))
    assert address.type == aci.ContainerGroupIpAddressType.PUBLIC
    assert address.dns_name_label is None
    assert _ports(address.ports) == [5001]


def test_auth_key_passes_the_key_as_a_secure_placeholder(example: dict[str, Any]) -> None:
    """The server reads DEPLOYER_SCORING_KEY; its value is key_env's variable (by default
    SCORING_KEY), filled in by the deploy step."""
    env = _env(_group(example))
    key = env["DEPLOYER_SCORING_KEY"]
    assert key.secure_value == "${SCORING_KEY}"
    assert key.value is None
    assert "DEPLOYER_SCORING_KEY_SECONDARY" not in env


def test_key_env_and_secondary_key_env_name_the_placeholders(
    example_copy: Callable[..., Path],
) -> None:
    config = example_copy(
        ("auth: key}", "auth: key, key_env: STAGING_KEY, secondary_key_env: STAGING_KEY_NEXT}")
    )
    env = _env(_group(_body(config)))
    assert env["DEPLOYER_SCORING_KEY"].secure_value == "${STAGING_KEY}"
    assert env["DEPLOYER_SCORING_KEY_SECONDARY"].secure_value == "${STAGING_KEY_NEXT}"
    for name in ("DEPLOYER_SCORING_KEY", "DEPLOYER_SCORING_KEY_SECONDARY"):
        assert env[name].value is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            "auth: none, key_env: STAGING_KEY}",
            r"targets\.staging\.key_env: key_env is given but auth is 'none'",
        ),
        (
            "auth: key, key_env: K, secondary_key_env: K}",
            r"targets\.staging\.secondary_key_env: secondary_key_env names the same variable",
        ),
        ("auth: key, key_env: my-key}", r"targets\.staging\.key_env: 'my-key' is not a valid"),
    ],
)
def test_key_settings_are_checked(
    settings: str, message: str, example_copy: Callable[..., Path]
) -> None:
    config = example_copy(("auth: key}", settings))
    with pytest.raises(ConfigError, match=message):
        load_config(config)


def test_auth_none_has_no_key(example_copy: Callable[..., Path]) -> None:
    config = example_copy(("auth: key}", "auth: none}"))
    env = _env(_group(_body(config)))
    assert "DEPLOYER_SCORING_KEY" not in env
    assert "DEPLOYER_SCORING_KEY_SECONDARY" not in env


def test_registry_basic_auth_logs_in_to_the_registry_host_with_placeholders(
    example_copy: Callable[..., Path],
) -> None:
    config = example_copy(
        ("address: 127.0.0.1:5000", "address: myregistry.azurecr.io/ml"),
        ("username_env: REGISTRY_USERNAME", "username_env: ACR_USER"),
        ("password_env: REGISTRY_PASSWORD", "password_env: ACR_TOKEN"),
    )
    group = _group(_body(config))
    assert group.image_registry_credentials is not None
    (credential,) = group.image_registry_credentials
    assert credential.server == "myregistry.azurecr.io"
    assert credential.username == "${ACR_USER}"
    assert credential.password == "${ACR_TOKEN}"
    assert _container(group).image.startswith("myregistry.azurecr.io/ml/diabetes:")


def test_registry_without_auth_has_no_credentials(example_copy: Callable[..., Path]) -> None:
    config = example_copy(("auth: basic", "auth: none"))
    body = _body(config)
    assert "imageRegistryCredentials" not in body["properties"]
    assert _group(body).image_registry_credentials is None


IDENTITY = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/acr-pull"
)


def test_a_managed_identity_pulls_with_no_secret(example_copy: Callable[..., Path]) -> None:
    config = example_copy(("auth: key}", f"auth: key, pull: {{identity: {IDENTITY}}}}}"))
    body = _body(config)
    group = _group(body)
    assert group.image_registry_credentials is not None
    (login,) = group.image_registry_credentials
    assert (login.server, login.identity, login.password) == ("127.0.0.1:5000", IDENTITY, None)
    assert group.identity is not None and group.identity.type == "UserAssigned"
    assert list(group.identity.user_assigned_identities or {}) == [IDENTITY]
    assert "${" not in json.dumps(body["properties"]["imageRegistryCredentials"])


def test_a_pull_token_comes_from_its_own_variables(example_copy: Callable[..., Path]) -> None:
    config = example_copy(
        ("auth: key}", "auth: key, pull: {username_env: PULL_USER, password_env: PULL_TOKEN}}")
    )
    (login,) = _group(_body(config)).image_registry_credentials or []
    assert (login.username, login.password) == ("${PULL_USER}", "${PULL_TOKEN}")


def test_an_acr_registry_needs_a_pull_setting(example_copy: Callable[..., Path]) -> None:
    config = example_copy(("auth: basic", "auth: acr"))
    with pytest.raises(UserError, match=r"set targets\.staging\.pull"):
        _body(config)


@pytest.mark.parametrize(
    ("pull", "message"),
    [
        ("{}", "set identity, or username_env and password_env"),
        ("{username_env: U}", "password_env is needed too"),
        (f"{{identity: {IDENTITY}, username_env: U, password_env: P}}", "not both"),
        ("{identity: acr-pull}", "user-assigned managed identity id"),
    ],
)
def test_pull_settings_are_checked(
    example_copy: Callable[..., Path], pull: str, message: str
) -> None:
    config = example_copy(("auth: key}", f"auth: key, pull: {pull}}}"))
    with pytest.raises(ConfigError, match=message):
        load_config(config)


@pytest.mark.parametrize(("registry_auth", "scoring_auth"), [("none", "none"), ("basic", "key")])
def test_no_secret_value_is_rendered(
    registry_auth: str,
    scoring_auth: str,
    example_copy: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    config = example_copy(
        ("auth: basic", f"auth: {registry_auth}"), ("auth: key}", f"auth: {scoring_auth}}}")
    )
    for text in _artifacts(config).values():
        for value in SECRETS.values():
            assert value not in text


def test_rendering_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    first = _artifacts(EXAMPLE / "deploy.yaml")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    assert _artifacts(EXAMPLE / "deploy.yaml") == first
