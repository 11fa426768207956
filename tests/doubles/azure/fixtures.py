"""Everything a test needs of Azure, started together: ``AzureDouble`` (and the session
fixture ``azure_double``). See tests/doubles/azure/__init__.py for the whole API.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.azure.arm import ArmHandler, Denial, Subscription
from tests.doubles.azure.container_groups import ContainerGroups
from tests.doubles.azure.containers import DockerRuntime
from tests.doubles.azure.entra import EntraDouble, EntraHandler
from tests.doubles.azure.errors import throttled
from tests.doubles.azure.faults import Rule, Stall
from tests.doubles.azure.group_model import GroupKey
from tests.doubles.azure.kudu import ScmSites
from tests.doubles.azure.log_analytics import LogAnalytics, LogAnalyticsHandler
from tests.doubles.azure.registries import Registries, Registry
from tests.doubles.azure.resource_manager import ArmDouble, summary
from tests.doubles.azure.tls import HttpsServer, make_certificates
from tests.doubles.azure.web import WebApps

DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"  # the example's
DEFAULT_RESOURCE_GROUP = "ml-rg"  # the example's


class AzureDouble:
    """Entra ID and ARM (ACI, ACR) doubles on 127.0.0.1 over TLS, with real containers.

    ``with AzureDouble(tmp_dir, docker_environment) as azure:`` then
    ``subprocess.run(..., env={**os.environ, **azure.env()})``.
    """

    def __init__(self, workdir: Path, docker_environment: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.docker_environment = docker_environment
        self.tenant_id = str(uuid.uuid4())
        self.client_id = str(uuid.uuid4())
        self.client_secret = "secret-" + uuid.uuid4().hex
        self.subscription_id = DEFAULT_SUBSCRIPTION
        self.resource_group = DEFAULT_RESOURCE_GROUP
        self.certificates = make_certificates(workdir / "tls")
        self.entra = EntraDouble(self.tenant_id)
        self.entra.add_principal(self.client_id, self.client_secret)
        self.registries = Registries()
        self.runtime = DockerRuntime(uuid.uuid4().hex, docker_environment)
        self.container_groups = ContainerGroups(self.runtime, self.registries)
        self.web = WebApps()  # Microsoft.Web: plans, function apps (no container runs)
        self.service = ArmDouble(self.entra, self.container_groups, self.registries, self.web)
        self.log_analytics = LogAnalytics(self.entra)  # Application Insights' query API
        self._servers = [
            HttpsServer(EntraHandler, self.certificates, self.entra),
            HttpsServer(ArmHandler, self.certificates, self.service),
            HttpsServer(LogAnalyticsHandler, self.certificates, self.log_analytics),
        ]
        self.entra.url = self._servers[0].url
        self.service.gate.url = self._servers[1].url
        self.log_analytics.url = self._servers[2].url
        # Each function app's SCM site (Kudu: its log stream), started with the app
        self.web.scm = ScmSites(self.certificates, self.service.gate)
        self.add_subscription(self.subscription_id)
        self.add_resource_group(self.resource_group)

    def __enter__(self) -> AzureDouble:
        for server in self._servers:
            server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.service.faults.release_all()
        self.container_groups.close()
        if self.web.scm is not None:
            self.web.scm.close_all()
        for server in self._servers:
            server.stop()
        if self.runtime._client is not None:
            self.runtime.remove_leftovers()
        self.runtime.close()

    # Where things are ---------------------------------------------------------------------
    @property
    def ca_bundle(self) -> Path:
        return self.certificates.ca_bundle

    @property
    def authority(self) -> str:
        """The Entra authority (azure-identity's ``authority=``), no trailing slash."""
        return self.entra.url

    @property
    def arm(self) -> str:
        """Resource Manager's endpoint (a client's ``base_url``), with a trailing slash."""
        return self.service.url + "/"

    @property
    def arm_scope(self) -> str:
        return self.service.url + "/.default"

    def cloud_file(self, path: Path, name: str = "DeployerTestCloud", acr_suffix: str = "") -> Path:
        """A custom cloud in ``az cloud show``'s format, for ``DEPLOYER_AZURE_CLOUD``."""
        cloud = {
            "name": name,
            "endpoints": {
                "resourceManager": self.arm,
                "activeDirectory": self.authority + "/",
                "activeDirectoryResourceId": self.arm,
                "logAnalyticsResourceId": self.log_analytics.url,
            },
            "suffixes": {"acrLoginServerEndpoint": acr_suffix or ".azurecr.io"},
            "isActive": False,
        }
        path.write_text(json.dumps(cloud, indent=2))
        return path

    def env(self) -> dict[str, str]:
        """What deployer's environment needs to reach the doubles (a cloud file is written
        in the double's directory)."""
        values = {
            "REQUESTS_CA_BUNDLE": str(self.ca_bundle),
            "AZURE_CLIENT_ID": self.client_id,
            "AZURE_CLIENT_SECRET": self.client_secret,
            "AZURE_TENANT_ID": self.tenant_id,
            # DefaultAzureCredential: the AZURE_* variables only, no managed identity probe
            "AZURE_TOKEN_CREDENTIALS": "EnvironmentCredential",
            "DEPLOYER_AZURE_CLOUD": str(self.cloud_file(self.workdir / "cloud.json")),
        }
        docker_host = (self.docker_environment or os.environ).get("DOCKER_HOST")
        if docker_host:
            values["DOCKER_HOST"] = docker_host
        return values

    # What is there ------------------------------------------------------------------------
    def groups(self, resource_group: str | None = None) -> list[dict[str, Any]]:
        """The container groups of a resource group: name, provisioning_state, state (the
        instance view's), tags, images, port, docker_ids."""
        found = self.container_groups.in_resource_group(
            self.subscription_id, resource_group or self.resource_group
        )
        return [summary(group) for group in found]

    def group_resource(self, name: str, resource_group: str | None = None) -> dict[str, Any]:
        """A group's resource as GET answers it (instance views included)."""
        key = GroupKey(self.subscription_id, resource_group or self.resource_group, name)
        return self.container_groups.view(self.container_groups.find(key))

    def requests(self, method: str = "", path: str = "") -> list[Any]:
        """The ARM requests served (method, path with query, status, client request id),
        those with this method and a path matching ``path`` if given."""
        return [
            r
            for r in self.service.gate.requests
            if (not method or r.method == method) and re.search(path, r.path)
        ]

    @property
    def scopes_asked(self) -> list[str]:
        return list(self.entra.scopes_asked)

    # Setting up ---------------------------------------------------------------------------
    def add_subscription(self, subscription_id: str) -> None:
        self.service.gate.subscriptions.setdefault(
            subscription_id.lower(), Subscription(subscription_id)
        )

    def add_resource_group(
        self, name: str, subscription_id: str | None = None, location: str = "westeurope"
    ) -> None:
        sub = (subscription_id or self.subscription_id).lower()
        self.service.gate.subscriptions[sub].resource_groups.add(name.lower())
        self.service.gate.subscriptions[sub].locations[name.lower()] = location

    def unregister_provider(self, namespace: str, subscription_id: str | None = None) -> None:
        """ARM then answers 409 MissingSubscriptionRegistration to the namespace's calls."""
        sub = (subscription_id or self.subscription_id).lower()
        self.service.gate.subscriptions[sub].registered.discard(namespace.lower())

    def register_provider(self, namespace: str, subscription_id: str | None = None) -> None:
        sub = (subscription_id or self.subscription_id).lower()
        self.service.gate.subscriptions[sub].registered.add(namespace.lower())

    def add_registry(
        self,
        name: str,
        login_server: str,
        username: str,
        password: str,
        *,
        admin_enabled: bool = True,
        password2: str | None = None,
        resource_group: str | None = None,
    ) -> Registry:
        """An ACR registry backed by a real one (``login_server``, e.g. 127.0.0.1:5000) with
        these credentials: its admin user's (listCredentials), and what the double pulls
        with for identities that have AcrPull on it."""
        group = resource_group or self.resource_group
        self.add_resource_group(group)
        registry = Registry(
            self.subscription_id,
            group,
            name,
            login_server,
            username,
            (password, password2 or password),
            admin_enabled,
        )
        return self.registries.add(registry)

    def grant_acr_pull(self, identity_id: str, login_server: str) -> None:
        """A user-assigned identity (its resource id) gets AcrPull on the registry."""
        self.registries.grant_acr_pull(identity_id, login_server)

    def revoke_acr_pull(self, identity_id: str, login_server: str) -> None:
        self.registries.revoke_acr_pull(identity_id, login_server)

    # Faults -------------------------------------------------------------------------------
    def revoke(self, action: str = ".*", scope: str = "/subscriptions/") -> Denial:
        """The service principal loses the actions matching ``action`` (a regular
        expression, e.g. ``containerGroups/write``) under ``scope`` (a prefix): 403
        AuthorizationFailed, naming the action and the scope as ARM does."""
        denial = Denial(action, scope)
        self.service.gate.denials.append(denial)
        return denial

    def restore_access(self) -> None:
        self.service.gate.denials.clear()

    def fail(
        self,
        method: str,
        path: str,
        *,
        status: int = 500,
        code: str = "InternalServerError",
        message: str = "Encountered internal server error. Please try again.",
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> Rule:
        """Answer the next ``times`` matching ARM requests with this error."""
        rule = Rule(method.upper(), path, "fail", status, code, message, headers or {}, times)
        return self.service.faults.add(rule)

    def hold(self, method: str, path: str, times: int = 1) -> Rule:
        """Keep the next matching ARM request waiting until ``rule.released`` is set."""
        return self.service.faults.add(Rule(method.upper(), path, "hold", times=times))

    def throttle(
        self, method: str = "GET", path: str = ".*", times: int = 1, retry_after: int = 1
    ) -> Rule:
        """429 SubscriptionRequestsThrottled with ``Retry-After``, ``times`` times."""
        kind = "read" if method.upper() == "GET" else "write"
        object_id = self.entra.principals[self.client_id].object_id
        error = throttled(self.subscription_id, object_id, retry_after, kind)
        return self.fail(
            method,
            path,
            status=429,
            code=error.code,
            message=error.message,
            times=times,
            headers=error.headers,
        )

    def stall(self, group: str = ".*", times: int = 1) -> Stall:
        """The next provisioning of a group whose name matches stays ``Pending`` (its
        containers never start, its operation stays InProgress) until ``released``."""
        stall = Stall(group, times)
        self.container_groups.settings.stalls.append(stall)
        return stall

    def crash_loop(self, group: str) -> None:
        """The next start of this group's containers runs a command that exits 1 at once:
        under ``restartPolicy: Always`` the container crash-loops (Waiting,
        CrashLoopBackOff, restartCount growing)."""
        self.container_groups.settings.crash_loops.append(group)

    def crash(self, group: str, resource_group: str | None = None) -> None:
        """Kill the group's running containers, as a crash would."""
        key = GroupKey(self.subscription_id, resource_group or self.resource_group, group)
        for container in self.container_groups.find(key).containers:
            self.runtime.crash(container)

    def take_dns_label(self, label: str) -> None:
        """Someone else's group holds this DNS name label (400 DnsNameLabelAlreadyTaken)."""
        self.container_groups.settings.taken_dns_labels.add(label.lower())

    def set_core_quota(self, cores: float | None) -> None:
        """StandardCores per region (400 ContainerGroupQuotaReached past it); None: no limit."""
        self.container_groups.settings.core_quota = cores

    def take_site_name(self, name: str) -> None:
        """An app of another subscription holds this name: creating it is 409 Conflict
        ("Website with given name X already exists.")."""
        self.web.take_site_name(name)

    def never_running(self, site: str) -> None:
        """The function app's next starts (PUT, settings, restart) end ``Stopped``."""
        self.web.never_running(site)

    def expire_tokens(self) -> None:
        self.entra.expire_tokens()


@pytest.fixture(scope="session")
def azure_double(
    tmp_path_factory: pytest.TempPathFactory, dev_env: dict[str, str]
) -> Iterator[AzureDouble]:
    """One AzureDouble for the session (import it with ``dev_env`` from
    tests/docker/conftest.py into a conftest or test module)."""
    environment = dict(os.environ)
    if "DOCKER_HOST" in dev_env:
        environment["DOCKER_HOST"] = dev_env["DOCKER_HOST"]
    with AzureDouble(tmp_path_factory.mktemp("azure"), environment) as double:
        yield double
