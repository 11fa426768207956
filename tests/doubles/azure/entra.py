"""Entra ID (Azure AD) as MSAL and azure-identity call it for a service principal with a
client secret: the tenant's OpenID configuration and its v2.0 token endpoint
(``client_credentials``). Nothing else: no user flows, no certificates, no federation.

The credential is built with ``authority=<this double's URL>`` and
``disable_instance_discovery=True`` (MSAL otherwise asks login.microsoftonline.com about the
authority first), so these two calls are all it makes. Tokens are opaque random strings, as
a client must treat them: only ARM's double looks inside, by asking this double.

Errors are answered as Entra answers them: an OAuth error body with ``error``,
``error_description`` (an ``AADSTS`` code and its sentence), ``error_codes`` and trace ids.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qs

from tests.doubles.azure.tls import JsonHandler

TOKEN_LIFETIME_S = 3599  # what Entra gives an app-only token, give or take


@dataclass
class ServicePrincipal:
    client_id: str
    secret: str
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class IssuedToken:
    value: str
    tenant: str
    client_id: str
    object_id: str
    audience: str  # the scope asked for, without "/.default"
    expires_on: float


@dataclass
class EntraDouble:
    """The tenant ``tenant_id`` and its service principals; ``issued`` maps each access
    token given out to what it was given for; ``scopes_asked`` records every request's
    scope, in order."""

    tenant_id: str
    principals: dict[str, ServicePrincipal] = field(default_factory=dict)
    issued: dict[str, IssuedToken] = field(default_factory=dict)
    scopes_asked: list[str] = field(default_factory=list)
    url: str = ""  # set once served
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_principal(self, client_id: str, secret: str) -> ServicePrincipal:
        principal = ServicePrincipal(client_id, secret)
        self.principals[client_id] = principal
        return principal

    def token(self, value: str) -> IssuedToken | None:
        with self._lock:
            return self.issued.get(value)

    def expire_tokens(self) -> None:
        """Every token given out so far expires now (ARM then answers 401)."""
        with self._lock:
            for value, token in list(self.issued.items()):
                self.issued[value] = IssuedToken(
                    token.value,
                    token.tenant,
                    token.client_id,
                    token.object_id,
                    token.audience,
                    time.time() - 1,
                )

    def openid_configuration(self, tenant: str) -> dict[str, object]:
        base = f"{self.url}/{tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "issuer": f"{base}/v2.0",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "response_types_supported": ["code", "id_token", "code id_token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": "EU",
        }

    def grant(self, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        """The token endpoint: (status, body)."""
        scope = form.get("scope", "")
        with self._lock:
            self.scopes_asked.append(scope)
        if tenant not in (self.tenant_id, "organizations"):
            return _error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return _error(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{form.get('grant_type', '')}'.",
            )
        client_id = form.get("client_id", "")
        principal = self.principals.get(client_id)
        if principal is None:
            return _error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'. This can happen if the application has not been installed by "
                "the administrator of the tenant or consented to by any user in the tenant. "
                "You may have sent your authentication request to the wrong tenant.",
            )
        if not secrets.compare_digest(form.get("client_secret", ""), principal.secret):
            return _error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request "
                "is the client secret value, not the client secret ID, for a secret added to "
                f"app '{client_id}'.",
            )
        resources = [s for s in scope.split() if s not in ("openid", "profile", "offline_access")]
        if len(resources) != 1 or not resources[0].endswith("/.default"):
            return _error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        value = secrets.token_urlsafe(48)
        token = IssuedToken(
            value,
            self.tenant_id,
            client_id,
            principal.object_id,
            resources[0].removesuffix("/.default"),
            time.time() + TOKEN_LIFETIME_S,
        )
        with self._lock:
            self.issued[value] = token
        body = {
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_S,
            "ext_expires_in": TOKEN_LIFETIME_S,
            "access_token": value,
        }
        return 200, body


def _error(status: int, error: str, code: int, sentence: str) -> tuple[int, dict[str, object]]:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {sentence} Trace ID: {trace} "
        f"Correlation ID: {correlation} Timestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


DISCOVERY = re.compile(r"^/([^/]+)(?:/v2\.0)?/\.well-known/openid-configuration$")
TOKEN = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")


class EntraHandler(JsonHandler):
    def do_GET(self) -> None:
        entra: EntraDouble = self.server.app  # type: ignore[attr-defined]
        found = DISCOVERY.match(self.path.split("?", 1)[0])
        if found is None:
            self.answer(404, {"error": "not_found", "error_description": self.path})
            return
        self.answer(200, entra.openid_configuration(found.group(1)))

    def do_POST(self) -> None:
        entra: EntraDouble = self.server.app  # type: ignore[attr-defined]
        body = self.read_body().decode()
        found = TOKEN.match(self.path.split("?", 1)[0])
        if found is None:
            self.answer(404, {"error": "not_found", "error_description": self.path})
            return
        form = {key: values[0] for key, values in parse_qs(body).items()}
        status, answer = entra.grant(found.group(1), form)
        self.answer(status, answer, {"Cache-Control": "no-store, no-cache"})
