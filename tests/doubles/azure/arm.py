"""Azure Resource Manager in front of the ACI and ACR doubles: what ARM does before a
resource provider sees a request, in ARM's order and words:

1. authentication: a bearer token the Entra double issued, for this endpoint's audience,
   not expired (401 otherwise);
2. the subscription exists (404), the caller may perform the action there (403
   AuthorizationFailed, once a test revoked it), faults a test injected (fail, hold, 429);
3. the resource provider is registered (409 MissingSubscriptionRegistration) and the
   resource group exists (404 ResourceGroupNotFound);
4. the request matches the provider's official contract (bravado-core for ACI, azure-mgmt-web's
   models and the spec's examples for Microsoft.Web: web_contract; 400
   InvalidRequestContent, MissingApiVersionParameter).

Then it routes to the container groups, registries or Microsoft.Web (web.py), and serves the
long-running operations' polling URLs (``.../locations/{location}/operations/{id}``:
Azure-AsyncOperation, and ``.../operationResults/{id}``: Location).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.doubles.azure import errors, web, web_contract
from tests.doubles.azure.contract import ContractViolation, aci_contract
from tests.doubles.azure.entra import EntraDouble
from tests.doubles.azure.faults import Faults
from tests.doubles.azure.tls import JsonHandler

SUBSCRIPTION = re.compile(r"^/subscriptions/([^/]+)", re.IGNORECASE)
RESOURCE_GROUP = re.compile(r"^/subscriptions/[^/]+/resourcegroups/([^/]+)", re.IGNORECASE)
PROVIDER = re.compile(r"/providers/([^/]+)/(.+)$", re.IGNORECASE)
UUID = re.compile(r"^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$", re.IGNORECASE)
VERBS = {"GET": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}


@dataclass
class Subscription:
    id: str
    resource_groups: set[str] = field(default_factory=set)  # lower case
    locations: dict[str, str] = field(default_factory=dict)  # resource group -> its region
    registered: set[str] = field(
        default_factory=lambda: {
            "microsoft.containerinstance",
            "microsoft.containerregistry",
            "microsoft.web",
        }
    )


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # with its query
    status: int
    client_request_id: str


@dataclass
class Request:
    method: str
    path: str  # decoded, without the query
    query: dict[str, str]
    body: bytes
    target: str  # as sent


@dataclass
class Denial:
    action: str  # a regular expression, searched in the action
    scope: str  # a prefix of the scope (case-insensitive)


class ArmGate:
    """ARM's checks (1-3 above); ``routes`` does the provider's part."""

    def __init__(self, entra: EntraDouble, faults: Faults) -> None:
        self.entra = entra
        self.faults = faults
        self.url = ""  # set once served: the audience tokens must be for
        self.subscriptions: dict[str, Subscription] = {}
        self.denials: list[Denial] = []
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()

    def record(self, request: Request, status: int, client_request_id: str) -> None:
        with self._lock:
            self.requests.append(
                Recorded(request.method, request.target, status, client_request_id)
            )

    def admit(self, request: Request, authorization: str) -> None:
        """Raises ArmError, as ARM answers, or returns once the provider may serve."""
        token = self._authenticate(authorization)
        subscription = SUBSCRIPTION.match(request.path)
        if subscription is None:
            return
        sub_id = subscription.group(1)
        if not UUID.match(sub_id):
            raise errors.invalid_subscription_id(sub_id)
        known = self.subscriptions.get(sub_id.lower())
        if known is None:
            raise errors.subscription_not_found(sub_id)
        action = action_of(request.method, request.path)
        if self.denies(action, request.path):
            raise errors.authorization_failed(
                token.client_id, token.object_id, action, request.path
            )
        self._apply_faults(request)
        provider = PROVIDER.search(request.path)
        if provider and provider.group(1).lower() not in known.registered:
            raise errors.missing_registration(provider.group(1))
        group = RESOURCE_GROUP.match(request.path)
        if group and group.group(1).lower() not in known.resource_groups:
            raise errors.resource_group_not_found(group.group(1))
        unversioned = web.POLLING_WITHOUT_VERSION.match(request.path)  # App Service's own
        if not request.query.get("api-version") and not unversioned:  # ARM's, every provider
            raise errors.ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        try:
            aci_contract().validate(request.method, request.path, request.query, request.body)
            web_contract.validate(request.method, request.path, request.body)
        except ContractViolation as exc:
            raise errors.ArmError(400, exc.code, exc.message) from None

    def denies(self, action: str, scope: str) -> bool:
        """Whether a test revoked ``action`` at ``scope`` (Kudu asks too, for its own)."""
        return any(
            re.search(denial.action, action, re.IGNORECASE)
            and scope.lower().startswith(denial.scope.lower())
            for denial in self.denials
        )

    def _authenticate(self, authorization: str) -> Any:
        missing = "The authentication failed because of missing 'Authorization' header."
        challenge = {
            "WWW-Authenticate": f'Bearer authorization_uri="{self.entra.url}/'
            f'{self.entra.tenant_id}", error="invalid_token", error_description="{missing}"'
        }
        if not authorization:
            raise errors.ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                challenge,
            )
        scheme, _, value = authorization.partition(" ")
        token = self.entra.token(value.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise errors.ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.")
        if token.audience.rstrip("/") != self.url.rstrip("/"):
            raise errors.ArmError(
                401,
                "InvalidAuthenticationTokenAudience",
                "The access token has been obtained for wrong audience or resource "
                f"'{token.audience}'. It should exactly match with one of the allowed "
                f"audiences '{self.url}/','{self.url}'.",
            )
        if token.expires_on < time.time():
            expired = datetime.fromtimestamp(token.expires_on, UTC).strftime("%m/%d/%Y %H:%M:%S")
            current = datetime.now(UTC).strftime("%m/%d/%Y %H:%M:%S")
            raise errors.ArmError(
                401,
                "ExpiredAuthenticationToken",
                f"The access token expiry UTC time '{expired}' is earlier than current UTC time "
                f"'{current}'.",
            )
        return token

    def _apply_faults(self, request: Request) -> None:
        rule = self.faults.take(request.method, request.target)
        if rule is None:
            return
        if rule.action == "hold":
            rule.released.wait()
            return
        raise errors.ArmError(rule.status, rule.code, rule.message, dict(rule.headers))


def action_of(method: str, path: str) -> str:
    """The RBAC action a request performs, as ARM names it in AuthorizationFailed."""
    provider = PROVIDER.search(path)
    if provider is None:
        return f"Microsoft.Resources/subscriptions/resourceGroups/{VERBS.get(method, 'read')}"
    namespace, rest = provider.groups()
    parts = rest.split("/")
    types = parts[0::2]  # type, name, child type, child name, ...
    if method == "POST":
        return "/".join([namespace, *types[:-1], parts[-1], "action"])
    return "/".join([namespace, *types, VERBS.get(method, "read")])


class ArmHandler(JsonHandler):
    """Hands every request to the ARM double (``server.app.serve``)."""

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        request = Request(self.command, unquote(parts.path), query, self.read_body(), self.path)
        client_request_id = self.headers.get("x-ms-client-request-id") or str(uuid.uuid4())
        status, body, headers = self.server.app.serve(  # type: ignore[attr-defined]
            request, self.headers.get("Authorization", "")
        )
        self.server.app.gate.record(request, status, client_request_id)  # type: ignore[attr-defined]
        headers = {
            "x-ms-request-id": str(uuid.uuid4()),
            "x-ms-correlation-request-id": str(uuid.uuid4()),
            "x-ms-client-request-id": client_request_id,
            **headers,
        }
        self.answer(status, body, headers)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST = _serve
