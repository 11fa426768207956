"""``deployer plan`` for a ``kubernetes`` target: the Role the deploying identity needs, and
a server-side dry run of the apply, diffed against what is live.

Against the API-only Kubernetes double: a dry run needs the API server alone, so no Docker.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from deployer.config.loader import load_config
from deployer.events import discard
from deployer.plan import TargetPlan, make_plan
from deployer.secrets import Secrets
from deployer.targets.contract import Deadline, Release, Session, TargetRef
from deployer.targets.kubernetes import objects, rbac
from deployer.targets.kubernetes.driver import KubernetesDriver, connect
from deployer.targets.kubernetes.dry_run import dry_run, dry_run_diff
from tests.conftest import EXAMPLE, GUARD_PATH, REPO
from tests.doubles.kubernetes.fixtures import KubernetesDouble
from tests.doubles.kubernetes.server import Recorded

NS = "ml"
TARGET = "k8s"
NAME = f"diabetes-{TARGET}"  # the objects' name: the service's and the target's
TARGET_YAML = "{type: kubernetes, context: double, namespace: ml, replicas: 2}"
AUTOSCALE = "autoscale: {min_replicas: 1, max_replicas: 3}"
# The example's registry auth is basic: the pull secret's credentials must be set.
REGISTRY_ENV = {"REGISTRY_USERNAME": "ci-user", "REGISTRY_PASSWORD": "ci-registry-password"}


def _repo(tmp_path: Path, target_yaml: str = TARGET_YAML) -> Path:
    """A copy of the example repo whose only target is ``target_yaml``; its deploy.yaml."""
    root = tmp_path / "model-repo"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", "out"))
    config = root / "deploy.yaml"
    head, _, _ = config.read_text().partition("\ntargets:\n")
    config.write_text(f"{head}\ntargets:\n  {TARGET}: {target_yaml}\n")
    return config


def _planned(config: Path) -> TargetPlan:
    return make_plan(load_config(config), config, [TARGET]).targets[0]


def _plan(config: Path, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    """``deployer plan`` as a CI job runs it (no Docker engine: the images are not checked)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy")
        and k not in ("KUBERNETES_SERVICE_HOST", "GITHUB_ACTIONS")
    }
    env |= REGISTRY_ENV | {
        "KUBECONFIG": str(kubeconfig),
        "HOME": str(config.parent),
        "DOCKER_HOST": f"unix://{config.parent}/no-docker.sock",
        "PYTHONPATH": os.pathsep.join([str(GUARD_PATH), str(REPO)]),
    }
    reports = config.parent / "reports"
    argv = [sys.executable, "-m", "deployer", "plan", "-c", str(config)]
    return subprocess.run(
        [*argv, "--report-dir", str(reports), "--no-comment"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _role(text: str) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all(text) if d]
    assert [d["kind"] for d in documents] == ["Role"]  # the RoleBinding is commented out
    role: dict[str, Any] = documents[0]
    return role


def test_plan_with_nothing_live_dry_runs_every_object_and_stores_nothing(tmp_path: Path) -> None:
    config = _repo(tmp_path)
    with KubernetesDouble(tmp_path) as cluster:
        result = _plan(config, cluster.kubeconfig(tmp_path / "kubeconfig", context="double"))

        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert f"  deployment/{NAME}: new\n" in out
        assert f"  service/{NAME}: new\n" in out
        assert "  kind: Role\n" in out
        sent = [r for r in cluster.requests if r.body]
        assert {r.json()["kind"] for r in sent} == {"Deployment", "Service"}
        assert all(r.method == "PATCH" and r.query.get("dryRun") == "All" for r in sent), sent
        assert cluster.store.get("Deployment", NS, NAME) is None
        assert cluster.store.get("Service", NS, NAME) is None

    plan_dir = config.parent / "reports" / "plan"
    assert _role((plan_dir / f"{TARGET}-rbac.yaml").read_text())["metadata"] == {
        "name": "deployer",
        "namespace": NS,
    }
    diff = (plan_dir / f"{TARGET}-dry-run.diff").read_text()
    assert f"--- /dev/null\n+++ planned/deployment/{NAME}\n" in diff
    assert "+  replicas: 2\n" in diff


def test_plan_shows_what_the_apply_would_change_in_a_live_deployment(tmp_path: Path) -> None:
    config = _repo(tmp_path)
    planned = _planned(config)
    live = objects.with_revision(yaml.safe_load(planned.artifacts["deployment.yaml"]), "old")
    live["spec"]["replicas"] = 1
    service = yaml.safe_load(planned.artifacts["service.yaml"])
    with KubernetesDouble(tmp_path) as cluster:
        cluster.store.apply("Deployment", NS, NAME, live, "deployer")
        cluster.store.apply("Service", NS, NAME, service, "deployer")
        result = _plan(config, cluster.kubeconfig(tmp_path / "kubeconfig", context="double"))

        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        start = lines.index(f"  deployment/{NAME}:")
        shown = lines[start + 1 : lines.index(f"  service/{NAME}: unchanged")]
        changed = [line[6:] for line in shown if re.match(r" {6}[-+] ", line)]
        assert sorted(changed) == [  # the Deployment's and its pod template's annotation
            f"+        deployer.ai/revision: {planned.revision}",
            f"+    deployer.ai/revision: {planned.revision}",
            "+  replicas: 2",
            "-        deployer.ai/revision: old",
            "-    deployer.ai/revision: old",
            "-  replicas: 1",
        ]
        assert not any("managedFields" in line or "resourceVersion" in line for line in shown)
        assert cluster.store.get("Deployment", NS, NAME)["spec"]["replicas"] == 1


def test_plan_without_a_cluster_prints_the_role_and_skips_the_diff(tmp_path: Path) -> None:
    config = _repo(tmp_path)
    result = _plan(config, tmp_path / "nowhere" / "kubeconfig")

    assert result.returncode == 0, result.stderr
    assert "  kind: Role\n" in result.stdout
    skipped = [line for line in result.stdout.splitlines() if "dry-run diff skipped" in line]
    assert len(skipped) == 1
    assert skipped[0].startswith(f"{TARGET}: dry-run diff skipped: no kubeconfig found")
    plan_dir = config.parent / "reports" / "plan"
    assert (plan_dir / f"{TARGET}-rbac.yaml").is_file()
    assert not (plan_dir / f"{TARGET}-dry-run.diff").exists()


def _driver(cluster: KubernetesDouble, config: Path, tmp_path: Path) -> KubernetesDriver:
    env = {**REGISTRY_ENV, "KUBECONFIG": str(cluster.kubeconfig(tmp_path / "kc", "double"))}
    return connect(TargetRef.of(load_config(config), TARGET), Session(discard, Secrets(), env))


def test_a_conflict_is_that_objects_result_and_the_others_are_shown(tmp_path: Path) -> None:
    config = _repo(tmp_path)
    planned = _planned(config)
    service = yaml.safe_load(planned.artifacts["service.yaml"])
    service["spec"]["type"] = "ClusterIP"  # kubectl owns the type, with another value
    with KubernetesDouble(tmp_path) as cluster:
        cluster.store.apply("Service", NS, NAME, service, "kubectl")
        driver = _driver(cluster, config, tmp_path)
        try:
            lines = dry_run_diff(driver, planned.artifacts, planned.revision)
        finally:
            driver.close()

    assert lines[0] == f"deployment/{NAME}: new"
    assert lines[1].startswith(f"service/{NAME}: dry run failed: applying Service {NS}/{NAME}: ")
    assert "(409)" in lines[1]
    assert "kubectl" in lines[1]
    assert len(lines) == 2


# The Role against the driver's requests -----------------------------------------------------

# Requests of a deploy that the run below does not send, kept by hand: the tests
# (deployer.verify) reach the candidate's pod, and a ClusterIP or NodePort Service, through
# the API server's proxy at the Forwarder URLs the driver hands them (driver.wait,
# driver._service_endpoint). GET is RBAC's get, POST (a scoring request) its create.
THROUGH_THE_PROXY = {
    ("", "pods/proxy", "get"),
    ("", "pods/proxy", "create"),
    ("", "services/proxy", "get"),
    ("", "services/proxy", "create"),
}
_RESOURCE = re.compile(
    r"/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/[^/]+/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?(?:/.*)?"
)


def _permissions(request: Recorded) -> set[tuple[str, str, str]]:
    """The (API group, resource, verb)s RBAC checks for a request. A server-side apply is a
    patch, and a create as well when it makes the object: both are counted."""
    found = _RESOURCE.fullmatch(request.path)
    assert found, f"{request.method} {request.path}: not a namespaced resource"
    group, name = found["group"] or "", found["name"]
    resource = found["plural"] + (f"/{found['sub']}" if found["sub"] else "")
    verbs = {
        "GET": {"get"} if name else {"watch"} if request.query.get("watch") else {"list"},
        "POST": {"create"},
        "PUT": {"update"},
        "PATCH": {"patch", "create"} if request.content_type == objects.APPLY else {"patch"},
        "DELETE": {"delete"} if name else {"deletecollection"},
    }[request.method]
    return {(group, resource, verb) for verb in verbs}


class Rollouts:
    """What the controllers and the kubelet would do, at once, without containers: each
    pod template of a Deployment gets a ReplicaSet and one ready pod, the Deployment's
    rollout is complete, and a Service gets a load balancer address."""

    def __init__(self, store: Any) -> None:
        self.store = store
        store.subscribe(self.changed)

    def changed(self, event: str, obj: dict[str, Any]) -> None:
        if event == "DELETED":
            return
        if obj["kind"] == "Deployment":
            self.roll_out(obj)
        elif obj["kind"] == "Service" and not (obj.get("status") or {}).get("loadBalancer"):
            address = {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}
            self.store.update_status("Service", NS, obj["metadata"]["name"], address)

    def roll_out(self, deployment: dict[str, Any]) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        template = spec["template"]
        name = f"{meta['name']}-{objects.template_revision(deployment)}"
        if self.store.get("ReplicaSet", NS, name) is None:
            number = str(len(self.store.list("ReplicaSet", NS)) + 1)
            replica_set = self.store.create(
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": name,
                        "namespace": NS,
                        "labels": template["metadata"]["labels"],
                        "annotations": {objects.KUBE_REVISION: number},
                        "ownerReferences": [_owner(deployment)],
                    },
                    "spec": {"replicas": 1, "selector": spec["selector"], "template": template},
                },
                "kube-controller-manager",
            )
            pod_meta = {**template["metadata"], "name": f"{name}-pod", "namespace": NS}
            pod_meta["ownerReferences"] = [_owner(replica_set)]
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta}
            self.store.create(pod | {"spec": template["spec"]}, "kube-controller-manager")
            ready = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
            self.store.update_status("Pod", NS, pod_meta["name"], ready)
        replicas = spec.get("replicas", 1)
        status = {
            "observedGeneration": meta["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }
        if deployment.get("status") != status:
            self.store.update_status("Deployment", NS, meta["name"], status)


def _owner(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }


def test_the_role_grants_every_request_the_driver_sends(tmp_path: Path) -> None:
    # With autoscale (an HPA) and basic registry auth (a pull secret): every kind applied.
    config = _repo(tmp_path, TARGET_YAML.replace("replicas: 2", AUTOSCALE))
    planned = _planned(config)
    releases = [Release(f"rev-{n}", planned.image, planned.artifacts) for n in (1, 2, 3)]
    deadline = Deadline(30)
    with KubernetesDouble(tmp_path) as cluster:
        Rollouts(cluster.store)
        driver = _driver(cluster, config, tmp_path)
        try:
            # A first deploy, confirmed; status and logs.
            assert driver.live() is None
            driver.tidy()
            dry_run(driver, planned.artifacts, releases[0].revision)  # plan
            first = driver.wait(driver.apply(releases[0]), deadline)
            first = driver.promote(first, None)
            driver.confirm(first)
            live = driver.live()
            driver.logs(first.revision, 10)
            # A second one, rolled back to the first through its ReplicaSet.
            second = driver.wait(driver.apply(releases[1]), deadline)
            driver.promote(second, live)
            driver.roll_back(releases[1], live)
            # What a stuck rollout shows: the pods' events and last logs.
            pods = driver.watch.pods({objects.INSTANCE_LABEL: TARGET}, releases[0].revision)
            assert driver.watch.evidence(pods)
            # down; then a first deploy that fails after the promote is removed.
            assert driver.remove(images=False)
            third = driver.promote(driver.wait(driver.apply(releases[2]), deadline), None)
            driver.roll_back(releases[2], None)
            assert cluster.store.get("Secret", NS, f"{NAME}-registry") is None
        finally:
            driver.close()
        requests = list(cluster.requests)

    assert third.endpoint is not None
    role = _role(rbac.role_manifests(NS, "the tests"))
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == rbac.grants()
    sent = set().union(*(_permissions(r) for r in requests))
    needed = sent | THROUGH_THE_PROXY
    assert needed - granted == set(), "the Role lacks what the driver sends"
    # Exactly what the driver uses, but for reads that list grants already.
    extra = granted - needed
    assert all(verb == "get" and (g, r, "list") in needed for g, r, verb in extra), extra
