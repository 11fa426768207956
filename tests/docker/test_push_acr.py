"""``deployer build --push`` of the example to an Azure Container Registry (``auth: acr``):
the ACR double over TLS in front of the local registry, the Entra double, and the Docker
engine doing ACR's token flow itself with the refresh token deployer exchanged for.

deployer reaches the doubles only as a user reaches Azure: the registry address in
deploy.yaml, DEPLOYER_AZURE_CLOUD (a custom cloud's JSON), REQUESTS_CA_BUNDLE and
AZURE_CLIENT_*. The engine treats 127.0.0.0/8 registries as insecure: it speaks HTTPS to the
double without checking its certificate (the test CA is not in the host's store).

The tests run in file order on one model repo (a scenario), as tests/docker/test_deploy_local.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deployer.cli import main
from tests.conftest import EXAMPLE
from tests.docker.conftest import registry_tags
from tests.doubles.acr import AcrWorld, start_world
from tests.doubles.azure.tls import HttpsServer, make_certificates
from tests.test_registry_acr import SUBSCRIPTION, ArmHandler, ArmRegistries

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex


@dataclass
class Scenario:
    world: AcrWorld
    arm: ArmRegistries
    config: Path
    name: str
    upstream: str
    upstream_auth: tuple[str, str]

    def build(self, *args: str) -> int:
        return main(["build", "-c", str(self.config), "-t", "local", *args])

    def registry(self, **settings: object) -> None:
        """Rewrite deploy.yaml's registry section."""
        text = self.config.read_text()
        start = text.index("registry:\n")
        end = text.index("tests:\n")
        lines = "".join(f"  {key}: {value}\n" for key, value in settings.items())
        self.config.write_text(text[:start] + "registry:\n" + lines + text[end:])

    def tags(self) -> list[str]:
        return registry_tags(self.upstream, self.name, *self.upstream_auth)

    def secret_values(self) -> list[str]:
        acr = self.world.acr
        return [
            *acr.refresh_tokens,
            *acr.access_tokens,
            *self.world.entra.issued,
            self.world.principal.secret,
            ADMIN_PASSWORD,
        ]


@pytest.fixture(scope="module")
def scenario(
    tmp_path_factory: pytest.TempPathFactory, dev_env: dict[str, str], client: Any
) -> Iterator[Scenario]:
    directory = tmp_path_factory.mktemp("acr-push")
    upstream = dev_env["DEPLOYER_TEST_REGISTRY"]
    upstream_auth = (dev_env["REGISTRY_USERNAME"], dev_env["REGISTRY_PASSWORD"])
    certs = make_certificates(directory / "certs")
    arm = ArmRegistries()
    arm_server = HttpsServer(ArmHandler, certs, arm).start()
    world = start_world(directory, upstream, upstream_auth, arm_server.url, certs)
    arm.entra, arm.audience = world.entra, world.acr.arm_audience
    root = directory / "repo"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", "tests", "out"))
    name = f"acr-{uuid.uuid4().hex[:8]}"
    config = root / "deploy.yaml"
    config.write_text(config.read_text().replace("name: diabetes\n", f"name: {name}\n", 1))
    saved = {k: os.environ.get(k) for k in [*dev_env, *world.env]}
    os.environ.update({**dev_env, **world.env})
    yield Scenario(world, arm, config, name, upstream, upstream_auth)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    world.stop()
    arm_server.stop()
    # The tags this scenario built (under the double's address, gone with it).
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(f"{world.acr.host}/{name}:"):
                client.images.remove(tag)


def test_build_and_push_with_a_token_exchanged_for_the_entra_identity(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    host = scenario.world.acr.host
    scenario.registry(address=host, auth="acr")
    assert scenario.build("--push") == 0
    out, err = capsys.readouterr()
    assert "built, pushed" in out, out + err
    ref = out.split()[0]
    assert ref.startswith(f"{host}/{scenario.name}:")
    assert scenario.tags() == [ref.rsplit(":", 1)[1]]
    acr = scenario.world.acr
    assert [form["grant_type"] for form in acr.exchanges] == ["access_token"]
    # The engine traded the refresh token itself, with basic auth (null user + token), for
    # the push scope; every blob and the manifest went through the double over TLS.
    engine = [r for r in acr.token_requests if r["basic_user"]]
    assert {r["basic_user"] for r in engine} == {"00000000-0000-0000-0000-000000000000"}
    scopes = [scope for r in engine for scope in r["scope"]]
    # First the check whether the image is there (pull), then the push.
    assert scopes == [f"repository:{scenario.name}:pull", f"repository:{scenario.name}:push,pull"]
    assert ("PUT", f"/v2/{scenario.name}/manifests/{ref.rsplit(':', 1)[1]}", 201) in acr.proxied
    for secret in scenario.secret_values():
        assert secret not in out + err


def test_an_expired_refresh_token_is_refused_clearly_and_masked(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    acr = scenario.world.acr
    acr.refresh_lifetime_s = -1  # the token deployer gets has expired when the engine uses it
    try:
        assert scenario.build("--push") == 1
    finally:
        acr.refresh_lifetime_s = 3 * 3600
    out, err = capsys.readouterr()
    assert f"registry {acr.host} rejected the credentials (401 unauthorized)" in err
    client = scenario.world.principal.client_id
    assert f"the registry token exchanged for the identity (client id {client}) was refused" in err
    assert "AcrPush" in err
    # The registry's words are quoted; the double echoes the token it refused: masked.
    assert "unauthorized: invalid or expired credentials: ***)" in err
    for secret in scenario.secret_values():
        assert secret not in out + err


def test_a_pull_only_identity_is_told_to_get_acrpush(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    acr = scenario.world.acr
    acr.roles = {scenario.world.principal.object_id: "AcrPull"}
    # A new image (another environment variable): it must be pushed.
    text = scenario.config.read_text()
    scenario.config.write_text(text.replace('OMP_NUM_THREADS: "1"', 'OMP_NUM_THREADS: "2"'))
    try:
        assert scenario.build("--push") == 1
    finally:
        acr.roles = {scenario.world.principal.object_id: "AcrPush"}
        scenario.config.write_text(text)
    out, err = capsys.readouterr()
    assert (
        f"registry {acr.host} denied access to {scenario.name} (403): the identity (client id "
        f"{scenario.world.principal.client_id}) may not push there: grant it the AcrPush role "
        f"on the registry at {acr.host}"
    ) in err
    assert len(scenario.tags()) == 1
    for secret in scenario.secret_values():
        assert secret not in out + err


def test_admin_user_read_from_resource_manager(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    acr = scenario.world.acr
    acr.admin = ("mylabregistry", ADMIN_PASSWORD)
    scenario.arm.registries["mylabregistry"] = ("ml-rg", ADMIN_PASSWORD)
    exchanges = len(acr.exchanges)
    scenario.registry(
        address=acr.host,
        auth="acr",
        admin_user="true",
        subscription_id=f'"{SUBSCRIPTION}"',
        resource_group="ml-rg",
        name="mylabregistry",
    )
    assert scenario.build("--push") == 0
    out, err = capsys.readouterr()
    assert "unchanged, already in the registry" in out, out + err
    assert len(acr.exchanges) == exchanges  # no token exchange
    admin = [r for r in acr.token_requests if r["basic_user"] == "mylabregistry"]
    assert admin, acr.token_requests
    for secret in scenario.secret_values():
        assert secret not in out + err

    scenario.arm.registries["mylabregistry"] = ("ml-rg", None)  # the admin user disabled
    assert scenario.build("--push") == 2
    out, err = capsys.readouterr()
    assert "the admin user of registry mylabregistry in resource group ml-rg is disabled" in err
    assert "az acr update --name mylabregistry --admin-enabled true" in err
