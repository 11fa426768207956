"""The controller half of the Kubernetes double (tests/doubles/kubernetes/controller.py):
Deployments rendered by deployer run as real containers, roll out, fail as a cluster
fails, and are reached through a Service's proxy, a LoadBalancer's address and the API
server's proxy."""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from tests.docker.conftest import dev_env
from tests.doubles.example_build import build_and_render
from tests.doubles.kubernetes.controller import Controller
from tests.doubles.kubernetes.deployments import resolve, template_hash
from tests.doubles.kubernetes.fixtures import KubernetesDouble, kubernetes_cluster
from tests.doubles.kubernetes.kubelet_support import HOST_PORT, quantity
from tests.doubles.kubernetes.store import Store
from tests.doubles.test_kubernetes_api import proxied

__all__ = ["dev_env", "kubernetes_cluster"]  # fixtures used here

NS = "ml"


def wait_for(what: str, check: Callable[[], Any], within_s: float = 90) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.2)


def test_the_pod_template_hash_and_rolling_numbers() -> None:
    template = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"image": "x"}]}}
    pod_hash = template_hash(template)
    assert pod_hash == template_hash(copy.deepcopy(template))
    assert 1 <= len(pod_hash) <= 10
    assert set(pod_hash) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert (resolve("25%", 2, True), resolve("25%", 2, False), resolve(1, 2, True)) == (1, 0, 1)
    assert (quantity("500m"), quantity("1Gi")) == (0.5, 2**30)


# With Docker: the example's scoring image ---------------------------------------------------
@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory, dev_env: dict[str, str]) -> dict[str, Any]:
    """The example built and pushed, rendered for its kubernetes target (production): the
    Deployment, the Service and the pull Secret the deploy step would create."""
    root = tmp_path_factory.mktemp("example") / "repo"
    _, out = build_and_render(root, "production", dev_env, "k8s")
    deployment = yaml.safe_load((out / "deployment.yaml").read_text())
    deployment["spec"]["replicas"] = 2  # the HPA's minimum, which this double does not run
    pull_secret = deployment["spec"]["template"]["spec"]["imagePullSecrets"][0]["name"]
    auth = f"{dev_env['REGISTRY_USERNAME']}:{dev_env['REGISTRY_PASSWORD']}"
    config_json = {"auths": {"127.0.0.1:5000": {"auth": base64.b64encode(auth.encode()).decode()}}}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": pull_secret, "namespace": NS},
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config_json).encode()).decode()},
    }
    service = yaml.safe_load((out / "service.yaml").read_text())
    # Objects are named after the service and the target (deployer renders them so).
    objects = deployment["metadata"]["name"]
    return {"name": objects, "deployment": deployment, "service": service, "secret": secret}


@pytest.fixture
def cluster(dev_env: dict[str, str]) -> Iterator[tuple[Store, Controller]]:
    store = Store()
    environment = dict(os.environ) | {k: v for k, v in dev_env.items() if k == "DOCKER_HOST"}
    controller = Controller(store, environment, time_scale=0.1).start()
    try:
        yield store, controller
    finally:
        controller.close()
        if controller.errors:
            print("controller errors:\n" + "\n".join(controller.errors[-3:]))


def deploy(store: Store, example: dict[str, Any], name: str = "") -> dict[str, Any]:
    deployment = copy.deepcopy(example["deployment"])
    if name:  # another Deployment of the same template
        deployment["metadata"]["name"] = name
    if store.get("Secret", NS, example["secret"]["metadata"]["name"]) is None:
        store.create(example["secret"], "deployer")
    return store.create(deployment, "deployer")


def status(store: Store, name: str, kind: str = "Deployment") -> dict[str, Any]:
    return (store.get(kind, NS, name) or {}).get("status", {})


def pods(store: Store, name: str) -> list[dict[str, Any]]:
    return [p for p in store.list("Pod", NS) if p["metadata"]["name"].startswith(name + "-")]


def container_state(store: Store, name: str, reason: str) -> dict[str, Any] | None:
    for pod in pods(store, name):
        for container in pod.get("status", {}).get("containerStatuses", []):
            if container["state"].get("waiting", {}).get("reason") == reason:
                return dict(container)
    return None


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in obj.get("conditions", []) if c["type"] == kind]
    return found[0] if found else {}


SCORE_BODY = {"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}


def score_request(url: str) -> urllib.request.Request:
    return urllib.request.Request(
        url, data=json.dumps(SCORE_BODY).encode(), headers={"Content-Type": "application/json"}
    )


@pytest.mark.docker
@pytest.mark.slow
def test_a_deployment_runs_rolls_out_without_a_failed_request_and_goes(
    cluster: tuple[Store, Controller], example: dict[str, Any]
) -> None:
    store, controller = cluster
    name = example["name"]
    deploy(store, example)
    store.create(example["service"], "deployer")
    wait_for("Available", lambda: status(store, name).get("availableReplicas") == 2, 180)
    assert condition(status(store, name), "Available")["status"] == "True"
    assert condition(status(store, name), "Progressing")["reason"] == "NewReplicaSetAvailable"
    first = store.get("Deployment", NS, name)
    assert first["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    wait_for("the service's port", lambda: store.get("Service", NS, name).get("status"))
    port = int(store.get("Service", NS, name)["metadata"]["annotations"][HOST_PORT])
    assert store.get("Service", NS, name)["spec"]["ports"][0]["nodePort"] == port
    assert controller.service_port(name, NS) == port
    url = f"http://127.0.0.1:{port}"  # the node port
    with urllib.request.urlopen(score_request(url + "/score"), timeout=10) as answer:
        assert answer.status == 200

    failures, answered, done = [], [0], threading.Event()

    def hammer() -> None:
        while not done.is_set():
            try:
                with urllib.request.urlopen(url + "/ready", timeout=10) as answer:
                    answered[0] += answer.status == 200
            except OSError as exc:
                failures.append(repr(exc))
            time.sleep(0.02)

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    changed = copy.deepcopy(first)
    changed["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "ROLLOUT", "value": "2"}
    )
    store.replace(changed, "deployer")

    def rolled() -> bool:
        found = store.get("Deployment", NS, name)
        st = found.get("status", {})
        return (
            found["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
            and st.get("observedGeneration") == found["metadata"]["generation"]
            and st.get("updatedReplicas") == 2
            and st.get("availableReplicas") == 2
            and st.get("replicas") == 2
        )

    wait_for("the rollout", rolled, 180)
    time.sleep(1)
    done.set()
    thread.join(20)
    assert failures == [] and answered[0] > 10
    sets = {rs["metadata"]["name"]: rs for rs in store.list("ReplicaSet", NS)}
    assert len([s for s in sets if s.startswith(name + "-")]) == 2
    assert sorted(rs["spec"]["replicas"] for rs in sets.values()) == [0, 2]

    pod = pods(store, name)[0]["metadata"]["name"]
    logs = b"".join(store.pod_logs(NS, pod, tail_lines=50))
    assert logs, "no logs"

    store.delete("Deployment", NS, name)
    client = controller.kubelet.client
    label = f"ai.deployer.test-double.session={controller.kubelet.session}"
    wait_for(
        "containers removed",
        # One call (containers.list() inspects each: one removed meanwhile is a NotFound).
        lambda: not client.api.containers(all=True, filters={"label": label}),
        60,
    )


@pytest.mark.docker
def test_a_wrong_image_is_image_pull_back_off(
    cluster: tuple[Store, Controller], example: dict[str, Any]
) -> None:
    store, _ = cluster
    deployment = copy.deepcopy(example["deployment"])
    deployment["metadata"]["name"] = "missing-image"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "127.0.0.1:5000/no-such-image-" + uuid.uuid4().hex[:6] + ":1"
    deployment["spec"]["template"]["spec"].pop("imagePullSecrets", None)
    store.create(deployment, "deployer")
    found = wait_for(
        "ImagePullBackOff", lambda: container_state(store, "missing-image", "ImagePullBackOff")
    )
    assert "Back-off pulling image" in found["state"]["waiting"]["message"]
    events = [e for e in store.list("Event", NS) if e["reason"] == "Failed"]
    assert any("Failed to pull image" in e["message"] for e in events)
    assert condition(status(store, "missing-image"), "Available")["status"] == "False"


@pytest.mark.docker
def test_a_crashing_container_is_crash_loop_back_off(
    cluster: tuple[Store, Controller], example: dict[str, Any]
) -> None:
    store, controller = cluster
    controller.crash_loop("crashing", NS)
    deploy(store, example, "crashing")
    found = wait_for(
        "a restart", lambda: container_state(store, "crashing", "CrashLoopBackOff"), 60
    )
    assert found["lastState"]["terminated"]["exitCode"] == 1
    wait_for(
        "restartCount",
        lambda: (
            (container_state(store, "crashing", "CrashLoopBackOff") or {}).get("restartCount", 0)
            >= 2
        ),
        60,
    )
    pod = pods(store, "crashing")[0]["metadata"]["name"]
    logs = b"".join(store.pod_logs(NS, pod, tail_lines=None))
    assert b"crashing on purpose" in logs


@pytest.mark.docker
def test_too_large_a_request_is_unschedulable(
    cluster: tuple[Store, Controller], example: dict[str, Any]
) -> None:
    store, _ = cluster
    deployment = copy.deepcopy(example["deployment"])
    deployment["metadata"]["name"] = "huge"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["resources"]["requests"]["cpu"] = "16"
    store.create(deployment, "deployer")

    def unschedulable() -> dict[str, Any] | None:
        for pod in pods(store, "huge"):
            found = condition(pod.get("status", {}), "PodScheduled")
            if found.get("reason") == "Unschedulable":
                return found
        return None

    found = wait_for("Unschedulable", unschedulable, 30)
    assert found["status"] == "False"
    assert found["message"] == "0/1 nodes are available: 1 Insufficient cpu."


# Through a kubeconfig and the official client only, as a driver reaches a cluster ----------
@pytest.mark.docker
@pytest.mark.slow
def test_a_load_balancer_and_the_api_server_proxy_reach_the_pods(
    kubernetes_cluster: KubernetesDouble, example: dict[str, Any], tmp_path: Path
) -> None:
    api = config.new_client_from_config(str(kubernetes_cluster.kubeconfig(tmp_path / "config")))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    name, service = example["name"], example["service"]
    deployment = copy.deepcopy(example["deployment"])
    deployment["spec"]["replicas"] = 1
    core.create_namespaced_secret(NS, example["secret"])
    apps.create_namespaced_deployment(NS, deployment)
    core.create_namespaced_service(NS, service)
    wait_for(
        "Available",
        # No status until the controller has seen the Deployment.
        lambda: getattr(
            apps.read_namespaced_deployment_status(name, NS).status, "available_replicas", None
        ),
        180,
    )

    def ingress() -> str | None:
        status = core.read_namespaced_service(name, NS).status
        found = status.load_balancer.ingress if status and status.load_balancer else None
        return found[0].ip if found else None

    address = ipaddress.ip_address(wait_for("the load balancer's address", ingress, 30))
    assert address.is_loopback and str(address) != "127.0.0.1"  # an address of its own
    with urllib.request.urlopen(score_request(f"http://{address}:80/score"), timeout=10) as answer:
        assert answer.status == 200 and len(json.load(answer)) == 1  # one prediction

    selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())
    (pod,) = core.list_namespaced_pod(NS, label_selector=selector).items
    pod_name = pod.metadata.name
    for via in (f"pods/{pod_name}:http", f"pods/{pod_name}", f"services/{name}:http"):
        base = f"/api/v1/namespaces/{NS}/{via}/proxy"
        assert proxied(api, "GET", base + "/ready")[0] == 200
        status, _, scored = proxied(api, "POST", base + "/score", SCORE_BODY)
        assert status == 200 and len(scored) == 1, scored
    assert core.read_namespaced_pod_log(pod_name, NS, tail_lines=100)  # through the API too
