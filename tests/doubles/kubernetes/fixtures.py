"""``KubernetesDouble``: the API server on 127.0.0.1, a kubeconfig to reach it, the test API;
with ``docker_env``, the controller too (Deployments run as Docker containers).

with KubernetesDouble(tmp_path, docker_env=dev_env) as cluster:
    config = cluster.kubeconfig(tmp_path / "kubeconfig")   # as a user reaches a cluster
    cluster.fail("PATCH", r"/deployments/web", status=429)  # faults on demand
    cluster.forbid("deployer", "patch", "deployments")      # RBAC says no
    cluster.store.get("Deployment", "ml", "web")            # what the cluster holds
    cluster.requests                                        # what was sent, on the wire
    cluster.controller.crash_loop("web", "ml")              # None without docker_env
"""

from __future__ import annotations

import base64
import os
import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.doubles.azure.tls import make_certificates
from tests.doubles.kubernetes.controller import Controller
from tests.doubles.kubernetes.server import Api, ApiHttpServer, Recorded, Rule
from tests.doubles.kubernetes.store import Store


class KubernetesDouble:
    """The API server; with ``docker_env`` (DOCKER_HOST and the like, as the ``dev_env``
    fixture gives them), ``controller``: the controller, the kubelet and the Services'
    proxies (tests/doubles/kubernetes/controller.py), started and stopped with the server."""

    def __init__(
        self,
        workdir: Path,
        *,
        tls: bool = False,
        user: str = "deployer",
        docker_env: dict[str, str] | None = None,
        time_scale: float = 0.1,
    ) -> None:
        self.workdir = Path(workdir)
        self.store = Store()
        self.controller: Controller | None = None
        self._docker_env = docker_env
        self._time_scale = time_scale
        self.api = Api(self.store)
        self.user = user
        self.token = self.add_user(user)
        self.ca: Path | None = None
        context = None
        if tls:
            certs = make_certificates(self.workdir / "kubernetes-tls")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certs.certificate, certs.key)
            self.ca = certs.ca_bundle
        self._server = ApiHttpServer(self.api, context)

    def __enter__(self) -> KubernetesDouble:
        self._server.start()
        if self._docker_env is not None:
            environment = {**os.environ, **self._docker_env}
            try:
                self.controller = Controller(
                    self.store, environment, time_scale=self._time_scale
                ).start()
            except BaseException:
                self._server.stop()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.controller is not None:
            self.controller.close()
        self._server.stop()

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def requests(self) -> list[Recorded]:
        return self.api.requests

    def add_user(self, name: str) -> str:
        """A user of the cluster; returns the bearer token that authenticates as it."""
        token = secrets.token_urlsafe(24)
        self.api.users[token] = name
        return token

    def kubeconfig(
        self, path: Path, context: str = "test", namespace: str = "ml", user: str | None = None
    ) -> Path:
        """Write a kubeconfig (cluster, user with a bearer token, context with a namespace)."""
        user = user or self.user
        token = next(t for t, u in self.api.users.items() if u == user)
        cluster: dict = {"server": self.url}
        if self.ca is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca.read_bytes()).decode()
        ctx = {"cluster": "double", "user": user, "namespace": namespace}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "double", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": context, "context": ctx}],
            "current-context": context,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    # Faults ---------------------------------------------------------------------------------
    def fail(
        self,
        method: str,
        path: str,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: int = 1,
        content_type: str = "",
    ) -> Rule:
        """Answer the next ``times`` matching requests with ``status`` (429 carries
        Retry-After); ``path`` is a regular expression searched in the path and query,
        ``content_type`` one searched in the request's Content-Type."""
        rule = Rule(method, path, "fail", status, times, retry_after, content_type)
        return self._add(rule)

    def hold(self, method: str, path: str, times: int = 1, content_type: str = "") -> Rule:
        """Keep matching requests waiting until ``rule.released`` is set (then served)."""
        return self._add(Rule(method, path, "hold", times=times, content_type=content_type))

    def forbid(self, user_or_all: str, verb: str, resource: str) -> None:
        """RBAC denies ``verb`` (or "*") on ``resource`` ("deployments", "pods/log") to a user
        (or "*": everyone): 403 Forbidden as kube-apiserver words it."""
        self.api.forbidden.add((user_or_all, verb, resource))

    def allow(self, user_or_all: str, verb: str, resource: str) -> None:
        self.api.forbidden.discard((user_or_all, verb, resource))

    def _add(self, rule: Rule) -> Rule:
        with self.api.lock:
            self.api.rules.append(rule)
        return rule

    def requests_to(self, method: str, path_part: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and path_part in r.path]


@pytest.fixture
def kubernetes_double(tmp_path: Path) -> Iterator[KubernetesDouble]:
    """A running double; ``kubernetes_double.kubeconfig(path)`` writes the way in."""
    with KubernetesDouble(tmp_path) as double:
        yield double


@pytest.fixture
def kubernetes_cluster(tmp_path: Path, dev_env: dict[str, str]) -> Iterator[KubernetesDouble]:
    """A running double with its controller: pods run as Docker containers. The test module
    needs ``dev_env`` in scope too (``from tests.docker.conftest import dev_env``)."""
    with KubernetesDouble(tmp_path, docker_env=dev_env) as cluster:
        yield cluster
        assert cluster.controller is not None
        if cluster.controller.errors:
            print("controller errors:\n" + "\n".join(cluster.controller.errors[-3:]))
