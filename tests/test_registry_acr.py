"""``registry.auth: acr``: the token exchange (az acr login's way) and the admin user, against
the ACR and Entra doubles over TLS, reached only as a user reaches Azure: the registry address
in deploy.yaml, a custom cloud (DEPLOYER_AZURE_CLOUD), REQUESTS_CA_BUNDLE and AZURE_CLIENT_*.
The push through the Docker engine is tests/docker/test_push_acr.py."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from deployer.azure import acr as product
from deployer.config.model import Registry
from deployer.errors import DeployerError, UserError
from deployer.registry_auth import credentials_for
from deployer.secrets import Secrets
from tests.doubles.acr import NULL_USER, AcrWorld, contract_problems, start_world
from tests.doubles.azure.tls import HttpsServer, JsonHandler, make_certificates

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"


# ---------------------------------------------------------------------------------------------
# an ARM double for registries/listCredentials only (the shared ARM double has no registries
# yet): checks the bearer token with the Entra double, as Resource Manager would
# ---------------------------------------------------------------------------------------------


@dataclass
class ArmRegistries:
    entra: Any = None
    audience: str = ""
    # registry name -> (resource group, admin password or None when the admin user is off)
    registries: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)


LIST_CREDENTIALS = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.ContainerRegistry/registries/(?P<name>[^/]+)/listCredentials$",
    re.IGNORECASE,
)


class ArmHandler(JsonHandler):
    def do_POST(self) -> None:
        arm: ArmRegistries = self.server.app  # type: ignore[attr-defined]
        self.read_body()
        parts = urllib.parse.urlsplit(self.path)
        arm.calls.append(parts.path)
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        issued = arm.entra.token(token) if scheme == "Bearer" else None
        if issued is None or issued.expires_on < time.time() or issued.audience != arm.audience:
            self.answer(401, {"error": {"code": "InvalidAuthenticationToken", "message": "bad"}})
            return
        found = LIST_CREDENTIALS.match(parts.path)
        if found is None or "api-version" not in urllib.parse.parse_qs(parts.query):
            self.answer(400, {"error": {"code": "InvalidRequest", "message": self.path}})
            return
        group, password = arm.registries.get(found["name"], ("", None))
        if found["sub"] != SUBSCRIPTION or group.lower() != found["rg"].lower():
            message = f"The Resource '{found['name']}' under resource group was not found."
            self.answer(404, {"error": {"code": "ResourceNotFound", "message": message}})
            return
        if password is None:
            resource = parts.path.removesuffix("/listCredentials")
            message = (
                f"Cannot perform credential operations for {resource} as admin user is "
                "disabled. Kindly enable admin user as per docs: https://docs.microsoft.com/"
                "en-us/azure/container-registry/container-registry-authentication#admin-account"
            )
            code = "UnAuthorizedForCredentialOperations"
            self.answer(400, {"error": {"code": code, "message": message}})
            return
        body = {
            "username": found["name"],
            "passwords": [
                {"name": "password", "value": password},
                {"name": "password2", "value": password[::-1]},
            ],
        }
        self.answer(200, body)


@dataclass
class World:
    doubles: AcrWorld
    arm: ArmRegistries
    monkeypatch: pytest.MonkeyPatch

    @property
    def host(self) -> str:
        return str(self.doubles.acr.host)

    def registry(self, **settings: Any) -> Registry:
        return Registry.model_validate({"address": self.host, "auth": "acr", **settings})


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AcrWorld, ArmRegistries]]:
    directory = tmp_path_factory.mktemp("acr")
    arm = ArmRegistries()
    certs = make_certificates(directory / "certs")
    arm_server = HttpsServer(ArmHandler, certs, arm).start()
    # The local registry is not needed here: nothing is pushed (no /v2/ request is proxied).
    doubles = start_world(directory, "127.0.0.1:9", ("user", "password"), arm_server.url, certs)
    arm.entra, arm.audience = doubles.entra, doubles.acr.arm_audience
    yield doubles, arm
    doubles.stop()
    arm_server.stop()


@pytest.fixture
def world(servers: tuple[AcrWorld, ArmRegistries], monkeypatch: pytest.MonkeyPatch) -> World:
    doubles, arm = servers
    for name in ("AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in doubles.env.items():
        monkeypatch.setenv(name, value)
    doubles.acr.roles = {doubles.principal.object_id: "AcrPush"}
    doubles.acr.exchanges.clear()
    return World(doubles, arm, monkeypatch)


# ---------------------------------------------------------------------------------------------
# the token exchange
# ---------------------------------------------------------------------------------------------


def test_exchange_sends_what_az_acr_login_sends_and_masks_the_token(world: World) -> None:
    secrets = Secrets()
    credentials = credentials_for(world.registry(), secrets=secrets)
    assert credentials is not None
    assert credentials.username == NULL_USER == product.NULL_USER
    assert credentials.password in world.doubles.acr.refresh_tokens
    # The refresh token and the Entra token it was exchanged for: both masked from now on.
    assert credentials.password in secrets.values
    assert len(secrets.values) == 2
    assert secrets.masker().text(f"pw={credentials.password}") == "pw=***"
    assert credentials.password not in repr(credentials)
    (form,) = world.doubles.acr.exchanges
    assert form == {
        "grant_type": "access_token",
        "service": world.host,
        # The Entra double's tokens are opaque: the tenant comes from AZURE_TENANT_ID.
        "tenant": world.doubles.entra.tenant_id,
        "access_token": "<elided>",
    }
    # The Entra token was asked for Resource Manager's scope of the custom cloud.
    assert world.doubles.entra.scopes_asked[-1] == world.doubles.acr.arm_audience + "/.default"


def test_exchange_takes_the_tenant_from_the_token_when_it_is_a_jwt() -> None:
    claims = {"tid": "t-1", "appid": "app-1", "oid": "o-1"}
    payload = json.dumps(claims).encode()
    import base64

    token = "e30." + base64.urlsafe_b64encode(payload).decode().rstrip("=") + ".sig"
    assert product.token_claims(token) == claims
    assert product.describe_identity(claims) == "the identity (client id app-1)"
    assert product.token_claims("opaque") == {}


def test_identity_without_a_role_is_told_to_get_acrpush(world: World) -> None:
    world.doubles.acr.roles = {}
    with pytest.raises(UserError) as caught:
        credentials_for(world.registry(name="mylabregistry"))
    message = str(caught.value)
    assert f"registry mylabregistry ({world.host}) refused the Entra ID token" in message
    assert "401 from https://" in message and "UNAUTHORIZED" in message
    assert "AcrPush role" in message
    assert "az role assignment create --assignee <its object or client id> --role AcrPush " in (
        message
    )
    assert "$(az acr show --name mylabregistry --query id --output tsv)" in message
    assert world.doubles.principal.secret not in message


def test_no_credential_names_the_ways_to_sign_in(world: World) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    class Nobody:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise ClientAuthenticationError(
                "DefaultAzureCredential failed to retrieve a token from the included "
                "credentials.\nAttempted credentials:\n\tEnvironmentCredential: unavailable"
            )

    with pytest.raises(UserError) as caught:
        credentials_for(world.registry(), token_credential=Nobody())
    message = str(caught.value)
    assert "no usable Azure credential to log in to registry" in message
    for way in ("'az login'", "azure/login", "AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLI"):
        assert way in message
    assert "EnvironmentCredential: unavailable" in message


def test_a_wrong_client_secret_is_entra_s_own_words(world: World) -> None:
    world.monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-the-secret")
    with pytest.raises(UserError) as caught:
        credentials_for(world.registry())
    message = str(caught.value)
    assert "no usable Azure credential" in message and "AADSTS7000215" in message
    assert "not-the-secret" not in message


def test_unreachable_registry(world: World) -> None:
    registry = Registry(address="127.0.0.1:9", auth="acr")  # nothing listens on port 9
    with pytest.raises(DeployerError) as caught:
        credentials_for(registry)
    assert not isinstance(caught.value, UserError)
    assert "registry 127.0.0.1:9 is unreachable (https://127.0.0.1:9/v2/:" in str(caught.value)
    assert "is the address right" in str(caught.value)


def test_untrusted_certificate_names_requests_ca_bundle(world: World) -> None:
    import certifi

    world.monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    with pytest.raises(DeployerError) as caught:
        credentials_for(world.registry())
    message = str(caught.value)
    assert f"registry {world.host} is unreachable over HTTPS: its certificate is not trusted" in (
        message
    )
    assert "point REQUESTS_CA_BUNDLE at a bundle that holds it" in message


class BasicRegistry(JsonHandler):
    def do_GET(self) -> None:
        self.answer(401, None, {"WWW-Authenticate": 'Basic realm="registry"'})


def test_a_registry_that_is_not_acr(world: World, tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    server = HttpsServer(BasicRegistry, certs, None).start()
    world.monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certs.ca_bundle))
    try:
        address = server.url.removeprefix("https://")
        with pytest.raises(UserError) as caught:
            credentials_for(Registry(address=address, auth="acr"))
    finally:
        server.stop()
    assert "does not ask for Azure Container Registry tokens" in str(caught.value)
    assert "answered 401 with WWW-Authenticate: Basic realm" in str(caught.value)
    assert "use 'basic'" in str(caught.value)


def test_the_cloud_comes_from_deploy_yaml_setting_first(world: World, tmp_path: Path) -> None:
    # azure_cloud in deploy.yaml (relative to its folder) wins over DEPLOYER_AZURE_CLOUD.
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(UserError, match=r"other.json: endpoints.resourceManager is missing"):
        credentials_for(world.registry(), azure_cloud="other.json", base_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# the ACR double keeps to the data-plane contract
# ---------------------------------------------------------------------------------------------


def test_double_checks_the_exchange_form_against_the_contract(world: World) -> None:
    url = f"https://{world.host}/oauth2/exchange"
    verify = str(world.doubles.env["REQUESTS_CA_BUNDLE"])
    answer = requests.post(
        url, data={"grant_type": "password", "service": world.host, "extra": "x"}, verify=verify
    )
    assert answer.status_code == 400
    errors = answer.json()["errors"][0]["message"]
    assert "unknown parameter 'extra'" in errors
    assert "grant_type 'password' is not one of" in errors
    assert contract_problems("POST", "/oauth2/token", {"service": ["x"]}) == [
        "required parameter 'scope' is missing",
        "required parameter 'refresh_token' is missing",
        "required parameter 'grant_type' is missing",
    ]


def test_double_challenges_like_acr_and_grants_only_the_role_s_actions(world: World) -> None:
    verify = str(world.doubles.env["REQUESTS_CA_BUNDLE"])
    challenge = requests.get(f"https://{world.host}/v2/", verify=verify)
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"] == (
        f'Bearer realm="https://{world.host}/oauth2/token",service="{world.host}"'
    )
    world.doubles.acr.roles = {world.doubles.principal.object_id: "AcrPull"}
    credentials = credentials_for(world.registry())
    assert credentials is not None
    answer = requests.post(
        f"https://{world.host}/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "service": world.host,
            "scope": "repository:team/model:pull,push",
            "refresh_token": credentials.password,
        },
        verify=verify,
    )
    assert answer.status_code == 200
    grant = world.doubles.acr.access_tokens[answer.json()["access_token"]]
    assert grant.scopes == {"team/model": frozenset({"pull"})}


# ---------------------------------------------------------------------------------------------
# the admin user
# ---------------------------------------------------------------------------------------------


def admin_registry(world: World, name: str = "mylabregistry") -> Registry:
    return world.registry(
        admin_user=True, subscription_id=SUBSCRIPTION, resource_group="ml-rg", name=name
    )


def test_admin_user_from_list_credentials(world: World) -> None:
    world.arm.registries["mylabregistry"] = ("ml-rg", "admin-password-0123456789")
    secrets = Secrets()
    credentials = credentials_for(admin_registry(world), secrets=secrets)
    assert credentials is not None
    assert (credentials.username, credentials.password) == (
        "mylabregistry",
        "admin-password-0123456789",
    )
    assert secrets.values == ["admin-password-0123456789"]
    assert world.arm.calls[-1] == (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/ml-rg/providers/"
        "Microsoft.ContainerRegistry/registries/mylabregistry/listCredentials"
    )
    assert world.doubles.acr.exchanges == []  # no token exchange


def test_admin_user_disabled_says_how_to_enable_it(world: World) -> None:
    world.arm.registries["mylabregistry"] = ("ml-rg", None)
    with pytest.raises(UserError) as caught:
        credentials_for(admin_registry(world))
    message = str(caught.value)
    assert "the admin user of registry mylabregistry in resource group ml-rg is disabled" in (
        message
    )
    assert "'az acr update --name mylabregistry --admin-enabled true'" in message
    assert "remove registry.admin_user from deploy.yaml" in message


def test_admin_user_of_a_registry_not_found(world: World) -> None:
    with pytest.raises(UserError) as caught:
        credentials_for(admin_registry(world, name="nosuchregistry"))
    assert "registry nosuchregistry in resource group ml-rg (subscription" in str(caught.value)
    assert "was not found" in str(caught.value)
