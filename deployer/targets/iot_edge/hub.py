"""Reaching an IoT Hub's service API as ``az iot`` does: a shared access policy's connection
string (from the environment variable deploy.yaml names), or the Entra ID identity deployer
runs as; and the hub's errors, in words that say what to do.

Only the REST client is used (``IoTHubConfigurationManager`` and its protocol layer): the
registry manager would open an AMQP link deployer has no use for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.iot.hub import IoTHubConfigurationManager
from msrest.exceptions import ClientRequestError, HttpOperationError

from deployer.errors import DeployerError, DeployFailed, UserError
from deployer.targets.iot_edge.schema import Config

# IoT Hub host names per cloud (Azure's own names, as ``az cloud list`` gives them).
HUB_SUFFIXES = {
    "AzureCloud": "azure-devices.net",
    "AzureChinaCloud": "azure-devices.cn",
    "AzureUSGovernment": "azure-devices.us",
}
# Throttling (429, with Retry-After) and a passing 5xx are retried for every verb: what
# deployer sends (configuration content, twin tags, deletes of named configurations) is
# idempotent.
RETRY_STATUSES = (429, 500, 502, 503, 504)
RETRIES = 5


@dataclass
class Hub:
    manager: Any  # IoTHubConfigurationManager (untyped)
    host: str
    source: str  # "the connection string in IOTHUB_CONNECTION_STRING", for messages

    @property
    def protocol(self) -> Any:
        return self.manager.protocol


def connect_hub(settings: Config, env: Mapping[str, str], cloud: str | None, cwd: Path) -> Hub:
    if settings.auth == "connection_string":
        value = env.get(settings.connection_string_env, "")
        if not value:
            raise UserError(
                f"the IoT Hub connection string is read from {settings.connection_string_env}, "
                "which is not set; get one with 'az iot hub connection-string show -n "
                f"{settings.hub} --policy-name registryReadWrite' (a policy with registry "
                "write and service connect), or set auth: entra"
            )
        fields = dict(part.split("=", 1) for part in value.split(";") if "=" in part)
        missing = [
            k for k in ("HostName", "SharedAccessKeyName", "SharedAccessKey") if k not in fields
        ]
        if missing:
            raise UserError(
                f"{settings.connection_string_env} is not an IoT Hub service connection string "
                f"(no {', '.join(missing)}); it looks like HostName=<hub>.azure-devices.net;"
                "SharedAccessKeyName=<policy>;SharedAccessKey=<key>"
            )
        manager = IoTHubConfigurationManager.from_connection_string(value)
        hub = Hub(
            manager,
            fields["HostName"],
            f"the connection string in {settings.connection_string_env}",
        )
    else:
        from deployer.azure.cloud import credential, resolve_cloud

        resolved = resolve_cloud(cloud, cwd, env)
        suffix = _hub_suffix(resolved)
        host = f"{settings.hub}.{suffix}"
        manager = IoTHubConfigurationManager.from_token_credential(host, credential(resolved))
        hub = Hub(manager, host, "the Entra ID identity deployer runs as")
    _retry_throttling(hub.manager)
    return hub


def _hub_suffix(cloud: Any) -> str:
    name = getattr(cloud, "name", "AzureCloud")
    suffix = HUB_SUFFIXES.get(name) or getattr(cloud, "iot_hub_suffix", None)
    if not suffix:
        raise UserError(
            f"no IoT Hub host suffix is known for the cloud {name!r}; use auth: "
            "connection_string (its HostName names the hub)"
        )
    return str(suffix)


def _retry_throttling(manager: Any) -> None:
    policy = manager.protocol.config.retry_policy.policy
    policy.total = RETRIES
    policy.status_forcelist = set(RETRY_STATUSES)
    policy.allowed_methods = None  # every verb (urllib3 2); msrest still sets the old name
    policy.respect_retry_after_header = True


def explain(error: Exception, what: str, hub: Hub) -> DeployerError:
    """A hub error with what deployer was doing and what to do about it."""
    if isinstance(error, ClientRequestError):
        return DeployFailed(f"{what}: the hub at {hub.host} could not be reached: {error}")
    if not isinstance(error, HttpOperationError):
        return DeployFailed(f"{what}: {error}")
    status = error.response.status_code if error.response is not None else 0
    message = _message(error)
    if status == 401:
        return UserError(
            f"the hub refused {hub.source} while {what} (401 Unauthorized: {message}); check "
            "the key, or that the identity has the IoT Hub Data Contributor role"
        )
    if status == 403:
        return UserError(
            f"{what}: the hub forbids it (403: {message}); the shared access policy needs "
            "registry write and service connect (or the identity IoT Hub Data Contributor)"
        )
    if status == 404:
        return DeployFailed(f"{what}: not found (404: {message}); is the device id right?")
    return DeployFailed(f"{what}: the hub answered {status}: {message}")


def _message(error: HttpOperationError) -> str:
    try:
        body = json.loads(error.response.text or "{}")
    except (AttributeError, ValueError):
        return str(error)
    if isinstance(body, dict):
        return str(body.get("Message") or body.get("message") or body)
    return str(body)
