"""``functions``'s driver: the function app of ``app.json`` (an App Service plan and a
``functionapp,linux,container`` site running the rendered image), through Azure Resource
Manager with azure-mgmt-web.

A function app changes its image by restarting (``in-place`` replacement):

1. ``apply`` creates the plan when there is none (tagged as deployer's, so that ``down``
   may remove it), reads the app's current image and settings (what a rollback restores),
   updates the site to the new image and writes the app settings *merged*: the current
   ones, with deploy.yaml's on top. Writing app settings replaces the whole set, so the
   user's own settings are read first and kept. Then it restarts the app.
2. ``wait`` polls the site until it is ``Running`` on the new image.
3. The tests reach an HTTP trigger at its ``invoke_url_template`` with the function key
   (``x-functions-key``, read with ``list_function_keys``, never printed). A blob or
   Service Bus trigger has no address to call: the report says how to trigger it.

A rollback puts the previous image and settings back and restarts again (or, after a
first deploy, removes the app). The logs are the app's container logs from its SCM site
(kudu.py), or its telemetry in Application Insights when deploy.yaml names the component
(insights.py). Secrets in app.json are ``${NAME}`` placeholders, filled from the
environment here, at send time only.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.mgmt.web import WebSiteManagementClient
from azure.mgmt.web.models import StringDictionary

from deployer.azure import arm_errors
from deployer.azure.bodies import raw_json
from deployer.azure.cloud import AzureCloud, credential, management_client_options, resolve_cloud
from deployer.errors import DeployerError, DeployFailed, UserError
from deployer.events import Event, Level
from deployer.placeholders import PLACEHOLDER
from deployer.targets.contract import (
    Deadline,
    Endpoint,
    Health,
    Release,
    Replacement,
    Session,
    TargetRef,
    Version,
    confirmed_by_platform,
    nothing_to_retire,
    nothing_to_tidy,
    promoted_in_place,
)
from deployer.targets.functions.insights import InsightsLogs
from deployer.targets.functions.kudu import KuduLogs, scm_host
from deployer.targets.functions.render import fill_route
from deployer.targets.functions.schema import Config

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

PROVIDER = "Microsoft.Web"
RESOURCE_GROUPS_API = "2021-04-01"  # Microsoft.Resources: where a new app goes by default
TAG_REVISION = "ai.deployer.revision"
TAG_CREATED_PLAN = "ai.deployer.created-by"  # on a plan deployer created: down may remove it
POLL_S = 3.0
# Plans that run no custom containers (a plan deploy.yaml names may be one)
NO_CONTAINERS = {"Y1": "Consumption", "FC1": "Flex Consumption"}
PROGRESS_EVERY_S = 15.0


def connect(target: TargetRef, session: Session) -> FunctionsDriver:
    if not isinstance(target.settings, Config):
        raise TypeError(f"target {target.name!r} is not a functions target")
    cloud = resolve_cloud(target.azure_cloud, Path.cwd(), session.env)
    token_source = credential(cloud)
    client = WebSiteManagementClient(
        token_source,
        target.settings.subscription_id,
        **management_client_options(cloud),
        **arm_errors.RETRY_OPTIONS,
    )
    return FunctionsDriver(target, target.settings, session, client, cloud, token_source)


@dataclass
class FunctionsDriver:
    target: TargetRef
    settings: Config
    session: Session
    client: WebSiteManagementClient
    cloud: AzureCloud
    credential: TokenCredential  # the logs' reads (Kudu, Application Insights) use it too

    replacement: Replacement = "in-place"
    platform_errors: tuple[type[BaseException], ...] = (AzureError,)
    tidy = nothing_to_tidy  # the site's image and settings are the one version there is
    promote = promoted_in_place
    confirm = confirmed_by_platform  # the site's tags and image record it
    retire = nothing_to_retire

    def __post_init__(self) -> None:
        self.rg = self.settings.resource_group
        self.app = self.settings.app_name
        self.function = f"score_{self.settings.trigger}"
        self._previous: tuple[str, dict[str, str], dict[str, str]] | None = None

    # What is there ---------------------------------------------------------------------------
    def _site(self) -> Any | None:
        try:
            return self.client.web_apps.get(self.rg, self.app)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as error:
            raise self._failed(error, f"function app {self.app}") from error

    def _settings(self) -> dict[str, str]:
        try:
            found = self.client.web_apps.list_application_settings(self.rg, self.app)
        except HttpResponseError as error:
            raise self._failed(error, f"the app settings of {self.app}") from error
        return dict(found.properties or {})

    def _secret_settings(self) -> list[str]:
        """The app settings that hold secrets: the host's storage and the trigger's
        connection (and the registry password, when the app pulls with one)."""
        names = ["AzureWebJobsStorage", "DOCKER_REGISTRY_SERVER_PASSWORD"]
        for trigger in (self.settings.blob, self.settings.service_bus):
            if trigger is not None:
                names.append(trigger.connection)
        return names

    def live(self) -> Version | None:
        site = self._site()
        if site is None:
            return None
        image = _image(site)
        settings = self._settings()
        self._previous = (image, settings, dict(site.tags or {}))
        for name in self._secret_settings():
            if settings.get(name):
                self.session.secrets.add(settings[name])  # a connection string: masked
        state = str(site.state or "Unknown")
        health: Health = (
            "healthy" if state == "Running" else "stopped" if state == "Stopped" else "starting"
        )
        return Version(
            revision=(site.tags or {}).get(TAG_REVISION, "unknown"),
            image=image,
            endpoint=self._endpoint(),
            health=health,
            detail=f"state {state}, image {image}",
            ref=f"function app {self.app}",
        )

    def _endpoint(self) -> Endpoint:
        trigger = self.settings.trigger
        if trigger == "http":
            return self._http_endpoint()
        if trigger == "blob" and self.settings.blob is not None:
            blob = self.settings.blob
            note = (
                f"a blob trigger: upload a blob to {blob.input_path} in the storage account of "
                f"the app setting {blob.connection}; the answer is written to {blob.output_path}"
            )
            where = f"blob://{blob.input_path}"
        elif self.settings.service_bus is not None:
            bus = self.settings.service_bus
            out = f"; answers go to {bus.output_queue}" if bus.output_queue else ""
            note = (
                f"a Service Bus trigger: send a message to queue {bus.queue} of the namespace "
                f"in the app setting {bus.connection}{out}"
            )
            where = f"servicebus://{bus.queue}"
        else:
            where, note = "", "no trigger settings"
        return Endpoint(
            where, "", note=note + " ('deployer test --local' proves it here)", reachable=False
        )

    def _http_endpoint(self) -> Endpoint:
        try:
            function = self.client.web_apps.get_function(self.rg, self.app, self.function)
        except HttpResponseError as error:
            raise self._failed(error, f"function {self.function} of {self.app}") from error
        http = self.settings.http
        # The template keeps the route's {parameters}: the tests call it with deploy.yaml's values.
        uri = fill_route(str(function.invoke_url_template or ""), http.route_values if http else {})
        headers: dict[str, str] = {}
        level = http.auth_level if http else "function"
        if level != "anonymous":
            keys = self.client.web_apps.list_function_keys(self.rg, self.app, self.function)
            # Azure answers {"default": key} flat, where the SDK's model expects properties
            # (azure-mgmt-web 11 then leaves .properties None): read it as the mapping it is.
            key = (keys.properties or dict(keys)).get("default")
            if key:
                self.session.secrets.add(str(key))
                headers["x-functions-key"] = str(key)
        return Endpoint(uri, "", headers=headers)

    # A new version ---------------------------------------------------------------------------
    def apply(self, release: Release) -> Version:
        app = json.loads(release.artifacts["app.json"])
        location = self._location(app)
        app["plan"]["body"]["location"] = location
        self._ensure_plan(app["plan"])
        body = copy.deepcopy(app["site"]["body"])
        body["location"] = location
        rendered = {
            s["name"]: self._fill(s["value"])
            for s in body["properties"]["siteConfig"].pop("appSettings", [])
        }
        body["tags"] = {**body.get("tags", {}), TAG_REVISION: release.revision}
        current = self._settings() if self._previous is not None else {}
        merged = {**current, **rendered}  # the user's own settings stay
        body["properties"]["siteConfig"]["appSettings"] = [
            {"name": k, "value": v} for k, v in sorted(merged.items())
        ]
        self._progress(f"updating function app {self.app} to revision {release.revision}")
        try:
            site = self._put_site(body)
            self._pull_identity(site, body)
            self.client.web_apps.update_application_settings(
                self.rg, self.app, StringDictionary(properties=merged)
            )
            self.client.web_apps.restart(self.rg, self.app)
        except HttpResponseError as error:
            raise self._failed(error, f"function app {self.app}") from error
        image = str(body["properties"]["siteConfig"]["linuxFxVersion"]).removeprefix("DOCKER|")
        return Version(release.revision, image, None, "starting", ref=f"function app {self.app}")

    def _put_site(self, body: dict[str, Any]) -> Any:
        poller = self.client.web_apps.begin_create_or_update(
            self.rg, self.app, raw_json(body), content_type="application/json"
        )
        return poller.result()

    def _pull_identity(self, site: Any, body: dict[str, Any]) -> None:
        """With a managed identity for pulls: a user-assigned one is named to the app by its
        client id (``acrUserManagedIdentityID``), which Azure reports once the identity is
        the app's; the app's own (system) identity needs AcrPull granted once it exists."""
        kind = str((body.get("identity") or {}).get("type", ""))
        identity = getattr(site, "identity", None)
        if kind == "UserAssigned":
            (wanted,) = body["identity"]["userAssignedIdentities"]
            users = getattr(identity, "user_assigned_identities", None) or {}
            found = {k.lower(): v for k, v in users.items()}
            client_id = str(getattr(found.get(wanted.lower()), "client_id", "") or "")
            if not client_id:
                raise DeployFailed(f"Azure reported no client id for the identity {wanted}")
            config = body["properties"]["siteConfig"]
            if _site_config(site).get("acrUserManagedIdentityID") != client_id:
                config["acrUserManagedIdentityID"] = client_id
                self._put_site(body)
        elif kind == "SystemAssigned" and self._previous is None:
            principal = str(getattr(identity, "principal_id", "") or "")
            self._progress(
                f"{self.app} pulls with its own identity (principal {principal}): grant it "
                "AcrPull on the registry once ('az role assignment create --role AcrPull "
                f"--assignee-object-id {principal} --assignee-principal-type "
                "ServicePrincipal --scope <the registry's id>'), or it cannot start"
            )

    def _location(self, app: dict[str, Any]) -> str:
        """deploy.yaml's location, else the live app's (an update keeps where it is), else
        the resource group's, as 'az appservice plan create' defaults it."""
        if app.get("location"):
            return str(app["location"])
        site = self._site()
        if site is not None and site.location:
            return str(site.location)
        request = HttpRequest(
            "GET",
            f"/subscriptions/{self.settings.subscription_id}/resourcegroups/{self.rg}",
            params={"api-version": RESOURCE_GROUPS_API},
        )
        response = self.client.send_request(request)
        try:
            response.raise_for_status()
        except HttpResponseError as error:
            raise self._failed(error, f"resource group {self.rg}") from error
        return str(response.json()["location"])

    def _ensure_plan(self, plan: dict[str, Any]) -> None:
        """Creates the plan when missing; moves a plan deployer created to deploy.yaml's SKU
        (within its family); uses anyone else's plan as it is, if it can run containers."""
        name, body = plan["name"], copy.deepcopy(plan["body"])
        wanted = str(body["sku"]["name"])
        try:
            found = self.client.app_service_plans.get(self.rg, name)
        except ResourceNotFoundError:
            found = None
        except HttpResponseError as error:
            raise self._failed(error, f"plan {name}") from error
        if found is not None:
            sku = str(getattr(found.sku, "name", "") or "")
            if sku.upper() in NO_CONTAINERS:
                raise DeployFailed(
                    f"plan {name} is {sku} ({NO_CONTAINERS[sku.upper()]}), which runs no custom "
                    "containers: give plan.name an Elastic Premium or Dedicated plan"
                )
            tags = dict(found.tags or {})
            if tags.get(TAG_CREATED_PLAN) != "deployer" or sku.lower() == wanted.lower():
                return
            if sku.upper().startswith("EP") != wanted.upper().startswith("EP"):
                raise DeployFailed(
                    f"plan {name} is {sku}: Azure cannot move a plan between Elastic Premium "
                    f"and Dedicated; keep plan.sku {sku}, or give plan.name a new plan for "
                    f"{wanted}"
                )
            self._progress(f"moving the plan {name} from {sku} to {wanted}")
            body["tags"] = {**tags, **body.get("tags", {})}
        else:
            body["tags"] = {**body.get("tags", {}), TAG_CREATED_PLAN: "deployer"}
            self._progress(f"creating the plan {name} ({wanted})")
        try:
            self.client.app_service_plans.begin_create_or_update(
                self.rg, name, raw_json(body), content_type="application/json"
            ).result()
        except HttpResponseError as error:
            raise self._failed(error, f"plan {name}") from error

    def _fill(self, value: str) -> str:
        found = PLACEHOLDER.fullmatch(str(value))
        if not found:
            return str(value)
        name = found[1]
        if name not in self.session.env:
            raise UserError(
                f"the app setting of {self.target.name} needs {name}, which is not set (the "
                "storage, trigger or registry connection the app runs with)"
            )
        secret = self.session.env[name]
        self.session.secrets.add(secret)
        return secret

    def wait(self, version: Version, deadline: Deadline) -> Version:
        started = last = time.monotonic()
        while True:
            site = self._site()
            if site is None:
                raise DeployFailed(f"the function app {self.app} disappeared while restarting")
            state = str(site.state or "Unknown")
            if state == "Running" and _image(site) == version.image:
                return Version(
                    version.revision, version.image, self._endpoint(), "healthy", ref=version.ref
                )
            if deadline.expired:
                raise deadline.exceeded(
                    f"function app {self.app} did not run {version.image} (state {state}, image "
                    f"{_image(site)})"
                )
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S:
                last = now
                self._progress(f"{self.app}: state {state} ({now - started:.0f} s)", "progress")
            deadline.sleep(POLL_S)

    def roll_back(self, release: Release, previous: Version | None) -> None:
        if previous is None or self._previous is None:
            self._progress(f"removing function app {self.app}: no version was live before")
            self.remove(images=False)
            return
        image, settings, tags = self._previous
        site = self._site()
        if site is None:
            return
        self._progress(f"putting revision {previous.revision} ({image}) back on {self.app}")
        body: dict[str, Any] = site.as_dict()  # REST names; read-only ones are ignored
        body["tags"] = tags
        body["properties"].setdefault("siteConfig", {})["linuxFxVersion"] = f"DOCKER|{image}"
        body["properties"]["siteConfig"].pop("appSettings", None)
        try:
            self.client.web_apps.begin_create_or_update(
                self.rg, self.app, raw_json(body), content_type="application/json"
            ).result()
            self.client.web_apps.update_application_settings(
                self.rg, self.app, StringDictionary(properties=settings)
            )
            self.client.web_apps.restart(self.rg, self.app)
        except HttpResponseError as error:
            raise self._failed(error, f"function app {self.app}") from error
        again = Version(previous.revision, image, None, "starting", ref=f"function app {self.app}")
        self.wait(again, Deadline(self.settings.ready_timeout_s))

    # Logs and removal ------------------------------------------------------------------------
    def logs(self, revision: str, tail: int) -> list[str]:
        """The app's container logs (its SCM site's), all revisions: the app has one log.
        Best effort, as the contract asks (a deploy's report reads them too): what stops
        them being read comes back as a line that says so."""
        try:
            source = self._log_source()
            try:
                return source.tail(tail)
            finally:
                source.close()
        except (DeployerError, AzureError) as error:
            return [f"[deployer] no logs from {self.app}: {error}"]

    def follow(self, revision: str, tail: int) -> Iterator[str]:
        source = self._log_source()
        try:
            yield from source.follow(tail)
        finally:
            source.close()

    def _log_source(self) -> KuduLogs | InsightsLogs:
        component = self.settings.application_insights
        if component:
            if not self.cloud.log_analytics:
                raise UserError(
                    f"the cloud {self.cloud.name} names no Azure Monitor Logs endpoint: add "
                    "endpoints.logAnalyticsResourceId to its description ('az cloud show')"
                )
            return InsightsLogs(self.app, component, self.credential, self.cloud.log_analytics)
        site = self._site()
        if site is None:
            raise DeployFailed(f"there is no function app {self.app} in {self.rg}")
        host = scm_host(site)
        if not host:
            raise DeployFailed(f"function app {self.app} reports no SCM (Kudu) host name")
        return KuduLogs(self.app, host, self.credential, self.cloud.arm_scope)

    def remove(self, images: bool) -> list[str]:
        site = self._site()
        removed: list[str] = []
        plan_id = str(site.server_farm_id or "") if site is not None else ""
        if site is not None:
            try:
                self.client.web_apps.delete(self.rg, self.app)
            except HttpResponseError as error:
                raise self._failed(error, f"function app {self.app}") from error
            removed.append(f"function app {self.app}")
        plan_name = plan_id.rsplit("/", 1)[-1] if plan_id else ""
        if plan_name:
            try:
                plan = self.client.app_service_plans.get(self.rg, plan_name)
            except ResourceNotFoundError:
                return removed
            mine = (plan.tags or {}).get(TAG_CREATED_PLAN) == "deployer"
            if mine and not (plan.number_of_sites or 0):
                self.client.app_service_plans.delete(self.rg, plan_name)
                removed.append(f"plan {plan_name} (deployer created it, and no app uses it)")
        return removed

    def close(self) -> None:
        self.client.close()

    def _failed(self, error: HttpResponseError, what: str) -> DeployFailed:
        return DeployFailed(arm_errors.explain(error, PROVIDER, what))

    def _progress(self, message: str, level: Level = "step") -> None:
        key = self.target.name if level == "progress" else ""
        self.session.progress(Event(level, f"{self.target.name}: {message}", key=key))


def _site_config(site: Any) -> dict[str, Any]:
    """The site's siteConfig in REST names (``acrUserManagedIdentityID``...)."""
    config = getattr(site, "site_config", None)
    return dict(config.as_dict()) if config is not None else {}


def _image(site: Any) -> str:
    config = getattr(site, "site_config", None)
    value = str(getattr(config, "linux_fx_version", "") or "")
    return value.removeprefix("DOCKER|")
