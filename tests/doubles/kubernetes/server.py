"""The HTTP API: discovery, CRUD, patches (server-side apply included), watch, pod logs,
the pods/services proxy, bearer-token auth with forbidden verbs, and faults on demand.
Bodies are kube-apiserver's."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from tests.doubles.kubernetes import handlers
from tests.doubles.kubernetes.kinds import GIT_VERSION
from tests.doubles.kubernetes.store import KINDS, ApiError, Kind, Store, not_found

VERSION = {"major": "1", "minor": "33", "gitVersion": GIT_VERSION, "platform": "linux/amd64"}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
PROXY_VERBS = ["create", "delete", "get", "patch", "update"]


@dataclass
class Rule:
    method: str
    path: str  # a regular expression searched in the path with its query
    action: str = "fail"  # "fail" or "hold"
    status: int = 500
    times: int = 1
    retry_after: int = 1
    content_type: str = ""  # a regular expression searched in the Content-Type ("": any)
    matched: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    seen: int = 0


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: bytes
    user: str | None

    def json(self) -> Any:
        return yaml.safe_load(self.body) if self.body else None


class Api:
    """What the handler serves: a store, users by token, forbidden verbs, faults, records."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.users: dict[str, str] = {}  # token -> user name
        self.forbidden: set[tuple[str, str, str]] = set()  # (user or "*", verb, resource)
        self.rules: list[Rule] = []
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self.closing = threading.Event()

    def pick(self, method: str, target: str, content_type: str = "") -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if (
                    rule.seen < rule.times
                    and rule.method == method
                    and re.search(rule.path, target)
                    and re.search(rule.content_type, content_type)
                ):
                    rule.seen += 1
                    return rule
        return None


def discovery(path: str, port: int) -> dict | None:
    if path == "/version":
        return VERSION
    if path == "/api":
        address = {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{port}"}
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [address]}
    groups = sorted({(k.group, k.version) for k in KINDS.values() if k.group})
    if path == "/apis":
        listed = [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                   "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}}
                  for g, v in groups]  # fmt: skip
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": listed}
    for k in KINDS.values():
        if path == ("/api/" if not k.group else "/apis/") + k.api_version:
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": k.api_version,
                    "resources": [r for kind in KINDS.values() if kind.api_version ==
                                  k.api_version for r in _resources(kind)]}  # fmt: skip
    return None


def _resources(k: Kind) -> list[dict]:
    main = {"name": k.plural, "singularName": k.kind.lower(), "namespaced": k.namespaced,
            "kind": k.kind, "verbs": VERBS, "shortNames": list(k.short_names)}  # fmt: skip
    subs = [("status", k.kind, ["get", "patch", "update"])] if k.status else []
    subs += [("log", "Pod", ["get"])] if k.kind == "Pod" else []
    proxied = k.kind in ("Pod", "Service")
    subs += [("proxy", f"{k.kind}ProxyOptions", PROXY_VERBS)] if proxied else []
    return [main] + [
        {"name": f"{k.plural}/{s}", "singularName": "", "namespaced": k.namespaced,
         "kind": kind, "verbs": verbs} for s, kind, verbs in subs
    ]  # fmt: skip


def route(path: str) -> tuple[Kind, str | None, str | None, str | None] | None:
    """(kind, namespace, name, subresource) of a resource path."""
    m = re.fullmatch(r"/(?:api/(v1)|apis/([^/]+)/([^/]+))/(.*)", path)
    if not m:
        return None
    group, version = (m[2] or ""), (m[1] or m[3])
    rest = m[4].strip("/").split("/")
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    plural, name, sub = [*rest, None, None][:3]
    name = unquote(name) if name else name  # pods/{name:port}/proxy: ":" may come as %3A
    for kind in KINDS.values():
        same = (kind.group, kind.version, kind.plural) == (group, version, plural)
        if same and (kind.namespaced or namespace is None):
            return kind, namespace, name, sub
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no ~40 ms delayed-ACK stall between head and body
    server: ApiHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.handle_api("GET")

    def do_POST(self) -> None:
        self.handle_api("POST")

    def do_PUT(self) -> None:
        self.handle_api("PUT")

    def do_PATCH(self) -> None:
        self.handle_api("PATCH")

    def do_DELETE(self) -> None:
        self.handle_api("DELETE")

    def do_HEAD(self) -> None:
        self.handle_api("HEAD")

    def handle_api(self, method: str) -> None:
        api = self.server.api
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = self.read_body()
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        auth = self.headers.get("Authorization") or ""
        user = api.users.get(auth.removeprefix("Bearer ").strip()) if auth else None
        with api.lock:
            api.requests.append(Recorded(method, url.path, query, ctype, body, user))
        try:
            rule = api.pick(method, self.path, ctype)
            if rule is not None:
                rule.matched.set()
                if rule.action == "hold":
                    rule.released.wait()
                else:
                    raise fault(rule)
            if user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if url.path in ("/healthz", "/readyz", "/livez"):
                return self.send(200, b"ok", "text/plain")
            found = discovery(url.path.rstrip("/") or "/", self.server.server_address[1])
            if found is not None:
                return self.answer(200, found)
            target = route(url.path)
            if target is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource",
                               {})  # fmt: skip
            self.resource(method, user, handlers.Call(self, "", query, body, ctype, *target))
        except ApiError as error:
            headers = {"Retry-After": str(error.details.get("retryAfterSeconds"))} if (
                error.code == 429 and error.details) else {}  # fmt: skip
            self.answer(error.code, error.status(), headers)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def resource(self, method: str, user: str, call: handlers.Call) -> None:
        kind, namespace, name, sub = call.kind, call.namespace, call.name, call.sub
        query = call.query
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            method, "get" if name else ("watch" if query.get("watch") in ("true", "1") else "list")
        )
        if method == "DELETE" and not name:
            verb = "deletecollection"
        resource = f"{kind.plural}/{sub}" if sub else kind.plural
        forbidden = self.server.api.forbidden
        if {(user, verb, resource), ("*", verb, resource), (user, "*", resource),
                ("*", "*", resource)} & forbidden:  # fmt: skip
            raise forbid(kind, name, user, verb, resource, namespace)
        store = self.server.api.store
        if namespace and (method != "GET" or name) and not store.get("Namespace", None, namespace):
            raise not_found(KINDS["Namespace"], namespace)
        call.verb = verb
        handlers.serve(call)

    def read_body(self) -> bytes:
        if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b""
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers, up to the empty line
            pass
        return body

    # Answers --------------------------------------------------------------------------------
    def answer(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.send(code, json.dumps(body).encode(), "application/json", headers)

    def send(self, code: int, data: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def start_stream(self, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def fault(rule: Rule) -> ApiError:
    if rule.status == 429:
        return ApiError(429, "TooManyRequests", "Too many requests, please try again later.",
                        {"retryAfterSeconds": rule.retry_after})  # fmt: skip
    reasons = {401: ("Unauthorized", "Unauthorized"),
               403: ("Forbidden", "forbidden: injected by the test's Kubernetes double"),
               409: ("Conflict", "Operation cannot be fulfilled: the object has been modified; "
                     "please apply your changes to the latest version and try again"),
               503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
               504: ("Timeout", "Timeout: request did not complete within requested timeout"),
               }  # fmt: skip
    reason, message = reasons.get(
        rule.status, ("InternalError", "Internal error occurred: injected by the test's double")
    )
    return ApiError(rule.status, reason, message, {})


def forbid(kind: Kind, name, user, verb, resource, namespace) -> ApiError:  # noqa: PLR0917
    subject = f'{kind.resource} "{name}"' if name else kind.resource
    where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
               f'in API group "{kind.group}" {where}')  # fmt: skip
    details = {"kind": kind.plural} | ({"name": name} if name else {})
    return ApiError(
        403, "Forbidden", message, details | ({"group": kind.group} if kind.group else {})
    )


class ApiHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, api: Api, ssl_context: Any = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.api = api
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
        self.scheme = "https" if ssl_context is not None else "http"
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    def start(self) -> ApiHttpServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.api.closing.set()
        for rule in self.api.rules:
            rule.released.set()
        self.shutdown()
        self.server_close()
