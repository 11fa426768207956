"""The Microsoft.Web double (tests/doubles/azure/web.py) driven by azure-mgmt-web and
azure-identity only, as the ``functions`` driver reaches it: a custom cloud's endpoints, the
test CA through REQUESTS_CA_BUNDLE, a service principal; every connection on loopback. No
container runs (see web.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.identity import ClientSecretCredential
from azure.mgmt.web import WebSiteManagementClient
from azure.mgmt.web.models import AppServicePlan, Site, SkuDescription, StringDictionary

from tests.doubles.azure import AzureDouble

RG = "ml-rg"
API = "api-version=2025-05-01"
IMAGE = "myregistry.azurecr.io/scoring-fn:1"


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureDouble]:
    with AzureDouble(tmp_path_factory.mktemp("azure-web")) as double:
        double.web.running_delay_s = 0.3
        yield double


@pytest.fixture
def web(azure: AzureDouble, monkeypatch: pytest.MonkeyPatch) -> WebSiteManagementClient:
    """The SDK trusts the double's CA as it trusts a proxy's: REQUESTS_CA_BUNDLE."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azure.ca_bundle))
    return client(azure, azure.subscription_id)


def client(azure: AzureDouble, subscription_id: str) -> WebSiteManagementClient:
    credential = ClientSecretCredential(
        azure.tenant_id,
        azure.client_id,
        azure.client_secret,
        authority=azure.authority,
        disable_instance_discovery=True,
    )
    return WebSiteManagementClient(
        credential, subscription_id, base_url=azure.arm, credential_scopes=[azure.arm_scope]
    )


def raw(web: WebSiteManagementClient, method: str, url: str, body: Any = None) -> Any:
    """Through the SDK's pipeline (token, TLS, retries), with a body its models let by."""
    request = HttpRequest(method, url, json=body) if body is not None else HttpRequest(method, url)
    return web._client.send_request(request)


def plan_id(azure: AzureDouble, name: str, subscription: str | None = None) -> str:
    return (
        f"/subscriptions/{subscription or azure.subscription_id}/resourceGroups/{RG}"
        f"/providers/Microsoft.Web/serverfarms/{name}"
    )


def site_url(azure: AzureDouble, name: str) -> str:
    scope = f"subscriptions/{azure.subscription_id}/resourceGroups/{RG}"
    return f"{azure.arm}{scope}/providers/Microsoft.Web/sites/{name}?{API}"


def create_plan(web: WebSiteManagementClient, name: str, sku: str = "EP1") -> Any:
    tier = {"EP": "ElasticPremium", "FC": "FlexConsumption", "P": "PremiumV3"}[
        sku[:2].rstrip("0123456789")
    ]
    plan = AppServicePlan(
        location="westeurope",
        kind="elastic" if sku.startswith("EP") else "linux",
        sku=SkuDescription(name=sku, tier=tier),
        properties={"reserved": True, "maximumElasticWorkerCount": 3},
    )
    return web.app_service_plans.begin_create_or_update(RG, name, plan).result()


def container_app(farm_id: str, image: str = IMAGE, **settings: str) -> Site:
    """A container function app as the functions driver sends it; ``siteConfig.appSettings``
    (replacing the app's settings) only when settings are given."""
    site = Site(
        {
            "location": "westeurope",
            "kind": "functionapp,linux,container",
            "identity": {"type": "SystemAssigned"},
            "properties": {
                "serverFarmId": farm_id,
                "reserved": True,
                "httpsOnly": True,
                "siteConfig": {
                    "linuxFxVersion": f"DOCKER|{image}",
                    "acrUseManagedIdentityCreds": True,
                },
            },
        }
    )
    if settings:
        pairs = [{"name": k, "value": v} for k, v in settings.items()]
        site["properties"]["siteConfig"]["appSettings"] = pairs
    return site


def wait_running(web: WebSiteManagementClient, name: str, image: str, within_s: float = 10) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        site = web.web_apps.get(RG, name)
        if site.state == "Running" and site.site_config.linux_fx_version == f"DOCKER|{image}":
            return site
        assert time.monotonic() < deadline, (
            f"{name}: {site.state} {site.site_config.linux_fx_version}"
        )
        time.sleep(0.1)


HTTP_FUNCTION = {
    "name": "score",
    "bindings": [
        {
            "type": "httpTrigger",
            "direction": "in",
            "name": "req",
            "authLevel": "function",
            "methods": ["post"],
            "route": "score",
        },
        {"type": "http", "direction": "out", "name": "$return"},
    ],
}
BLOB_FUNCTION = {
    "name": "score_blob",
    "bindings": [
        {
            "type": "blobTrigger",
            "direction": "in",
            "name": "blob",
            "path": "inputs/{name}",
            "connection": "AzureWebJobsStorage",
        }
    ],
}


def test_a_container_function_app_from_plan_to_keys(
    azure: AzureDouble, web: WebSiteManagementClient
) -> None:
    plan = create_plan(web, "fn-plan")
    assert (plan.sku.name, plan.sku.tier, plan.reserved) == ("EP1", "ElasticPremium", True)
    served = azure.requests(path="/serverfarms/fn-plan")
    assert [(r.method, r.status) for r in served][:2] == [("PUT", 202), ("GET", 200)]

    name = "fn-" + uuid.uuid4().hex[:8]
    app = container_app(plan.id, AzureWebJobsStorage="UseDevelopmentStorage=true", USER="mine")
    created = web.web_apps.begin_create_or_update(RG, name, app).result()
    assert azure.requests("PUT", f"/sites/{name}")[0].status == 202
    assert created.kind == "functionapp,linux,container"
    assert created.default_host_name == f"{name}.azurewebsites.net"
    assert created.identity.principal_id
    assert created.server_farm_id == plan.id
    running = wait_running(web, name, IMAGE)
    assert running.site_config.acr_use_managed_identity_creds is True
    assert web.app_service_plans.get(RG, "fn-plan").number_of_sites == 1

    # App settings: listed, then replaced as a whole (what is not sent is gone)
    listed = web.web_apps.list_application_settings(RG, name).properties
    assert listed == {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "USER": "mine"}
    replaced = StringDictionary(properties={"AzureWebJobsStorage": "other", "NEW": "1"})
    web.web_apps.update_application_settings(RG, name, replaced)
    after = web.web_apps.list_application_settings(RG, name).properties
    assert after == {"AzureWebJobsStorage": "other", "NEW": "1"}

    # Restart: Stopped for running_delay_s, then Running the configured image
    web.web_apps.restart(RG, name)
    assert web.web_apps.get(RG, name).state == "Stopped"
    wait_running(web, name, IMAGE)
    assert azure.web.summary(name)["restarts"] == 1

    # An update: the previous image is reported until the new one runs
    web.web_apps.begin_create_or_update(RG, name, container_app(plan.id, "r.io/fn:2")).result()
    assert web.web_apps.get(RG, name).site_config.linux_fx_version == f"DOCKER|{IMAGE}"
    wait_running(web, name, "r.io/fn:2")
    assert azure.requests("PUT", f"/sites/{name}")[-1].status == 200
    # a PUT without siteConfig.appSettings keeps them
    assert web.web_apps.list_application_settings(RG, name).properties["NEW"] == "1"

    check_functions_and_keys(azure, web, name)
    check_down(web, name, "fn-plan")


def check_functions_and_keys(azure: AzureDouble, web: WebSiteManagementClient, name: str) -> None:
    """Functions (declared by the test: no Functions host runs) and their keys."""
    azure.web.set_functions(name, [HTTP_FUNCTION, BLOB_FUNCTION])
    functions = {f.name: f for f in web.web_apps.list_functions(RG, name)}
    assert set(functions) == {f"{name}/score", f"{name}/score_blob"}
    http = functions[f"{name}/score"]
    assert http.invoke_url_template == f"https://{name}.azurewebsites.net/api/score"
    assert http.config["bindings"][0]["type"] == "httpTrigger"
    assert functions[f"{name}/score_blob"].invoke_url_template is None
    got = web.web_apps.get_function(RG, name, "score")
    assert got.invoke_url_template == http.invoke_url_template
    keys = web.web_apps.list_function_keys(RG, name, "score")
    key = dict(keys)["default"]  # flat at the root; azure-mgmt-web 11 leaves .properties None
    assert len(key) == 56 and dict(web.web_apps.list_function_keys(RG, name, "score")) == {
        "default": key
    }
    secrets = web.web_apps.list_function_secrets(RG, name, "score")
    assert secrets.trigger_url == f"{http.invoke_url_template}?code={key}"
    host = web.web_apps.list_host_keys(RG, name)
    assert host.master_key and set(host.function_keys) == {"default"}
    with pytest.raises(ResourceNotFoundError):
        web.web_apps.get_function(RG, name, "absent")


def check_down(web: WebSiteManagementClient, name: str, plan: str) -> None:
    """down: the plan cannot go while an app uses it."""
    with pytest.raises(HttpResponseError) as raised:
        web.app_service_plans.delete(RG, plan)
    assert raised.value.status_code == 409
    assert f"Server farm '{plan}' cannot be deleted because it has web app(s) {name}" in str(
        raised.value
    )
    web.web_apps.delete(RG, name)
    with pytest.raises(ResourceNotFoundError):
        web.web_apps.get(RG, name)
    web.app_service_plans.delete(RG, plan)
    with pytest.raises(ResourceNotFoundError):
        web.app_service_plans.get(RG, plan)


def test_a_name_taken_in_another_subscription_is_409(
    azure: AzureDouble, web: WebSiteManagementClient
) -> None:
    other = str(uuid.uuid4())
    azure.add_subscription(other)
    azure.add_resource_group(RG, other)
    theirs = client(azure, other)
    farm = create_plan(theirs, "their-plan")
    theirs.web_apps.begin_create_or_update(RG, "shared-name", container_app(farm.id)).result()
    mine = create_plan(web, "my-plan")
    with pytest.raises(HttpResponseError) as raised:
        web.web_apps.begin_create_or_update(RG, "shared-name", container_app(mine.id)).result()
    assert raised.value.status_code == 409
    assert "Website with given name shared-name already exists." in str(raised.value)
    azure.take_site_name("held-elsewhere")
    with pytest.raises(HttpResponseError, match="Website with given name held-elsewhere"):
        web.web_apps.begin_create_or_update(RG, "held-elsewhere", container_app(mine.id))


def test_throttling_and_5xx_are_retried_by_azure_core(
    azure: AzureDouble, web: WebSiteManagementClient
) -> None:
    farm = create_plan(web, "retry-plan")
    rule = azure.throttle("GET", "/serverfarms/retry-plan", times=2, retry_after=1)
    started = time.monotonic()
    assert web.app_service_plans.get(RG, "retry-plan").name == "retry-plan"
    assert rule.matched.is_set() and time.monotonic() - started >= 2
    served = azure.requests("GET", "/serverfarms/retry-plan")
    assert [r.status for r in served][-3:] == [429, 429, 200]
    assert len({r.client_request_id for r in served[-3:]}) == 1  # one SDK call, retried
    azure.fail("PUT", "/sites/flaky", status=503, code="ServiceUnavailable", message="busy")
    web.web_apps.begin_create_or_update(RG, "flaky", container_app(farm.id)).result()
    assert [r.status for r in azure.requests("PUT", "/sites/flaky")] == [503, 202]


def test_an_app_that_never_runs_stays_stopped(
    azure: AzureDouble, web: WebSiteManagementClient
) -> None:
    farm = create_plan(web, "stuck-plan", "P1v3")
    assert farm.sku.tier == "PremiumV3"
    azure.never_running("stuck-app")
    web.web_apps.begin_create_or_update(RG, "stuck-app", container_app(farm.id)).result()
    time.sleep(azure.web.running_delay_s + 0.2)
    site = web.web_apps.get(RG, "stuck-app")
    assert site.state == "Stopped"
    assert site.site_config.linux_fx_version == f"DOCKER|{IMAGE}"
    assert list(web.web_apps.list_functions(RG, "stuck-app")) == []


def test_flex_consumption_refuses_a_container(
    azure: AzureDouble, web: WebSiteManagementClient
) -> None:
    farm = create_plan(web, "flex-plan", "FC1")
    with pytest.raises(HttpResponseError) as raised:
        web.web_apps.begin_create_or_update(RG, "flex-app", container_app(farm.id)).result()
    assert raised.value.status_code == 400
    assert (
        "The following site configuration property (Site.SiteConfig.LinuxFxVersion) for Flex "
        "Consumption sites is invalid.  Please remove or rename it before retrying."
    ) in str(raised.value)
    body = raised.value.response.json()
    assert body["Details"][2]["ErrorEntity"]["ExtendedCode"] == "51021"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"siteConfg": {}}, "Could not find member 'siteConfg' on object of type 'SiteProperties'"),
        ({"reserved": "yes"}, "Error converting value \"yes\" to type 'System.Boolean'"),
        (
            {"siteConfig": {"appSettings": {"A": "1"}}},
            "Path 'properties.siteConfig.appSettings'",
        ),
    ],
)
def test_an_invalid_site_body_is_400(
    azure: AzureDouble, web: WebSiteManagementClient, change: dict[str, Any], words: str
) -> None:
    body = container_app(plan_id(azure, "any")).as_dict()
    body["properties"].update(change)
    response = raw(web, "PUT", site_url(azure, "invalid"), body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "InvalidRequestContent"
    assert words in error["message"]


def test_bodies_are_held_to_the_examples(azure: AzureDouble, web: WebSiteManagementClient) -> None:
    no_farm = {"location": "westeurope", "kind": "functionapp", "properties": {}}
    response = raw(web, "PUT", site_url(azure, "no-farm"), no_farm)
    assert response.status_code == 400
    assert "Required property 'serverFarmId' not found" in response.json()["error"]["message"]
    settings = site_url(azure, "any").replace("?", "/config/appsettings?")
    response = raw(web, "PUT", settings, {"properties": {"A": 1}})
    assert response.status_code == 400
    assert "Path 'properties.A'" in response.json()["error"]["message"]
    plan = f"{azure.arm}{plan_id(azure, 'no-sku').lstrip('/')}?{API}"
    response = raw(web, "PUT", plan, {"location": "westeurope"})
    assert "Required property 'sku' not found" in response.json()["error"]["message"]
