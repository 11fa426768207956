"""The double's one Node, ``double-node``: as the kubelet registers it, on 127.0.0.1.

The store holds it from the start (a cluster always has a node); a controller's kubelet
sets its capacity to what it schedules against (``Controller(cpu=..., memory=...)``).
"""

from __future__ import annotations

import platform
import uuid
from typing import Any

from tests.doubles.kubernetes.kinds import GIT_VERSION, now

NODE_NAME = "double-node"
NODE_IP = "127.0.0.1"  # pods' hostIP and podIP, NodePort proxies
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
CONDITIONS = [  # a healthy node's, as the kubelet reports them
    ("MemoryPressure", False, "KubeletHasSufficientMemory", "kubelet has sufficient memory "
     "available"),
    ("DiskPressure", False, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", False, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", True, "KubeletReady", "kubelet is posting ready status"),
]  # fmt: skip


def resources(cpu: str, memory: str) -> dict[str, str]:
    return {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"}


def node(name: str = NODE_NAME, cpu: str = "4", memory: str = "8Gi") -> dict[str, Any]:
    """The Node object, Ready, with ``cpu``/``memory`` as its capacity and allocatable."""
    stamp = now()

    def condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, str]:
        return {"type": kind, "status": "True" if ok else "False", "reason": reason,
                "message": message, "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp}  # fmt: skip

    arch = ARCHITECTURES.get(platform.machine(), platform.machine() or "amd64")
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": arch,
            },
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": NODE_IP},
                {"type": "Hostname", "address": name},
            ],
            "capacity": resources(cpu, memory),
            "allocatable": resources(cpu, memory),
            "conditions": [condition(*c) for c in CONDITIONS],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": arch,
                "bootID": str(uuid.uuid4()),
                "containerRuntimeVersion": "docker://double",
                "kernelVersion": platform.release(),
                "kubeProxyVersion": GIT_VERSION,
                "kubeletVersion": GIT_VERSION,
                "machineID": uuid.uuid4().hex,
                "operatingSystem": "linux",
                "osImage": "Kubernetes double (Docker containers on the host network)",
                "systemUUID": str(uuid.uuid4()),
            },
        },
    }


def register(store: Any, name: str, cpu: str, memory: str) -> None:
    """What a kubelet does as it starts: the Node exists, with this capacity."""
    wanted = node(name, cpu, memory)
    found = store.get("Node", None, name)
    if found is None:
        store.create(wanted, "kubelet")
        return
    status = found.get("status") or {}
    if (status.get("capacity"), status.get("allocatable")) != (
        wanted["status"]["capacity"],
        wanted["status"]["allocatable"],
    ):
        capacity = {k: wanted["status"][k] for k in ("capacity", "allocatable")}
        store.update_status("Node", None, name, status | capacity)
