"""Each driver's side of the conformance suite: one ``Platform`` per kind with a driver.

The cloud drivers add theirs here, each backed by its test double on 127.0.0.1; the suite
(test_conformance.py) runs every scenario against every platform in ``PLATFORMS``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.conformance.harness import Platform, Step
from tests.doubles.docker_engine import DockerEngineDouble

# The local driver's protocol, step by step, as Engine API calls (deployer/targets/local).
LOCAL_STEPS = {
    # apply: the candidate container is started
    "apply": ("POST", r"^/v[0-9.]+/containers/[^/]+/start", ""),
    # promote: the candidate joins the service port (an exec of the control command)
    "promote": ("POST", r"^/v[0-9.]+/containers/[^/]+/exec$", '"join"'),
    # after the join, before the previous version stops accepting
    "pause": ("POST", r"^/v[0-9.]+/containers/[^/]+/exec$", '"pause"'),
    # confirm: the candidate is renamed as the live version
    "confirm": ("POST", r"^/v[0-9.]+/containers/[^/]+/rename", ""),
    # retire: the previous version is stopped
    "retire": ("POST", r"^/v[0-9.]+/containers/[^/]+/stop", ""),
}


class LocalPlatform:
    """``local``: the real Docker engine behind a faulting proxy (tests/doubles)."""

    kind = "local"
    replacement = "candidate"
    switch_drops_requests = False
    steps = tuple(LOCAL_STEPS)

    def __init__(self, engine: DockerEngineDouble, client: Any, port: int) -> None:
        self.engine = engine
        self.client = client  # docker-py, straight to the real engine
        self.port = port

    def target_yaml(self, ready_timeout_s: float) -> str:
        return f"{{type: local, port: {self.port}, ready_timeout_s: {ready_timeout_s}}}"

    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.engine.docker_host}

    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/score"

    def _containers(self, service: str, target: str) -> list[Any]:
        label = f"ai.deployer.base-name={service}-{target}"
        return list(self.client.containers.list(all=True, filters={"label": label}))

    def live_versions(self, service: str, target: str) -> list[str]:
        return [
            str(c.labels.get("ai.deployer.revision"))
            for c in self._containers(service, target)
            if c.status == "running" and not c.name.endswith("-candidate")
        ]

    def leftovers(self, service: str, target: str) -> list[str]:
        return [
            f"{c.name} ({c.status})"
            for c in self._containers(service, target)
            if c.status != "running" or c.name.endswith("-candidate")
        ]

    def fail(self, step: str) -> Step:
        method, path, body = LOCAL_STEPS[step]
        return self.engine.fail(method, path, body)

    def hold(self, step: str) -> Step:
        method, path, body = LOCAL_STEPS[step]
        return self.engine.hold(method, path, body)


@contextlib.contextmanager
def local_platform(tmp: Path, dev_env: dict[str, str], client: Any) -> Iterator[Platform]:
    from deployer.targets.local.driver import free_port

    upstream = dev_env.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    with DockerEngineDouble(tmp / "docker.sock", upstream) as engine:
        yield LocalPlatform(engine, client, free_port())


# The aci driver's protocol, as Azure Resource Manager calls (deployer/targets/aci).
_GROUP = r"/providers/Microsoft\.ContainerInstance/containerGroups/"
ACI_STEPS = {
    # apply: the candidate group is created
    "apply": ("PUT", _GROUP + r"[^/?]+-candidate\?"),
    # promote: the service group is updated to the new version
    "promote": ("PUT", _GROUP + r"(?![^/?]+-candidate\?)[^/?]+\?"),
    # confirm: the service group's tags record the new version
    "confirm": ("PATCH", _GROUP + r"[^/?]+\?"),
}


class AciPlatform:
    """``aci``: the ARM and Entra doubles (tests/doubles/azure), whose container groups run
    as real containers on the Docker engine, each on a port of its own."""

    kind = "aci"
    replacement = "candidate"
    # ACI restarts a group to change its image: the service is down while it restarts.
    switch_drops_requests = True
    steps = tuple(ACI_STEPS)

    def __init__(self, azure: Any, workdir: Path) -> None:
        self.azure = azure
        self.workdir = workdir
        self.label = f"cf-{uuid.uuid4().hex[:10]}"
        self._last_url = "http://localhost:9/score"  # until a service group exists

    def target_yaml(self, ready_timeout_s: float) -> str:
        return (
            f'{{type: aci, subscription_id: "{self.azure.subscription_id}", '
            f"resource_group: {self.azure.resource_group}, location: westeurope, "
            f"dns_name_label: {self.label}, ready_timeout_s: {ready_timeout_s}}}"
        )

    def env(self) -> dict[str, str]:
        return {**self.azure.env(), "DEPLOYER_AZURE_CLOUD": str(self._cloud())}

    def _cloud(self) -> Path:
        path = self.workdir / "cloud.json"
        if not path.exists():
            self.azure.cloud_file(path)
        return path

    def service_url(self) -> str:
        """The service group's URI (the double gives each group a port of its own), or the
        last one seen once the group is gone."""
        for group in self.azure.groups():  # this double serves one service: the suite's
            if group["tags"].get("ai.deployer.role") == "service" and group["port"]:
                self._last_url = f"http://localhost:{group['port']}/score"
        return self._last_url

    def _groups(self, service: str, target: str) -> list[dict[str, Any]]:
        from deployer.targets.aci.driver import group_names

        names = set(group_names(service, target))
        return [g for g in self.azure.groups() if g["name"] in names]

    def live_versions(self, service: str, target: str) -> list[str]:
        return [
            str(g["tags"].get("ai.deployer.revision"))
            for g in self._groups(service, target)
            if not g["name"].endswith("-candidate") and g["state"] == "Running"
        ]

    def leftovers(self, service: str, target: str) -> list[str]:
        return [
            f"{g['name']} ({g['state']})"
            for g in self._groups(service, target)
            if g["name"].endswith("-candidate") or g["state"] != "Running"
        ]

    def fail(self, step: str) -> Step:
        method, path = ACI_STEPS[step]
        # Not a 5xx or 429: azure-core's retry policy retries those, as it should.
        return self.azure.fail(
            method, path, status=409, code="Conflict", message="injected by the ARM double"
        )

    def hold(self, step: str) -> Step:
        method, path = ACI_STEPS[step]
        return self.azure.hold(method, path)


@contextlib.contextmanager
def aci_platform(tmp: Path, dev_env: dict[str, str], client: Any) -> Iterator[Platform]:
    from tests.doubles.azure import AzureDouble

    with AzureDouble(tmp / "azure", dev_env) as azure:
        yield AciPlatform(azure, tmp)


# The kubernetes driver's protocol, as API calls (deployer/targets/kubernetes): (method,
# path, content type), each a regular expression.
_DEPLOYMENTS = r"/apis/apps/v1/namespaces/[^/]+/deployments/"
KUBERNETES_STEPS = {
    # apply: the candidate Deployment is applied
    "apply": ("PATCH", _DEPLOYMENTS + r"[^/?]+-candidate\?", "apply-patch"),
    # promote: the service Deployment is applied
    "promote": ("PATCH", _DEPLOYMENTS + r"(?![^/?]+-candidate\?)[^/?]+\?", "apply-patch"),
    # confirm: the Deployment's annotation records the new revision
    "confirm": ("PATCH", _DEPLOYMENTS + r"[^/?]+\?", "merge-patch"),
}


class KubernetesPlatform:
    """``kubernetes``: the API server double and its controller (tests/doubles/kubernetes),
    whose pods run as real containers; reached through a kubeconfig only."""

    kind = "kubernetes"
    replacement = "candidate"
    switch_drops_requests = False
    steps = tuple(KUBERNETES_STEPS)
    namespace = "ml"

    # One replica, as the other platforms serve one instance: a version that dies under
    # traffic meets it during its tests (tests/targets/test_kubernetes_deploy.py runs two).
    def __init__(self, cluster: Any, workdir: Path, replicas: int = 1) -> None:
        self.cluster = cluster
        self.kubeconfig = cluster.kubeconfig(workdir / "kubeconfig", "double", self.namespace)
        self.replicas = replicas
        self._last_url = "http://127.0.0.1:9/score"  # until a Service has an address

    def target_yaml(self, ready_timeout_s: float) -> str:
        return (
            f"{{type: kubernetes, context: double, namespace: {self.namespace}, "
            f"replicas: {self.replicas}, ready_timeout_s: {ready_timeout_s}}}"
        )

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    def service_url(self) -> str:
        """The load balancer's address of the one Service the suite deploys, or the last
        one seen once it is gone."""
        for service in self.cluster.store.list("Service", self.namespace):
            ingress = (service.get("status") or {}).get("loadBalancer", {}).get("ingress")
            if ingress and ingress[0].get("ip"):
                self._last_url = f"http://{ingress[0]['ip']}/score"
        return self._last_url

    def _pods(self, service: str, target: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self.cluster.store.list("Pod", self.namespace)
            if p["metadata"].get("labels", {}).get("app.kubernetes.io/name") == service
            and p["metadata"]["labels"].get("app.kubernetes.io/instance", "").startswith(target)
        ]

    def live_versions(self, service: str, target: str) -> list[str]:
        return sorted(
            {
                p["metadata"]["annotations"].get("deployer.ai/revision", "?")
                for p in self._pods(service, target)
                if p["metadata"]["labels"]["app.kubernetes.io/instance"] == target and _ready(p)
            }
        )

    def leftovers(self, service: str, target: str) -> list[str]:
        from deployer.label_values import object_name

        candidate = object_name(service, target) + "-candidate"
        found = [
            f"deployment {d['metadata']['name']}"
            for d in self.cluster.store.list("Deployment", self.namespace)
            if d["metadata"]["name"] == candidate
        ]
        return found + [
            f"pod {p['metadata']['name']} ({p.get('status', {}).get('phase')}, not ready)"
            for p in self._pods(service, target)
            if not _ready(p) or p["metadata"]["labels"]["app.kubernetes.io/instance"] != target
        ]

    def fail(self, step: str) -> Step:
        method, path, content_type = KUBERNETES_STEPS[step]
        # Not a 5xx or 429: deployer retries those, as client-go does. RBAC taking a right
        # away mid-deploy is what a refusal looks like.
        return self.cluster.fail(method, path, status=403, content_type=content_type)

    def hold(self, step: str) -> Step:
        method, path, content_type = KUBERNETES_STEPS[step]
        return self.cluster.hold(method, path, content_type=content_type)


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@contextlib.contextmanager
def kubernetes_platform(tmp: Path, dev_env: dict[str, str], client: Any) -> Iterator[Platform]:
    import os

    from tests.doubles.kubernetes.fixtures import KubernetesDouble

    environment = {**os.environ, **dev_env}
    with KubernetesDouble(tmp / "kubernetes", docker_env=environment) as cluster:
        yield KubernetesPlatform(cluster, tmp)


# The iot_edge driver's protocol, as IoT Hub calls (deployer/targets/iot_edge): in place, so
# apply is the one step (the device swaps the module; there is no promote or confirm call).
IOT_EDGE_STEPS = {"apply": ("POST", r"/devices/[^/]+/applyConfigurationContent")}


class IotEdgePlatform:
    """``iot_edge``: the IoT Hub double (tests/doubles/iothub) with one edge device, whose
    simulated edge agent runs the manifest's modules as containers on this machine: the
    device's network is this one, so ``test_uri`` and the scoring URI are both local."""

    kind = "iot_edge"
    replacement = "in-place"
    # The edge agent stops the old module before it starts the new one.
    switch_drops_requests = True
    steps = tuple(IOT_EDGE_STEPS)
    device = "conformance-device"

    def __init__(self, hub: Any, client: Any, port: int) -> None:
        self.hub = hub
        self.client = client
        self.port = port
        hub.add_device(self.device)

    def target_yaml(self, ready_timeout_s: float) -> str:
        uri = self.service_url()
        return (
            f"{{type: iot_edge, hub: testhub, device_id: {self.device}, module_name: model, "
            f'port: {self.port}, device_address: 127.0.0.1, test_uri: "{uri}", '
            f"ready_timeout_s: {ready_timeout_s}}}"
        )

    def env(self) -> dict[str, str]:
        return dict(self.hub.env())

    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/score"

    def _containers(self) -> list[Any]:
        from deployer.targets.iot_edge.engine import LABEL_MODULE, LABEL_SESSION

        found = self.client.containers.list(
            all=True, filters={"label": f"{LABEL_SESSION}={self.hub.session}"}
        )
        return [c for c in found if c.labels.get(LABEL_MODULE) == "model"]

    def live_versions(self, service: str, target: str) -> list[str]:
        revisions = []
        for container in self._containers():
            if container.status == "running":
                env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"] or [])
                revisions.append(env.get("DEPLOYER_REVISION", "?"))
        return revisions

    def leftovers(self, service: str, target: str) -> list[str]:
        return [f"{c.name} ({c.status})" for c in self._containers() if c.status != "running"]

    def fail(self, step: str) -> Step:
        method, path = IOT_EDGE_STEPS[step]
        # Not a 5xx or 429: deployer retries those.
        return self.hub.fail(method, path, status=400)

    def hold(self, step: str) -> Step:
        method, path = IOT_EDGE_STEPS[step]
        return self.hub.hold(method, path)


@contextlib.contextmanager
def iot_edge_platform(tmp: Path, dev_env: dict[str, str], client: Any) -> Iterator[Platform]:
    from deployer.targets.local.driver import free_port
    from tests.doubles.iothub import IoTHubDouble

    with IoTHubDouble(tmp / "iothub", docker_env=dev_env) as hub:
        yield IotEdgePlatform(hub, client, free_port())


PlatformFactory = Callable[[Path, dict[str, str], Any], contextlib.AbstractContextManager[Platform]]

# The one list of platforms the suite runs against.
PLATFORMS: dict[str, PlatformFactory] = {
    "local": local_platform,
    "aci": aci_platform,
    "kubernetes": kubernetes_platform,
    "iot_edge": iot_edge_platform,
}
