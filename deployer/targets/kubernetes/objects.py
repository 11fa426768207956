"""The objects deployer applies to a namespace, as plain manifests: where each kind lives in
the API, the candidate made from the rendered Deployment, the image pull secret, and how a
ReplicaSet's pod template becomes a Deployment's again (``kubectl rollout undo``).

Every object carries the rendered labels (``app.kubernetes.io/name`` is the service,
``app.kubernetes.io/instance`` the target, ``app.kubernetes.io/managed-by: deployer``), so
``down`` finds exactly what deployer applied for one target, and nothing of another.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Mapping
from typing import Any

from deployer.label_values import label_value

FIELD_MANAGER = "deployer"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
ROLE_LABEL = "deployer.ai/role"
# The deploy's revision, on the Deployment's pod template: each ReplicaSet (and its pods)
# then says which deployer revision it runs.
REVISION = "deployer.ai/revision"
# On the Deployment: the revision whose deploy went through (confirm). A template revision
# that differs was promoted by a deploy that never finished.
CONFIRMED = "deployer.ai/confirmed-revision"
KUBE_REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH = "pod-template-hash"
CANDIDATE_SUFFIX = "-candidate"

# kind -> (API path prefix, plural)
PATHS = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "Service": ("/api/v1", "services"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "Secret": ("/api/v1", "secrets"),
    "Pod": ("/api/v1", "pods"),
    "Event": ("/api/v1", "events"),
}
# What deployer applies for a target, in the order ``down`` deletes it.
APPLIED_KINDS = ("HorizontalPodAutoscaler", "Deployment", "Service", "Secret")


def path(kind: str, namespace: str, name: str = "") -> str:
    prefix, plural = PATHS[kind]
    return f"{prefix}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


def owner_selector(service: str, target: str) -> str:
    """The label selector of every object deployer applied for one target."""
    return (
        f"{MANAGED_BY_LABEL}=deployer,{NAME_LABEL}={label_value(service)},"
        f"{INSTANCE_LABEL}={label_value(target)}"
    )


def applied_by_deployer(obj: Mapping[str, Any]) -> bool:
    """Whether deployer's field manager applied this object (not only labelled it)."""
    fields = obj.get("metadata", {}).get("managedFields") or []
    return any(f.get("manager") == FIELD_MANAGER for f in fields)


def with_revision(deployment: Mapping[str, Any], revision: str) -> dict[str, Any]:
    """The rendered Deployment, its pod template marked with the deploy's revision."""
    found = copy.deepcopy(dict(deployment))
    template_meta = found["spec"]["template"].setdefault("metadata", {})
    template_meta.setdefault("annotations", {})[REVISION] = revision
    found["metadata"].setdefault("annotations", {})[REVISION] = revision
    return found


def candidate(deployment: Mapping[str, Any], revision: str) -> dict[str, Any]:
    """One replica of the release beside the service, out of its Service's selector.

    Its pods' instance label is ``<target>-candidate``: the Service (which selects name and
    instance) never sends them traffic, and the service Deployment's selector never counts
    them. The Deployment itself keeps the target's labels, so ``down`` finds it.
    """
    found = with_revision(deployment, revision)
    meta = found["metadata"]
    meta["name"] = candidate_name(meta["name"])
    meta["labels"] = {**meta.get("labels", {}), ROLE_LABEL: "candidate"}
    spec = found["spec"]
    spec["replicas"] = 1
    instance = label_value(spec["selector"]["matchLabels"][INSTANCE_LABEL] + CANDIDATE_SUFFIX)
    spec["selector"]["matchLabels"][INSTANCE_LABEL] = instance
    pod_labels = spec["template"]["metadata"].setdefault("labels", {})
    pod_labels[INSTANCE_LABEL] = instance
    pod_labels[ROLE_LABEL] = "candidate"
    return found


def candidate_name(name: str) -> str:
    return name + CANDIDATE_SUFFIX


def template_revision(deployment_or_rs: Mapping[str, Any]) -> str:
    """The deployer revision a Deployment's (or ReplicaSet's) pod template runs."""
    template = deployment_or_rs.get("spec", {}).get("template", {})
    annotations = template.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(REVISION, "unknown"))


def undo(applied: Mapping[str, Any], replica_set: Mapping[str, Any]) -> dict[str, Any]:
    """``applied`` with the pod template of ``replica_set``, as ``kubectl rollout undo``
    puts it back (without the ReplicaSet's own pod-template-hash label)."""
    found = copy.deepcopy(dict(applied))
    template = copy.deepcopy(replica_set["spec"]["template"])
    (template.get("metadata", {}).get("labels") or {}).pop(TEMPLATE_HASH, None)
    found["spec"]["template"] = template
    found["metadata"].setdefault("annotations", {})[REVISION] = template_revision(replica_set)
    return found


def intent(live: Mapping[str, Any]) -> dict[str, Any]:
    """A live Deployment as a manifest to apply again: what a later process (``tidy``)
    applies when the rendered one is not at hand. Only what the API server sets is dropped."""
    meta = live["metadata"]
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in (KUBE_REVISION,)
    }
    annotations.pop(CONFIRMED, None)
    spec = copy.deepcopy(live["spec"])
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": dict(meta.get("labels") or {}),
            "annotations": annotations,
        },
        "spec": spec,
    }


def pull_secret(
    name: str, namespace: str, labels: Mapping[str, str], login: tuple[str, str, str]
) -> dict[str, Any]:
    """A ``kubernetes.io/dockerconfigjson`` secret for the registry (``login``: server,
    user, password), as ``kubectl create secret docker-registry`` makes it."""
    server, user, password = login
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = {"auths": {server: {"username": user, "password": password, "auth": auth}}}
    encoded = base64.b64encode(json.dumps(config).encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "data": {".dockerconfigjson": encoded},
    }
