"""Services of the Kubernetes double: a TCP proxy on 127.0.0.1 for each LoadBalancer or
NodePort Service, forwarding each new connection to a Ready pod of its selector (round
robin), as kube-proxy does; ClusterIP Services get none.

The proxy listens on a free port of the NodePort range (30000-32767; any free port when
none is), written to ``spec.ports[0].nodePort`` and to the annotation ``HOST_PORT``; a
LoadBalancer's ``status.loadBalancer.ingress[0].ip`` is 127.0.0.1, but its port 80 is not
bound: clients of the double connect to 127.0.0.1:<host-port>.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import socket
import threading
from typing import Any

from tests.doubles.kubernetes.kubelet_support import HOST_PORT

PROXIED = ("LoadBalancer", "NodePort")


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _listen(preferred: int | None) -> socket.socket:
    candidates = [preferred] if preferred else []
    candidates += [*random.sample(range(30000, 32768), 50), 0]
    for port in candidates:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sock.listen(128)
        return sock
    raise OSError("no free port")


class Proxy:
    def __init__(self, store: Any, namespace: str, selector: dict[str, str], port: int | None):
        self.store, self.namespace, self.selector = store, namespace, selector
        self._server = _listen(port)
        self.port = int(self._server.getsockname()[1])
        self._turn = itertools.count()
        self._closed = False
        self.connections = 0  # forwarded so far
        threading.Thread(target=self._accept, name=f"proxy {self.port}", daemon=True).start()

    def backends(self) -> list[int]:
        if not self.selector:
            return []
        pods = self.store.list("Pod", self.namespace, self.selector)
        ports = [p["metadata"].get("annotations", {}).get(HOST_PORT) for p in pods if ready(p)]
        return [int(port) for port in ports if port]

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        backends = self.backends()
        if not backends:
            client.close()  # no endpoints: the connection is refused/reset, as by kube-proxy
            return
        port = backends[next(self._turn) % len(backends)]
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self.connections += 1
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            source.shutdown(socket.SHUT_RD)


class ServiceProxies:
    """One Proxy per LoadBalancer/NodePort Service; ``sync()`` follows the store."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.proxies: dict[tuple[str, str, str], Proxy] = {}  # (namespace, name, uid)

    def sync(self) -> None:
        seen = set()
        for service in self.store.list("Service"):
            meta, spec = service["metadata"], service.get("spec", {})
            if spec.get("type", "ClusterIP") not in PROXIED:
                continue
            key = (meta["namespace"], meta["name"], meta.get("uid", ""))
            seen.add(key)
            proxy = self.proxies.get(key)
            if proxy is None:
                ports = spec.get("ports") or [{}]
                proxy = Proxy(self.store, key[0], {}, ports[0].get("nodePort"))
                self.proxies[key] = proxy
            proxy.selector = spec.get("selector") or {}
            self._publish(service, proxy.port)
        for key in set(self.proxies) - seen:
            self.proxies.pop(key).close()

    def _publish(self, service: dict[str, Any], port: int) -> None:
        """nodePort and the host-port annotation in the spec; the LoadBalancer's ingress."""
        meta, spec = service["metadata"], service["spec"]
        ports = spec.get("ports") or []
        annotations = meta.get("annotations") or {}
        if ports and (ports[0].get("nodePort") != port or annotations.get(HOST_PORT) != str(port)):
            ports[0]["nodePort"] = port
            meta["annotations"] = annotations | {HOST_PORT: str(port)}
            with contextlib.suppress(Exception):  # a conflict: the next sync tries again
                service = self.store.replace(service, "service-controller")
        if spec.get("type") == "LoadBalancer":
            status = {"loadBalancer": {"ingress": [{"ip": "127.0.0.1", "ipMode": "VIP"}]}}
            if service.get("status") != status:
                with contextlib.suppress(Exception):
                    self.store.update_status("Service", meta["namespace"], meta["name"], status)

    def port(self, namespace: str, name: str) -> int | None:
        for (ns, found, _), proxy in self.proxies.items():
            if (ns, found) == (namespace, name):
                return proxy.port
        return None

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()
        self.proxies.clear()
