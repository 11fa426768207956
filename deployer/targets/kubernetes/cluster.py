"""Reaching a cluster as kubectl does: a kubeconfig context (exec credential plugins such as
kubelogin included), or the pod's own service account when deployer runs in a cluster; and
the API's errors, in words that say what to do.

The official client is imported here, by name, only by the commands that talk to a cluster.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.util.retry import Retry

from deployer.errors import DeployFailed, UserError

# The client's config loaders carry no type annotations.
config: Any = kube_config

# Throttling (429, with Retry-After) and a passing 5xx are retried as client-go does, for
# every verb: what deployer sends is idempotent (apply, merge patches, deletes of named
# objects), so a retried request never does a thing twice.
RETRIES = Retry(
    total=6,
    connect=3,
    read=2,
    status=6,
    status_forcelist=(429, 500, 502, 503, 504),
    allowed_methods=None,
    backoff_factor=0.5,
    respect_retry_after_header=True,
    raise_on_status=False,
)
REQUEST_TIMEOUT_S = 30
IN_CLUSTER_HOST = "KUBERNETES_SERVICE_HOST"
FIX_CREDENTIALS = (
    "get new ones (AKS: 'az aks get-credentials -g <group> -n <cluster>', then "
    "'kubelogin convert-kubeconfig -l azurecli' for Entra ID; in Actions: "
    "azure/aks-set-context)"
)


@dataclass(frozen=True)
class Cluster:
    """An authenticated API client, and where it came from (for messages)."""

    api: client.ApiClient
    source: str  # "context 'aks-prod' of ~/.kube/config", "the pod's service account"

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def auth_headers(self) -> dict[str, str]:
        """The headers that authenticate a raw request (a bearer token, refreshed through
        the exec plugin when it expires); client certificates are in the connection pool."""
        headers: dict[str, str] = {}
        queries: list[Any] = []
        self.api.update_params_for_auth(headers, queries, ["BearerToken"], "", "GET", None)
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> Any:
        """One API call with a JSON (or YAML-as-JSON) body; its JSON answer. Raises the
        client's ``ApiException`` on an error status, as its typed methods do."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        _, url, headers, _, _ = self.api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        # The client serialises a mapping as JSON for JSON and YAML content types alike
        # (JSON is YAML: server-side apply's application/apply-patch+yaml takes it).
        response = self.api.call_api(method, url, headers, body, _request_timeout=timeout)
        raw: bytes = response.read()  # type: ignore[no-untyped-call]
        text = raw.decode("utf-8", "replace")
        if not 200 <= response.status < 300:
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return json.loads(text) if text else None

    def stream(self, path: str, query: Mapping[str, str], timeout: float | None = None) -> Any:
        """A GET whose answer is read as it comes (a followed log): the urllib3 response."""
        _, url, headers, _, _ = self.api.param_serialize(
            "GET", path, query_params=list(query.items()), auth_settings=["BearerToken"]
        )
        response = self.api.rest_client.pool_manager.request(
            "GET", url, headers=headers, preload_content=False, retries=False, timeout=timeout
        )
        if response.status != 200:
            text = response.read().decode("utf-8", "replace")
            raise ApiException(status=response.status, reason=response.reason, body=text)
        return response

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]


def kubeconfig_paths(env: Mapping[str, str]) -> list[Path]:
    """The kubeconfig files kubectl reads: $KUBECONFIG's list, or ~/.kube/config."""
    value = env.get("KUBECONFIG", "")
    if value:
        return [Path(p).expanduser() for p in value.split(os.pathsep) if p]
    home = env.get("HOME") or str(Path.home())
    return [Path(home) / ".kube" / "config"]


def connect_cluster(context: str | None, env: Mapping[str, str]) -> Cluster:
    """The kubeconfig's ``context`` (its current one when None); the pod's service account
    when there is no kubeconfig and deployer runs in a cluster. ``UserError`` saying which
    of these is missing, and how to get it."""
    configuration = client.Configuration()
    paths = [p for p in kubeconfig_paths(env) if p.is_file()]
    if paths:
        files = os.pathsep.join(str(p) for p in paths)
        _check_context(files, context)
        try:
            config.load_kube_config(
                config_file=files,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        except (ConfigException, OSError, ValueError) as error:
            raise UserError(_credential_problem(str(error), context, files)) from error
        source = f"context {context!r}" if context else "the current context"
        source += f" of {files}"
    elif env.get(IN_CLUSTER_HOST):
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as error:
            raise UserError(f"deployer runs in a pod, but {error}") from error
        source = "the pod's service account"
    else:
        wanted = ", ".join(str(p) for p in kubeconfig_paths(env))
        raise UserError(
            f"no kubeconfig found (looked for {wanted}) and not running in a cluster; get one "
            "with 'az aks get-credentials -g <group> -n <cluster>' (AKS) or your cluster's "
            "equivalent, or set KUBECONFIG to its path"
        )
    configuration.retries = RETRIES
    return Cluster(client.ApiClient(configuration), source)


def _check_context(files: str, context: str | None) -> None:
    try:
        contexts, current = config.list_kube_config_contexts(config_file=files)
    except (ConfigException, OSError, ValueError) as error:
        raise UserError(f"the kubeconfig {files} cannot be read: {error}") from error
    names = sorted(c["name"] for c in contexts or [])
    if context is None and not current:
        raise UserError(
            f"the kubeconfig {files} has no current context; name one in deploy.yaml "
            f"(targets.<name>.context), one of: {', '.join(names) or 'none'}"
        )
    if context is not None and context not in names:
        raise UserError(
            f"the kubeconfig {files} has no context {context!r} "
            f"(targets.<name>.context in deploy.yaml); it has: {', '.join(names) or 'none'}"
        )


def _credential_problem(message: str, context: str | None, files: str) -> str:
    """A kubeconfig that cannot give credentials: an exec plugin missing or failing
    (kubelogin), an unreadable certificate."""
    which = f"context {context!r}" if context else "the current context"
    text = " ".join(message.split())
    if "exec" in text.lower():
        return (
            f"the credential plugin of {which} in {files} failed: {text}; is it installed "
            f"and logged in? (AKS with Entra ID: install kubelogin, and run 'az login' "
            "or set AAD_SERVICE_PRINCIPAL_CLIENT_ID/SECRET)"
        )
    return f"{which} of {files} cannot be used: {text}"


def explain(error: ApiException, what: str, cluster: Cluster) -> DeployFailed | UserError:
    """An API error, with what deployer was doing and what to do about it. Credentials the
    cluster refuses are the user's to fix (exit 2); everything else is a failed operation."""
    status = _status_body(error)
    message = status.get("message") or error.reason or "no message"
    code = error.status
    if code == 401:
        return UserError(
            f"the cluster refused the credentials of {cluster.source} while {what} "
            f"(401 Unauthorized): they have expired or are wrong; {FIX_CREDENTIALS}"
        )
    if code == 403:
        return DeployFailed(
            f"{what}: the cluster forbids it (403): {message}. The deploying identity needs "
            "the Role that 'deployer plan -t <target>' prints, bound in the namespace"
        )
    if code == 409 and status.get("reason") == "Conflict" and "conflict" in message.lower():
        return DeployFailed(
            f"{what}: another field manager owns fields deployer applies (409): {message}. "
            "Remove them from the other tool's manifests, or set force_conflicts: true on "
            "the target to take them over"
        )
    if code == 422:
        return DeployFailed(f"{what}: the cluster rejected the object as invalid (422): {message}")
    return DeployFailed(f"{what}: the cluster answered {code} {error.reason}: {message}")


def _status_body(error: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}
