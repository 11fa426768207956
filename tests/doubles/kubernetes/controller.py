"""The controller half of the Kubernetes double: what kube-controller-manager, the
scheduler, the kubelet and kube-proxy do, driven by the store's events and a resync.

    controller = Controller(store, docker_environment, time_scale=0.1).start()
    ...
    controller.close()

- Deployments: a ReplicaSet per pod template (``<deployment>-<pod-template-hash>``), its
  revision annotation, RollingUpdate (maxSurge/maxUnavailable, minReadySeconds) or
  Recreate, the status and its Available/Progressing conditions.
- ReplicaSets: pods created/deleted to spec.replicas, the status.
- Pods: run by the kubelet (tests/doubles/kubernetes/kubelet.py, pods.py).
- Services: proxies for NodePort (127.0.0.1:<nodePort>) and LoadBalancer (besides, an
  address of its own, on the Service's port) (tests/doubles/kubernetes/services.py).
- The Node ``double-node``, registered at start with the kubelet's cpu/memory.
"""

from __future__ import annotations

import copy
import secrets
import threading
import traceback
from typing import Any

from tests.doubles.kubernetes.deployments import ALPHANUMS, Deployments, available, reference
from tests.doubles.kubernetes.kubelet import Kubelet
from tests.doubles.kubernetes.kubelet_support import HOST_PORT, owned_by
from tests.doubles.kubernetes.services import ServiceProxies, ready

WATCHED = {"Deployment", "ReplicaSet", "Pod", "Service"}


class Controller:
    def __init__(
        self,
        store: Any,
        docker_environment: dict[str, str] | None = None,
        *,
        cpu: str = "4",
        memory: str = "8Gi",
        time_scale: float = 1.0,
        session: str | None = None,
        resync_s: float = 0.5,
    ) -> None:
        self.store = store
        self.kubelet = Kubelet(
            store,
            docker_environment,
            session=session,
            cpu=cpu,
            memory=memory,
            time_scale=time_scale,
        )
        self.resync_s = resync_s
        self.errors: list[str] = []  # tracebacks of failed reconciles, for a test to show
        self.services = ServiceProxies(store, self.errors)
        self._wake, self._stop = threading.Event(), threading.Event()
        self.deployments = Deployments(store, self.kubelet.events)
        self._thread = threading.Thread(target=self._loop, name="k8s-controller", daemon=True)
        store.subscribe(self._on_event)

    def start(self) -> Controller:
        self.kubelet.register_node()
        self._thread.start()
        return self

    def __enter__(self) -> Controller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self.services.close()
        self.kubelet.close()

    # Faults ----------------------------------------------------------------------------------
    def fail_pulls(self, deployment: str, namespace: str = "default") -> None:
        """The next pods of the Deployment fail to pull their image (ErrImagePull)."""
        self.kubelet.set_fault(namespace, deployment, "fail-pull")

    def crash_loop(self, deployment: str, namespace: str = "default") -> None:
        """The next pods' containers exit 1 at once (CrashLoopBackOff)."""
        self.kubelet.set_fault(namespace, deployment, "crash")

    def never_ready(self, deployment: str, namespace: str = "default") -> None:
        """The next pods' readiness probes fail (503)."""
        self.kubelet.set_fault(namespace, deployment, "never-ready")

    def stall_scheduling(self, stalled: bool = True) -> None:
        """New pods stay Pending with no PodScheduled condition, until un-stalled."""
        self.kubelet.scheduling_stalled = stalled

    def clear_faults(self, deployment: str | None = None, namespace: str = "default") -> None:
        self.kubelet.clear_faults(namespace, deployment)
        self.kubelet.scheduling_stalled = False

    def service_port(self, name: str, namespace: str = "default") -> int | None:
        """The node port (on 127.0.0.1) a LoadBalancer/NodePort Service's proxy listens on."""
        return self.services.port(namespace, name)

    def service_address(self, name: str, namespace: str = "default") -> tuple[str, int] | None:
        """(ingress ip, port) a LoadBalancer Service's own proxy listens on."""
        return self.services.address(namespace, name)

    # The loop --------------------------------------------------------------------------------
    def _on_event(self, event: str, obj: dict[str, Any]) -> None:
        if obj.get("kind") in WATCHED:
            self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.resync_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.reconcile()
            except Exception:
                self.errors.append(traceback.format_exc())
                del self.errors[:-20]

    def reconcile(self) -> None:
        self._collect_garbage()
        for deployment in self.store.list("Deployment"):
            self._guarded(self.deployments.sync, deployment)
        for replica_set in self.store.list("ReplicaSet"):
            self._guarded(self.sync_replica_set, replica_set)
        self.kubelet.sync()
        self.services.sync()

    def _collect_garbage(self) -> None:
        """What kube-controller-manager's garbage collector does: a ReplicaSet or pod whose
        owners are all gone is deleted (one made by a sync that raced the owner's deletion)."""
        alive = {
            o["metadata"]["uid"]
            for kind in ("Deployment", "ReplicaSet")
            for o in self.store.list(kind)
        }
        for kind in ("ReplicaSet", "Pod"):
            for obj in self.store.list(kind):
                owners = obj["metadata"].get("ownerReferences") or []
                if owners and not any(ref.get("uid") in alive for ref in owners):
                    meta = obj["metadata"]
                    self.store.delete(kind, meta["namespace"], meta["name"])

    def _guarded(self, sync: Any, obj: dict[str, Any]) -> None:
        try:
            sync(obj)
        except Exception:  # a conflict or an object deleted meanwhile: the next pass retries
            self.errors.append(traceback.format_exc())
            del self.errors[:-20]
            self._wake.set()

    # ReplicaSets -----------------------------------------------------------------------------
    def sync_replica_set(self, rs: dict[str, Any]) -> None:
        meta, spec = rs["metadata"], rs["spec"]
        pods = [p for p in self.store.list("Pod", meta["namespace"]) if owned_by(p, meta["uid"])]
        missing = spec.get("replicas", 1) - len(pods)
        for _ in range(max(missing, 0)):
            pods.append(self._create_pod(rs))
        if missing < 0:
            # Pods not scheduled, then not ready, then the newest go first.
            def rank(pod: dict[str, Any]) -> tuple[int, int, str]:
                scheduled = bool(pod.get("status", {}).get("podIP"))
                created = pod["metadata"].get("creationTimestamp", "")
                return (scheduled, ready(pod), "".join(chr(255 - ord(c)) for c in created))

            for pod in sorted(pods, key=rank)[:-missing]:
                self.store.delete("Pod", meta["namespace"], pod["metadata"]["name"])
                pods.remove(pod)
                message = f"Deleted pod: {pod['metadata']['name']}"
                self.kubelet.event(rs, "SuccessfulDelete", message, False, "replicaset-controller")
        min_ready = spec.get("minReadySeconds", 0)
        status = {
            "replicas": len(pods),
            "fullyLabeledReplicas": len(pods),
            "readyReplicas": sum(ready(p) for p in pods),
            "availableReplicas": sum(available(p, min_ready) for p in pods),
        }
        status = {k: v for k, v in status.items() if v} | {
            "replicas": len(pods),
            "observedGeneration": meta.get("generation", 1),
        }
        if rs.get("status") != status:
            self.store.update_status("ReplicaSet", meta["namespace"], meta["name"], status)

    def _create_pod(self, rs: dict[str, Any]) -> dict[str, Any]:
        template = copy.deepcopy(rs["spec"]["template"])
        pod_meta = template.get("metadata") or {}
        name = rs["metadata"]["name"] + "-" + "".join(secrets.choice(ALPHANUMS) for _ in range(5))
        annotations = (pod_meta.get("annotations") or {}) | {
            HOST_PORT: str(self.kubelet.free_port())
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": rs["metadata"]["namespace"],
                "labels": pod_meta.get("labels") or {},
                "annotations": annotations,
                "ownerReferences": [reference(rs)],
            },
            "spec": {"restartPolicy": "Always", "schedulerName": "default-scheduler"}
            | template["spec"],
            "status": {"phase": "Pending", "qosClass": "Burstable"},
        }
        created = dict(self.store.create(pod, "replicaset-controller"))
        self.kubelet.event(
            rs, "SuccessfulCreate", f"Created pod: {name}", False, "replicaset-controller"
        )
        return created
