"""Azure Container Registry's data plane, in front of the local registry (scripts/dev-env's, on
127.0.0.1:5000 with htpasswd auth), over TLS on a port of its own.

What a client sees is what ACR serves:
- ``GET /v2/`` and every ``/v2/...`` request without a valid access token: 401 with
  ``WWW-Authenticate: Bearer realm="https://<double>/oauth2/token",service="<double>"`` (and
  the scope the request needs, as ACR adds it);
- ``POST /oauth2/exchange``: an Entra ID access token for Resource Manager exchanged for an
  ACR refresh token (``grant_type=access_token``); the Entra token is checked with the Entra
  double that issued it (audience, expiry, and whether its identity holds a role here);
- ``POST /oauth2/token`` (``grant_type=refresh_token``) and ``GET /oauth2/token`` with basic
  auth (user ``00000000-0000-0000-0000-000000000000`` and a refresh token, or the admin user,
  which is what the Docker engine sends): an access token for the scopes asked, cut down to
  what the identity may do (AcrPull: pull; AcrPush: pull and push);
- ``/v2/...`` with a Bearer access token that covers the request: proxied to the local
  registry with its basic credentials (from the environment scripts/dev-env exports).

The form fields of both ``/oauth2`` operations are checked against the data-plane contract
(shared/reference/azure/containerregistry/data-plane/containerregistry.json): required ones
present, enums respected, nothing unknown; a request that breaks it gets a 400, as does a
``service`` that is not this registry. Errors are ACR's ``{"errors": [{code, message}]}``.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from tests.conftest import SHARED
from tests.doubles.azure.tls import HttpsServer, JsonHandler, TestCertificates

CONTRACT = SHARED / "reference" / "azure" / "containerregistry" / "data-plane"
CONTRACT_FILE = CONTRACT / "containerregistry.json"
NULL_USER = "00000000-0000-0000-0000-000000000000"
REFRESH_TOKEN_LIFETIME_S = 3 * 3600  # ACR's refresh tokens last three hours
ACCESS_TOKEN_LIFETIME_S = 75 * 60
ROLES = {"AcrPull": frozenset({"pull"}), "AcrPush": frozenset({"pull", "push"})}
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
    "content-length",
}
_REPO_PATH = re.compile(r"^/v2/(?P<name>.+?)/(?:blobs|manifests|tags|referrers)(?:/|$)")


class EntraTokens(Protocol):
    """What the ACR double asks the Entra double: who an access token was given to."""

    def token(self, value: str) -> Any: ...


@cache
def _operations() -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Each ``/oauth2`` operation's form (or query) parameters, ``$ref``s resolved."""
    spec = json.loads(CONTRACT_FILE.read_text(encoding="utf-8"))
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for path in ("/oauth2/exchange", "/oauth2/token"):
        for method, operation in spec["paths"][path].items():
            params = []
            for given in operation.get("parameters", []):
                ref = given.get("$ref")
                params.append(spec["parameters"][ref.rsplit("/", 1)[1]] if ref else given)
            found[(method.upper(), path)] = params
    return found


def contract_problems(method: str, path: str, form: dict[str, list[str]]) -> list[str]:
    """What is wrong with a request's fields, by the data-plane contract ([] if nothing)."""
    params = [p for p in _operations()[(method, path)] if p["in"] in ("formData", "query")]
    known = {p["name"] for p in params}
    problems = [f"unknown parameter {name!r}" for name in form if name not in known]
    for param in params:
        values = form.get(param["name"], [])
        if param.get("required") and not any(values):
            problems.append(f"required parameter {param['name']!r} is missing")
        if len(values) > 1 and param["name"] != "scope":
            problems.append(f"parameter {param['name']!r} is given {len(values)} times")
        for value in values:
            if "enum" in param and value not in param["enum"]:
                problems.append(f"{param['name']} {value!r} is not one of {param['enum']}")
    return problems


@dataclass(frozen=True)
class Grant:
    """A refresh or access token the double gave out."""

    identity: str  # the Entra object id, or "admin"
    actions: frozenset[str]  # what the identity may do here
    expires_on: float
    scopes: dict[str, frozenset[str]] = field(
        default_factory=dict
    )  # access tokens: repo -> actions


@dataclass
class AcrDouble:
    """The registry at ``host`` (set once served). ``roles`` maps an identity's object id to
    its role here (AcrPull or AcrPush); an identity without one has its exchange refused,
    as ACR refuses one with no role on the registry."""

    entra: EntraTokens
    arm_audience: str  # the resource Entra tokens must be for, e.g. https://management.azure.com
    upstream: str  # host:port of the registry behind
    upstream_auth: tuple[str, str]
    roles: dict[str, str] = field(default_factory=dict)
    admin: tuple[str, str] | None = None  # the admin user and password, when enabled
    refresh_lifetime_s: float = REFRESH_TOKEN_LIFETIME_S
    host: str = ""
    exchanges: list[dict[str, str]] = field(default_factory=list)  # the forms, tokens elided
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    proxied: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, status
    refresh_tokens: dict[str, Grant] = field(default_factory=dict)
    access_tokens: dict[str, Grant] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def realm(self) -> str:
        return f"https://{self.host}/oauth2/token"

    def expire_refresh_tokens(self) -> None:
        """Every refresh token given out so far expires now."""
        with self._lock:
            for value, grant in list(self.refresh_tokens.items()):
                self.refresh_tokens[value] = Grant(grant.identity, grant.actions, time.time() - 1)

    # -- /oauth2/exchange ----------------------------------------------------------------

    def exchange(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        problems = contract_problems("POST", "/oauth2/exchange", form)
        fields = {key: values[0] for key, values in form.items()}
        with self._lock:
            self.exchanges.append(
                {k: ("<elided>" if "token" in k else v) for k, v in fields.items()}
            )
        if problems:
            return 400, _errors("BAD_REQUEST", "; ".join(problems))
        if fields["service"] != self.host:
            return 400, _errors("BAD_REQUEST", f"service {fields['service']!r} is not {self.host}")
        if fields["grant_type"] != "access_token" or not fields.get("access_token"):
            return 400, _errors("UNSUPPORTED_GRANT", "only grant_type=access_token is served")
        issued = self.entra.token(fields["access_token"])
        if issued is None or issued.expires_on < time.time():
            return 401, _errors("UNAUTHORIZED", "the access token is invalid or expired")
        if issued.audience.rstrip("/") != self.arm_audience.rstrip("/"):
            return 401, _errors("UNAUTHORIZED", f"the token is for {issued.audience}")
        if fields.get("tenant") and fields["tenant"] != issued.tenant:
            return 401, _errors("UNAUTHORIZED", f"the token is not from tenant {fields['tenant']}")
        role = self.roles.get(issued.object_id)
        if role is None:
            return 401, _errors(
                "UNAUTHORIZED", f"identity {issued.object_id} has no access to {self.host}"
            )
        value = secrets.token_urlsafe(48)
        grant = Grant(issued.object_id, ROLES[role], time.time() + self.refresh_lifetime_s)
        with self._lock:
            self.refresh_tokens[value] = grant
        return 200, {"refresh_token": value}

    # -- /oauth2/token -------------------------------------------------------------------

    def token(
        self, method: str, form: dict[str, list[str]], basic: tuple[str, str] | None
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.token_requests.append(
                {
                    "method": method,
                    "fields": sorted(form),
                    "scope": form.get("scope", []),
                    "basic_user": basic[0] if basic else None,
                }
            )
        if method == "GET":
            # The Docker engine's flow: basic auth, service and scope in the query (it adds
            # account, client_id and offline_token, which ACR ignores).
            form = {k: v for k, v in form.items() if k in ("service", "scope")}
        problems = contract_problems(method, "/oauth2/token", form)
        if problems:
            return 400, _errors("BAD_REQUEST", "; ".join(problems))
        if method == "GET":
            user, password = basic or ("", "")
            if self.admin is not None and (user, password) == self.admin:
                grant: Grant | None = Grant("admin", frozenset({"pull", "push"}), time.time() + 60)
            else:
                grant = self._refresh(password) if user == NULL_USER else None
        else:
            grant = self._refresh(form["refresh_token"][0])
        if grant is None:
            # Echoing what was refused, as some services do: deployer must mask it.
            refused = (basic or ("", ""))[1] if method == "GET" else form["refresh_token"][0]
            return 401, _errors("UNAUTHORIZED", f"invalid or expired credentials: {refused}")
        if form["service"][0] != self.host:
            return 400, _errors("BAD_REQUEST", f"service {form['service'][0]!r} is not {self.host}")
        scopes: dict[str, frozenset[str]] = {}
        for scope in form.get("scope", []):
            for one in scope.split(" "):
                kind, _, rest = one.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind == "repository" and name:
                    allowed = frozenset(actions.split(",")) & grant.actions
                    scopes[name] = scopes.get(name, frozenset()) | allowed
        value = secrets.token_urlsafe(48)
        access = Grant(grant.identity, grant.actions, time.time() + ACCESS_TOKEN_LIFETIME_S, scopes)
        with self._lock:
            self.access_tokens[value] = access
        return 200, {"access_token": value}

    def _refresh(self, value: str) -> Grant | None:
        with self._lock:
            grant = self.refresh_tokens.get(value)
        return grant if grant is not None and grant.expires_on > time.time() else None

    # -- /v2/ ----------------------------------------------------------------------------

    def authorize(self, method: str, path: str, query: str, bearer: str | None) -> str | None:
        """None when ``bearer`` covers the request; else the scope the challenge names
        ("" for /v2/ itself)."""
        found = _REPO_PATH.match(path)
        need = ""
        if found:
            action = "pull" if method in ("GET", "HEAD") else "push"
            need = f"repository:{found['name']}:{'pull' if action == 'pull' else 'pull,push'}"
        with self._lock:
            grant = self.access_tokens.get(bearer or "")
        if grant is None or grant.expires_on < time.time():
            return need
        if found and action not in grant.scopes.get(found["name"], frozenset()):
            return need
        return None

    def challenge(self, scope: str, insufficient: bool) -> str:
        words = f'Bearer realm="{self.realm}",service="{self.host}"'
        if scope:
            words += f',scope="{scope}"'
        if insufficient:
            words += ',error="insufficient_scope"'
        return words


def _errors(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message, "detail": None}]}


class AcrHandler(JsonHandler):
    server: HttpsServer

    @property
    def acr(self) -> AcrDouble:
        app: AcrDouble = self.server.app
        return app

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_PATCH(self) -> None:
        self._route("PATCH")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/oauth2/exchange" and method == "POST":
            status, body = self.acr.exchange(self._form())
            self.answer(status, body)
        elif parts.path == "/oauth2/token" and method in ("GET", "POST"):
            form = parse_qs(parts.query) if method == "GET" else self._form()
            status, body = self.acr.token(method, form, self._basic())
            self.answer(status, body)
        elif parts.path == "/v2" or parts.path.startswith("/v2/"):
            self._registry(method, parts.path, parts.query)
        else:
            self.answer(404, _errors("NOT_FOUND", f"{method} {parts.path}"))

    def _form(self) -> dict[str, list[str]]:
        kind = self.headers.get("Content-Type", "").split(";", 1)[0].strip()
        body = self.read_body().decode()
        if kind != "application/x-www-form-urlencoded":
            return {"<Content-Type>": [kind]}  # not a form: reported as an unknown field
        return parse_qs(body, keep_blank_values=True)

    def _basic(self) -> tuple[str, str] | None:
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user, password

    def _registry(self, method: str, path: str, query: str) -> None:
        scheme, _, bearer = self.headers.get("Authorization", "").partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" else None
        need = self.acr.authorize(method, path, query, token)
        if need is not None:
            self._drain()
            header = self.acr.challenge(need, insufficient=token is not None)
            self.answer(
                401,
                _errors(
                    "UNAUTHORIZED",
                    "authentication required, visit https://aka.ms/acr/authorization",
                ),
                {"WWW-Authenticate": header, "Docker-Distribution-Api-Version": "registry/2.0"},
            )
            return
        self._proxy(method, path, query)

    def _drain(self) -> None:
        for _ in self._body():
            pass

    def _body(self) -> Iterator[bytes]:
        """The request body as it arrives, chunked transfer encoding decoded."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            data = self.rfile.read(min(left, 1 << 20))
            if not data:
                return
            left -= len(data)
            yield data

    def _proxy(self, method: str, path: str, query: str) -> None:
        acr = self.acr
        upstream = http.client.HTTPConnection(acr.upstream, timeout=300)
        user, password = acr.upstream_auth
        headers: dict[str, str] = {}
        for name, value in self.headers.items():  # repeated ones (Accept) joined, not lost
            if name.lower() not in _HOP_BY_HOP:
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        )
        # The registry builds its Location URLs from these: they point back at this double.
        headers["X-Forwarded-Proto"] = "https"
        headers["X-Forwarded-Host"] = acr.host
        headers["Host"] = acr.host
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        target = path + (f"?{query}" if query else "")
        try:
            if chunked:
                upstream.request(
                    method, target, body=self._body(), headers=headers, encode_chunked=True
                )
            else:
                length = self.headers.get("Content-Length")
                if length is not None:
                    headers["Content-Length"] = length
                body = b"".join(self._body()) if length else None
                upstream.request(method, target, body=body, headers=headers)
            response = upstream.getresponse()
            self.send_response(response.status, response.reason)
            length = response.getheader("Content-Length")
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    # Should the registry ignore X-Forwarded-*, its URLs still lead here.
                    here = value.replace(f"http://{acr.upstream}", f"https://{acr.host}")
                    self.send_header(name, here if name.lower() == "location" else value)
            no_body = method == "HEAD" or response.status in (204, 304) or response.status < 200
            if no_body:
                if length is not None:
                    self.send_header("Content-Length", length)
                self.end_headers()
            elif length is not None:
                self.send_header("Content-Length", length)
                self.end_headers()
                while data := response.read(1 << 20):
                    self.wfile.write(data)
            else:
                data = response.read()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            with acr._lock:
                acr.proxied.append((method, path, response.status))
        finally:
            upstream.close()


def serve_acr(acr: AcrDouble, certs: TestCertificates) -> HttpsServer:
    server = HttpsServer(AcrHandler, certs, acr)
    acr.host = f"127.0.0.1:{server.server_address[1]}"
    return server.start()


@dataclass
class AcrWorld:
    """An Entra double, an ACR double in front of ``upstream`` and a custom cloud that names
    them; ``env`` is what a user sets to reach them: the cloud file (DEPLOYER_AZURE_CLOUD),
    the test CA (REQUESTS_CA_BUNDLE) and a service principal (AZURE_CLIENT_*)."""

    entra: Any  # tests.doubles.azure.entra.EntraDouble
    acr: AcrDouble
    principal: Any  # its ServicePrincipal, AcrPush on the registry
    env: dict[str, str]
    servers: list[HttpsServer]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_world(
    directory: Any,
    upstream: str,
    upstream_auth: tuple[str, str],
    arm_url: str = "",
    certs: TestCertificates | None = None,
) -> AcrWorld:
    """Serve the doubles; ``arm_url`` is the cloud's Resource Manager (an ARM double's URL,
    served with ``certs``; by default an address nothing listens on: the token exchange only
    needs its audience)."""
    import uuid
    from pathlib import Path

    from tests.doubles.azure.entra import EntraDouble, EntraHandler
    from tests.doubles.azure.tls import make_certificates

    directory = Path(directory)
    certs = certs or make_certificates(directory / "certs")
    entra = EntraDouble(tenant_id=str(uuid.uuid4()))
    principal = entra.add_principal(str(uuid.uuid4()), "client-secret-" + secrets.token_hex(16))
    entra_server = HttpsServer(EntraHandler, certs, entra).start()
    entra.url = entra_server.url
    resource_manager = (arm_url or "https://127.0.0.1:9").rstrip("/") + "/"
    acr = AcrDouble(
        entra,
        arm_audience=resource_manager.rstrip("/"),
        upstream=upstream,
        upstream_auth=upstream_auth,
        roles={principal.object_id: "AcrPush"},
    )
    acr_server = serve_acr(acr, certs)
    cloud = directory / "cloud.json"
    cloud.write_text(
        json.dumps(
            {  # as `az cloud show` prints it (the parts deployer reads)
                "name": "DeployerTestCloud",
                "endpoints": {"resourceManager": resource_manager, "activeDirectory": entra.url},
                "suffixes": {"acrLoginServerEndpoint": ".azurecr.test"},
            }
        )
    )
    env = {
        "DEPLOYER_AZURE_CLOUD": str(cloud),
        "REQUESTS_CA_BUNDLE": str(certs.ca_bundle),
        "AZURE_CLIENT_ID": principal.client_id,
        "AZURE_CLIENT_SECRET": principal.secret,
        "AZURE_TENANT_ID": entra.tenant_id,
    }
    return AcrWorld(entra, acr, principal, env, [entra_server, acr_server])
