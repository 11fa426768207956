"""Waiting for a Deployment's rollout as ``kubectl rollout status`` does, and failing fast
when its new pods cannot get there: an image that cannot be pulled, a container that keeps
crashing, a pod no node has room for. The failure carries the pods' events and last logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from deployer.errors import DeployFailed
from deployer.targets.contract import Deadline
from deployer.targets.kubernetes import pod_logs
from deployer.targets.kubernetes.cluster import Cluster
from deployer.targets.kubernetes.objects import REVISION, path

POLL_S = 1.0
EVENTS_SHOWN = 8
LOG_LINES = 40
# Waiting reasons that no amount of waiting fixes: the image or the pod's definition.
CANNOT_START = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
}
_SHORT = re.compile(r"Insufficient ([A-Za-z0-9./-]+)")

Say = Callable[[str], None]


def rollout_status(deployment: dict[str, Any]) -> tuple[str, bool]:
    """``kubectl rollout status``'s reading of a Deployment: (message, done). Raises
    ``DeployFailed`` when the controller reports ProgressDeadlineExceeded."""
    meta, spec = deployment["metadata"], deployment.get("spec", {})
    status = deployment.get("status") or {}
    name = meta["name"]
    if meta.get("generation", 0) > status.get("observedGeneration", 0):
        return "waiting for the deployment spec update to be observed", False
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            raise DeployFailed(f"deployment {name} exceeded its progress deadline")
    desired = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    replicas = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < desired:
        return f"{updated}/{desired} replicas updated", False
    if replicas > updated:
        return f"{replicas - updated} old replicas pending termination", False
    if available < updated:
        return f"{available}/{updated} updated replicas available", False
    return f"{available}/{desired} replicas available", True


class RolloutWatch:
    """Polls one Deployment and its pods of one revision until the rollout is done."""

    def __init__(self, cluster: Cluster, namespace: str, say: Say) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.say = say

    def wait(self, name: str, revision: str, deadline: Deadline) -> dict[str, Any]:
        last = ""
        while True:
            deployment = self.cluster.request("GET", path("Deployment", self.namespace, name))
            message, done = rollout_status(deployment)
            if message != last:
                self.say(f"deployment {name}: {message}")
                last = message
            if done:
                return dict(deployment)
            selector = deployment["spec"]["selector"].get("matchLabels") or {}
            pods = self.pods(selector, revision)
            self.fail_if_stuck(pods)
            if deadline.expired:
                raise deadline.exceeded(
                    f"deployment {name} did not roll out ({message})", self.evidence(pods)
                )
            deadline.sleep(POLL_S)

    def pods(self, selector: dict[str, str], revision: str) -> list[dict[str, Any]]:
        """The pods of ``selector`` whose template is ``revision`` (the new ones)."""
        labels = ",".join(f"{k}={v}" for k, v in selector.items())
        found = self.cluster.request(
            "GET", path("Pod", self.namespace), query={"labelSelector": labels}
        )
        return [
            p
            for p in found.get("items", [])
            if (p["metadata"].get("annotations") or {}).get(REVISION) == revision
        ]

    def fail_if_stuck(self, pods: list[dict[str, Any]]) -> None:
        for pod in pods:
            problem = stuck(pod, self.events(pod))
            if problem:
                name = pod["metadata"]["name"]
                crashed = "CrashLoopBackOff" in problem or "exited" in problem
                raise DeployFailed(f"pod {name} {problem}", self.evidence([pod], crashed))

    def events(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        name = pod["metadata"]["name"]
        found = self.cluster.request(
            "GET",
            path("Event", self.namespace),
            query={"fieldSelector": f"involvedObject.name={name}"},
        )
        items: list[dict[str, Any]] = found.get("items", [])
        return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    def evidence(self, pods: list[dict[str, Any]], previous: bool = False) -> list[str]:
        """Each pod's last events and log lines, for the report (best effort)."""
        lines: list[str] = []
        for pod in pods[:3]:
            name = pod["metadata"]["name"]
            try:
                events = self.events(pod)[-EVENTS_SHOWN:]
            except Exception:
                events = []
            lines.append(f"--- events of pod {name} ---")
            lines += [
                f"{e.get('type', '')} {e.get('reason', '')}: {e.get('message', '')}" for e in events
            ]
            lines.append(
                f"--- last logs of pod {name}{' (previous container)' if previous else ''} ---"
            )
            lines += pod_logs.read(self.cluster, self.namespace, name, LOG_LINES, previous=previous)
        return lines


def stuck(pod: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """Why ``pod`` will not become ready by waiting, in words; "" when it may still."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            if any(e.get("reason") == "TriggeredScaleUp" for e in events):
                return ""  # the cluster autoscaler is adding a node: worth waiting for
            return "cannot be scheduled: " + _short_of(condition.get("message", ""), pod)
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason", "")
        if reason in CANNOT_START:
            detail = waiting.get("message") or _last_warning(events) or "no message"
            return f"cannot start its container ({reason}): {detail}"
        if reason == "CrashLoopBackOff":
            last = (container.get("lastState") or {}).get("terminated") or {}
            return (
                f"keeps crashing (CrashLoopBackOff): its container exited with code "
                f"{last.get('exitCode', '?')} ({last.get('reason', 'no reason')}) after "
                f"{container.get('restartCount', 0)} restarts"
            )
    return ""


def _short_of(message: str, pod: dict[str, Any]) -> str:
    """The scheduler's message, and which resource of deploy.yaml to lower."""
    # "Insufficient memory." or "Insufficient nvidia.com/gpu": the sentence's period goes.
    short = sorted({name.rstrip(".") for name in _SHORT.findall(message)})
    if not short:
        return message or "no node fits it"
    asks = pod["spec"]["containers"][0].get("resources", {}).get("requests", {})
    parts = [f"{r} (the pod requests {asks.get(r, '?')})" for r in short]
    return (
        f"{message.strip()} No node has enough {', '.join(parts)}: lower resources in "
        "deploy.yaml, or add nodes"
    )


def _last_warning(events: list[dict[str, Any]]) -> str:
    warnings = [e for e in events if e.get("type") == "Warning"]
    return str(warnings[-1].get("message", "")) if warnings else ""
