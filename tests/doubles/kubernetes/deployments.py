"""The Deployment controller of the Kubernetes double: a ReplicaSet per pod template
(``<deployment>-<pod-template-hash>``) with its revision annotation (a rollback gives the
old ReplicaSet the next revision), RollingUpdate (maxSurge/maxUnavailable, minReadySeconds)
or Recreate, the Deployment's status and its Available/Progressing conditions, as in
kube-controller-manager's deployment controller (pkg/controller/deployment)."""

from __future__ import annotations

import copy
import datetime
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.doubles.kubernetes.kubelet_support import EventRecorder, Transitions, now, owned_by
from tests.doubles.kubernetes.services import ready

REVISION = "deployment.kubernetes.io/revision"
ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' rand.SafeEncodeString alphabet


def template_hash(template: dict[str, Any]) -> str:
    """The pod-template-hash: FNV-32a of the template, encoded as Kubernetes encodes it."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(ALPHANUMS[ord(c) % len(ALPHANUMS)] for c in str(value))


def resolve(value: Any, replicas: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * replicas / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value)


def available(pod: dict[str, Any], min_ready_s: int) -> bool:
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            since = datetime.datetime.fromisoformat(condition["lastTransitionTime"])
            age = datetime.datetime.now(datetime.UTC) - since
            return age.total_seconds() >= min_ready_s
    return False


def revision(obj: dict[str, Any]) -> int:
    return int((obj["metadata"].get("annotations") or {}).get(REVISION, 0))


def reference(obj: dict[str, Any]) -> dict[str, Any]:
    """An ownerReference to obj, as its controller."""
    return {
        "apiVersion": obj.get("apiVersion", "apps/v1"),
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


@dataclass
class Rollout:
    deployment: dict[str, Any]
    new: dict[str, Any]
    old: list[dict[str, Any]]
    count: Callable[[dict[str, Any]], tuple[int, int, int]]  # a RS's pods: all, ready, available
    replicas: int
    surge: int
    unavailable: int


class Deployments:
    def __init__(self, store: Any, events: EventRecorder) -> None:
        self.store, self.events = store, events
        self._progress: dict[str, tuple[tuple[Any, ...], float, str]] = {}
        self._transitions: dict[str, Transitions] = {}

    def sync(self, deployment: dict[str, Any]) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        namespace, uid = meta["namespace"], meta["uid"]
        replicas = spec.get("replicas", 1)
        pods = self.store.list("Pod", namespace)
        sets = [rs for rs in self.store.list("ReplicaSet", namespace) if owned_by(rs, uid)]
        pod_hash = template_hash(spec["template"])
        new = next((rs for rs in sets if rs["metadata"]["name"].endswith("-" + pod_hash)), None)
        top = max((revision(rs) for rs in sets), default=0)
        if new is None:
            new = self._create_replica_set(deployment, pod_hash, top + 1)
            sets.append(new)
        elif revision(new) < top:  # a rollback: the old template's ReplicaSet comes back
            new = self._annotate(new, {REVISION: str(top + 1)})
        if (meta.get("annotations") or {}).get(REVISION) != str(revision(new)):
            deployment = self._annotate(deployment, {REVISION: str(revision(new))})
        old = sorted((rs for rs in sets if rs is not new), key=revision)
        min_ready = spec.get("minReadySeconds", 0)

        def count(rs: dict[str, Any]) -> tuple[int, int, int]:
            mine = [p for p in pods if owned_by(p, rs["metadata"]["uid"])]
            return (
                len(mine),
                sum(ready(p) for p in mine),
                sum(available(p, min_ready) for p in mine),
            )

        strategy = spec.get("strategy") or {}
        if strategy.get("type") == "Recreate":
            surge, unavailable = 0, replicas
            if any(rs["spec"]["replicas"] for rs in old):
                for rs in old:
                    self._scale(rs, 0, deployment)
            elif not any(count(rs)[0] for rs in old):
                new = self._scale(new, replicas, deployment)
        else:
            rolling = strategy.get("rollingUpdate") or {}
            surge = resolve(rolling.get("maxSurge", "25%"), replicas, True)
            unavailable = resolve(rolling.get("maxUnavailable", "25%"), replicas, False)
            if surge == 0 and unavailable == 0:
                unavailable = 1
            new, old = self._roll(
                Rollout(deployment, new, old, count, replicas, surge, unavailable)
            )
        self._status(Rollout(deployment, new, old, count, replicas, surge, unavailable))

    def _roll(self, r: Rollout) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        deployment, new, old, count = r.deployment, r.new, r.old, r.count
        replicas, surge, unavailable = r.replicas, r.surge, r.unavailable
        total = sum(rs["spec"]["replicas"] for rs in [*old, new])
        if new["spec"]["replicas"] > replicas:
            new = self._scale(new, replicas, deployment)
        elif total < replicas + surge and new["spec"]["replicas"] < replicas:
            wanted = min(replicas, new["spec"]["replicas"] + replicas + surge - total)
            new = self._scale(new, wanted, deployment)
        total = sum(rs["spec"]["replicas"] for rs in [*old, new])
        min_available = replicas - unavailable
        new_unavailable = new["spec"]["replicas"] - count(new)[2]
        room = total - min_available - new_unavailable
        scaled = []
        for rs in old:  # first the old pods that are not available anyway
            unhealthy = rs["spec"]["replicas"] - count(rs)[2]
            cut = min(room, unhealthy) if room > 0 else 0
            scaled.append(self._scale(rs, rs["spec"]["replicas"] - cut, deployment))
            room -= max(cut, 0)
        old = scaled
        available_now = sum(min(count(rs)[2], rs["spec"]["replicas"]) for rs in [*old, new])
        spare = available_now - min_available
        for i, rs in enumerate(old):
            cut = min(spare, rs["spec"]["replicas"])
            if cut > 0:
                old[i] = self._scale(rs, rs["spec"]["replicas"] - cut, deployment)
                spare -= cut
        return new, old

    def _status(self, r: Rollout) -> None:
        deployment, new, sets, count = r.deployment, r.new, [*r.old, r.new], r.count
        replicas, unavailable = r.replicas, r.unavailable
        meta, spec = deployment["metadata"], deployment["spec"]
        counts = [count(rs) for rs in sets]
        total, updated = sum(c[0] for c in counts), count(new)[0]
        ready_n, available_n = sum(c[1] for c in counts), sum(c[2] for c in counts)
        desired = sum(rs["spec"]["replicas"] for rs in sets)
        name = new["metadata"]["name"]
        key = (name, total, updated, ready_n, available_n)
        last = self._progress.get(meta["uid"])
        if last is None or last[0] != key:
            last = self._progress[meta["uid"]] = (key, time.monotonic(), now())
        complete = updated == replicas and total == replicas and available_n == replicas
        deadline = spec.get("progressDeadlineSeconds", 600)
        t = self._transitions.setdefault(meta["uid"], Transitions())
        if complete:
            progressing = t.condition(
                "Progressing", True, "NewReplicaSetAvailable",
                f'ReplicaSet "{name}" has successfully progressed.', lastUpdateTime=last[2],
            )  # fmt: skip
        elif time.monotonic() - last[1] > deadline:
            progressing = t.condition(
                "Progressing", False, "ProgressDeadlineExceeded",
                f'ReplicaSet "{name}" has timed out progressing.', lastUpdateTime=now(),
            )  # fmt: skip
            progressing["lastUpdateTime"] = progressing["lastTransitionTime"]
        else:
            progressing = t.condition(
                "Progressing", True, "ReplicaSetUpdated",
                f'ReplicaSet "{name}" is progressing.', lastUpdateTime=last[2],
            )  # fmt: skip
        enough = available_n >= replicas - unavailable
        availability = t.condition(
            "Available",
            enough,
            "MinimumReplicasAvailable" if enough else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if enough
            else "Deployment does not have minimum availability.",
        )
        availability["lastUpdateTime"] = availability["lastTransitionTime"]
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready_n,
            "availableReplicas": available_n,
            "unavailableReplicas": max(desired - available_n, 0),
        }
        status = {k: v for k, v in status.items() if v} | {
            "observedGeneration": meta.get("generation", 1),
            "conditions": [availability, progressing],
        }
        if deployment.get("status") != status:
            self.store.update_status("Deployment", meta["namespace"], meta["name"], status)

    def _create_replica_set(self, deployment: dict[str, Any], pod_hash: str, rev: int) -> dict:
        meta, spec = deployment["metadata"], deployment["spec"]
        template = copy.deepcopy(spec["template"])
        labels = {
            **(template.get("metadata") or {}).get("labels", {}),
            "pod-template-hash": pod_hash,
        }
        template.setdefault("metadata", {})["labels"] = labels
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
        replica_set = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}",
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": {
                    REVISION: str(rev),
                    "deployment.kubernetes.io/desired-replicas": str(spec.get("replicas", 1)),
                },
                "ownerReferences": [reference(deployment)],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": spec.get("minReadySeconds", 0),
                "selector": selector,
                "template": template,
            },
        }
        return dict(self.store.create(replica_set, "deployment-controller"))

    def _scale(self, rs: dict[str, Any], replicas: int, deployment: dict[str, Any]) -> dict:
        if rs["spec"]["replicas"] == replicas:
            return rs
        direction = "up" if replicas > rs["spec"]["replicas"] else "down"
        rs = copy.deepcopy(rs)
        rs["spec"]["replicas"] = replicas
        rs = self.store.replace(rs, "deployment-controller")
        message = f"Scaled {direction} replica set {rs['metadata']['name']} to {replicas}"
        self.events.record(deployment, "ScalingReplicaSet", message, False, "deployment-controller")
        return dict(rs)

    def _annotate(self, obj: dict[str, Any], annotations: dict[str, str]) -> dict:
        obj = copy.deepcopy(obj)
        obj["metadata"]["annotations"] = (obj["metadata"].get("annotations") or {}) | annotations
        return dict(self.store.replace(obj, "deployment-controller"))
