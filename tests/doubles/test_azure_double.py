"""The Azure doubles driven by the real SDKs (azure-identity, azure-mgmt-containerinstance,
azure-mgmt-containerregistry), every connection on loopback (tests/conftest.py's guard):
tokens, ARM's checks and errors, the contract, and (with Docker) container groups whose
containers really run and answer on their scoring URI."""

from __future__ import annotations

import json
import ssl
import string
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpRequest
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.mgmt.containerinstance.models import ContainerGroup
from azure.mgmt.containerregistry import ContainerRegistryManagementClient

from tests.docker.conftest import client, dev_env
from tests.doubles.azure import AzureDouble, azure_double
from tests.doubles.example_build import build_and_render

__all__ = ["azure_double", "client", "dev_env"]  # fixtures used here

RG = "ml-rg"
API = "api-version=2023-05-01"
GROUPS_PATH = "/providers/Microsoft.ContainerInstance/containerGroups"


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureDouble]:
    """A double for the tests that start no container (no Docker engine needed)."""
    with AzureDouble(tmp_path_factory.mktemp("azure")) as double:
        yield double


def use(double: AzureDouble, monkeypatch: pytest.MonkeyPatch) -> ContainerInstanceManagementClient:
    """The SDKs trust the doubles' CA as they trust a proxy's: REQUESTS_CA_BUNDLE."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(double.ca_bundle))
    return aci_client(double)


def credential(double: AzureDouble) -> ClientSecretCredential:
    return ClientSecretCredential(
        double.tenant_id,
        double.client_id,
        double.client_secret,
        authority=double.authority,
        disable_instance_discovery=True,
    )


def aci_client(double: AzureDouble) -> ContainerInstanceManagementClient:
    return ContainerInstanceManagementClient(
        credential(double),
        double.subscription_id,
        base_url=double.arm,
        credential_scopes=[double.arm_scope],
    )


def raw(client: Any, method: str, path: str, body: Any = None) -> Any:
    """A request through the SDK's own pipeline (token, TLS, retries) with a body the SDK's
    models would not let through."""
    request = (
        HttpRequest(method, path, json=body) if body is not None else HttpRequest(method, path)
    )
    return client._client.send_request(request)


def group_path(double: AzureDouble, name: str) -> str:
    return f"/subscriptions/{double.subscription_id}/resourceGroups/{RG}{GROUPS_PATH}/{name}"


def group_url(double: AzureDouble, name: str, query: str = API) -> str:
    return double.arm + group_path(double, name).lstrip("/") + (f"?{query}" if query else "")


# Entra ----------------------------------------------------------------------------------
def test_a_client_secret_credential_gets_a_token(
    azure: AzureDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azure.ca_bundle))
    token = credential(azure).get_token(azure.arm_scope)
    assert azure.entra.token(token.token) is not None
    assert token.expires_on > time.time() + 3000
    assert azure.scopes_asked[-1] == azure.arm_scope


def test_default_azure_credential_from_the_environment_stays_on_loopback(
    azure: AzureDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As deployer builds it (deployer/azure/cloud.py), from AZURE_CLIENT_* alone: the
    loopback guard fails any connection elsewhere (instance discovery, IMDS)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azure.ca_bundle))
    monkeypatch.setenv("AZURE_CLIENT_ID", azure.client_id)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", azure.client_secret)
    monkeypatch.setenv("AZURE_TENANT_ID", azure.tenant_id)
    monkeypatch.delenv("AZURE_TOKEN_CREDENTIALS", raising=False)
    found = DefaultAzureCredential(authority=azure.authority, disable_instance_discovery=True)
    token = found.get_token(azure.arm_scope)
    assert azure.entra.token(token.token).client_id == azure.client_id  # type: ignore[union-attr]


def test_a_wrong_secret_is_refused_as_entra_refuses_it(
    azure: AzureDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azure.ca_bundle))
    wrong = ClientSecretCredential(
        azure.tenant_id,
        azure.client_id,
        "not-the-secret",
        authority=azure.authority,
        disable_instance_discovery=True,
    )
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        wrong.get_token(azure.arm_scope)


def test_the_cloud_file_and_env_reach_the_doubles(azure: AzureDouble, tmp_path: Path) -> None:
    from deployer.azure.cloud import resolve_cloud

    env = azure.env()
    cloud = resolve_cloud(None, tmp_path, env)
    assert cloud.resource_manager == azure.arm
    assert cloud.authority == azure.authority + "/"
    assert cloud.arm_scope == azure.arm_scope
    assert Path(env["REQUESTS_CA_BUNDLE"]).read_text().startswith("-----BEGIN CERTIFICATE")


# ARM's checks -----------------------------------------------------------------------------
def test_arm_refuses_a_request_without_a_token(azure: AzureDouble) -> None:
    context = ssl.create_default_context(cafile=str(azure.ca_bundle))
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(group_url(azure, "nothing"), context=context, timeout=10)
    assert raised.value.code == 401
    assert json.loads(raised.value.read())["error"]["code"] == "AuthenticationFailed"


def test_not_found_in_arm_words(azure: AzureDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    aci = use(azure, monkeypatch)
    with pytest.raises(ResourceNotFoundError) as raised:
        aci.container_groups.get(RG, "absent")
    assert raised.value.error.code == "ResourceNotFound"  # type: ignore[union-attr]
    assert "'Microsoft.ContainerInstance/containerGroups/absent' under resource group" in str(
        raised.value
    )
    with pytest.raises(ResourceNotFoundError, match="ResourceGroupNotFound"):
        aci.container_groups.get("no-such-rg", "absent")


def test_an_unknown_property_is_rejected_by_the_contract(
    azure: AzureDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    aci = use(azure, monkeypatch)
    body = minimal_group("127.0.0.1:5000/none:1")
    body["properties"]["imageRegistryCredential"] = []  # a typo of imageRegistryCredentials
    response = raw(aci, "PUT", group_url(azure, "typo"), body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "InvalidRequestContent"
    assert "Could not find member 'imageRegistryCredential'" in error["message"]
    response = raw(aci, "GET", group_url(azure, "typo", query=""))
    assert response.json()["error"]["code"] == "MissingApiVersionParameter"


def test_throttling_is_retried_after_retry_after(
    azure: AzureDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    aci = use(azure, monkeypatch)
    rule = azure.throttle("GET", "/containerGroups/throttled", times=2, retry_after=1)
    started = time.monotonic()
    with pytest.raises(ResourceNotFoundError):
        aci.container_groups.get(RG, "throttled")
    assert rule.matched.is_set()
    assert time.monotonic() - started >= 2  # azure-core slept as Retry-After said, twice
    served = azure.requests("GET", "/containerGroups/throttled")
    assert [r.status for r in served] == [429, 429, 404]
    assert len({r.client_request_id for r in served}) == 1  # one call of the SDK, retried


def test_a_revoked_role_is_403_naming_action_and_scope(
    azure: AzureDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    aci = use(azure, monkeypatch)
    azure.revoke("containerGroups/read")
    try:
        with pytest.raises(HttpResponseError) as raised:
            aci.container_groups.get(RG, "denied")
    finally:
        azure.restore_access()
    message = str(raised.value)
    assert raised.value.status_code == 403
    assert "AuthorizationFailed" in message
    assert "'Microsoft.ContainerInstance/containerGroups/read'" in message
    assert f"over scope '{group_path(azure, 'denied')}'" in message


def test_an_unregistered_provider_and_aci_refusals(
    azure: AzureDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    aci = use(azure, monkeypatch)
    azure.unregister_provider("Microsoft.ContainerInstance")
    try:
        with pytest.raises(HttpResponseError, match="MissingSubscriptionRegistration") as raised:
            aci.container_groups.get(RG, "any")
        assert raised.value.status_code == 409
    finally:
        azure.register_provider("Microsoft.ContainerInstance")
    azure.take_dns_label("taken-label")
    body = minimal_group("127.0.0.1:5000/none:1", dns_name_label="taken-label")
    response = raw(aci, "PUT", group_url(azure, "dns"), body)
    assert response.json()["error"]["code"] == "DnsNameLabelAlreadyTaken"
    azure.set_core_quota(0.5)
    try:
        response = raw(aci, "PUT", group_url(azure, "big"), minimal_group("x"))
    finally:
        azure.set_core_quota(None)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ContainerGroupQuotaReached"


def test_registry_management(azure: AzureDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azure.ca_bundle))
    azure.add_registry("open", "127.0.0.1:5000", "admin", "pw1", password2="pw2")
    azure.add_registry("closed", "127.0.0.1:5000", "admin", "pw1", admin_enabled=False)
    acr = ContainerRegistryManagementClient(
        credential(azure),
        azure.subscription_id,
        base_url=azure.arm,
        credential_scopes=[azure.arm_scope],
    )
    registry = acr.registries.get(RG, "open")
    assert registry.login_server == "127.0.0.1:5000" and registry.admin_user_enabled
    listed = acr.registries.list_credentials(RG, "open")
    assert listed.username == "admin"
    assert [p.value for p in listed.passwords] == ["pw1", "pw2"]
    with pytest.raises(HttpResponseError, match="UnAuthorizedForCredentialOperations"):
        acr.registries.list_credentials(RG, "closed")


# Container groups, their containers run on Docker -------------------------------------------
@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory, dev_env: dict[str, str]) -> dict[str, Any]:
    """The example's scoring image in the test registry and its rendered container group
    (``deployer render -t staging``), placeholders filled as the deploy step fills them."""
    root = tmp_path_factory.mktemp("example") / "repo"
    service, out = build_and_render(root, "staging", dev_env, "az")
    text = (out / "container-group.json").read_text()
    values = {
        "SCORING_KEY": SCORING_KEY,
        "REGISTRY_USERNAME": dev_env["REGISTRY_USERNAME"],
        "REGISTRY_PASSWORD": dev_env["REGISTRY_PASSWORD"],
    }
    template = string.Template(text)
    unknown = set(template.get_identifiers()) - set(values)
    assert not unknown, f"container-group.json has placeholders this test does not fill: {unknown}"
    filled = template.substitute(values)
    body = json.loads(filled)
    body["properties"]["ipAddress"]["dnsNameLabel"] = service  # one of its own
    return body


@pytest.fixture
def aci(
    azure_double: AzureDouble, monkeypatch: pytest.MonkeyPatch
) -> ContainerInstanceManagementClient:
    return use(azure_double, monkeypatch)


SCORING_KEY = "key-" + uuid.uuid4().hex


def create(aci: ContainerInstanceManagementClient, name: str, body: dict[str, Any]) -> Any:
    """The rendered JSON through the SDK's model, as a driver sends it."""
    return begin_create(aci, name, body).result()


def begin_create(aci: ContainerInstanceManagementClient, name: str, body: dict[str, Any]) -> Any:
    group = ContainerGroup.deserialize(body)
    return aci.container_groups.begin_create_or_update(RG, name, group)


def scoring_uri(group: Any) -> str:
    """The aci driver's rule: http://{fqdn or ip}:{ipAddress.ports[0].port}/score."""
    address = group.ip_address
    return f"http://{address.fqdn or address.ip}:{address.ports[0].port}/score"


def wait_ready(uri: str, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            with urllib.request.urlopen(uri.replace("/score", "/ready"), timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{uri} never became ready"
        time.sleep(0.3)


def score(uri: str) -> Any:
    request = urllib.request.Request(
        uri,
        data=json.dumps({"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {SCORING_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.mark.docker
def test_the_rendered_example_serves_on_its_scoring_uri(
    aci: ContainerInstanceManagementClient, azure_double: AzureDouble, example: dict[str, Any]
) -> None:
    name = "example-" + uuid.uuid4().hex[:6]
    created = create(aci, name, example)
    assert created.provisioning_state == "Succeeded"
    assert azure_double.requests("PUT", name)[0].status == 201
    uri = scoring_uri(created)
    assert uri.startswith("http://localhost:")
    wait_ready(uri)
    assert score(uri) == pytest.approx([4640.521], abs=1e-3)

    got = aci.container_groups.get(RG, name)
    (container,) = got.containers
    assert container.instance_view.current_state.state == "Running"
    assert [e.name for e in container.instance_view.events][:2] == ["Pulling", "Pulled"]
    secret = next(v for v in container.environment_variables if v.name == "DEPLOYER_SCORING_KEY")
    assert secret.secure_value is None and secret.value is None  # never returned
    assert "ready" in aci.containers.list_logs(RG, name, container.name, tail=20).content

    # An update replaces the container (ACI restarts the group), on the same port
    before = azure_double.groups()
    changed = json.loads(json.dumps(example))
    changed["properties"]["containers"][0]["properties"]["environmentVariables"].append(
        {"name": "VERSION", "value": "2"}
    )
    updated = create(aci, name, changed)
    assert azure_double.requests("PUT", name)[-1].status == 200
    assert scoring_uri(updated) == uri
    after = {g["name"]: g for g in azure_double.groups()}[name]
    assert after["docker_ids"] != next(g for g in before if g["name"] == name)["docker_ids"]
    wait_ready(uri)
    tagged = aci.container_groups.update(RG, name, {"tags": {"stage": "blue"}})
    assert tagged.tags == {"stage": "blue"}

    aci.container_groups.begin_delete(RG, name).result()
    with pytest.raises(ResourceNotFoundError):
        aci.container_groups.get(RG, name)
    assert name not in [g["name"] for g in azure_double.groups()]


@pytest.mark.docker
def test_a_wrong_registry_password_is_refused_as_aci_refuses_it(
    aci: ContainerInstanceManagementClient, example: dict[str, Any]
) -> None:
    wrong = json.loads(json.dumps(example))
    wrong["properties"]["imageRegistryCredentials"][0]["password"] = "not-the-password"
    with pytest.raises(HttpResponseError) as raised:
        create(aci, "wrong-password", wrong)
    assert raised.value.status_code == 400
    assert raised.value.error.code == "InaccessibleImage"  # type: ignore[union-attr]
    assert "is not accessible. Please check the image and registry credential." in str(raised.value)
    with pytest.raises(ResourceNotFoundError):
        aci.container_groups.get(RG, "wrong-password")


@pytest.mark.docker
def test_pulls_with_a_managed_identity_need_acr_pull(
    aci: ContainerInstanceManagementClient,
    azure_double: AzureDouble,
    example: dict[str, Any],
    dev_env: dict[str, str],
) -> None:
    identity = (
        f"/subscriptions/{azure_double.subscription_id}/resourceGroups/{RG}/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/puller"
    )
    body = json.loads(json.dumps(example))
    body["properties"]["imageRegistryCredentials"] = [
        {"server": "127.0.0.1:5000", "identity": identity}
    ]
    body["properties"]["ipAddress"].pop("dnsNameLabel")
    with pytest.raises(HttpResponseError, match="InvalidImageRegistryIdentity"):
        create(aci, "by-identity", body)
    body["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {identity: {}}}
    with pytest.raises(HttpResponseError, match="InaccessibleImage"):
        create(aci, "by-identity", body)
    azure_double.add_registry(
        "testregistry", "127.0.0.1:5000", dev_env["REGISTRY_USERNAME"], dev_env["REGISTRY_PASSWORD"]
    )
    azure_double.grant_acr_pull(identity, "127.0.0.1:5000")
    assert create(aci, "by-identity", body).provisioning_state == "Succeeded"
    aci.container_groups.begin_delete(RG, "by-identity").result()


@pytest.mark.docker
def test_a_crashing_container_is_restarted_and_counted(
    aci: ContainerInstanceManagementClient, azure_double: AzureDouble, example: dict[str, Any]
) -> None:
    body = json.loads(json.dumps(example))
    body["properties"]["ipAddress"].pop("dnsNameLabel")
    azure_double.crash_loop("crashing")
    create(aci, "crashing", body)
    deadline = time.monotonic() + 60
    while True:
        view = aci.container_groups.get(RG, "crashing").containers[0].instance_view
        if view.restart_count >= 1:
            break
        assert time.monotonic() < deadline, "the crashing container was never restarted"
        time.sleep(0.5)
    assert "BackOff" in [e.name for e in view.events]
    container = body["properties"]["containers"][0]["name"]
    logs = aci.containers.list_logs(RG, "crashing", container).content
    assert "crashing on purpose" in logs
    aci.container_groups.begin_delete(RG, "crashing").result()


@pytest.mark.docker
def test_a_stalled_group_stays_pending_and_a_held_call_waits(
    aci: ContainerInstanceManagementClient, azure_double: AzureDouble, example: dict[str, Any]
) -> None:
    body = json.loads(json.dumps(example))
    body["properties"]["ipAddress"].pop("dnsNameLabel")
    stall = azure_double.stall("stalled")
    poller = begin_create(aci, "stalled", body)
    assert stall.matched.wait(30)
    time.sleep(1.5)
    assert not poller.done()
    assert aci.container_groups.get(RG, "stalled").provisioning_state == "Pending"
    hold = azure_double.hold("DELETE", "/containerGroups/stalled")
    deleting = threading.Thread(
        target=lambda: aci.container_groups.begin_delete(RG, "stalled").result()
    )
    stall.released.set()
    assert poller.result().provisioning_state == "Succeeded"
    deleting.start()
    assert hold.matched.wait(30)
    assert aci.container_groups.get(RG, "stalled")  # still there while the call is held
    hold.released.set()
    deleting.join(60)
    with pytest.raises(ResourceNotFoundError):
        aci.container_groups.get(RG, "stalled")


def minimal_group(image: str, dns_name_label: str = "") -> dict[str, Any]:
    address: dict[str, Any] = {"type": "Public", "ports": [{"port": 5001, "protocol": "TCP"}]}
    if dns_name_label:
        address["dnsNameLabel"] = dns_name_label
    container = {
        "name": "main",
        "properties": {
            "image": image,
            "ports": [{"port": 5001}],
            "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.5}},
        },
    }
    return {
        "location": "westeurope",
        "properties": {"osType": "Linux", "containers": [container], "ipAddress": address},
    }
