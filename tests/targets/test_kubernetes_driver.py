"""The kubernetes driver's pieces that need no containers: connecting through a kubeconfig,
the API's errors in words, server-side apply on the wire, and reading rollouts and pods
the way ``kubectl rollout status`` does. Against the API double alone (no controller)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer.config.model import Registry, Server
from deployer.errors import DeployFailed, UserError
from deployer.events import discard
from deployer.secrets import Secrets
from deployer.targets.contract import Session, TargetRef
from deployer.targets.kubernetes.driver import KubernetesDriver, connect
from deployer.targets.kubernetes.rollout_watch import rollout_status, stuck
from deployer.targets.kubernetes.schema import Config
from tests.doubles.kubernetes.fixtures import KubernetesDouble

NS = "ml"


def _target(**settings: Any) -> TargetRef:
    config = Config(type="kubernetes", namespace=NS, context="double", **settings)
    registry = Registry(address="127.0.0.1:5000")
    return TargetRef("svc", "prod", config, registry, Server())


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[tuple[KubernetesDriver, KubernetesDouble]]:
    with KubernetesDouble(tmp_path) as cluster:
        env = {"KUBECONFIG": str(cluster.kubeconfig(tmp_path / "kubeconfig", "double", NS))}
        made = connect(_target(), Session(discard, Secrets(), env))
        try:
            yield made, cluster
        finally:
            made.close()


def _deployment(name: str = "svc-prod", **spec: Any) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "svc", "app.kubernetes.io/instance": "prod"}
    container = {"name": "scoring", "image": "127.0.0.1:5000/svc:1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            **spec,
        },
    }


def test_apply_is_server_side_as_deployer(
    driver: tuple[KubernetesDriver, KubernetesDouble],
) -> None:
    made, cluster = driver
    made.apply_object(_deployment())
    (sent,) = cluster.requests_to("PATCH", "/deployments/svc-prod")
    assert sent.content_type == "application/apply-patch+yaml"
    assert sent.query == {"fieldManager": "deployer"}
    assert sent.json()["spec"]["replicas"] == 2


def test_an_invalid_object_is_a_clear_422(
    driver: tuple[KubernetesDriver, KubernetesDouble],
) -> None:
    made, _ = driver
    with pytest.raises(DeployFailed, match=r"rejected the object as invalid \(422\): .*replicas"):
        made.apply_object(_deployment(replicas="two"))


def test_a_conflict_names_the_other_manager(
    driver: tuple[KubernetesDriver, KubernetesDouble],
) -> None:
    made, cluster = driver
    made.apply_object(_deployment())
    cluster.store.apply("Deployment", NS, "svc-prod", {"spec": {"replicas": 5}}, "helm", force=True)
    with pytest.raises(DeployFailed, match=r"(?s)another field manager.*helm.*force_conflicts"):
        made.apply_object(_deployment())


def test_refused_credentials_are_a_user_error(
    driver: tuple[KubernetesDriver, KubernetesDouble],
) -> None:
    made, cluster = driver
    cluster.fail("GET", r"/deployments/svc-prod$", status=401)
    with pytest.raises(UserError, match=r"refused the credentials of context 'double'"):
        made.live()


def test_connecting_says_what_is_missing(tmp_path: Path) -> None:
    session = Session(discard, Secrets(), {"KUBECONFIG": str(tmp_path / "none"), "HOME": "/x"})
    with pytest.raises(UserError, match="no kubeconfig found"):
        connect(_target(), session)
    with KubernetesDouble(tmp_path) as cluster:
        env = {"KUBECONFIG": str(cluster.kubeconfig(tmp_path / "kubeconfig", "other", NS))}
        with pytest.raises(UserError, match=r"has no context 'double'.*it has: other"):
            connect(_target(), Session(discard, Secrets(), env))


# Reading a rollout --------------------------------------------------------------------------
def _rolling(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "generation": 2},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 2, **status},
    }


@pytest.mark.parametrize(
    ("status", "message", "done"),
    [
        ({"observedGeneration": 1}, "waiting for the deployment spec update to be observed", False),
        ({"updatedReplicas": 1, "replicas": 3}, "1/3 replicas updated", False),
        ({"updatedReplicas": 3, "replicas": 4}, "1 old replicas pending termination", False),
        ({"updatedReplicas": 3, "replicas": 3, "availableReplicas": 2}, "2/3 updated", False),
        ({"updatedReplicas": 3, "replicas": 3, "availableReplicas": 3}, "3/3 replicas", True),
    ],
)
def test_rollout_status_reads_as_kubectl(status: dict[str, Any], message: str, done: bool) -> None:
    found, finished = rollout_status(_rolling(**status))
    assert message in found and finished is done


def test_a_progress_deadline_exceeded_fails() -> None:
    condition = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    with pytest.raises(DeployFailed, match="exceeded its progress deadline"):
        rollout_status(_rolling(conditions=[condition]))


def _pod(**status: Any) -> dict[str, Any]:
    container = {"name": "scoring", "resources": {"requests": {"cpu": "8", "memory": "1Gi"}}}
    return {"metadata": {"name": "web-1"}, "spec": {"containers": [container]}, "status": status}


def test_stuck_pods_say_why() -> None:
    pulling = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
    assert "ImagePullBackOff" in stuck(_pod(containerStatuses=[{"state": pulling}]), [])
    crashed = {
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}},
        "restartCount": 4,
    }
    assert "exited with code 3 (Error) after 4 restarts" in stuck(
        _pod(containerStatuses=[crashed]), []
    )
    message = "0/3 nodes are available: 3 Insufficient cpu."
    unschedulable = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
    }
    pending = _pod(conditions=[unschedulable])
    assert "No node has enough cpu (the pod requests 8)" in stuck(pending, [])
    # The cluster autoscaler is adding a node: waiting is worth it.
    assert stuck(pending, [{"reason": "TriggeredScaleUp"}]) == ""
    assert stuck(_pod(containerStatuses=[{"state": {"running": {}}}]), []) == ""
