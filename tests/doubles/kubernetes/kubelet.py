"""The node of the Kubernetes double: a one-node scheduler and the kubelet's pod workers
(tests/doubles/kubernetes/pods.py), the Docker engine they run containers on, pod logs,
and the faults a test asks for."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import docker
from docker.errors import APIError, NotFound

from tests.doubles.kubernetes import nodes
from tests.doubles.kubernetes.kubelet_support import (
    CRASH_COMMAND,
    LABEL,
    LABEL_POD,
    LABEL_SESSION,
    LABEL_VALUE,
    EventRecorder,
    owner,
    pod_requests,
    quantity,
)
from tests.doubles.kubernetes.pods import PodWorker

FAULTS = ("fail-pull", "crash", "never-ready")


class ContainerNotRunning(LookupError):
    """Logs asked of a pod whose container has not started (the API server's 400)."""


class Kubelet:
    """``Kubelet(store, docker_environment)``; the controller calls ``sync()`` on changes."""

    def __init__(
        self,
        store: Any,
        docker_environment: dict[str, str] | None = None,
        *,
        session: str | None = None,
        cpu: str = "4",
        memory: str = "8Gi",
        time_scale: float = 1.0,
        node_name: str = "double-node",
    ) -> None:
        self.store = store
        self.session = session or uuid.uuid4().hex
        self.allocatable = {"cpu": quantity(cpu), "memory": quantity(memory)}
        self.capacity = {"cpu": cpu, "memory": memory}  # as the Node shows them
        self.time_scale = time_scale
        self.node_name = node_name
        self.workers: dict[tuple[str, str], PodWorker] = {}
        self.node_images: set[str] = set()  # pulled by this node (IfNotPresent skips them)
        self.faults: dict[str, set[str]] = {}  # "namespace/deployment" -> FAULTS
        self.scheduling_stalled = False
        self.closing = False
        self.events = EventRecorder(store)
        self._bound: dict[str, dict[str, float]] = {}
        self._ports: set[int] = set()  # given to pods already
        self._lock = threading.RLock()
        self._environment = docker_environment
        self._client: Any = None
        store.log_provider = self.logs

    def register_node(self) -> None:
        """The Node, Ready, with this kubelet's cpu/memory (tests/doubles/kubernetes/nodes.py)."""
        nodes.register(self.store, self.node_name, self.capacity["cpu"], self.capacity["memory"])

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker.from_env(environment=self._environment, timeout=300)
        return self._client

    # Pods ------------------------------------------------------------------------------------
    def sync(self) -> None:
        """Start a worker for each new pod; stop the workers of pods that are gone."""
        if self.closing:
            return
        pods = {
            (p["metadata"]["namespace"], p["metadata"]["name"]): p for p in self.store.list("Pod")
        }
        with self._lock:
            for key, worker in list(self.workers.items()):
                pod = pods.get(key)
                if pod is None or pod["metadata"].get("uid") != worker.uid:
                    worker.stopping.set()
                    del self.workers[key]
            for key, pod in pods.items():
                if key not in self.workers and not pod.get("metadata", {}).get("deletionTimestamp"):
                    worker = PodWorker(self, pod, self._faults_for(pod))
                    self.workers[key] = worker
                    worker.thread.start()

    def _faults_for(self, pod: dict[str, Any]) -> set[str]:
        namespace = pod["metadata"]["namespace"]
        replica_set = owner(pod, "ReplicaSet")
        found = self.store.get("ReplicaSet", namespace, replica_set) if replica_set else None
        deployment = owner(found, "Deployment") if found else None
        return set(self.faults.get(f"{namespace}/{deployment}", ()))

    def free_port(self) -> int:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in self._ports:
                self._ports.add(port)
                return port

    # Scheduling ------------------------------------------------------------------------------
    def schedule(self, worker: PodWorker) -> bool:
        """Bind the pod to the node if its requests fit what other pods left of it."""
        if self.scheduling_stalled:
            return False
        wanted = pod_requests(worker.pod)
        with self._lock:
            used = {r: sum(b[r] for b in self._bound.values()) for r in self.allocatable}
            short = [r for r in ("cpu", "memory") if used[r] + wanted[r] > self.allocatable[r]]
            if short:
                message = (
                    "0/1 nodes are available: "
                    + ", ".join(f"1 Insufficient {r}" for r in short)
                    + "."
                )
                if message != worker.unschedulable:
                    worker.unschedulable = message
                    self.event(worker.pod, "FailedScheduling", message, True, "default-scheduler")
                return False
            self._bound[worker.uid] = wanted
        worker.unschedulable = ""
        where = f"{worker.namespace}/{worker.name} to {self.node_name}"
        self.event(
            worker.pod, "Scheduled", f"Successfully assigned {where}", False, "default-scheduler"
        )
        return True

    def unbind(self, worker: PodWorker) -> None:
        with self._lock:
            self._bound.pop(worker.uid, None)

    def event(
        self,
        obj: dict[str, Any],
        reason: str,
        message: str,
        warning: bool = False,
        component: str = "kubelet",
    ) -> None:
        self.events.record(obj, reason, message, warning, component)

    # Containers ------------------------------------------------------------------------------
    def run_container(self, worker: PodWorker) -> str:
        options = self.run_options(worker)
        with contextlib.suppress(NotFound):
            self.client.containers.get(options["name"]).remove(force=True)
        return str(self.client.containers.run(worker.spec["image"], **options).id)

    def run_options(self, worker: PodWorker) -> dict[str, Any]:
        """docker-py ``containers.run`` keywords for this pod's container."""
        spec, pod_spec = worker.spec, worker.pod["spec"]
        security = {**pod_spec.get("securityContext", {}), **spec.get("securityContext", {})}
        env = {
            e["name"]: str(e.get("value", "")) for e in spec.get("env", []) if "valueFrom" not in e
        }
        env |= {"DEPLOYER_SERVER_PORT": str(worker.port), "DEPLOYER_SERVER_HOST": "127.0.0.1"}
        empty_dirs = {v["name"] for v in pod_spec.get("volumes", []) if "emptyDir" in v}
        limits = spec.get("resources", {}).get("limits", {})
        user = security.get("runAsUser")
        options: dict[str, Any] = {
            "environment": env,
            "network_mode": "host",
            "detach": True,
            "labels": {
                LABEL: LABEL_VALUE,
                LABEL_SESSION: self.session,
                LABEL_POD: f"{worker.namespace}/{worker.name}",
            },
            "name": f"k8s_{spec['name']}_{worker.name}_{worker.namespace}_"
            f"{worker.uid[:8]}_{worker.restarts}",
            "entrypoint": CRASH_COMMAND if "crash" in worker.faults else spec.get("command"),
            "command": None if "crash" in worker.faults else spec.get("args"),
            "user": None if user is None else f"{user}:{security.get('runAsGroup', user)}",
            "read_only": bool(security.get("readOnlyRootFilesystem")),
            "tmpfs": {
                m["mountPath"]: "" for m in spec.get("volumeMounts", []) if m["name"] in empty_dirs
            },
            "cap_drop": security.get("capabilities", {}).get("drop") or None,
            "security_opt": (
                ["no-new-privileges"] if security.get("allowPrivilegeEscalation") is False else None
            ),
        }
        if "memory" in limits:
            options["mem_limit"] = int(quantity(limits["memory"]))
        if "cpu" in limits:
            options["nano_cpus"] = int(quantity(limits["cpu"]) * 1e9)
        return options

    def stop_container(self, docker_id: str, timeout: int) -> None:
        with contextlib.suppress(NotFound, APIError):
            self.client.api.stop(docker_id, timeout=timeout)

    def remove_container(self, docker_id: str) -> None:
        with contextlib.suppress(NotFound, APIError):
            self.client.api.remove_container(docker_id, force=True)

    def logs(  # noqa: PLR0917
        self,
        namespace: str,
        pod: str,
        tail_lines: int | None,
        follow: bool,
        previous: bool = False,
        timestamps: bool = False,
    ) -> Iterator[bytes]:
        """The container's output as ``kubectl logs`` streams it (``store.log_provider``)."""
        worker = self.workers.get((namespace, pod))
        found = worker and (
            worker.previous_id if previous else worker.docker_id or worker.previous_id
        )
        if worker is None or not found:
            reason = worker.waiting[0] if worker else "ContainerCreating"
            name = worker.spec["name"] if worker else ""
            if previous and worker is not None:
                message = f'previous terminated container "{name}" in pod "{pod}" not found'
                raise ContainerNotRunning(message)
            raise ContainerNotRunning(
                f'container "{name}" in pod "{pod}" is waiting to start: {reason}'
            )
        tail = tail_lines if tail_lines is not None else "all"
        try:  # Docker's timestamps are the kubelet's: RFC 3339 with nanoseconds, then a space
            if follow:
                return self.client.api.logs(
                    found, stream=True, follow=True, tail=tail, timestamps=timestamps
                )
            return iter([self.client.api.logs(found, tail=tail, timestamps=timestamps)])
        except APIError as error:  # the container is being removed: as if it never ran
            raise ContainerNotRunning(f'container in pod "{pod}" is gone: {error}') from None

    # Faults ----------------------------------------------------------------------------------
    def set_fault(self, namespace: str, deployment: str, fault: str) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
        self.faults.setdefault(f"{namespace}/{deployment}", set()).add(fault)

    def clear_faults(self, namespace: str | None = None, deployment: str | None = None) -> None:
        if deployment is None:
            self.faults.clear()
        else:
            self.faults.pop(f"{namespace}/{deployment}", None)

    # Cleanup ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every pod's container (without the grace period) and remove them."""
        self.closing = True
        with self._lock:
            workers = list(self.workers.values())
            self.workers.clear()
        for worker in workers:
            worker.stopping.set()
        for worker in workers:
            worker.thread.join(30)
        if self._client is not None:
            remove_leftovers(self._client, self.session)
            self._client.close()


def remove_leftovers(client: Any, session: str | None = None) -> list[str]:
    """Remove the containers the double started: one session's, or (None) every session's,
    for a sweep when no other test session shares the engine. Their names."""
    label = f"{LABEL_SESSION}={session}" if session else f"{LABEL}={LABEL_VALUE}"
    removed = []
    for found in client.containers.list(all=True, filters={"label": label}):
        if found.labels.get(LABEL) != LABEL_VALUE:
            continue
        with contextlib.suppress(NotFound, APIError):
            found.remove(force=True)
            removed.append(found.name)
    return removed
