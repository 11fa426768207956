"""Small pieces the Kubernetes double's kubelet and controllers share: labels, quantities,
pull credentials from dockerconfigjson Secrets, condition timestamps, pod ownership."""

from __future__ import annotations

import base64
import datetime
import json
import re
import threading
import uuid
from typing import Any

from docker.auth import resolve_repository_name

LABEL = "ai.deployer.test-double"  # every container the double starts has it
LABEL_VALUE = "kubernetes"
LABEL_SESSION = "ai.deployer.test-double.session"  # the double that started it
LABEL_POD = "ai.deployer.test-double.pod"  # namespace/name
HOST_PORT = "double.deployer.test/host-port"  # a pod's port, a Service's proxy port
CRASH_COMMAND = ["/bin/sh", "-c", "echo 'crashing on purpose (test double)' >&2; exit 1"]
SUFFIXES = {
    "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def quantity(value: Any) -> float:
    """A Kubernetes quantity as a number: ``500m`` -> 0.5, ``1Gi`` -> 1073741824."""
    found = re.fullmatch(r"([0-9.eE+-]+?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", str(value).strip())
    if not found:
        raise ValueError(f"not a quantity: {value!r}")
    return float(found.group(1)) * SUFFIXES.get(found.group(2) or "", 1)


def pod_requests(pod: dict[str, Any]) -> dict[str, float]:
    total = {"cpu": 0.0, "memory": 0.0}
    for container in pod["spec"].get("containers", []):
        resources = container.get("resources", {})
        requests = {**resources.get("limits", {}), **resources.get("requests", {})}
        for name in total:
            if name in requests:
                total[name] += quantity(requests[name])
    return total


def pull_auth(store: Any, pod: dict[str, Any], image: str) -> dict[str, str] | None:
    """docker-py's auth_config for the image, from the pod's imagePullSecrets (Secrets of
    type kubernetes.io/dockerconfigjson in its namespace), or None (anonymous)."""
    registry, _ = resolve_repository_name(image)
    namespace = pod["metadata"]["namespace"]
    for ref in pod["spec"].get("imagePullSecrets") or []:
        secret = store.get("Secret", namespace, ref.get("name", ""))
        if secret is None:
            continue
        data = secret.get("data", {}).get(".dockerconfigjson")
        text = base64.b64decode(data).decode() if data else ""
        text = text or (secret.get("stringData") or {}).get(".dockerconfigjson", "")
        try:
            auths = json.loads(text).get("auths", {})
        except ValueError:
            continue
        for server, entry in auths.items():
            host = re.sub(r"^https?://", "", server).split("/")[0]
            if host != registry and not (registry == "index.docker.io" and "docker.io" in host):
                continue
            username, password = entry.get("username"), entry.get("password")
            if not username and entry.get("auth"):
                username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return {"username": username or "", "password": password or ""}
    return None


class Transitions:
    """Conditions whose lastTransitionTime changes only when their status does."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, str]] = {}

    def condition(
        self, kind: str, ok: bool, reason: str = "", message: str = "", **extra: str
    ) -> dict[str, Any]:
        status = "True" if ok else "False"
        seen = self._seen.get(kind)
        if seen is None or seen[0] != status:
            seen = self._seen[kind] = (status, now())
        condition = {"type": kind, "status": status, "lastTransitionTime": seen[1]}
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        return condition | extra


def owner(obj: dict[str, Any], kind: str) -> str | None:
    """The name of the obj's controller of this kind (ownerReferences)."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == kind:
            return str(ref.get("name"))
    return None


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


class EventRecorder:
    """core/v1 Events in the store, counted as the event recorder aggregates them."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._names: dict[tuple[str, ...], str] = {}
        self._lock = threading.Lock()

    def record(
        self, obj: dict[str, Any], reason: str, message: str, warning: bool, component: str
    ) -> None:
        meta = obj["metadata"]
        key = (meta.get("uid", ""), reason, message, component)
        with self._lock:
            try:
                name = self._names.get(key)
                found = self.store.get("Event", meta["namespace"], name) if name else None
                if found is not None:
                    found["count"] = found.get("count", 1) + 1
                    found["lastTimestamp"] = now()
                    self.store.replace(found, component)
                    return
                name = f"{meta['name']}.{uuid.uuid4().hex[:16]}"
                stamp = now()
                self.store.create(
                    {
                        "apiVersion": "v1",
                        "kind": "Event",
                        "metadata": {"name": name, "namespace": meta["namespace"]},
                        "involvedObject": {
                            "apiVersion": obj.get("apiVersion", "v1"),
                            "kind": obj.get("kind", "Pod"),
                            "name": meta["name"],
                            "namespace": meta["namespace"],
                            "uid": meta.get("uid", ""),
                        },
                        "reason": reason,
                        "message": message,
                        "type": "Warning" if warning else "Normal",
                        "count": 1,
                        "firstTimestamp": stamp,
                        "lastTimestamp": stamp,
                        "source": {"component": component},
                        "reportingComponent": component,
                    },
                    component,
                )
                self._names[key] = name
            except Exception:  # an event is best effort, as in Kubernetes
                return
