"""Azure Resource Manager's errors, in words that name the fix.

ARM answers an error as ``{"error": {"code": ..., "message": ...}}``; azure-core raises it as
``HttpResponseError`` with ``error.code`` and ``status_code``. Throttling (429) and transient
5xx answers never get here: azure-core's retry policy retries them, honouring
``Retry-After`` (configured in ``retry_options``), and only the last one is raised.
"""

from __future__ import annotations

import re
from typing import Any

# How the management clients retry 429 and 5xx answers: azure-core's policy, configured,
# not reimplemented. Five retries with exponential back-off (0.8 s, 1.6 s, ...), or the
# service's Retry-After when it gives one.
RETRY_OPTIONS: dict[str, Any] = {"retry_total": 5, "retry_backoff_factor": 0.8}

_ACTION_SCOPE = re.compile(r"perform action '([^']+)' over scope '([^']+)'")


def explain(error: Any, provider: str, what: str) -> str:
    """One sentence for an ``HttpResponseError`` from ``provider``'s API (for example
    ``Microsoft.ContainerInstance``), about ``what`` (the resource, in words)."""
    status = getattr(error, "status_code", None)
    code = str(getattr(getattr(error, "error", None), "code", "") or "")
    message = _message(error)
    if status is None and type(error).__name__ == "ClientAuthenticationError":
        # Raised by the credential itself: no token, so Resource Manager was never asked.
        first = message.split(". ")[0]
        return (
            f"no Azure token for {what}: sign in ('az login', or azure/login in GitHub "
            "Actions) or set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET; for a "
            "cloud other than AzureCloud, set azure_cloud in deploy.yaml or "
            f"DEPLOYER_AZURE_CLOUD ({first})"
        )
    if code == "InaccessibleImage":
        return (
            f"{message}: the group cannot pull its image with its registry login. With "
            "pull.identity, grant that identity AcrPull on the registry ('az role assignment "
            "create --role AcrPull --assignee-object-id <its principal id> --scope <the "
            "registry's id>'); with a token or the admin user, check the values of the "
            "variables pull (or registry) names"
        )
    if status == 401:
        return (
            f"Azure refused the credential for {what} ({message}): sign in again "
            "('az login', or azure/login in GitHub Actions) or check AZURE_CLIENT_* and the tenant"
        )
    if code == "AuthorizationFailed" or status == 403:
        found = _ACTION_SCOPE.search(message)
        needed = f"'{found[1]}' on {found[2]}" if found else f"access to {what}"
        return (
            f"the identity deployer runs as lacks {needed}: assign it a role that allows it "
            "(Contributor on the resource group, or a custom role with "
            f"{provider}/*), e.g. 'az role assignment create --assignee <its id> "
            "--role Contributor --scope <the resource group's id>'"
        )
    if code in ("MissingSubscriptionRegistration", "SubscriptionNotRegistered"):
        return (
            f"the subscription is not registered for {provider}: "
            f"'az provider register --namespace {provider}' (once per subscription)"
        )
    if code == "ResourceGroupNotFound":
        return f"{message}: create it ('az group create') or fix resource_group in deploy.yaml"
    if "Quota" in code or "quota" in message.lower():
        return (
            f"{what}: a quota is exhausted ({message}); free some, ask for more in the portal's "
            "Quotas page, or deploy to another region"
        )
    if "DnsNameLabel" in code or "dns name label" in message.lower():
        return f"{message}: choose another dns_name_label in deploy.yaml (labels are per region)"
    if code in ("ServiceUnavailable", "ResourceRequestsNotAvailable") or (
        status is not None and status >= 500
    ):
        return (
            f"Azure could not serve {what} ({code or status}: {message}); it retried; try "
            "again later, or another region if the region lacks capacity"
        )
    return f"{what}: {code or status}: {message}"


def _message(error: Any) -> str:
    inner = getattr(error, "error", None)
    text = getattr(inner, "message", None) or _app_service_message(error)
    text = text or getattr(error, "message", None) or str(error)
    return " ".join(str(text).split())


def _app_service_message(error: Any) -> str:
    """App Service (Microsoft.Web) answers ``{"Code", "Message", ...}`` with capitals, which
    azure-core does not read as an ARM error: its message, read from the body."""
    import json

    try:
        body = json.loads(error.response.text())
    except (AttributeError, TypeError, ValueError):
        return ""
    if isinstance(body, dict):
        return str(body.get("Message") or "")
    return ""
