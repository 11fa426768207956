"""Microsoft.Web for the ``functions`` target: App Service plans (``serverfarms``) and
function apps (``sites``) as azure-mgmt-web 11 (api-version 2025-05-01) reaches them through
the ARM double: create or update, read, delete; app settings (``config/appsettings/list`` and
the whole-set replace ``config/appsettings``); restart; functions, their keys and the host's.

**No container runs.** Microsoft's Functions base image (mcr.microsoft.com/azure-functions/
python) cannot be pulled here, so unlike the ACI double this one starts nothing: a function
app's ``defaultHostName`` (``<name>.azurewebsites.net``, or ``<name>.<host_suffix>``) and its
functions' ``invoke_url_template`` are reported as Azure reports them, but nothing answers
there, and tests/conftest.py's loopback guard fails any attempt to connect. The live
invocation is proven by the rendered app's local proof (``deployer test --local``), not by
this double.

What stands in for the Functions host:

- **the functions** an app declares come from the test: ``double.web.set_functions(site,
  [{"name": "score", "bindings": [...]}, ...])`` with the bindings as the host reports them
  (function.json's, e.g. ``{"type": "httpTrigger", "direction": "in", "name": "req",
  "authLevel": "function", "methods": ["post"], "route": "score"}``; azure-functions'
  ``FunctionApp.get_functions()`` gives them: ``json.loads(fn.get_function_json())``). An
  HTTP function's ``invoke_url_template`` is ``https://<defaultHostName>/api/<route>`` (its
  route, else its name); other triggers have none, as in Azure. Functions are listed only
  while the app reports ``state: Running`` (Azure lists what the running host synced);
- **keys**: each function gets a ``default`` key, the host a ``masterKey``, a ``default``
  function key and no system keys; they stay the same for the app's life;
- **the state machine**: a site PUT (create or update), an app settings replace and a
  restart start the app again. For ``running_delay_s`` (0.5 s) the site reports what ran
  before (the previous ``linuxFxVersion``, ``""`` for a new app, and its previous state,
  ``Stopped`` for a new app or a restart); then the new ``linuxFxVersion`` and ``state:
  Running``. ``never_running(site)`` makes the next starts end in ``Stopped`` (the new image
  reported, never Running), as an app whose container never starts.

**Kudu.** Each app's SCM site (its container logs: ``az webapp log tail``'s source) is a
server of its own on 127.0.0.1 (kudu.py), started with the app and stopped when it is
deleted; the app reports it as its ``Repository`` host name. The state machine writes the
platform's lines there as App Service does (pulling the image, the container initialised, or
failing to answer HTTP pings), and ``write_log(app, line)`` stands in for the container's
own output.

The service's own refusals are in App Service's error format (``{"Code", "Message",
"Target", "Details": [..., {"ErrorEntity": {"ExtendedCode", ...}}], "Innererror"}``, keys
capitalised: azure-core then finds no ``error.code``; a client matches the status and the
message), with the sentences reported from real responses:

- a name used by another app anywhere (site names are global, as ``*.azurewebsites.net``
  is): 409 ``Conflict``, "Website with given name X already exists." (54001);
  ``take_site_name(name)`` makes a name someone else's;
- a container (``siteConfig.linuxFxVersion``) on a Flex Consumption (FC1) plan: 400
  ``BadRequest`` (51021), "The following site configuration property
  (Site.SiteConfig.LinuxFxVersion) for Flex Consumption sites is invalid.  Please remove or
  rename it before retrying.";
- a ``serverFarmId`` that names no plan: 404 "Cannot find ServerFarm with name X.";
- deleting a plan that apps still use: 409 "Server farm 'X' cannot be deleted because it has
  web app(s) Y assigned to it.".

Long-running operations, as the service's examples answer them: a new site's PUT is 202 with
``Azure-AsyncOperation`` at ``/subscriptions/{s}/providers/Microsoft.Web/sites/{name}/
operationResults/{id}?api-version=...``; a new plan's PUT is 202 with ``Azure-AsyncOperation``
and ``Location`` at ``.../serverfarms/{name}/operationresults/{id}`` (no api-version, as in
the example; the ARM double serves it without one); updates are 200. Each 202 also carries
``Retry-After`` (azure-core otherwise waits its 30 s default between polls). The operation
succeeds after ``operation_delay_s``; the poller then reads the resource.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.doubles.azure import errors
from tests.doubles.azure.containers import now

if TYPE_CHECKING:
    from tests.doubles.azure.arm import Request
    from tests.doubles.azure.kudu import ScmSites

Answer = tuple[int, Any, dict[str, str]]

SITE_TYPE = "Microsoft.Web/sites"
PLAN_TYPE = "Microsoft.Web/serverfarms"
SCOPE = r"^/subscriptions/(?P<s>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Web/"
PLAN = re.compile(SCOPE + r"serverfarms/(?P<name>[^/]+)$", re.I)
PLAN_OPERATION = re.compile(
    SCOPE + r"serverfarms/(?P<name>[^/]+)/operationresults/(?P<id>[^/]+)$", re.I
)
SITE = re.compile(SCOPE + r"sites/(?P<name>[^/]+)$", re.I)
SITE_CHILD = re.compile(SCOPE + r"sites/(?P<name>[^/]+)/(?P<rest>.+)$", re.I)
SITE_OPERATION = re.compile(
    r"^/subscriptions/(?P<s>[^/]+)/providers/Microsoft\.Web/sites/(?P<name>[^/]+)"
    r"/operationResults/(?P<id>[^/]+)$",
    re.I,
)
FARM_ID = re.compile(
    r"^/subscriptions/(?P<s>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Web/"
    r"serverfarms/(?P<name>[^/]+)$",
    re.I,
)
# Polling URLs App Service sends without an api-version (the plan example's): ARM serves them
POLLING_WITHOUT_VERSION = PLAN_OPERATION

# sku name -> (tier, family), the names App Service gives
SKUS = [
    (r"EP[1-3]", "ElasticPremium", "EP"),
    (r"Y1", "Dynamic", "Y"),
    (r"FC1", "FlexConsumption", "FC"),
    (r"P[0-3]m?v3", "PremiumV3", "Pv3"),
    (r"P[1-3]v2", "PremiumV2", "Pv2"),
    (r"P[1-3]", "Premium", "P"),
    (r"S[1-3]", "Standard", "S"),
    (r"B[1-3]", "Basic", "B"),
    (r"F1", "Free", "F"),
    (r"I[1-6]m?v2", "IsolatedV2", "Iv2"),
    (r"WS[1-3]", "WorkflowStandard", "WS"),
]


class AppServiceError(errors.ArmError):
    """An error in App Service's own format (its keys capitalised)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        extended: tuple[str, str, list[str]] | None = None,  # ExtendedCode, template, params
    ) -> None:
        super().__init__(status, code, message)
        self.extended = extended

    def body(self) -> dict[str, Any]:
        details: list[dict[str, Any]] = [{"Message": self.message}, {"Code": self.code}]
        if self.extended:
            extended_code, template, parameters = self.extended
            details.append(
                {
                    "ErrorEntity": {
                        "ExtendedCode": extended_code,
                        "MessageTemplate": template,
                        "Parameters": parameters,
                        "Code": self.code,
                        "Message": self.message,
                    }
                }
            )
        return {
            "Code": self.code,
            "Message": self.message,
            "Target": None,
            "Details": details,
            "Innererror": None,
        }


def name_taken(name: str) -> AppServiceError:
    template = "Website with given name {0} already exists."
    return AppServiceError(409, "Conflict", template.format(name), ("54001", template, [name]))


def flex_consumption_container() -> AppServiceError:
    template = "{0} is invalid.  {1}"
    parameters = [
        "The following site configuration property (Site.SiteConfig.LinuxFxVersion) for Flex "
        "Consumption sites",
        "Please remove or rename it before retrying.",
    ]
    return AppServiceError(
        400, "BadRequest", template.format(*parameters), ("51021", template, parameters)
    )


@dataclass(frozen=True)
class WebKey:
    subscription: str
    resource_group: str
    name: str
    type: str

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{self.type}/{self.name}"
        )

    def folded(self) -> tuple[str, str, str, str]:
        return (
            self.subscription.lower(),
            self.resource_group.lower(),
            self.name.lower(),
            self.type.lower(),
        )


@dataclass
class WebOperation:
    id: str
    done_at: float

    @property
    def status(self) -> str:
        return "Succeeded" if time.monotonic() >= self.done_at else "InProgress"


@dataclass
class Plan:
    key: WebKey
    body: dict[str, Any]


@dataclass
class Start:
    """A start under way: until ``at`` the app reports what ran before."""

    at: float
    image: str
    state: str  # what it reports meanwhile


@dataclass
class Site:
    key: WebKey
    body: dict[str, Any]  # as sent, without siteConfig.appSettings
    settings: dict[str, str] = field(default_factory=dict)
    image: str = ""  # the linuxFxVersion the app reports running
    state: str = "Stopped"
    start: Start | None = None
    restarts: int = 0
    puts: int = 0
    function_keys: dict[str, str] = field(default_factory=dict)
    host_keys: dict[str, Any] = field(default_factory=dict)
    principal_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def properties(self) -> dict[str, Any]:
        return dict(self.body.get("properties") or {})

    @property
    def linux_fx_version(self) -> str:
        """The configured one (what the next start runs)."""
        return str((self.properties.get("siteConfig") or {}).get("linuxFxVersion") or "")


def new_key() -> str:
    """A key shaped like the Functions host's (base64, 56 characters)."""
    return base64.b64encode(os.urandom(40)).decode()


class WebApps:
    """The Microsoft.Web service: ``route`` answers its requests (the ARM double checked
    them first); the rest is the test's API (see AzureDouble.web)."""

    def __init__(self) -> None:
        self.plans: dict[tuple[str, str, str, str], Plan] = {}
        self.sites: dict[tuple[str, str, str, str], Site] = {}
        self.operations: dict[str, WebOperation] = {}
        self.functions: dict[str, list[dict[str, Any]]] = {}  # site name (lower) -> functions
        self.taken_names: set[str] = set()  # site names apps of other subscriptions hold
        self.never_running_sites: set[str] = set()
        self.running_delay_s = 0.5
        self.operation_delay_s = 0.2
        self.poll_interval_s = 1
        self.host_suffix = "azurewebsites.net"
        self.scm: ScmSites | None = None  # each app's Kudu site, when the double serves them
        self._lock = threading.RLock()

    # The test's API -----------------------------------------------------------------------
    def set_functions(self, site: str, functions: list[dict[str, Any]]) -> None:
        """The functions the app's host declares (the double runs no host): each
        ``{"name": ..., "bindings": [...]}`` (function.json's bindings), optionally
        ``"language"`` (``python``) and ``"isDisabled"``."""
        for function in functions:
            if "name" not in function or not isinstance(function.get("bindings"), list):
                raise ValueError(f"a function needs a name and a list of bindings: {function}")
        with self._lock:
            self.functions[site.lower()] = copy.deepcopy(functions)

    def never_running(self, site: str) -> None:
        """The app's next starts never reach Running: it reports ``state: Stopped``."""
        self.never_running_sites.add(site.lower())

    def run_again(self, site: str) -> None:
        self.never_running_sites.discard(site.lower())

    def write_log(self, site: str, line: str) -> None:
        """A line of the app's container output (its Kudu log), as ``init()`` would print
        it: no Functions host runs here to write one."""
        if self.scm is not None:
            self.scm.write(site, line)

    def take_site_name(self, name: str) -> None:
        """An app of another subscription holds this name: a PUT creating it is 409."""
        self.taken_names.add(name.lower())

    def find_site(self, name: str) -> Site:
        with self._lock:
            for site in self.sites.values():
                if site.key.name.lower() == name.lower():
                    self._settle(site)
                    return site
        raise KeyError(name)

    def summary(self, name: str) -> dict[str, Any]:
        """What a test asserts of an app: state, linux_fx_version (reported), configured,
        settings, restarts, puts, kind, server_farm_id."""
        site = self.find_site(name)
        return {
            "state": site.state,
            "linux_fx_version": site.image,
            "configured": site.linux_fx_version,
            "settings": dict(site.settings),
            "restarts": site.restarts,
            "puts": site.puts,
            "kind": site.body.get("kind"),
            "server_farm_id": site.properties.get("serverFarmId"),
        }

    def plans_named(self, name: str) -> Plan:
        with self._lock:
            return next(p for p in self.plans.values() if p.key.name.lower() == name.lower())

    def plan_names(self) -> list[str]:
        with self._lock:
            return sorted(p.key.name for p in self.plans.values())

    def site_names(self) -> list[str]:
        with self._lock:
            return sorted(s.key.name for s in self.sites.values())

    # Routing ------------------------------------------------------------------------------
    def route(self, request: Request, arm_url: str) -> Answer | None:
        """The answer to a Microsoft.Web request, or None if it is not one of these."""
        method, path = request.method, request.path
        with self._lock:
            if found := PLAN.match(path):
                return self._plan(method, _key(found, PLAN_TYPE), request, arm_url)
            if found := SITE.match(path):
                return self._site(method, _key(found, SITE_TYPE), request, arm_url)
            if found := SITE_CHILD.match(path):
                return self._child(method, _key(found, SITE_TYPE), found["rest"], request)
            found = PLAN_OPERATION.match(path) or SITE_OPERATION.match(path)
            if found and method == "GET":
                return self._operation(found["id"])
        return None

    # Plans --------------------------------------------------------------------------------
    def _plan(self, method: str, key: WebKey, request: Request, arm_url: str) -> Answer:
        if method == "GET":
            return 200, self._plan_resource(self._find_plan(key)), {}
        if method == "PUT":
            body = _json(request)
            existing = self.plans.get(key.folded())
            if existing is not None:
                existing.body = body
                return 200, self._plan_resource(existing), {}
            plan = Plan(key, body)
            self.plans[key.folded()] = plan
            operation = self._operation_for()
            url = f"{arm_url}{key.id}/operationresults/{operation.id}"
            headers = {
                "Azure-AsyncOperation": url,
                "Location": url,
                "Retry-After": str(self.poll_interval_s),
            }
            return 202, self._plan_resource(plan), headers
        if method == "DELETE":
            plan = self.plans.get(key.folded())
            if plan is None:
                return 204, None, {}
            users = [s.key.name for s in self._sites_of(plan)]
            if users:
                raise AppServiceError(
                    409,
                    "Conflict",
                    f"Server farm '{key.name}' cannot be deleted because it has web app(s) "
                    f"{', '.join(users)} assigned to it.",
                )
            del self.plans[key.folded()]
            return 200, None, {}
        raise _not_allowed(method)

    def _find_plan(self, key: WebKey) -> Plan:
        plan = self.plans.get(key.folded())
        if plan is None:
            raise errors.resource_not_found(PLAN_TYPE, key.name, key.resource_group)
        return plan

    def _sites_of(self, plan: Plan) -> list[Site]:
        return [
            s
            for s in self.sites.values()
            if str(s.properties.get("serverFarmId", "")).lower() == plan.key.id.lower()
        ]

    def _plan_resource(self, plan: Plan) -> dict[str, Any]:
        body = copy.deepcopy(plan.body)
        sku = dict(body.get("sku") or {})
        tier, family = _sku(str(sku.get("name", "")))
        sku.setdefault("tier", tier)
        sku.setdefault("family", family)
        sku.setdefault("size", sku.get("name"))
        sku.setdefault("capacity", 1)
        properties = dict(body.get("properties") or {})
        properties.update(
            {
                "status": "Ready",
                "provisioningState": "Succeeded",
                "reserved": bool(properties.get("reserved", False)),
                "numberOfSites": len(self._sites_of(plan)),
                "maximumNumberOfWorkers": 20 if tier != "ElasticPremium" else 100,
                "geoRegion": body.get("location"),
                "resourceGroup": plan.key.resource_group,
                "subscription": plan.key.subscription,
            }
        )
        return {
            **body,
            "id": plan.key.id,
            "name": plan.key.name,
            "type": PLAN_TYPE,
            "kind": body.get("kind", "app"),
            "sku": sku,
            "properties": properties,
        }

    # Sites --------------------------------------------------------------------------------
    def _site(self, method: str, key: WebKey, request: Request, arm_url: str) -> Answer:
        if method == "GET":
            return 200, self._site_resource(self._find_site(key)), {}
        if method == "PUT":
            return self._put_site(key, _json(request), request, arm_url)
        if method == "DELETE":
            site = self.sites.pop(key.folded(), None)
            if site is not None and self.scm is not None:
                self.scm.close(site.key.name)
            return (200, None, {}) if site else (204, None, {})
        raise _not_allowed(method)

    def _find_site(self, key: WebKey) -> Site:
        site = self.sites.get(key.folded())
        if site is None:
            raise errors.resource_not_found(SITE_TYPE, key.name, key.resource_group)
        self._settle(site)
        return site

    def _put_site(
        self, key: WebKey, body: dict[str, Any], request: Request, arm_url: str
    ) -> Answer:
        existing = self.sites.get(key.folded())
        if existing is None:
            others = {s.key.name.lower() for s in self.sites.values()}
            if key.name.lower() in self.taken_names | others:
                raise name_taken(key.name)
        properties = body.get("properties") or {}
        farm = FARM_ID.match(str(properties.get("serverFarmId", "")))
        plan = None
        if farm is not None:
            plan = self.plans.get(WebKey(farm["s"], farm["rg"], farm["name"], PLAN_TYPE).folded())
        if plan is None:
            farm_name = farm["name"] if farm else str(properties.get("serverFarmId", ""))
            raise AppServiceError(404, "NotFound", f"Cannot find ServerFarm with name {farm_name}.")
        site_config = dict(properties.get("siteConfig") or {})
        sku = str((plan.body.get("sku") or {}).get("name", ""))
        if site_config.get("linuxFxVersion") and sku.upper() == "FC1":
            raise flex_consumption_container()
        settings = site_config.pop("appSettings", None)
        kept = copy.deepcopy(body)
        kept.setdefault("properties", {})["siteConfig"] = site_config
        if existing is None:
            site = Site(key, kept)
            if self.scm is not None:
                self.scm.open(key.name, key.id)
            site.host_keys = {
                "masterKey": new_key(),
                "functionKeys": {"default": new_key()},
                "systemKeys": {},
            }
            self.sites[key.folded()] = site
        else:
            site = existing
            self._settle(site)
            site.body = kept
        if settings is not None:
            site.settings = {str(s["name"]): str(s.get("value") or "") for s in settings}
        site.puts += 1
        self._start(site, restart=False)
        if existing is not None:
            return 200, self._site_resource(site), {}
        operation = self._operation_for()
        version = request.query.get("api-version", "")
        url = (
            f"{arm_url}/subscriptions/{key.subscription}/providers/{SITE_TYPE}/{key.name}"
            f"/operationResults/{operation.id}?api-version={version}"
        )
        headers = {"Azure-AsyncOperation": url, "Retry-After": str(self.poll_interval_s)}
        return 202, self._site_resource(site), headers

    def _start(self, site: Site, restart: bool) -> None:
        meanwhile = "Stopped" if restart or not site.image else site.state
        site.start = Start(
            time.monotonic() + self.running_delay_s, site.linux_fx_version, meanwhile
        )
        site.state = meanwhile
        image = site.linux_fx_version.removeprefix("DOCKER|")
        self._platform_log(site, "INFO", f"Pulling image: {image}")
        self._platform_log(site, "INFO", f"Starting container for site {site.key.name}")

    def _settle(self, site: Site) -> None:
        start = site.start
        if start is None or time.monotonic() < start.at:
            return
        site.start = None
        site.image = start.image
        never = site.key.name.lower() in self.never_running_sites
        site.state = "Stopped" if never else "Running"
        container = f"{site.key.name.lower()}_0_{site.principal_id[:8]}"
        if never:
            self._platform_log(
                site,
                "ERROR",
                f"Container {container} for site {site.key.name} did not start within "
                "expected time limit. Elapsed time = 230.5 sec",
            )
            self._platform_log(
                site,
                "ERROR",
                f"Container {container} didn't respond to HTTP pings on port: 80, failing site "
                "start. See container logs for debugging.",
            )
        else:
            self._platform_log(
                site,
                "INFO",
                f"Container {container} for site {site.key.name} initialized successfully and "
                "is ready to serve requests.",
            )

    def _platform_log(self, site: Site, level: str, line: str) -> None:
        if self.scm is not None:
            self.scm.write(site.key.name, line, level)

    def default_host(self, site: Site) -> str:
        return f"{site.key.name.lower()}.{self.host_suffix}"

    def _site_resource(self, site: Site) -> dict[str, Any]:
        body = copy.deepcopy(site.body)
        host = self.default_host(site)
        scm = f"{site.key.name.lower()}.scm.{self.host_suffix}"
        if self.scm is not None:  # the double's Kudu answers on loopback, not at that name
            scm = self.scm.open(site.key.name, site.key.id)
        properties = dict(body.get("properties") or {})
        site_config = dict(properties.get("siteConfig") or {})
        site_config["linuxFxVersion"] = site.image
        site_config.setdefault("acrUseManagedIdentityCreds", False)
        properties.update(
            {
                "state": site.state,
                "hostNames": [host],
                "enabledHostNames": [host, scm],
                "defaultHostName": host,
                "hostNameSslStates": [
                    {"name": host, "hostType": "Standard", "sslState": "Disabled"},
                    {"name": scm, "hostType": "Repository", "sslState": "Disabled"},
                ],
                "repositorySiteName": site.key.name,
                "resourceGroup": site.key.resource_group,
                "usageState": "Normal",
                "availabilityState": "Normal",
                "enabled": True,
                "reserved": bool(properties.get("reserved", False)),
                "lastModifiedTimeUtc": now(),
                "siteConfig": site_config,
            }
        )
        resource = {
            **body,
            "id": site.key.id,
            "name": site.key.name,
            "type": SITE_TYPE,
            "kind": body.get("kind", "app"),
            "properties": properties,
        }
        identity = body.get("identity")
        if isinstance(identity, dict):
            resource["identity"] = self._identity(site, identity)
        return resource

    def _identity(self, site: Site, identity: dict[str, Any]) -> dict[str, Any]:
        answered = dict(identity)
        kind = str(identity.get("type", ""))
        if "SystemAssigned" in kind:
            answered["principalId"] = site.principal_id
            answered["tenantId"] = str(uuid.UUID(int=0))
        users = identity.get("userAssignedIdentities") or {}
        answered_users = {}
        for resource_id in users:
            seed = uuid.uuid5(uuid.NAMESPACE_URL, resource_id.lower())
            answered_users[resource_id] = {
                "principalId": str(seed),
                "clientId": str(uuid.uuid5(seed, "client")),
            }
        if answered_users:
            answered["userAssignedIdentities"] = answered_users
        return answered

    # Below a site -------------------------------------------------------------------------
    def _child(self, method: str, key: WebKey, rest: str, request: Request) -> Answer:
        site = self._find_site(key)
        lowered = rest.lower()
        if lowered == "config/appsettings/list" and method == "POST":
            return 200, self._settings_resource(site), {}
        if lowered == "config/appsettings" and method == "PUT":
            body = _json(request)
            site.settings = dict(body.get("properties") or {})
            self._start(site, restart=False)  # App Service restarts an app to apply them
            return 200, self._settings_resource(site), {}
        if lowered == "restart" and method == "POST":
            site.restarts += 1
            self._start(site, restart=True)
            return 200, None, {}
        if lowered == "host/default/listkeys" and method == "POST":
            return 200, copy.deepcopy(site.host_keys), {}
        if lowered == "functions" and method == "GET":
            value = [self._function(site, f) for f in self._functions(site)]
            return 200, {"value": value, "nextLink": None}, {}
        if found := re.fullmatch(r"functions/([^/]+)(/listkeys|/listsecrets)?", rest, re.I):
            name, action = found.group(1), (found.group(2) or "").lower()
            function = next(
                (f for f in self._functions(site) if f["name"].lower() == name.lower()), None
            )
            if function is None:
                raise errors.ArmError(404, "NotFound", f"Function '{name}' not found.")
            if method == "GET" and not action:
                return 200, self._function(site, function), {}
            if method == "POST" and action == "/listkeys":
                return 200, {"default": self._function_key(site, function)}, {}
            if method == "POST" and action == "/listsecrets":
                key = self._function_key(site, function)
                url = _invoke_url(self.default_host(site), function)
                trigger = f"{url}?code={key}" if url else None
                return 200, {"key": key, "trigger_url": trigger}, {}
        raise errors.ArmError(
            404, "NotFound", f"No HTTP resource was found that matches the request URI '{rest}'."
        )

    def _settings_resource(self, site: Site) -> dict[str, Any]:
        return {
            "id": f"{site.key.id}/config/appsettings",
            "name": "appsettings",
            "type": f"{SITE_TYPE}/config",
            "location": site.body.get("location"),
            "properties": dict(site.settings),
        }

    def _functions(self, site: Site) -> list[dict[str, Any]]:
        if site.state != "Running":
            return []  # Azure lists what a running host synced
        return self.functions.get(site.key.name.lower(), [])

    def _function_key(self, site: Site, function: dict[str, Any]) -> str:
        return site.function_keys.setdefault(function["name"].lower(), new_key())

    def _function(self, site: Site, function: dict[str, Any]) -> dict[str, Any]:
        name = function["name"]
        scm = f"https://{site.key.name.lower()}.scm.{self.host_suffix}/admin/vfs/home/site/wwwroot"
        return {
            "id": f"{site.key.id}/functions/{name}",
            "name": f"{site.key.name}/{name}",
            "type": f"{SITE_TYPE}/functions",
            "location": site.body.get("location"),
            "properties": {
                "name": name,
                "function_app_id": site.key.id,
                "script_root_path_href": f"{scm}/",
                "script_href": f"{scm}/function_app.py",
                "config_href": None,
                "test_data_href": None,
                "secrets_file_href": None,
                "href": f"https://{site.key.name.lower()}.scm.{self.host_suffix}/api/functions/"
                f"{name}",
                "config": {"name": name, "entryPoint": name, "bindings": function["bindings"]},
                "files": None,
                "test_data": None,
                "invoke_url_template": _invoke_url(self.default_host(site), function),
                "language": function.get("language", "python"),
                "isDisabled": bool(function.get("isDisabled", False)),
            },
        }

    # Operations ---------------------------------------------------------------------------
    def _operation_for(self) -> WebOperation:
        operation = WebOperation(str(uuid.uuid4()), time.monotonic() + self.operation_delay_s)
        self.operations[operation.id.lower()] = operation
        return operation

    def _operation(self, operation_id: str) -> Answer:
        operation = self.operations.get(operation_id.lower())
        if operation is None:
            raise errors.ArmError(
                404, "OperationNotFound", f"Operation '{operation_id}' not found."
            )
        status = operation.status
        headers = {"Retry-After": str(self.poll_interval_s)} if status == "InProgress" else {}
        return 200, {"id": operation.id, "name": operation.id, "status": status}, headers


def _invoke_url(host: str, function: dict[str, Any]) -> str | None:
    trigger = next(
        (b for b in function["bindings"] if str(b.get("type", "")).lower() == "httptrigger"), None
    )
    if trigger is None:
        return None
    route = str(trigger.get("route") or function["name"]).lstrip("/")
    return f"https://{host}/api/{route}"


def _sku(name: str) -> tuple[str, str]:
    for pattern, tier, family in SKUS:
        if re.fullmatch(pattern, name, re.I):
            return tier, family
    return "", ""


def _key(found: re.Match[str], resource_type: str) -> WebKey:
    return WebKey(found["s"], found["rg"], found["name"], resource_type)


def _json(request: Request) -> dict[str, Any]:
    return json.loads(request.body) if request.body else {}  # type: ignore[no-any-return]


def _not_allowed(method: str) -> errors.ArmError:
    return errors.ArmError(405, "MethodNotAllowed", f"{method} is not allowed here.")
