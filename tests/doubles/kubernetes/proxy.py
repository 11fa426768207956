"""The API server's proxy subresources, as kube-apiserver serves them:

    /api/v1/namespaces/{ns}/pods/{[scheme:]name[:port]}/proxy[/{path}]
    /api/v1/namespaces/{ns}/services/{[scheme:]name[:port]}/proxy[/{path}]

for every method. A pod's port is a number or a container port's name (none: its first
container port); the request goes to the pod's container on its host port (annotation
``HOST_PORT``). A Service's port is a number or a service port's name (none: its unnamed
port, as kube-apiserver matches endpoints' port names), forwarded to the targetPort (a
number or a named container port) of a Ready pod of its selector, picked at random.

The path after ``/proxy`` is decoded and cleaned as kube-apiserver does (``.../proxy`` is
a 301 to ``.../proxy/``), the query string goes as it is; the body and headers go too,
less the caller's Authorization and the hop-by-hop headers, with ``Host`` set to the
upstream address and the caller added to ``X-Forwarded-For``. The upstream's status,
headers (less hop-by-hop ones) and body are streamed back, chunked when it sent no
Content-Length. Errors are ``Status`` bodies: 404 for an unknown pod or Service, 503
ServiceUnavailable when nothing answers (``error trying to reach service: dial tcp ...:
connect: connection refused``, ``no endpoints available for service "..."``).
"""

from __future__ import annotations

import http.client
import posixpath
import random
import re
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from tests.doubles.kubernetes.kinds import KINDS, ApiError, not_found
from tests.doubles.kubernetes.kubelet_support import HOST_PORT
from tests.doubles.kubernetes.services import ready

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
}  # fmt: skip
NOT_FORWARDED = HOP_BY_HOP | {"authorization", "host", "content-length", "expect"}
UPSTREAM_TIMEOUT_S = 600.0
PATH = re.compile(r"/api/v1/namespaces/[^/]+/(?:pods|services)/[^/]+/proxy(?P<rest>/.*)?")


def serve(call: Any) -> None:
    """Answer a pods/proxy or services/proxy request (RBAC and faults already passed)."""
    h, kind = call.h, call.kind
    url = urlsplit(h.path)
    found = PATH.fullmatch(url.path)
    if found is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
    path = subpath(unquote(found["rest"] or ""))
    if not path:  # kube-apiserver's redirect of an empty path
        location = unquote(url.path) + "/" + (f"?{url.query}" if url.query else "")
        return h.send(301, b"", "text/plain", {"Location": location})
    scheme, name, port = split_scheme_name_port(call.name or "")
    if not name:
        raise ApiError(400, "BadRequest", f'invalid {kind.kind.lower()} request "{call.name}"')
    if kind.kind == "Pod":
        upstream = pod_upstream(call.h.server.api.store, call.namespace, name, port)
    else:
        upstream = service_upstream(call.h.server.api.store, call.namespace, name, port)
    if scheme == "https":  # the double's pods serve plain HTTP
        raise unreachable(f"remote error: tls: first record does not look like a TLS handshake "
                          f"(127.0.0.1:{upstream})")  # fmt: skip
    target = quote(path, safe="$&+,/:;=@") + (f"?{url.query}" if url.query else "")
    forward(h, upstream, target, call.body)


def subpath(rest: str) -> str:
    """The upstream path of a decoded ``/proxy`` remainder, as kube-apiserver makes it ("" for
    no remainder at all: a redirect)."""
    if not rest.strip("/"):
        return "/" if rest else ""
    cleaned = "/" + posixpath.normpath(rest).lstrip("/")
    if rest.endswith("/") and not cleaned.endswith("/"):
        cleaned += "/"
    return cleaned


def split_scheme_name_port(id_: str) -> tuple[str, str, str]:
    """``name``, ``name:port`` or ``scheme:name:port`` (Kubernetes' SplitSchemeNamePort)."""
    parts = id_.split(":")
    if len(parts) > 3 or (len(parts) == 3 and parts[0] not in ("", "http", "https")):
        return "", "", ""
    scheme = parts[0] if len(parts) == 3 else ""
    name = parts[-2] if len(parts) == 3 else parts[0]
    port = parts[-1] if len(parts) >= 2 else ""
    return scheme, name, port


def unreachable(reason: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", f"error trying to reach service: {reason}")


def refused(port: str | int) -> ApiError:
    return unreachable(f"dial tcp 127.0.0.1:{port}: connect: connection refused")


def host_port(pod: dict[str, Any], port: str) -> int | None:
    """The host port serving a pod's ``port``: a container port's number or name, or "" (the
    pod's first); None when the pod declares no such port."""
    meta = pod.get("metadata", {})
    served = int((meta.get("annotations") or {}).get(HOST_PORT) or 0) or None
    containers = pod.get("spec", {}).get("containers") or []
    declared = [p for c in containers for p in c.get("ports") or []]
    if not port:
        return served
    if port.isdigit():
        numbers = {str(p.get("containerPort")) for p in declared} | {str(served)}
        return served if port in numbers or not declared else None
    return served if any(p.get("name") == port for p in declared) else None


def pod_upstream(store: Any, namespace: str, name: str, port: str) -> int:
    pod = store.get("Pod", namespace, name)
    if pod is None:
        raise not_found(KINDS["Pod"], name)
    served = host_port(pod, port)
    if served is None or not (pod.get("status") or {}).get("podIP"):
        raise refused(served or port or 80)
    return served


def service_upstream(store: Any, namespace: str, name: str, port: str) -> int:
    """A Ready pod's host port for the Service's port, as kube-apiserver picks an endpoint."""
    service = store.get("Service", namespace, name)
    if service is None:
        raise not_found(KINDS["Service"], name)
    spec = service.get("spec") or {}
    ports = spec.get("ports") or []
    if port.isdigit():
        named = [p.get("name", "") for p in ports if str(p.get("port")) == port]
        if not named:
            message = f'no service port {port} found for service "{name}"'
            raise ApiError(503, "ServiceUnavailable", message)
        port = named[0]
    selector = spec.get("selector") or {}
    pods = [p for p in store.list("Pod", namespace, selector) if ready(p)] if selector else []
    if not pods:
        raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')
    chosen = [p for p in ports if p.get("name", "") == port]
    target = str(chosen[0].get("targetPort", chosen[0].get("port"))) if chosen else ""
    upstreams = [found for pod in pods if chosen and (found := host_port(pod, target))]
    if not upstreams:
        id_ = f"{name}:{port}" if port else name
        raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{id_}"')
    return random.choice(upstreams)


def forward(h: Any, port: int, target: str, body: bytes) -> None:
    """Send the request to 127.0.0.1:``port`` and stream its answer back."""
    method = h.command
    dropped = NOT_FORWARDED | {
        token.strip().lower() for token in (h.headers.get("Connection") or "").split(",")
    }
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=UPSTREAM_TIMEOUT_S)
    try:
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for header, value in h.headers.items():
                if header.lower() not in dropped | {"x-forwarded-for"}:
                    connection.putheader(header, value)
            forwarded = [h.headers.get("X-Forwarded-For"), h.client_address[0]]
            connection.putheader("X-Forwarded-For", ", ".join(f for f in forwarded if f))
            connection.putheader("Host", f"127.0.0.1:{port}")
            if body or method in ("POST", "PUT", "PATCH"):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            answer = connection.getresponse()
        except ConnectionRefusedError:
            raise refused(port) from None
        except (OSError, http.client.HTTPException) as error:
            reason = "i/o timeout" if isinstance(error, TimeoutError) else str(error) or repr(error)
            raise unreachable(f"dial tcp 127.0.0.1:{port}: {reason}") from None
        relay(h, answer, method)
    finally:
        connection.close()


def relay(h: Any, answer: http.client.HTTPResponse, method: str) -> None:
    length = answer.getheader("Content-Length")
    bodiless = method == "HEAD" or answer.status in (204, 304) or answer.status < 200
    chunked = length is None and not bodiless
    h.send_response_only(answer.status, answer.reason)
    dropped = HOP_BY_HOP | ({"content-length"} if chunked else set())
    for header, value in answer.getheaders():
        if header.lower() not in dropped:
            h.send_header(header, value)
    if chunked:
        h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    if bodiless:
        return
    sent = 0
    try:
        while data := answer.read1(65536):
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)
            sent += len(data)
    except (OSError, http.client.HTTPException):  # the upstream went: so does the answer
        h.close_connection = True
        return
    if chunked:
        h.wfile.write(b"0\r\n\r\n")
    elif length is not None and sent != int(length):
        h.close_connection = True
    h.wfile.flush()
