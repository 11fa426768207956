"""End to end: ``deployer deploy`` to a ``kubernetes`` target against the Kubernetes double.

What a platform engineer cares about beyond the driver contract (tests/conformance covers
that): what goes on the wire (server-side apply as field manager ``deployer``, no force
unless configured), conflicts with another field manager, pods that cannot start failing
fast with their events and logs, the rollback through the previous ReplicaSet while an
independent client keeps scoring, throttling, refused credentials, two targets in one
namespace, ClusterIP services, and ``status``, ``logs`` and ``down``. deployer runs as a
subprocess through the conformance harness, reaching the double through a kubeconfig only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conformance.harness import (
    ANSWER,
    TOLERANCE,
    Deployed,
    Load,
    ModelRepo,
    environment,
    failed_with,
    score_once,
)
from tests.conformance.platforms import KubernetesPlatform
from tests.docker.conftest import dev_env
from tests.doubles.kubernetes.fixtures import KubernetesDouble

pytestmark = [pytest.mark.docker, pytest.mark.slow]

__all__ = ["dev_env"]  # the fixture, for this module

NS = "ml"
TARGET = "e2e"
READY_S = 240
# Seconds within which a pod that cannot start must fail the deploy (far below READY_S).
FAST_S = 60
APPLY = "application/apply-patch+yaml"


class Kubernetes(KubernetesPlatform):
    """The conformance platform with more settings in the target's mapping (the variables
    of deployer's environment are the repo's ``extra_env``)."""

    def __init__(
        self,
        cluster: KubernetesDouble,
        workdir: Path,
        settings: dict[str, Any],
    ) -> None:
        super().__init__(cluster, workdir, replicas=settings.pop("replicas", 2))
        self.settings = settings

    def target_yaml(self, ready_timeout_s: float) -> str:
        base = yaml.safe_load(super().target_yaml(ready_timeout_s))
        return json.dumps({**base, **self.settings})


class Repo(ModelRepo):
    platform: Kubernetes

    @property
    def name(self) -> str:
        return f"{self.service}-{self.target}"

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.run("down", "-t", self.target)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, dev_env: dict[str, str]
) -> Iterator[KubernetesDouble]:
    environment = {**os.environ, **dev_env}
    workdir = tmp_path_factory.mktemp("kubernetes")
    with KubernetesDouble(workdir, docker_env=environment) as double:
        yield double


@pytest.fixture(scope="module")
def make_repo(
    cluster: KubernetesDouble, dev_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """``make_repo(name, ready_timeout_s=..., env=..., target=..., **settings)``: a model
    repo of a service of its own with one kubernetes target; ``deployer down`` at the end."""
    made: list[Repo] = []

    def make(
        name: str,
        ready_timeout_s: float = READY_S,
        env: dict[str, str | None] | None = None,
        target: str = TARGET,
        **settings: Any,
    ) -> Repo:
        root = tmp_path_factory.mktemp(name)
        platform = Kubernetes(cluster, root, settings)
        repo = Repo(root / "repo", platform, target)
        repo.extra_env = dict(env or {})
        repo.service = f"k-{name}-{uuid.uuid4().hex[:6]}"
        repo.write(ready_timeout_s)
        made.append(repo)
        return repo

    with environment(dev_env):  # the registry's credentials, for deployer
        yield make
        for repo in made:
            repo.down()


# Helpers ---------------------------------------------------------------------------------
def deploy_seconds(deployed: Deployed) -> float:
    return float(deployed.target["seconds"]["deploy"])


def applies(cluster: KubernetesDouble, since: int = 0) -> list[Any]:
    return [r for r in cluster.requests[since:] if r.method == "PATCH" and r.content_type == APPLY]


def deployment(cluster: KubernetesDouble, name: str) -> dict[str, Any]:
    found = cluster.store.get("Deployment", NS, name)
    assert found is not None, f"no deployment {name}"
    return dict(found)


def replica_sets(cluster: KubernetesDouble, name: str) -> list[dict[str, Any]]:
    uid = deployment(cluster, name)["metadata"]["uid"]
    return [
        rs
        for rs in cluster.store.list("ReplicaSet", NS)
        if any(o["uid"] == uid for o in rs["metadata"].get("ownerReferences", []))
    ]


# The wire --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(make_repo: Any, cluster: KubernetesDouble) -> tuple[Repo, Deployed, int]:
    """One service deployed once (2 replicas behind a LoadBalancer), for the tests below;
    with the index of the first API request the deploy sent."""
    repo = make_repo("served")
    first = len(cluster.requests)
    return repo, repo.deploy(), first


def test_objects_are_applied_server_side_as_deployer_without_force(
    served: tuple[Repo, Deployed, int], cluster: KubernetesDouble
) -> None:
    repo, deployed, first = served
    assert deployed.code == 0, deployed.output
    sent = applies(cluster, first)
    kinds = [(r.path.split("/")[-2], r.path.split("/")[-1]) for r in sent]
    assert ("deployments", f"{repo.name}-candidate") in kinds
    assert {("deployments", repo.name), ("services", repo.name)} <= set(kinds)
    assert ("secrets", f"{repo.name}-registry") in kinds  # the pull secret, registry auth basic
    for request in sent:
        assert request.query.get("fieldManager") == "deployer", request.query
        assert "force" not in request.query, request.query
        assert request.user == "deployer"
    live = deployment(cluster, repo.name)
    managers = {(f["manager"], f["operation"]) for f in live["metadata"]["managedFields"]}
    assert ("deployer", "Apply") in managers
    # The candidate is gone once the version is confirmed, which the Deployment records.
    assert cluster.store.get("Deployment", NS, f"{repo.name}-candidate") is None
    annotations = live["metadata"]["annotations"]
    assert annotations["deployer.ai/confirmed-revision"] == deployed.target["revision"]
    # The scoring URI is the load balancer's, and answers.
    uri = deployed.target["scoring_uri"]
    assert re.fullmatch(r"http://127\.\d+\.\d+\.\d+/score", uri), uri
    assert score_once(uri) == pytest.approx(ANSWER, abs=TOLERANCE)


def test_the_pull_secret_holds_the_registry_credentials_and_is_never_printed(
    served: tuple[Repo, Deployed, int], cluster: KubernetesDouble, dev_env: dict[str, str]
) -> None:
    import base64

    repo, deployed, _ = served
    secret = cluster.store.get("Secret", NS, f"{repo.name}-registry")
    assert secret is not None and secret["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert config["auths"]["127.0.0.1:5000"]["password"] == dev_env["REGISTRY_PASSWORD"]
    reports = "".join(p.read_text() for p in repo.reports.glob("deploy-report.*"))
    assert dev_env["REGISTRY_PASSWORD"] not in deployed.output + reports


def test_status_reports_replicas_revision_and_image(served: tuple[Repo, Deployed, int]) -> None:
    repo, deployed, _ = served
    status = repo.run("status", "-t", TARGET)
    assert status.returncode == 0, status.stderr
    assert f"{TARGET} (kubernetes): healthy (2/2 ready, 2 available" in status.stdout
    assert f"revision     {deployed.target['revision']}" in status.stdout
    assert "image        127.0.0.1:5000/" in status.stdout
    assert deployed.target["scoring_uri"] in status.stdout


def test_logs_come_from_every_pod(served: tuple[Repo, Deployed, int]) -> None:
    repo, _, _ = served
    logs = repo.run("logs", "-t", TARGET, "--tail", "50")
    assert logs.returncode == 0, logs.stderr
    pods = set(
        re.findall(rf"^\[({re.escape(repo.name)}-[a-z0-9]+-[a-z0-9]+)\] ", logs.stdout, re.M)
    )
    assert len(pods) == 2, logs.stdout


def test_a_conflicting_field_manager_is_reported_not_forced(
    served: tuple[Repo, Deployed, int], cluster: KubernetesDouble
) -> None:
    """Another tool (kubectl, a GitOps controller) owns the replica count: the deploy stops
    with a message naming it, and the service keeps serving the version it had."""
    repo, deployed, _ = served
    other = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": repo.name, "namespace": NS},
        "spec": {"replicas": 3},
    }
    cluster.store.apply("Deployment", NS, repo.name, other, "kubectl", force=True)
    repo.write(CONFORMANCE_VERSION="conflict")
    with Load(deployed.target["scoring_uri"]).running() as load:
        result = repo.deploy()
    error = failed_with(result, "another field manager owns fields", "force_conflicts: true")
    assert "kubectl" in error
    assert f"the previous version {deployed.target['revision']} serves" in error
    assert load.failed == 0, str(load)


def test_force_conflicts_takes_the_fields_over(
    served: tuple[Repo, Deployed, int], cluster: KubernetesDouble
) -> None:
    repo, _, _ = served
    repo.platform.settings["force_conflicts"] = True
    repo.write(CONFORMANCE_VERSION="conflict")
    first = len(cluster.requests)
    result = repo.deploy()
    assert result.code == 0, result.output
    service_apply = [r for r in applies(cluster, first) if r.path.endswith(f"/{repo.name}")]
    assert service_apply and all(r.query.get("force") == "true" for r in service_apply)
    assert deployment(cluster, repo.name)["spec"]["replicas"] == 2  # deploy.yaml's again
    repo.platform.settings.pop("force_conflicts")


# Pods that cannot start -------------------------------------------------------------------
def test_an_init_that_raises_fails_fast_and_the_old_pods_keep_answering(
    served: tuple[Repo, Deployed, int], cluster: KubernetesDouble
) -> None:
    """CrashLoopBackOff: the report has the pod's events and the traceback of init()."""
    repo, _, _ = served
    live = cluster.store.get("Deployment", NS, repo.name)
    before = live["spec"]["template"]["metadata"]["annotations"]["deployer.ai/revision"]
    (repo.root / "score.py").write_text(
        (repo.root / "score.py").read_text()
        + "\n\ndef init():\n    raise RuntimeError('no model here')\n"
    )
    repo.write(CONFORMANCE_VERSION="init-raises")
    with Load(f"{repo.platform.service_url()}").running() as load:
        result = repo.deploy()
    (repo.root / "score.py").write_text(
        (repo.root / "score.py").read_text().split("\n\ndef init():\n    raise")[0]
    )
    error = failed_with(
        result, "keeps crashing (CrashLoopBackOff)", f"the previous version {before} serves"
    )
    assert deploy_seconds(result) < FAST_S, result.target["seconds"]
    logs = "\n".join(result.target["logs"])
    assert "--- events of pod" in logs and "BackOff" in logs, logs
    assert "no model here" in logs, logs
    assert load.failed == 0, str(load)
    print(f"init() raising: {error}; load {load}")


def test_a_rollout_that_crashes_is_undone_through_the_previous_replica_set(
    served: tuple[Repo, Deployed, int], cluster: KubernetesDouble
) -> None:
    """The candidate passes, then the service's new pods crash: the Deployment gets the
    previous ReplicaSet's pod template back (kubectl rollout undo) while the old pods keep
    answering; an independent client counts no failed request."""
    repo, _, _ = served
    live = deployment(cluster, repo.name)
    before = live["spec"]["template"]["metadata"]["annotations"]["deployer.ai/revision"]
    old_rs = {
        rs["metadata"]["name"] for rs in replica_sets(cluster, repo.name) if rs["spec"]["replicas"]
    }
    cluster.controller.crash_loop(repo.name, NS)  # the service's pods only, not the candidate's
    repo.write(CONFORMANCE_VERSION="crashes-in-service")
    try:
        with Load(repo.platform.service_url()).running() as load:
            result = repo.deploy()
    finally:
        cluster.controller.clear_faults(repo.name, NS)
    failed_with(result, "keeps crashing", f"the previous version {before} serves")
    assert load.failed == 0, str(load)
    assert "rolling deployment" in result.output and "back to revision" in result.output
    after = deployment(cluster, repo.name)
    assert after["spec"]["template"]["metadata"]["annotations"]["deployer.ai/revision"] == before
    serving = {
        rs["metadata"]["name"] for rs in replica_sets(cluster, repo.name) if rs["spec"]["replicas"]
    }
    assert serving == old_rs  # the previous ReplicaSet scaled up again, not a new one
    print(f"rollback through the ReplicaSet: {load}")


def test_an_image_the_cluster_cannot_pull_fails_fast(make_repo: Any) -> None:
    """No pull secret for a registry that wants one: the kubelet's pull is refused."""
    repo = make_repo("nopull", pull_secret=False, replicas=1)
    result = repo.deploy()
    failed_with(result, "cannot start its container (", "rolled back")
    assert re.search(r"ImagePullBackOff|ErrImagePull", result.target["error"])
    assert deploy_seconds(result) < FAST_S, result.target["seconds"]


def test_a_pod_no_node_has_room_for_names_the_resource(make_repo: Any) -> None:
    repo = make_repo("toobig", replicas=1, resources={"cpu": "500m", "memory": "64Gi"})
    result = repo.deploy()
    error = failed_with(result, "cannot be scheduled", "Insufficient memory")
    assert "memory (the pod requests 64Gi)" in error
    assert deploy_seconds(result) < FAST_S, result.target["seconds"]


# The API's errors -------------------------------------------------------------------------
def test_throttling_and_a_passing_5xx_are_retried(
    make_repo: Any, cluster: KubernetesDouble
) -> None:
    repo = make_repo("throttled", replicas=1)
    throttled = cluster.fail("PATCH", r"/deployments/[^/?]+-candidate\?", status=429, retry_after=1)
    broken = cluster.fail("GET", r"/deployments/[^/?]+-candidate$", status=503, times=2)
    result = repo.deploy()
    assert result.code == 0, result.output
    assert throttled.matched.is_set() and broken.matched.is_set()


def test_refused_credentials_say_how_to_get_new_ones(make_repo: Any, tmp_path: Path) -> None:
    repo = make_repo("expired", replicas=1)
    config = yaml.safe_load(repo.platform.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "expired-token"
    stale = tmp_path / "stale-kubeconfig"
    stale.write_text(yaml.safe_dump(config))
    repo.extra_env["KUBECONFIG"] = str(stale)
    result = repo.run("status", "-t", TARGET)
    assert "401 Unauthorized" in result.stdout + result.stderr
    assert "az aks get-credentials" in result.stdout + result.stderr
    deployed = repo.deploy()
    assert deployed.code == 2, deployed.output


def test_a_missing_right_names_the_role_to_bind(make_repo: Any, cluster: KubernetesDouble) -> None:
    repo = make_repo("forbidden", replicas=1)
    cluster.forbid("deployer", "patch", "deployments")
    try:
        result = repo.deploy()
    finally:
        cluster.allow("deployer", "patch", "deployments")
    failed_with(result, "forbids it (403)", "deployer plan -t")


# Connecting ------------------------------------------------------------------------------
def test_no_kubeconfig_and_an_unknown_context_are_user_errors(
    make_repo: Any, tmp_path: Path
) -> None:
    repo = make_repo("noconfig", replicas=1)
    repo.extra_env.update({"KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)})
    result = repo.run("status", "-t", TARGET)
    assert "no kubeconfig found" in result.stdout + result.stderr
    assert "az aks get-credentials" in result.stdout + result.stderr
    repo.extra_env["KUBECONFIG"] = str(repo.platform.kubeconfig)
    repo.platform.settings["context"] = "aks-prod"
    repo.write()
    deployed = repo.deploy()
    assert deployed.code == 2, deployed.output
    assert "has no context 'aks-prod'" in deployed.output and "double" in deployed.output


def test_an_exec_credential_plugin_is_used(
    make_repo: Any, cluster: KubernetesDouble, tmp_path: Path
) -> None:
    """As kubelogin does for AKS with Entra ID: the kubeconfig runs a command for a token."""
    repo = make_repo("exec", replicas=1)
    plugin = tmp_path / "token-plugin"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "status": {"token": cluster.token},
    }
    plugin.write_text(f"#!/bin/sh\necho '{json.dumps(credential)}'\n")
    plugin.chmod(0o755)
    config = yaml.safe_load(repo.platform.kubeconfig.read_text())
    config["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": str(plugin),
            "interactiveMode": "Never",
        }
    }
    path = tmp_path / "exec-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    repo.extra_env["KUBECONFIG"] = str(path)
    status = repo.run("status", "-t", TARGET)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"{TARGET} (kubernetes): nothing deployed" in status.stdout


# Two targets, ClusterIP, down -------------------------------------------------------------
def test_two_targets_in_one_namespace_do_not_collide_and_down_removes_one(
    make_repo: Any, cluster: KubernetesDouble
) -> None:
    blue = make_repo("pair", target="blue", replicas=1)
    green = Repo(blue.root.parent / "green", blue.platform, "green")
    green.service = blue.service
    green.write()
    first, second = blue.deploy(), green.deploy()
    assert first.code == 0, first.output
    assert second.code == 0, second.output
    assert first.target["scoring_uri"] != second.target["scoring_uri"]
    assert score_once(first.target["scoring_uri"]) == pytest.approx(ANSWER, abs=TOLERANCE)
    # Something else in the namespace with the same labels, not applied by deployer, stays.
    labels = deployment(cluster, blue.name)["metadata"]["labels"]
    cluster.store.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{blue.name}-user-secret", "namespace": NS, "labels": labels},
            "stringData": {"note": "made with kubectl"},
        },
        "kubectl-create",
    )
    removed = blue.down()
    assert removed.returncode == 0, removed.stderr
    assert cluster.store.get("Deployment", NS, blue.name) is None
    assert cluster.store.get("Service", NS, blue.name) is None
    assert cluster.store.get("Secret", NS, f"{blue.name}-user-secret") is not None
    assert cluster.store.get("Deployment", NS, green.name) is not None
    assert score_once(second.target["scoring_uri"]) == pytest.approx(ANSWER, abs=TOLERANCE)
    assert green.down().returncode == 0


def test_a_cluster_ip_service_is_tested_through_the_api_server(make_repo: Any) -> None:
    repo = make_repo("internal", replicas=1, service_type="ClusterIP")
    result = repo.deploy()
    assert result.code == 0, result.output
    target = result.target
    assert target["scoring_uri"] == f"http://{repo.name}.{NS}.svc.cluster.local/score"
    assert target["tests"]["passed"] is True
    assert any("internal to the cluster" in note for note in target["notes"]), target["notes"]


def test_logs_follow_streams_new_lines(served: tuple[Repo, Deployed, int]) -> None:
    repo, deployed, _ = served
    proc = subprocess.Popen(
        repo.command("logs", "-t", TARGET, "--tail", "1", "--follow"),
        env=repo.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    time.sleep(3)
    for _ in range(4):
        score_once(deployed.target["scoring_uri"])
    time.sleep(3)
    proc.terminate()
    proc.wait(30)
    assert any('"path":"/score"' in line for line in lines), lines


def test_a_node_port_service_is_reached_on_a_node_address(
    make_repo: Any, cluster: KubernetesDouble
) -> None:
    repo = make_repo("nodeport", replicas=1, service_type="NodePort")
    result = repo.deploy()
    assert result.code == 0, result.output
    service = cluster.store.get("Service", NS, repo.name)
    node_port = service["spec"]["ports"][0]["nodePort"]
    # The node's InternalIP (the double's one node is 127.0.0.1) and the Service's node port.
    assert result.target["scoring_uri"] == f"http://127.0.0.1:{node_port}/score"
    assert score_once(result.target["scoring_uri"]) == pytest.approx(ANSWER, abs=TOLERANCE)
    # An identity that may not list nodes (a namespaced Role) is told where to look.
    cluster.forbid("deployer", "list", "nodes")
    try:
        status = repo.run("status", "-t", TARGET)
    finally:
        cluster.allow("deployer", "list", "nodes")
    assert f"http://<node-address>:{node_port}/score" in status.stdout, status.stdout
