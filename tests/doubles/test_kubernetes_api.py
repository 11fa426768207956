"""The Kubernetes API server double, driven by the official client through a kubeconfig."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, dynamic, watch

from tests.doubles.kubernetes.fixtures import KubernetesDouble, kubernetes_double  # noqa: F401
from tests.doubles.kubernetes.kubelet_support import HOST_PORT

NS = "ml"


def deployment(name: str = "web", replicas: int = 2, image: str = "nginx:1.27") -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
        },
    }


@pytest.fixture
def api_client(kubernetes_double: KubernetesDouble, tmp_path: Path) -> client.ApiClient:  # noqa: F811
    path = kubernetes_double.kubeconfig(tmp_path / "kubeconfig")
    config.load_kube_config(config_file=str(path))  # as a driver does
    return config.new_client_from_config(config_file=str(path))


@pytest.fixture
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture
def deployments(api_client: client.ApiClient) -> dynamic.Resource:
    return dynamic.DynamicClient(api_client).resources.get(api_version="apps/v1", kind="Deployment")


def status_of(error: client.ApiException) -> dict:
    return json.loads(error.body)


def proxied(
    api: client.ApiClient, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any, Any]:
    """A request to the API server (e.g. its proxy) with the kubeconfig's credentials: the
    status, headers and body (parsed if JSON) of the answer."""
    method, url, sent, body, _ = api.param_serialize(
        method, path, header_params={"Content-Type": "application/json"} | headers, body=body,
        auth_settings=["BearerToken"],
    )  # fmt: skip
    answer = api.call_api(method, url, sent, body)
    data, received = answer.read(), answer.getheaders()  # case-insensitive
    parsed = json.loads(data) if "json" in received.get("Content-Type", "") else data.decode()
    return answer.status, received, parsed


def test_create_get_list_with_selectors(apps: client.AppsV1Api) -> None:
    created = apps.create_namespaced_deployment(NS, deployment("web"))
    apps.create_namespaced_deployment(NS, deployment("other"))
    assert created.metadata.generation == 1 and created.metadata.uid
    assert created.spec.strategy.rolling_update.max_surge == "25%"  # defaulted as the API does
    got = apps.read_namespaced_deployment("web", NS)
    assert got.metadata.resource_version == created.metadata.resource_version
    names = [d.metadata.name for d in apps.list_namespaced_deployment(NS).items]
    assert names == ["other", "web"]
    selected = apps.list_namespaced_deployment(NS, label_selector="app=web").items
    assert [d.metadata.name for d in selected] == ["web"]
    by_name = apps.list_namespaced_deployment(NS, field_selector="metadata.name=other").items
    assert [d.metadata.name for d in by_name] == ["other"]
    with pytest.raises(client.ApiException) as missing:
        apps.read_namespaced_deployment("x", NS)
    assert missing.value.status == 404
    assert status_of(missing.value)["message"] == 'deployments.apps "x" not found'
    with pytest.raises(client.ApiException) as no_namespace:
        apps.create_namespaced_deployment("nowhere", deployment("web"))
    assert status_of(no_namespace.value)["message"] == 'namespaces "nowhere" not found'


def test_server_side_apply_creates_updates_and_removes_fields(
    deployments: dynamic.Resource,
    kubernetes_double: KubernetesDouble,  # noqa: F811
) -> None:
    body = deployment()
    body["metadata"]["annotations"] = {"team": "ml"}
    first = deployments.server_side_apply(body=body, namespace=NS, field_manager="deployer")
    assert first.metadata.generation == 1
    (entry,) = first.to_dict()["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"]) == ("deployer", "Apply")
    assert entry["fieldsType"] == "FieldsV1" and "f:replicas" in entry["fieldsV1"]["f:spec"]
    del body["metadata"]["annotations"]
    body["spec"]["replicas"] = 3
    second = deployments.server_side_apply(body=body, namespace=NS, field_manager="deployer")
    assert second.spec.replicas == 3 and second.metadata.generation == 2
    assert not second.metadata.annotations  # removed from the applied config: gone
    applies = [r for r in kubernetes_double.requests if r.method == "PATCH"]
    assert {r.content_type for r in applies} == {"application/apply-patch+yaml"}
    assert all(r.query.get("fieldManager") == "deployer" for r in applies)
    assert all("force" not in r.query for r in applies)


def test_conflicting_apply_is_409_unless_forced(deployments: dynamic.Resource) -> None:
    deployments.server_side_apply(body=deployment(), namespace=NS, field_manager="kubectl")
    change = deployment(replicas=5)
    with pytest.raises(client.ApiException) as conflict:
        deployments.server_side_apply(body=change, namespace=NS, field_manager="deployer")
    status = status_of(conflict.value)
    assert conflict.value.status == 409 and status["reason"] == "Conflict"
    assert (
        status["message"] == 'Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas'
    )
    assert status["details"]["causes"][0]["field"] == ".spec.replicas"
    forced = deployments.server_side_apply(
        body=change, namespace=NS, field_manager="deployer", force_conflicts=True
    )
    assert forced.spec.replicas == 5
    managed = forced.to_dict()["metadata"]["managedFields"]
    owners = {e["manager"]: e["fieldsV1"]["f:spec"] for e in managed}
    assert "f:replicas" in owners["deployer"] and "f:replicas" not in owners["kubectl"]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["spec"].update(replica=2), "spec.replica"),
        (lambda d: d["spec"].update(replicas="two"), "spec.replicas"),
    ],
)
def test_invalid_objects_are_422(deployments: dynamic.Resource, edit, field: str) -> None:
    body = deployment()
    edit(body)  # sent as is: the typed client would refuse it before the wire
    with pytest.raises(client.ApiException) as invalid:
        deployments.create(body=body, namespace=NS)
    status = status_of(invalid.value)
    assert invalid.value.status == 422
    assert (status["kind"], status["status"], status["reason"]) == ("Status", "Failure", "Invalid")
    assert status["message"].startswith('Deployment.apps "web" is invalid: ' + field)
    assert [c["field"] for c in status["details"]["causes"]] == [field]


def test_dry_run_stores_nothing(
    apps: client.AppsV1Api,
    kubernetes_double: KubernetesDouble,  # noqa: F811
) -> None:
    result = apps.create_namespaced_deployment(NS, deployment(), dry_run="All")
    assert result.metadata.name == "web"
    assert kubernetes_double.store.get("Deployment", NS, "web") is None


def test_watch_sees_added_modified_deleted(apps: client.AppsV1Api) -> None:
    start = apps.list_namespaced_deployment(NS).metadata.resource_version
    seen: list[tuple[str, str]] = []
    stream = watch.Watch().stream(
        apps.list_namespaced_deployment, NS, resource_version=start, timeout_seconds=5
    )

    def consume() -> None:
        for event in stream:
            seen.append((event["type"], event["object"].metadata.name))
            if event["type"] == "DELETED":
                return

    reader = threading.Thread(target=consume)
    reader.start()
    apps.create_namespaced_deployment(NS, deployment())
    apps.patch_namespaced_deployment("web", NS, {"metadata": {"annotations": {"a": "b"}}})
    apps.delete_namespaced_deployment("web", NS)
    reader.join(10)
    assert seen == [("ADDED", "web"), ("MODIFIED", "web"), ("DELETED", "web")]


def test_delete_collects_dependents(
    apps: client.AppsV1Api,
    kubernetes_double: KubernetesDouble,  # noqa: F811
) -> None:
    store = kubernetes_double.store
    owner = apps.create_namespaced_deployment(NS, deployment())
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
           "uid": owner.metadata.uid, "controller": True}  # fmt: skip
    replica_set = deployment("web-1")
    replica_set.update(kind="ReplicaSet")
    replica_set["metadata"]["ownerReferences"] = [ref]
    replica_set["spec"].pop("strategy", None)
    created = store.create(replica_set, "deployment-controller")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1-a", "namespace": NS,
           "ownerReferences": [ref | {"kind": "ReplicaSet", "name": "web-1",
                                      "uid": created["metadata"]["uid"]}]},
           "spec": replica_set["spec"]["template"]["spec"]}  # fmt: skip
    store.create(pod, "replicaset-controller")
    apps.delete_namespaced_deployment("web", NS, propagation_policy="Background")
    assert store.list("ReplicaSet", NS) == [] and store.list("Pod", NS) == []


def test_forbidden_is_403_as_rbac_words_it(
    apps: client.AppsV1Api,
    kubernetes_double: KubernetesDouble,  # noqa: F811
) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    kubernetes_double.forbid("deployer", "patch", "deployments")
    with pytest.raises(client.ApiException) as denied:
        apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 1}})
    assert denied.value.status == 403
    assert status_of(denied.value)["message"] == (
        'deployments.apps "web" is forbidden: User "deployer" cannot patch resource '
        '"deployments" in API group "apps" in the namespace "ml"'
    )


def test_throttled_is_429_with_retry_after(
    apps: client.AppsV1Api,
    kubernetes_double: KubernetesDouble,  # noqa: F811
) -> None:
    once = kubernetes_double.fail("GET", r"/deployments$", status=429, retry_after=1)
    assert apps.list_namespaced_deployment(NS).items == []  # urllib3 honours Retry-After
    assert once.matched.is_set() and len(kubernetes_double.requests_to("GET", "/deploy")) == 2
    kubernetes_double.fail("GET", r"/deployments$", status=429, times=10, retry_after=0)
    with pytest.raises(client.ApiException) as throttled:
        apps.list_namespaced_deployment(NS)
    assert throttled.value.status == 429 and throttled.value.headers["Retry-After"] == "0"
    assert status_of(throttled.value)["reason"] == "TooManyRequests"


def test_generation_bumps_only_on_spec_change(
    apps: client.AppsV1Api,
    kubernetes_double: KubernetesDouble,  # noqa: F811
) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    labelled = apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 1
    kubernetes_double.store.update_status("Deployment", NS, "web", {"replicas": 2})
    assert apps.read_namespaced_deployment("web", NS).metadata.generation == 1
    scaled = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 4}})
    assert scaled.metadata.generation == 2 and scaled.status.replicas == 2


def test_stale_resource_version_on_put_is_409(apps: client.AppsV1Api) -> None:
    first = apps.create_namespaced_deployment(NS, deployment())
    apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}})
    first.spec.replicas = 1
    with pytest.raises(client.ApiException) as stale:
        apps.replace_namespaced_deployment("web", NS, first)
    assert stale.value.status == 409
    assert "the object has been modified" in status_of(stale.value)["message"]


def test_unauthenticated_is_401(kubernetes_double: KubernetesDouble, tmp_path: Path) -> None:  # noqa: F811
    path = kubernetes_double.kubeconfig(tmp_path / "kubeconfig")
    path.write_text(path.read_text().replace(kubernetes_double.token, "wrong"))
    apps = client.AppsV1Api(config.new_client_from_config(config_file=str(path)))
    with pytest.raises(client.ApiException) as denied:
        apps.list_namespaced_deployment(NS)
    assert denied.value.status == 401


def test_tls_with_the_kubeconfig_ca(tmp_path: Path) -> None:
    with KubernetesDouble(tmp_path, tls=True) as double:
        path = double.kubeconfig(tmp_path / "kubeconfig")
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(path)))
        assert double.url.startswith("https://")
        assert {n.metadata.name for n in core.list_namespace().items} >= {"ml", "default"}


def test_the_cluster_has_one_ready_node_on_loopback(api_client: client.ApiClient) -> None:
    (node,) = client.CoreV1Api(api_client).list_node().items
    assert node.metadata.name == "double-node"
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses == {"InternalIP": "127.0.0.1", "Hostname": "double-node"}
    ready = [c for c in node.status.conditions if c.type == "Ready"]
    assert [c.status for c in ready] == ["True"]
    assert (node.status.allocatable["cpu"], node.status.allocatable["memory"]) == ("4", "8Gi")


class Echo(BaseHTTPRequestHandler):
    """A pod's container: answers what it was asked (chunked for paths with "chunked")."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        echo = {"method": self.command, "path": self.path, "body": body.decode(),
                "headers": {k.lower(): v for k, v in self.headers.items()}}  # fmt: skip
        data = json.dumps(echo).encode()
        self.send_response(201)
        self.send_header("X-Served-By", "echo")
        self.send_header("Content-Type", "application/json")
        if "chunked" in self.path:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (data[:7], data[7:], b""):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST


@pytest.fixture
def echo_pod(kubernetes_double: KubernetesDouble) -> Iterator[str]:  # noqa: F811
    """A running pod "echo" (port "http", 8080) whose container is ``Echo``."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=upstream.serve_forever, args=(0.05,), daemon=True).start()
    store = kubernetes_double.store
    port = {"name": "http", "containerPort": 8080}
    store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "echo", "namespace": NS, "annotations": {HOST_PORT: str(upstream.server_port)}},
        "spec": {"containers": [{"name": "echo", "image": "echo:1", "ports": [port]}]},
    }, "replicaset-controller")  # fmt: skip
    store.update_status("Pod", NS, "echo", {"phase": "Running", "podIP": "127.0.0.1"})
    yield "echo"
    upstream.shutdown()
    upstream.server_close()


def test_the_pod_proxy_forwards_the_request_without_the_callers_credentials(
    api_client: client.ApiClient,
    echo_pod: str,
    kubernetes_double: KubernetesDouble,  # noqa: F811
) -> None:
    base = f"/api/v1/namespaces/{NS}/pods/{echo_pod}:http/proxy"
    status, headers, echo = proxied(
        api_client, "PUT", base + "/v1/score?verbose=1&x=%2F", {"data": [1]}, **{"X-Trace": "7"}
    )
    assert (status, headers["X-Served-By"]) == (201, "echo")
    assert (echo["method"], echo["path"]) == ("PUT", "/v1/score?verbose=1&x=%2F")
    assert json.loads(echo["body"]) == {"data": [1]} and echo["headers"]["x-trace"] == "7"
    assert "authorization" not in echo["headers"]  # kube-apiserver keeps the caller's token
    status, headers, echo = proxied(api_client, "GET", base + "/chunked")
    assert (status, headers.get("Transfer-Encoding"), echo["path"]) == (201, "chunked", "/chunked")
    (recorded,) = kubernetes_double.requests_to("PUT", "/proxy/")
    assert recorded.user == "deployer" and recorded.json() == {"data": [1]}


def test_proxy_errors_are_kube_apiservers(
    api_client: client.ApiClient,
    echo_pod: str,
    kubernetes_double: KubernetesDouble,  # noqa: F811
) -> None:
    pods = f"/api/v1/namespaces/{NS}/pods"
    status, _, body = proxied(api_client, "GET", f"{pods}/missing/proxy/ready")
    assert (status, body["reason"], body["message"]) == (
        404,
        "NotFound",
        'pods "missing" not found',
    )
    status, _, body = proxied(api_client, "GET", f"{pods}/{echo_pod}:9/proxy/ready")
    assert (status, body["reason"]) == (503, "ServiceUnavailable")
    assert body["message"].startswith("error trying to reach service: dial tcp 127.0.0.1:9")
    kubernetes_double.forbid("deployer", "create", "pods/proxy")
    status, _, body = proxied(api_client, "POST", f"{pods}/{echo_pod}/proxy/score", {})
    assert (status, body["reason"]) == (403, "Forbidden")
    assert body["message"] == (
        f'pods "{echo_pod}" is forbidden: User "deployer" cannot create resource "pods/proxy" '
        'in API group "" in the namespace "ml"'
    )
    assert proxied(api_client, "GET", f"{pods}/{echo_pod}/proxy/")[0] == 201  # get: allowed
