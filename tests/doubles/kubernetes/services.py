"""Services of the Kubernetes double, as kube-proxy and a cloud load balancer serve them: TCP
proxies forwarding each new connection to a Ready pod of the Service's selector (round
robin, to the pod's host port); ClusterIP Services get none.

- NodePort and LoadBalancer Services: a proxy on the node's address, 127.0.0.1, on a free
  port of the NodePort range (30000-32767; any free port when none is), written to
  ``spec.ports[0].nodePort`` and to the annotation ``HOST_PORT``.
- LoadBalancer Services, besides: an address of their own, as a cloud load balancer has, a
  loopback address 127.0.x.y never given to another Service in this process (from
  127.0.10.1 upward, skipping any where the port cannot be bound), with a proxy on
  ``<that address>:<spec.ports[0].port>`` (e.g. 80). The address is published as
  ``status.loadBalancer.ingress[0].ip`` once the proxy listens, and kept for the life of
  the Service object (its uid); a client reaches ``http://<ingress ip>:<port>/``.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import random
import socket
import threading
import traceback
from typing import Any

from tests.doubles.kubernetes.kubelet_support import HOST_PORT
from tests.doubles.kubernetes.nodes import NODE_IP

PROXIED = ("LoadBalancer", "NodePort")
FIRST_BALANCER = 10 * 256 + 1  # 127.0.10.1
_balancer_addresses = itertools.count(FIRST_BALANCER)  # process-wide: never given twice
_balancer_lock = threading.Lock()
Key = tuple[str, str, str]  # a Service: (namespace, name, uid)


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _listen(host: str, ports: list[int]) -> socket.socket:
    """A socket listening on the first of ``ports`` that ``host`` can bind."""
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            sock.close()
            if error.errno == errno.EACCES:
                raise
            continue
        sock.listen(128)
        return sock
    raise OSError(errno.EADDRINUSE, f"cannot listen on {host}:{ports}")


def _node_port(preferred: int | None) -> socket.socket:
    candidates = [preferred] if preferred else []
    return _listen(NODE_IP, [*candidates, *random.sample(range(30000, 32768), 50), 0])


def _balancer(port: int) -> socket.socket:
    """A socket listening on ``<a loopback address never given before>:<port>``."""
    for _ in range(2000):
        with _balancer_lock:
            high, low = divmod(next(_balancer_addresses), 256)
        if high > 255:
            break
        if low in (0, 255):
            continue
        with contextlib.suppress(OSError):
            return _listen(f"127.0.{high}.{low}", [port])
    raise OSError(errno.EADDRNOTAVAIL, f"no loopback address left to listen on port {port}")


class Proxy:
    """Forwards each connection accepted on ``sock`` to a Ready pod of ``selector``."""

    def __init__(
        self, store: Any, namespace: str, selector: dict[str, str], sock: socket.socket
    ) -> None:
        self.store, self.namespace, self.selector = store, namespace, selector
        self._server = sock
        self.host, self.port = str(sock.getsockname()[0]), int(sock.getsockname()[1])
        self._turn = itertools.count()
        self._closed = False
        self.connections = 0  # forwarded so far
        name = f"proxy {self.host}:{self.port}"
        threading.Thread(target=self._accept, name=name, daemon=True).start()

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
            upstream = socket.create_connection((NODE_IP, port), timeout=5)
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
    """The proxies of LoadBalancer/NodePort Services; ``sync()`` follows the store."""

    def __init__(self, store: Any, errors: list[str] | None = None) -> None:
        self.store = store
        self.errors = errors if errors is not None else []  # tracebacks, for a test to show
        self.proxies: dict[Key, Proxy] = {}  # on the node: 127.0.0.1:<nodePort>
        self.balancers: dict[Key, Proxy] = {}  # a LoadBalancer's: <its address>:<its port>
        self.addresses: dict[Key, str] = {}  # a LoadBalancer's address, for its life

    def sync(self) -> None:
        seen = set()
        for service in self.store.list("Service"):
            meta = service["metadata"]
            key = (meta["namespace"], meta["name"], meta.get("uid", ""))
            seen.add(key)
            try:
                self._sync(key, service)
            except Exception:  # e.g. a port taken: the next sync tries again
                self.errors.append(traceback.format_exc())
                del self.errors[:-20]
        for key in set(self.proxies) - seen:
            self.proxies.pop(key).close()
        for key in set(self.balancers) - seen:
            self.balancers.pop(key).close()
        for key in set(self.addresses) - seen:
            del self.addresses[key]

    def _sync(self, key: Key, service: dict[str, Any]) -> None:
        spec = service.get("spec", {})
        kind = spec.get("type", "ClusterIP")
        ports = spec.get("ports") or [{}]
        selector = spec.get("selector") or {}
        if kind not in PROXIED:
            for proxies in (self.proxies, self.balancers):
                if key in proxies:
                    proxies.pop(key).close()
            self._publish_address(service, None)
            return
        proxy = self.proxies.get(key)
        if proxy is None:
            proxy = self.proxies[key] = Proxy(
                self.store, key[0], {}, _node_port(ports[0].get("nodePort"))
            )
        proxy.selector = selector
        service = self._publish_node_port(service, proxy.port)
        balancer = self.balancers.get(key)
        wanted = ports[0].get("port") if kind == "LoadBalancer" else None
        if balancer is not None and balancer.port != wanted:
            self.balancers.pop(key).close()
            balancer = None
        if balancer is None and wanted:
            address = self.addresses.get(key)
            sock = _listen(address, [wanted]) if address else _balancer(wanted)
            balancer = self.balancers[key] = Proxy(self.store, key[0], {}, sock)
            self.addresses[key] = balancer.host
        if balancer is not None:
            balancer.selector = selector
        self._publish_address(service, balancer.host if balancer else None)

    def _publish_node_port(self, service: dict[str, Any], port: int) -> dict[str, Any]:
        """nodePort and the host-port annotation in the spec."""
        meta, spec = service["metadata"], service["spec"]
        ports = spec.get("ports") or []
        annotations = meta.get("annotations") or {}
        if ports and (ports[0].get("nodePort") != port or annotations.get(HOST_PORT) != str(port)):
            ports[0]["nodePort"] = port
            meta["annotations"] = annotations | {HOST_PORT: str(port)}
            with contextlib.suppress(Exception):  # a conflict: the next sync tries again
                service = self.store.replace(service, "service-controller")
        return service

    def _publish_address(self, service: dict[str, Any], address: str | None) -> None:
        """A LoadBalancer's ingress, once its proxy listens; none for other Services."""
        meta = service["metadata"]
        status = service.get("status") or {}
        if address:
            wanted = {"loadBalancer": {"ingress": [{"ip": address, "ipMode": "VIP"}]}}
        elif (status.get("loadBalancer") or {}).get("ingress"):
            wanted = {"loadBalancer": {}}
        else:
            return
        if status != wanted:
            with contextlib.suppress(Exception):
                self.store.update_status("Service", meta["namespace"], meta["name"], wanted)

    def port(self, namespace: str, name: str) -> int | None:
        """The node port (on 127.0.0.1) of a NodePort/LoadBalancer Service."""
        for (ns, found, _), proxy in self.proxies.items():
            if (ns, found) == (namespace, name):
                return proxy.port
        return None

    def address(self, namespace: str, name: str) -> tuple[str, int] | None:
        """Where a LoadBalancer Service's own proxy listens: (its ingress ip, its port)."""
        for (ns, found, _), proxy in self.balancers.items():
            if (ns, found) == (namespace, name):
                return proxy.host, proxy.port
        return None

    def close(self) -> None:
        for proxy in [*self.proxies.values(), *self.balancers.values()]:
            proxy.close()
        self.proxies.clear()
        self.balancers.clear()
