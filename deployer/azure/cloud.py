"""Which Azure cloud deployer talks to, and the credential it talks with.

A cloud is what the Azure CLI calls one (``az cloud list``): its Resource Manager endpoint,
its Entra ID (Azure AD) authority and its registry suffix. The three public clouds are
known by name: ``AzureCloud`` (the default), ``AzureChinaCloud`` and ``AzureUSGovernment``.
Any other (Azure Stack Hub, an air-gapped cloud) is described by a JSON file in the format
``az cloud show`` prints, so ``az cloud show --name MyCloud > cloud.json`` writes one.

Where the cloud comes from, first found: deploy.yaml's ``azure_cloud`` (a name, or such a
file relative to deploy.yaml), then the environment variable ``DEPLOYER_AZURE_CLOUD`` (the
same, the path absolute or relative to the working directory), then ``AzureCloud``. The
credential is azure-identity's ``DefaultAzureCredential`` against the cloud's authority:
``azure/login``'s OIDC session in GitHub Actions, ``az login`` on a workstation, a service
principal's ``AZURE_CLIENT_*`` variables, or a managed identity. For a custom cloud, MSAL's
instance discovery (a call to login.microsoftonline.com, which such a cloud may not reach)
is turned off, as the Azure CLI does for clouds it does not know.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.errors import UserError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

CLOUD_ENV = "DEPLOYER_AZURE_CLOUD"
DEFAULT_CLOUD = "AzureCloud"


@dataclass(frozen=True)
class AzureCloud:
    name: str
    resource_manager: str  # https://management.azure.com/
    authority: str  # https://login.microsoftonline.com/
    acr_suffix: str  # azurecr.io
    known: bool  # one of the public clouds (MSAL knows its authorities)
    log_analytics: str = ""  # https://api.loganalytics.io: Azure Monitor Logs' query API

    @property
    def arm_scope(self) -> str:
        """The scope of a token for Resource Manager (and for ACR's token exchange)."""
        return self.resource_manager.rstrip("/") + "/.default"


KNOWN_CLOUDS = {
    cloud.name: cloud
    for cloud in (
        AzureCloud(
            "AzureCloud",
            "https://management.azure.com/",
            "https://login.microsoftonline.com/",
            "azurecr.io",
            True,
            "https://api.loganalytics.io",
        ),
        AzureCloud(
            "AzureChinaCloud",
            "https://management.chinacloudapi.cn/",
            "https://login.chinacloudapi.cn/",
            "azurecr.cn",
            True,
            "https://api.loganalytics.azure.cn",
        ),
        AzureCloud(
            "AzureUSGovernment",
            "https://management.usgovcloudapi.net/",
            "https://login.microsoftonline.us/",
            "azurecr.us",
            True,
            "https://api.loganalytics.us",
        ),
    )
}


def resolve_cloud(
    setting: str | None, base_dir: Path, env: Mapping[str, str] = os.environ
) -> AzureCloud:
    """The cloud deploy.yaml's ``azure_cloud`` (``setting``) or the environment names."""
    if setting:
        return _cloud(setting, base_dir, "azure_cloud in deploy.yaml")
    from_env = env.get(CLOUD_ENV, "").strip()
    if from_env:
        return _cloud(from_env, Path.cwd(), f"the environment variable {CLOUD_ENV}")
    return KNOWN_CLOUDS[DEFAULT_CLOUD]


def _cloud(value: str, base_dir: Path, where: str) -> AzureCloud:
    if value in KNOWN_CLOUDS:
        return KNOWN_CLOUDS[value]
    path = base_dir / value
    if not path.is_file():
        known = ", ".join(KNOWN_CLOUDS)
        raise UserError(
            f"{where} is {value!r}: neither a known cloud ({known}) nor a file; for another "
            "cloud, write its description with 'az cloud show --name NAME > cloud.json'"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{where}: cannot read {path} as JSON: {exc}") from None
    return _custom_cloud(data, path)


def _custom_cloud(data: Any, path: Path) -> AzureCloud:
    """A cloud from ``az cloud show``'s JSON: endpoints.resourceManager,
    endpoints.activeDirectory and suffixes.acrLoginServerEndpoint (and, when given,
    endpoints.logAnalyticsResourceId)."""

    def field(section: str, key: str) -> str:
        value = data.get(section, {}).get(key) if isinstance(data, dict) else None
        if not isinstance(value, str) or not value:
            raise UserError(f"{path}: {section}.{key} is missing (as 'az cloud show' prints it)")
        return value

    resource_manager = field("endpoints", "resourceManager")
    authority = field("endpoints", "activeDirectory")
    for endpoint in (resource_manager, authority):
        if not endpoint.startswith("https://"):
            raise UserError(f"{path}: {endpoint} must be an https:// address")
    return AzureCloud(
        name=str(data.get("name") or path.stem),
        resource_manager=resource_manager.rstrip("/") + "/",
        authority=authority.rstrip("/") + "/",
        acr_suffix=field("suffixes", "acrLoginServerEndpoint").lstrip("."),
        known=False,
        # Optional: only reading logs from Application Insights needs it.
        log_analytics=str(data.get("endpoints", {}).get("logAnalyticsResourceId") or ""),
    )


def credential(cloud: AzureCloud) -> TokenCredential:
    """azure-identity's DefaultAzureCredential for ``cloud`` (imported here, by name: only
    the commands that talk to Azure load it)."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(
        authority=cloud.authority,
        disable_instance_discovery=not cloud.known,
        exclude_interactive_browser_credential=True,
    )


def management_client_options(cloud: AzureCloud) -> dict[str, Any]:
    """What every azure-mgmt client of ``cloud`` is built with: its endpoint and the token
    audience that goes with it (azure-mgmt-core only knows the public clouds' audiences)."""
    return {"base_url": cloud.resource_manager, "credential_scopes": [cloud.arm_scope]}
