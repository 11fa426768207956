"""End to end: ``deployer deploy`` to an ``aci`` target against the Azure double.

What an ACI user cares about beyond the driver contract (tests/conformance covers that):
scoring keys, how the group pulls its image (a managed identity, a password), ARM's errors
in words that name the fix, a candidate that crash-loops or never leaves Pending, and
``status``, ``logs`` and ``down``. deployer runs as a subprocess, as users run it, through
the conformance harness (``ModelRepo``); every test has a service of its own on one Azure
double for the module, and removes it with ``deployer down``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from deployer.targets.aci.driver import PROVIDER, group_names
from tests.conformance.harness import (
    ANSWER,
    ROW,
    TOLERANCE,
    Deployed,
    ModelRepo,
    failed_with,
    score_once,
)
from tests.conformance.platforms import AciPlatform
from tests.docker.conftest import dev_env
from tests.doubles.azure import AzureDouble

pytestmark = [pytest.mark.docker, pytest.mark.slow]

__all__ = ["dev_env"]  # the fixture, for this module

TARGET = "e2e"
KEY = "k-" + uuid.uuid4().hex  # >= 16 characters, as the server requires
KEY_2 = "k2-" + uuid.uuid4().hex
IDENTITY = (
    "/subscriptions/{sub}/resourceGroups/ml-rg/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/acr-pull"
)
# Seconds within which a failure that ACI reports at once must fail the deploy's "deploy"
# step (far below the ready deadline the tests set, READY_S).
FAST_S = 45
READY_S = 240


class Aci(AciPlatform):
    """The conformance suite's ``aci`` platform with more settings in the target's mapping
    and the variables of the test environment (the repo's ``extra_env`` adds or removes
    more)."""

    def __init__(
        self,
        azure: AzureDouble,
        workdir: Path,
        base_env: dict[str, str],
        settings: dict[str, Any],
    ) -> None:
        super().__init__(azure, workdir)
        self.base_env, self.settings = base_env, settings

    def target_yaml(self, ready_timeout_s: float) -> str:
        extra = "".join(f", {key}: {json.dumps(value)}" for key, value in self.settings.items())
        return super().target_yaml(ready_timeout_s)[:-1] + extra + "}"

    def env(self) -> dict[str, str]:
        return {**self.base_env, **super().env()}


class Repo(ModelRepo):
    platform: Aci

    @property
    def groups(self) -> tuple[str, str]:
        return group_names(self.service, self.target)

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.run("down", "-t", self.target)


@pytest.fixture(scope="module")
def azure(
    tmp_path_factory: pytest.TempPathFactory, dev_env: dict[str, str]
) -> Iterator[AzureDouble]:
    environment = {**os.environ, **dev_env}
    with AzureDouble(tmp_path_factory.mktemp("azure"), environment) as double:
        yield double


@pytest.fixture(scope="module")
def make_repo(
    azure: AzureDouble, dev_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """``make_repo(name, ready_timeout_s=..., env=..., **settings)``: a model repo of a
    service of its own, whose deploy.yaml has one aci target with these settings (and
    deployer's environment these variables); ``deployer down`` at the module's end."""
    made: list[Repo] = []

    def make(
        name: str,
        ready_timeout_s: float = READY_S,
        env: dict[str, str | None] | None = None,
        **settings: Any,
    ) -> Repo:
        root = tmp_path_factory.mktemp(name)
        platform = Aci(azure, root, dev_env, settings)
        repo = Repo(root / "repo", platform, TARGET)
        repo.extra_env = dict(env or {})
        repo.service = f"aci-{name}-{uuid.uuid4().hex[:6]}"
        repo.write(ready_timeout_s)
        made.append(repo)
        return repo

    yield make
    for repo in made:
        repo.down()


# Helpers ---------------------------------------------------------------------------------
def post(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=10)
    try:
        body = json.dumps({"data": [ROW]})
        conn.request(
            "POST", parts.path, body, {"Content-Type": "application/json", **(headers or {})}
        )
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def report_texts(repo: ModelRepo) -> str:
    return "".join(p.read_text() for p in sorted(repo.reports.glob("deploy-report.*")))


def puts(azure: AzureDouble, group: str) -> list[Any]:
    return azure.requests("PUT", rf"/containerGroups/{group}\?")


def names(azure: AzureDouble) -> set[str]:
    return {g["name"] for g in azure.groups()}


def live_revision(azure: AzureDouble, group: str) -> str:
    (found,) = [g for g in azure.groups() if g["name"] == group]
    return str(found["tags"].get("ai.deployer.revision"))


# Scoring keys ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(make_repo: Any) -> tuple[Repo, Deployed]:
    """One service behind ``auth: key`` with two keys, deployed once for the tests below."""
    env: dict[str, str | None] = {"SCORING_KEY": KEY, "SCORING_KEY_2": KEY_2}
    repo = make_repo("keyed", env=env, auth="key", secondary_key_env="SCORING_KEY_2")
    return repo, repo.deploy()


def test_auth_key_deploys_and_the_endpoint_wants_the_key(keyed: tuple[Repo, Deployed]) -> None:
    repo, deployed = keyed
    assert deployed.code == 0, deployed.output
    target = deployed.target
    assert target["status"] == "deployed"
    assert target["tests"]["passed"] is True  # the tests sent the key
    uri = target["scoring_uri"]
    status, headers, _ = post(uri)
    assert status == 401
    assert any(k.lower() == "www-authenticate" for k in headers), headers
    status, _, body = post(uri, bearer(KEY))
    assert status == 200, body
    assert json.loads(body)[0] == pytest.approx(ANSWER, abs=TOLERANCE)
    assert post(uri, bearer("wrong-" + KEY))[0] == 401
    # How to call it, in the report: the header and the secret's name, never the key.
    assert target["auth_headers"] == ["Authorization"]
    assert "Authorization: Bearer $SCORING_KEY" in target["auth"], target["auth"]
    assert "SCORING_KEY_2" in target["auth"]
    for text in (deployed.output, report_texts(repo)):
        assert KEY not in text
        assert KEY_2 not in text


def test_the_secondary_key_is_accepted_too(keyed: tuple[Repo, Deployed]) -> None:
    _, deployed = keyed
    assert deployed.code == 0, deployed.output
    uri = deployed.target["scoring_uri"]
    assert post(uri, bearer(KEY))[0] == 200
    assert post(uri, bearer(KEY_2))[0] == 200


def test_status_logs_and_down(keyed: tuple[Repo, Deployed], azure: AzureDouble) -> None:
    repo, deployed = keyed
    assert deployed.code == 0, deployed.output
    status = repo.run("status", "-t", TARGET)
    assert status.returncode == 0, status.stderr
    assert f"{TARGET} (aci): healthy" in status.stdout, status.stdout
    assert deployed.target["revision"] in status.stdout
    assert deployed.target["scoring_uri"] in status.stdout
    assert "send headers Authorization" in status.stdout
    assert KEY not in status.stdout + status.stderr

    logs = repo.run("logs", "-t", TARGET, "--tail", "5")
    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    assert 0 < len(lines) <= 5, logs.stdout
    assert KEY not in logs.stdout

    down = repo.down()
    assert down.returncode == 0, down.stderr
    assert not set(repo.groups) & names(azure), azure.groups()
    for group in repo.groups:
        assert f"container group {group}" in down.stdout or group.endswith("-candidate")
    again = repo.down()
    assert again.returncode == 0, again.stderr
    assert "nothing to remove" in again.stdout


@pytest.fixture(scope="module")
def no_key(make_repo: Any) -> tuple[Repo, Deployed]:
    repo = make_repo("nokey", auth="key", env={"SCORING_KEY": None})
    return repo, repo.deploy()


def test_a_missing_scoring_key_says_how_to_make_one(
    no_key: tuple[Repo, Deployed], azure: AzureDouble
) -> None:
    repo, deployed = no_key
    assert deployed.code != 0, deployed.output
    assert not re.search("^Traceback", deployed.output, re.M), deployed.output
    assert "environment variable SCORING_KEY" in deployed.output
    assert "secrets.token_urlsafe" in deployed.output
    for group in repo.groups:
        assert puts(azure, group) == [], f"{group} was PUT without a key"


def test_a_missing_scoring_key_is_a_usage_error(no_key: tuple[Repo, Deployed]) -> None:
    _, deployed = no_key
    assert deployed.code == 2, deployed.output


# Pulling the image -----------------------------------------------------------------------
def test_pull_with_a_managed_identity(
    make_repo: Any, azure: AzureDouble, dev_env: dict[str, str]
) -> None:
    identity = IDENTITY.format(sub=azure.subscription_id)
    registry = dev_env["DEPLOYER_TEST_REGISTRY"]
    azure.add_registry(
        "devregistry", registry, dev_env["REGISTRY_USERNAME"], dev_env["REGISTRY_PASSWORD"]
    )
    azure.grant_acr_pull(identity, registry)
    repo = make_repo("identity", pull={"identity": identity})
    try:
        first = repo.deploy()
        assert first.code == 0, first.output
        service, _ = repo.groups
        revision = first.target["revision"]
        assert live_revision(azure, service) == revision
        group = azure.group_resource(service)  # it pulled with the identity, no password
        assert group["identity"]["userAssignedIdentities"].keys() == {identity}
        (login,) = group["properties"]["imageRegistryCredentials"]
        assert login == {"server": registry, "identity": identity}, login

        azure.revoke_acr_pull(identity, registry)
        repo.write(READY_S, VERSION="2")
        second = repo.deploy()
        error = failed_with(second, "not accessible")
        assert "image" in error and "credential" in error, error
        assert second.target["seconds"]["deploy"] < FAST_S, second.target["seconds"]
        # The previous version keeps serving.
        assert live_revision(azure, service) == revision
        assert score_once(first.target["scoring_uri"]) == pytest.approx(ANSWER, abs=TOLERANCE)
        assert repo.groups[1] not in names(azure)
    finally:
        azure.revoke_acr_pull(identity, registry)


def test_a_wrong_registry_password_fails_fast(make_repo: Any, azure: AzureDouble) -> None:
    repo = make_repo(
        "badpass",
        pull={"username_env": "REGISTRY_USERNAME", "password_env": "PULL_PASSWORD"},
        env={"PULL_PASSWORD": "not-the-password-" + uuid.uuid4().hex[:8]},
    )
    deployed = repo.deploy()
    failed_with(deployed, "not accessible")
    assert deployed.target["seconds"]["deploy"] < FAST_S, deployed.target["seconds"]
    assert not set(repo.groups) & names(azure)


# ARM's errors ----------------------------------------------------------------------------
def _revoke(azure: AzureDouble, repo: Repo) -> Any:
    return azure.revoke("Microsoft.ContainerInstance/containerGroups/write")


def _unregister(azure: AzureDouble, repo: Repo) -> Any:
    azure.unregister_provider("Microsoft.ContainerInstance")


def _dns_label(azure: AzureDouble, repo: Repo) -> Any:
    azure.take_dns_label(repo.platform.label)


def _quota(azure: AzureDouble, repo: Repo) -> Any:
    azure.set_core_quota(0)


ARM_FAULTS = {
    "revoked": (
        _revoke,
        ["'Microsoft.ContainerInstance/containerGroups/write'", "/subscriptions/", "Contributor"],
    ),
    "unregistered": (_unregister, ["az provider register --namespace Microsoft.ContainerInstance"]),
    "dns-label-taken": (_dns_label, ["is not available", "choose another dns_name_label"]),
    "quota": (_quota, ["quota", "StandardCores"]),
}


@pytest.fixture(scope="module")
def arm_failures(make_repo: Any, azure: AzureDouble) -> dict[str, tuple[Repo, Deployed]]:
    """A deploy of a service of its own under each of ARM_FAULTS, put right after it."""
    found = {}
    for fault, (inject, _) in ARM_FAULTS.items():
        repo = make_repo(fault)
        inject(azure, repo)
        try:
            found[fault] = (repo, repo.deploy())
        finally:
            azure.restore_access()
            azure.register_provider("Microsoft.ContainerInstance")
            azure.set_core_quota(None)
    return found


@pytest.mark.parametrize("fault", sorted(ARM_FAULTS))
def test_arm_errors_name_the_fix(
    arm_failures: dict[str, tuple[Repo, Deployed]], azure: AzureDouble, fault: str
) -> None:
    repo, deployed = arm_failures[fault]
    error = failed_with(deployed, *ARM_FAULTS[fault][1])
    if fault == "revoked":  # the scope: the group's resource id
        assert f"/resourceGroups/ml-rg/providers/{PROVIDER}/containerGroups/" in error, error
        assert "az role assignment create" in error, error
    assert not set(repo.groups) & names(azure), azure.groups()


def test_arm_errors_mask_nothing_but_secrets(
    arm_failures: dict[str, tuple[Repo, Deployed]],
) -> None:
    _, deployed = arm_failures["revoked"]
    assert "***" not in deployed.target["error"], deployed.target["error"]


def test_throttled_puts_are_retried(make_repo: Any, azure: AzureDouble) -> None:
    repo = make_repo("throttled")
    _, candidate = repo.groups
    azure.throttle("PUT", rf"/containerGroups/{candidate}\?", times=2, retry_after=1)
    deployed = repo.deploy()
    assert deployed.code == 0, deployed.output
    statuses = [r.status for r in puts(azure, candidate)]
    assert statuses[:2] == [429, 429] and len(statuses) > 2, statuses


def test_a_transient_server_error_is_retried(make_repo: Any, azure: AzureDouble) -> None:
    repo = make_repo("retried")
    _, candidate = repo.groups
    azure.fail("PUT", rf"/containerGroups/{candidate}\?", status=503, code="ServiceUnavailable")
    deployed = repo.deploy()
    assert deployed.code == 0, deployed.output
    statuses = [r.status for r in puts(azure, candidate)]
    assert statuses[0] == 503 and len(statuses) > 1, statuses


def test_a_refused_token_names_the_fix(make_repo: Any, azure: AzureDouble) -> None:
    repo = make_repo("refused")
    _, candidate = repo.groups
    rule = azure.fail(
        "PUT",
        rf"/containerGroups/{candidate}\?",
        status=401,
        code="InvalidAuthenticationToken",
        message="The access token is invalid.",
        times=10,
    )
    try:
        deployed = repo.deploy()
    finally:
        rule.seen = rule.times  # spent: later tests are not refused
    failed_with(deployed, "Azure refused the credential", "az login")


# A candidate that never serves -----------------------------------------------------------
@pytest.fixture(scope="module")
def crashed(make_repo: Any, azure: AzureDouble) -> tuple[Repo, Deployed]:
    repo = make_repo("crash")
    azure.crash_loop(repo.groups[1])  # the candidate
    return repo, repo.deploy()


def test_a_crash_looping_candidate_fails_fast_with_its_logs(
    crashed: tuple[Repo, Deployed], azure: AzureDouble
) -> None:
    repo, deployed = crashed
    failed_with(deployed, f"the container of {repo.groups[1]} exited", "restarted")
    assert re.search(r"restarted [0-9]+ times", deployed.target["error"])
    assert deployed.target["seconds"]["deploy"] < FAST_S, deployed.target["seconds"]
    assert any("crashing on purpose" in line for line in deployed.target["logs"]), deployed.target
    assert "crashing on purpose" in (repo.reports / "deploy-report.md").read_text()
    assert not set(repo.groups) & names(azure), azure.groups()


def test_a_crash_looping_candidate_reports_its_exit_code(crashed: tuple[Repo, Deployed]) -> None:
    _, deployed = crashed
    assert "(code 1," in deployed.target["error"], deployed.target["error"]


def test_a_group_stuck_pending_fails_at_the_ready_deadline(
    make_repo: Any, azure: AzureDouble
) -> None:
    repo = make_repo("pending", ready_timeout_s=5)
    _, candidate = repo.groups
    stall = azure.stall(candidate)
    try:
        deployed = repo.deploy()
    finally:
        stall.released.set()
    failed_with(deployed, f"{candidate} did not become ready", "Pending", "ready deadline of 5 s")
    assert stall.matched.is_set()
    assert 5 <= deployed.target["seconds"]["deploy"] < FAST_S, deployed.target["seconds"]
    assert not set(repo.groups) & names(azure), azure.groups()


# The cloud -------------------------------------------------------------------------------
def test_without_a_custom_cloud_nothing_reaches_the_network(
    make_repo: Any, azure: AzureDouble
) -> None:
    """Every other test reached the double through DEPLOYER_AZURE_CLOUD; without it deployer
    talks to the public cloud, which the loopback guard refuses: a clean failure."""
    repo = make_repo("nocloud", env={"DEPLOYER_AZURE_CLOUD": None})
    seen = len(azure.requests())
    deployed = repo.deploy()
    error = failed_with(deployed)
    assert "no Azure token" in error, error
    assert "DEPLOYER_AZURE_CLOUD" in error, error
    assert len(azure.requests()) == seen
