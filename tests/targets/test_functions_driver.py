"""The functions driver against the Microsoft.Web double, in-process.

``deployer deploy`` cannot run end to end for a functions target here: its image is built on
Microsoft's Functions base image, which cannot be pulled on these machines (and the double
runs no Functions host). So the driver's steps run against the double with the artifacts
``deployer render`` writes, under the rollout policy itself (``deployer.rollout``), and its
answers are checked where the double shows them: the site's image, its app settings, the
plan, the keys. What a deployed function answers is proven by ``deployer test --local``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from deployer.buildcontext import ImageRef
from deployer.config.loader import load_config
from deployer.errors import DeployFailed
from deployer.events import discard
from deployer.plan import make_plan
from deployer.rollout import rollout
from deployer.secrets import Secrets
from deployer.targets.contract import Deadline, Release, Session, TargetRef
from deployer.targets.functions.driver import FunctionsDriver, connect
from deployer.verify import TestRun
from tests.conftest import EXAMPLE
from tests.doubles.azure import AzureDouble

APP = "diabetes-fn"
STORAGE = (
    "DefaultEndpointsProtocol=https;AccountName=ml;AccountKey=c2VjcmV0LWtleQ==;"
    "EndpointSuffix=core.windows.net"
)


def _repo(
    tmp_path: Path,
    azure: AzureDouble,
    trigger: str = "blob",
    ready_timeout_s: float = 30,
    **more: Any,
) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__", "out"))
    config = repo / "deploy.yaml"
    text = config.read_text()
    head, _, _ = text.partition("\ntargets:\n")
    settings: dict[str, Any] = {
        "type": "functions",
        "subscription_id": azure.subscription_id,
        "resource_group": azure.resource_group,
        "app_name": APP,
        "location": "westeurope",
        "trigger": trigger,
        "ready_timeout_s": ready_timeout_s,
        **more,
    }
    if trigger == "blob":
        settings["blob"] = {
            "input_path": "input/{name}.json",
            "output_path": "output/{name}_out.json",
            "connection": "TriggerConnectionString",
        }
    target = json.dumps(settings)
    config.write_text(f"{head}\ntargets:\n  batch: {target}\n")
    return config


def _release(config_path: Path, image_tag: str) -> Release:
    plan = make_plan(load_config(config_path), config_path, ["batch"])
    (target,) = plan.targets
    image = ImageRef(target.image.registry, target.image.repository, image_tag)
    artifacts = {k: v.replace(str(target.image), str(image)) for k, v in target.artifacts.items()}
    return Release(f"rev-{image_tag}", image, artifacts)


def _driver(config_path: Path, azure: AzureDouble, env: dict[str, str]) -> FunctionsDriver:
    config = load_config(config_path)
    session = Session(discard, Secrets(), {**os.environ, **azure.env(), **env})
    return connect(TargetRef.of(config, "batch"), session)


def _env() -> dict[str, str]:
    return {
        "AzureWebJobsStorage": STORAGE,
        "TriggerConnectionString": STORAGE,
        "REGISTRY_USERNAME": "puller",
        "REGISTRY_PASSWORD": "registry-secret-value",
    }


def _deploy(driver: FunctionsDriver, release: Release) -> Any:
    def verify(endpoint: Any) -> TestRun:
        assert not endpoint.reachable  # a blob trigger has no address to call
        return TestRun(endpoint.scoring_uri, skipped=endpoint.note)

    deadline = Deadline(driver.settings.ready_timeout_s)
    return rollout(
        driver, release, verify=verify, deadline=deadline, progress=discard, target="batch"
    )


def test_a_deploy_creates_the_plan_and_the_app_and_keeps_the_users_settings(
    tmp_path: Path, azure: AzureDouble
) -> None:
    config = _repo(tmp_path, azure)
    first = _release(config, "1")
    driver = _driver(config, azure, _env())
    outcome = _deploy(driver, first)
    assert outcome.status == "deployed"
    site = azure.web.summary(APP)
    assert site["state"] == "Running"
    assert site["linux_fx_version"] == f"DOCKER|{first.image}"
    assert site["kind"] == "functionapp,linux,container"
    assert site["settings"]["AzureWebJobsStorage"] == STORAGE  # filled at send time
    # A setting the user added in the portal survives the next deploy.
    driver.client.web_apps.update_application_settings(
        azure.resource_group, APP, {"properties": {**site["settings"], "MY_FLAG": "on"}}
    )
    second = _release(config, "2")
    outcome = _deploy(_driver(config, azure, _env()), second)
    assert outcome.status == "deployed"
    site = azure.web.summary(APP)
    assert site["linux_fx_version"] == f"DOCKER|{second.image}"
    assert site["settings"]["MY_FLAG"] == "on"
    note = outcome.live.endpoint.note
    assert "blob trigger" in note and "input/{name}.json" in note, note


def test_an_app_that_never_runs_is_rolled_back_to_the_previous_image_and_settings(
    tmp_path: Path, azure: AzureDouble
) -> None:
    config = _repo(tmp_path, azure, ready_timeout_s=4)
    first = _release(config, "1")
    _deploy(_driver(config, azure, _env()), first)
    azure.never_running(APP)
    second = _release(config, "2")
    restored = threading.Event()

    def start_again_once_restored() -> None:
        # Once the new image was applied and the rollback has put the previous one back,
        # that start may run again.
        applied = False
        while not restored.is_set():
            configured = azure.web.summary(APP)["configured"]
            applied = applied or configured == f"DOCKER|{second.image}"
            if applied and configured == f"DOCKER|{first.image}":
                azure.web.run_again(APP)
                restored.set()
            time.sleep(0.02)

    watcher = threading.Thread(target=start_again_once_restored, daemon=True)
    watcher.start()
    with pytest.raises(DeployFailed, match=r"did not run .* the previous version rev-1 serves"):
        _deploy(_driver(config, azure, _env()), second)
    restored.set()
    site = azure.web.summary(APP)
    assert (site["state"], site["linux_fx_version"]) == ("Running", f"DOCKER|{first.image}")


def test_down_removes_the_app_and_the_plan_deployer_created(
    tmp_path: Path, azure: AzureDouble
) -> None:
    config = _repo(tmp_path, azure)
    driver = _driver(config, azure, _env())
    _deploy(driver, _release(config, "1"))
    removed = _driver(config, azure, _env()).remove(images=False)
    assert removed[0] == f"function app {APP}"
    assert any(item.startswith("plan ") for item in removed), removed
    assert _driver(config, azure, _env()).remove(images=False) == []


def test_a_name_taken_elsewhere_is_a_clear_failure(tmp_path: Path, azure: AzureDouble) -> None:
    config = _repo(tmp_path, azure)
    azure.take_site_name(APP)
    with pytest.raises(DeployFailed, match="already exists"):
        _deploy(_driver(config, azure, _env()), _release(config, "1"))


def test_an_http_trigger_is_tested_at_its_invoke_url_with_the_function_key(
    tmp_path: Path, azure: AzureDouble
) -> None:
    route = {"route": "models/{name}", "route_values": {"name": "diabetes v2"}}
    config = _repo(tmp_path, azure, trigger="http", http=route)
    driver = _driver(config, azure, _env())
    release = _release(config, "1")
    applied = driver.apply(release)
    # The double runs no Functions host: the test declares the function the app indexes.
    azure.web.set_functions(
        APP,
        [{"name": "score_http", "bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req", "route": "models/{name}",
             "authLevel": "function", "methods": ["get", "post"]},
            {"type": "http", "direction": "out", "name": "$return"},
        ]}],
    )  # fmt: skip
    version = driver.wait(applied, Deadline(30))
    live = driver.live()
    assert live is not None and live.endpoint is not None
    endpoint = live.endpoint
    # The template keeps {name}; the tests call deploy.yaml's value, encoded.
    assert endpoint.scoring_uri == f"https://{APP}.azurewebsites.net/api/models/diabetes%20v2"
    assert set(endpoint.headers) == {"x-functions-key"}
    assert endpoint.headers["x-functions-key"] in driver.session.secrets.values
    assert version.revision == release.revision


def test_a_dedicated_plan_is_created_moved_within_its_family_and_never_across(
    tmp_path: Path, azure: AzureDouble
) -> None:
    config = _repo(tmp_path, azure, plan={"sku": "P1v3"})
    _deploy(_driver(config, azure, _env()), _release(config, "1"))
    (plan,) = azure.web.plans.values()
    assert (plan.body["kind"], plan.body["sku"]) == ("linux", {"name": "P1v3", "tier": "PremiumV3"})
    site_config = azure.web.find_site(APP).body["properties"]["siteConfig"]
    assert site_config["alwaysOn"] is True  # non-HTTP triggers keep firing on Dedicated
    config = _repo(tmp_path / "2", azure, plan={"sku": "P2v3"})
    assert _deploy(_driver(config, azure, _env()), _release(config, "2")).status == "deployed"
    assert plan.body["sku"]["name"] == "P2v3"
    config = _repo(tmp_path / "3", azure, plan={"sku": "EP1"})
    with pytest.raises(DeployFailed, match="cannot move a plan between Elastic Premium"):
        _deploy(_driver(config, azure, _env()), _release(config, "3"))
    assert azure.web.summary(APP)["linux_fx_version"].endswith(":2")  # still serving


def test_a_plan_deployer_did_not_create_is_used_as_it_is(
    tmp_path: Path, azure: AzureDouble
) -> None:
    config = _repo(tmp_path, azure, plan={"name": "shared-plan", "sku": "EP1"})
    driver = _driver(config, azure, _env())
    theirs = {"location": "westeurope", "kind": "elastic", "sku": {"name": "EP2"}}
    driver.client.app_service_plans.begin_create_or_update(
        azure.resource_group, "shared-plan", theirs
    ).result()
    assert _deploy(driver, _release(config, "1")).status == "deployed"
    assert azure.web.plans_named("shared-plan").body["sku"]["name"] == "EP2"  # untouched
    assert azure.web.summary(APP)["server_farm_id"].endswith("/serverfarms/shared-plan")
    assert "plan" not in " ".join(_driver(config, azure, _env()).remove(images=False))
    # A Consumption plan runs no containers: said before the app is touched.
    consumption = {"location": "westeurope", "kind": "functionapp", "sku": {"name": "Y1"}}
    driver.client.app_service_plans.begin_create_or_update(
        azure.resource_group, "cheap-plan", consumption
    ).result()
    config = _repo(tmp_path / "2", azure, plan={"name": "cheap-plan"})
    with pytest.raises(DeployFailed, match=r"cheap-plan is Y1 \(Consumption\)"):
        _deploy(_driver(config, azure, _env()), _release(config, "1"))


def test_the_app_pulls_with_a_user_assigned_identity_by_its_client_id(
    tmp_path: Path, azure: AzureDouble
) -> None:
    identity = (
        f"/subscriptions/{azure.subscription_id}/resourceGroups/ml-rg/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/puller"
    )
    config = _repo(tmp_path, azure, pull={"identity": identity})
    driver = _driver(config, azure, _env())
    _deploy(driver, _release(config, "1"))
    body = azure.web.find_site(APP).body
    assert body["identity"]["type"] == "UserAssigned"
    site = driver.client.web_apps.get(azure.resource_group, APP)
    client_id = site.identity.user_assigned_identities[identity].client_id
    site_config = body["properties"]["siteConfig"]
    assert site_config["acrUseManagedIdentityCreds"] is True
    assert site_config["acrUserManagedIdentityID"] == client_id
    settings = azure.web.summary(APP)["settings"]
    assert "DOCKER_REGISTRY_SERVER_PASSWORD" not in settings  # no password stored
    assert settings["DOCKER_REGISTRY_SERVER_URL"] == "https://127.0.0.1:5000"


def test_the_apps_own_identity_is_named_for_its_acrpull_grant(
    tmp_path: Path, azure: AzureDouble
) -> None:
    config = _repo(tmp_path, azure, pull={"identity": "system"})
    said: list[str] = []
    session = Session(
        lambda event: said.append(event.message), Secrets(), {**os.environ, **azure.env(), **_env()}
    )
    driver = connect(TargetRef.of(load_config(config), "batch"), session)
    _deploy(driver, _release(config, "1"))
    principal = azure.web.find_site(APP).principal_id
    assert any(f"principal {principal}" in line and "AcrPull" in line for line in said), said
    assert azure.web.find_site(APP).body["identity"] == {"type": "SystemAssigned"}


def test_throttling_and_5xx_are_retried_and_a_missing_role_is_named(
    tmp_path: Path, azure: AzureDouble
) -> None:
    config = _repo(tmp_path, azure)
    throttled = azure.throttle("PUT", f"/sites/{APP}\\?", times=1, retry_after=1)
    failed = azure.fail("POST", "/restart", status=503, code="ServiceUnavailable", times=1)
    assert _deploy(_driver(config, azure, _env()), _release(config, "1")).status == "deployed"
    assert (throttled.seen, failed.seen) == (1, 1)  # each answered once, then retried
    azure.revoke(action="Microsoft.Web/sites/write")
    with pytest.raises(DeployFailed, match=r"lacks 'Microsoft\.Web/sites/write'"):
        _deploy(_driver(config, azure, _env()), _release(config, "2"))
    assert azure.web.summary(APP)["linux_fx_version"].endswith(":1")


def test_without_a_location_a_new_app_goes_where_its_resource_group_is(
    tmp_path: Path, azure: AzureDouble
) -> None:
    azure.add_resource_group("ml-north", location="northeurope")
    config = _repo(tmp_path, azure, location=None, resource_group="ml-north")
    assert _deploy(_driver(config, azure, _env()), _release(config, "1")).status == "deployed"
    assert azure.web.find_site(APP).body["location"] == "northeurope"
    (plan,) = azure.web.plans.values()
    assert plan.body["location"] == "northeurope"
