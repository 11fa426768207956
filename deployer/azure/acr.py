"""Credentials for an Azure Container Registry, from the identity deployer runs as.

The default is what ``az acr login`` does: ask the registry for its challenge
(``GET https://<registry>/v2/`` answers 401 with ``WWW-Authenticate: Bearer realm=...,
service=...``), get an Entra ID access token for the cloud's Resource Manager, and exchange it
at the realm's ``/oauth2/exchange`` for an ACR refresh token (the data-plane API's
``Authentication_ExchangeAadAccessTokenForAcrRefreshToken``). The Docker engine logs in with
the user name ``00000000-0000-0000-0000-000000000000`` and that refresh token as the password,
and trades it at ``/oauth2/token`` for short-lived access tokens itself.

With ``admin_user: true``, the registry's admin user and its first password are read from
Resource Manager instead (``registries.list_credentials``), for registries where the admin
user is enabled.

The refresh token and the admin password are secrets: the caller registers them with the
run's masker (``deployer.registry_auth``). Nothing here logs them or puts them in a message.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from deployer.azure.cloud import AzureCloud, credential, management_client_options
from deployer.errors import DeployerError, UserError
from deployer.registry_auth import Credentials

if TYPE_CHECKING:
    import requests
    from azure.core.credentials import TokenCredential

    from deployer.config.model import Registry
    from deployer.secrets import Secrets

# The user name that goes with an ACR refresh token (as `az acr login` passes it to docker).
NULL_USER = "00000000-0000-0000-0000-000000000000"
# Connect and read timeouts of the calls to the registry, in seconds.
TIMEOUT = (15, 60)

SIGN_IN = (
    "sign in first: 'az login' on a workstation, the azure/login action in GitHub Actions, "
    "or AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET for a service principal"
)


def registry_host(address: str) -> str:
    """``host[:port]`` of a registry address (``host[:port][/namespace]``)."""
    return address.split("/", 1)[0]


def registry_name(registry: Registry) -> str | None:
    """The registry's Azure resource name, when deploy.yaml gives or implies one."""
    return registry.acr_name


def _which(name: str | None, host: str) -> str:
    return f"registry {name} ({host})" if name else f"the registry at {host}"


def _role_hint(name: str | None, host: str, who: str) -> str:
    scope = f"$(az acr show --name {name} --query id --output tsv)" if name else "<registry id>"
    return (
        f"grant {who} the AcrPush role on {_which(name, host)}: 'az role assignment create "
        f"--assignee <its object or client id> --role AcrPush --scope {scope}'"
    )


# ---------------------------------------------------------------------------------------------
# token exchange (the default)
# ---------------------------------------------------------------------------------------------


def exchange_credentials(
    registry: Registry,
    cloud: AzureCloud,
    env: Mapping[str, str],
    token_credential: TokenCredential | None = None,
    secrets: Secrets | None = None,
) -> Credentials:
    """An ACR refresh token for ``registry``, from an Entra ID token for ``cloud``'s Resource
    Manager (``token_credential``, by default azure-identity's DefaultAzureCredential).
    Both tokens join ``secrets`` the moment they are known."""
    import requests

    host = registry_host(registry.address)
    name = registry_name(registry)
    with requests.Session() as session:
        realm, service = _challenge(session, host)
        token = _entra_token(token_credential or credential(cloud), cloud, host)
        if secrets is not None:
            secrets.add(token)
        claims = token_claims(token)
        who = describe_identity(claims, env)
        form = {"grant_type": "access_token", "service": service, "access_token": token}
        # As az acr login: the tenant the token is from (one registry may trust several).
        tenant = str(claims.get("tid") or env.get("AZURE_TENANT_ID") or "")
        if tenant:
            form["tenant"] = tenant
        exchange = f"{realm}/oauth2/exchange"
        try:
            answer = session.post(exchange, data=form, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise DeployerError(_unreachable(host, exchange, exc)) from None
    if answer.status_code in (401, 403):
        raise UserError(
            f"{_which(name, host)} refused the Entra ID token of {who} "
            f"({answer.status_code} from {exchange}{_acr_error(answer)}): "
            f"{_role_hint(name, host, 'the identity')}"
        )
    if answer.status_code != 200:
        raise DeployerError(
            f"{_which(name, host)} could not exchange the Entra ID token for a registry token "
            f"({answer.status_code} from {exchange}{_acr_error(answer)})"
        )
    refresh_token = _json(answer).get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        raise DeployerError(f"{exchange} answered 200 without a refresh_token")
    if secrets is not None:
        secrets.add(refresh_token)
    rejected = (
        f"the registry token exchanged for {who} was refused (it lasts about 3 hours; a "
        f"new run gets a new one); if the identity may pull but not push, "
        f"{_role_hint(name, host, 'it')}"
    )
    denied = f"{who} may not push there: {_role_hint(name, host, 'it')}"
    return Credentials(NULL_USER, refresh_token, if_rejected=rejected, if_denied=denied)


def _challenge(session: requests.Session, host: str) -> tuple[str, str]:
    """``(realm origin, service)`` from the registry's answer to ``GET /v2/``."""
    import requests

    url = f"https://{host}/v2/"
    try:
        answer = session.get(url, timeout=TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        raise DeployerError(_unreachable(host, url, exc)) from None
    challenge = answer.headers.get("WWW-Authenticate", "")
    params = _bearer_params(challenge)
    if answer.status_code != 401 or params is None or "realm" not in params:
        got = str(answer.status_code)
        if challenge:
            got += f" with WWW-Authenticate: {challenge}"
        raise UserError(
            f"registry {host} does not ask for Azure Container Registry tokens (GET {url} "
            f"answered {got}, not 401 with a Bearer challenge): registry.auth 'acr' is for "
            "Azure Container Registries; use 'basic' (user name and password from the "
            "environment) or 'none' for other registries"
        )
    realm = urlsplit(params["realm"])
    # The Entra ID token goes to the realm: only to the registry itself, and only over TLS.
    if realm.scheme != "https" or realm.netloc.lower() != host.lower():
        raise UserError(
            f"registry {host} names {params['realm']} as its token service; deployer sends "
            f"an Entra ID token only to https://{host} itself, as Azure Container Registry "
            "does: is the address right?"
        )
    return f"https://{realm.netloc}", params.get("service") or host


def _bearer_params(header: str) -> dict[str, str] | None:
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return {key.lower(): value for key, value in re.findall(r'([A-Za-z_]+)\s*=\s*"([^"]*)"', rest)}


def _entra_token(token_credential: TokenCredential, cloud: AzureCloud, host: str) -> str:
    from azure.core.exceptions import AzureError, ClientAuthenticationError

    try:
        return token_credential.get_token(cloud.arm_scope).token
    except ClientAuthenticationError as exc:
        raise UserError(
            f"no usable Azure credential to log in to registry {host} (registry.auth: acr): "
            f"{SIGN_IN}. {_first_lines(exc)}"
        ) from None
    except AzureError as exc:  # the authority unreachable, an unexpected answer
        raise DeployerError(
            f"could not get an Entra ID token from {cloud.authority} for registry {host}: "
            f"{_first_lines(exc)}"
        ) from None


def _first_lines(exc: BaseException, limit: int = 6) -> str:
    """An azure-identity message, shortened: DefaultAzureCredential's lists every credential
    it tried, one a line, then a link to its troubleshooting guide."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:limit])
    return text if len(lines) <= limit else text + " ..."


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT access token (not verified: only to name the identity and its
    tenant); {} for a token that is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


def describe_identity(claims: Mapping[str, Any], env: Mapping[str, str] | None = None) -> str:
    """The identity a token is for, in words: its sign-in name or its client id (from the
    token, else from AZURE_CLIENT_ID)."""
    for key, what in (("upn", "user"), ("unique_name", "user"), ("appid", "client id")):
        value = claims.get(key)
        if isinstance(value, str) and value:
            return f"the identity ({what} {value})"
    if isinstance(claims.get("oid"), str):
        return f"the identity (object id {claims['oid']})"
    if env and env.get("AZURE_CLIENT_ID"):
        return f"the identity (client id {env['AZURE_CLIENT_ID']})"
    return "the identity deployer runs as"


def _unreachable(host: str, url: str, exc: Exception) -> str:
    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        return (
            f"registry {host} is unreachable over HTTPS: its certificate is not trusted "
            f"({url}: {_short(exc)}); if it is signed by your own CA, point "
            "REQUESTS_CA_BUNDLE at a bundle that holds it"
        )
    return (
        f"registry {host} is unreachable ({url}: {_short(exc)}): is the address right, and "
        "does this machine reach it (firewall, proxy, private endpoint)?"
    )


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _json(answer: requests.Response) -> dict[str, Any]:
    try:
        data = answer.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _acr_error(answer: requests.Response) -> str:
    """``: CODE: message`` from an ACR error answer (``{"errors": [...]}``), or ""."""
    errors = _json(answer).get("errors")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return ""
    first = errors[0]
    words = ": ".join(str(first[k]) for k in ("code", "message") if first.get(k))
    return f": {_short(Exception(words))}" if words else ""


# ---------------------------------------------------------------------------------------------
# the admin user (admin_user: true)
# ---------------------------------------------------------------------------------------------


def admin_credentials(
    registry: Registry, cloud: AzureCloud, token_credential: TokenCredential | None = None
) -> Credentials:
    """The admin user and its first password, from Resource Manager."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
    )
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    from deployer.azure.arm_errors import RETRY_OPTIONS, explain

    name = registry_name(registry)
    if name is None or not registry.subscription_id or not registry.resource_group:
        # The config model requires these with admin_user: a bug if it gets here.
        raise UserError(
            "registry.admin_user needs registry.subscription_id, resource_group and name"
        )
    what = f"registry {name} in resource group {registry.resource_group}"
    client = ContainerRegistryManagementClient(
        token_credential or credential(cloud),
        registry.subscription_id,
        **management_client_options(cloud),
        **RETRY_OPTIONS,
    )
    try:
        with client:
            result = client.registries.list_credentials(registry.resource_group, name)
    except ClientAuthenticationError as exc:
        if getattr(exc, "status_code", None) is None:  # the credential, not Resource Manager
            raise UserError(
                f"no usable Azure credential to read the admin user of {what}: {SIGN_IN}. "
                f"{_first_lines(exc)}"
            ) from None
        raise UserError(explain(exc, "Microsoft.ContainerRegistry", what)) from None
    except HttpResponseError as exc:
        if _admin_disabled(exc):
            raise UserError(
                f"the admin user of {what} is disabled: enable it with 'az acr update "
                f"--name {name} --admin-enabled true', or remove registry.admin_user from "
                "deploy.yaml to push with an Entra ID token (az acr login's way, no admin user)"
            ) from None
        if exc.status_code == 404:
            raise UserError(
                f"{what} (subscription {registry.subscription_id}) was not found: check "
                "registry.name, resource_group and subscription_id in deploy.yaml "
                f"('az acr show --name {name}' shows where it is)"
            ) from None
        raise UserError(explain(exc, "Microsoft.ContainerRegistry", what)) from None
    except ServiceRequestError as exc:
        raise DeployerError(
            f"Azure Resource Manager ({cloud.resource_manager}) is unreachable: {_short(exc)}"
        ) from None
    passwords = [p.value for p in (result.passwords or []) if p.value]
    if not result.username or not passwords:
        raise DeployerError(f"Resource Manager listed no admin password for {what}")
    rejected = (
        f"the admin user's password was refused (it may have been regenerated since deployer "
        f"read it): run again, or check 'az acr credential show --name {name}'"
    )
    denied = f"the admin user may not push to {name}: is the registry's write access locked?"
    return Credentials(result.username, passwords[0], if_rejected=rejected, if_denied=denied)


def _admin_disabled(exc: Any) -> bool:
    code = str(getattr(getattr(exc, "error", None), "code", "") or "")
    return (
        code == "UnAuthorizedForCredentialOperations"
        or "admin user is disabled" in str(exc).lower()
    )
