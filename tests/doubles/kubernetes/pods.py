"""The "kubelet" (and scheduler) of the Kubernetes double: each Pod's first container runs
as a real Docker container on the host network, one pod worker thread per pod.

A pod listens on a free host port of its own (annotation ``HOST_PORT``), told to deployer's
scoring image through ``DEPLOYER_SERVER_PORT``/``DEPLOYER_SERVER_HOST``; its podIP is
127.0.0.1. The worker pulls the image (with the pod's imagePullSecrets), starts the
container, runs the manifest's startup/readiness/liveness probes against the host port,
restarts a container that exits with the kubelet's back-off (CrashLoopBackOff), and
writes the pod's status to the store only when it changed. Timings (probe periods,
back-offs, the preStop sleep) are multiplied by ``time_scale`` so that tests run fast.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from docker.errors import APIError, NotFound
from docker.utils import parse_repository_tag

from tests.doubles.kubernetes.kubelet_support import (
    HOST_PORT,
    Transitions,
    now,
    pull_auth,
)

if TYPE_CHECKING:
    from tests.doubles.kubernetes.kubelet import Kubelet

BACKOFF_BASE_S, BACKOFF_CAP_S = 10.0, 300.0  # the kubelet's, before time_scale


class Probe:
    """One probe of the manifest and its run of results."""

    def __init__(self, spec: dict[str, Any] | None, scale: float, started: float) -> None:
        self.spec = spec or {}
        self.period = max(0.05, self.spec.get("periodSeconds", 10) * scale)
        self.due = started + self.spec.get("initialDelaySeconds", 0) * scale
        self.failures = self.successes = 0

    def run(self, port: int, forced_failure: bool = False) -> tuple[bool, str]:
        self.due = time.monotonic() + self.period
        ok, message = (False, "HTTP probe failed with statuscode: 503")
        if not forced_failure:
            ok, message = _check(self.spec, port)
        self.failures, self.successes = (0, self.successes + 1) if ok else (self.failures + 1, 0)
        return ok, message

    @property
    def failed(self) -> bool:
        return self.failures >= self.spec.get("failureThreshold", 3)

    @property
    def passed(self) -> bool:
        return self.successes >= self.spec.get("successThreshold", 1)


def _check(spec: dict[str, Any], port: int) -> tuple[bool, str]:
    timeout = spec.get("timeoutSeconds", 1)
    if "httpGet" in spec:
        url = f"http://127.0.0.1:{port}{spec['httpGet'].get('path', '/')}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                return 200 <= answer.status < 400, ""
        except urllib.error.HTTPError as exc:
            return exc.code < 400, f"HTTP probe failed with statuscode: {exc.code}"
        except OSError as exc:
            return False, f'Get "{url}": {getattr(exc, "reason", exc)}'
    if "tcpSocket" in spec:
        import socket

        try:
            socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
            return True, ""
        except OSError as exc:
            return False, f"dial tcp 127.0.0.1:{port}: {exc}"
    return True, ""  # exec and grpc probes: taken as passing


class PodWorker:
    """What the kubelet does for one pod, on a thread of its own."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any], faults: set[str]) -> None:
        meta = pod["metadata"]
        self.kubelet, self.faults = kubelet, faults
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta.get("uid", "")
        self.pod = pod
        self.spec = pod["spec"]["containers"][0]
        self.port = int(meta.get("annotations", {}).get(HOST_PORT, 0)) or kubelet.free_port()
        self.stopping = threading.Event()
        self.docker_id: str | None = None
        self.previous_id: str | None = None
        self.scheduled = False
        self.unschedulable = ""  # the scheduler's message while the pod does not fit
        self.waiting = ("ContainerCreating", "")
        self.last_terminated: dict[str, Any] | None = None
        self.restarts, self.backoffs = 0, 0
        self.next_start = 0.0
        self.started_at = ""
        self.probes: dict[str, Probe] = {}
        self.started = self.ready = False
        self.start_time = ""
        self.transitions = Transitions()
        self._published: dict[str, Any] | None = None
        self.thread = threading.Thread(target=self._run, name=f"pod {self.name}", daemon=True)

    # The loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._step()
                self._publish()
                self.stopping.wait(0.2)
        finally:
            self._teardown(fast=self.kubelet.closing)

    def _step(self) -> None:
        if not self.scheduled:
            self.scheduled = self.kubelet.schedule(self)
            if self.scheduled:
                self.start_time = now()
            return
        if self.docker_id is None:
            if time.monotonic() >= self.next_start and self._pull():
                self._start()
            return
        self._watch()

    def _pull(self) -> bool:
        image = self.spec["image"]
        policy = self.spec.get("imagePullPolicy") or (
            "Always" if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest") else ""
        )
        if policy != "Always" and image in self.kubelet.node_images:
            return True
        self.kubelet.event(self.pod, "Pulling", f'Pulling image "{image}"')
        error = "not found" if "fail-pull" in self.faults else ""
        if not error:
            auth = pull_auth(self.kubelet.store, self.pod, image)
            repository, tag = parse_repository_tag(image)
            try:
                self.kubelet.client.images.pull(repository, tag=tag or "latest", auth_config=auth)
            except (APIError, NotFound) as exc:
                error = str(getattr(exc, "explanation", None) or exc)
        if not error:
            self.kubelet.node_images.add(image)
            self.kubelet.event(self.pod, "Pulled", f'Successfully pulled image "{image}"')
            return True
        message = (
            f"rpc error: code = Unknown desc = failed to pull and unpack image "
            f'"{image}": failed to resolve reference "{image}": {error}'
        )
        self.waiting = ("ErrImagePull", message)
        self.kubelet.event(self.pod, "Failed", f'Failed to pull image "{image}": {message}', True)
        self.kubelet.event(self.pod, "Failed", "Error: ErrImagePull", True)
        self._publish()
        self.stopping.wait(min(1.0, self._backoff()))
        self.waiting = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
        self.kubelet.event(self.pod, "BackOff", f'Back-off pulling image "{image}"')
        return False

    def _backoff(self) -> float:
        delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**self.backoffs) * self.kubelet.time_scale
        self.next_start = time.monotonic() + delay
        self.backoffs += 1
        return delay

    def _start(self) -> None:
        created = self.kubelet.run_container(self)
        if self.previous_id:
            self.kubelet.remove_container(self.previous_id)
        self.previous_id, self.docker_id = self.docker_id, created
        self.waiting = ("", "")
        started = time.monotonic()
        scale = self.kubelet.time_scale
        self.probes = {
            kind: Probe(self.spec.get(f"{kind}Probe"), scale, started)
            for kind in ("startup", "readiness", "liveness")
            if self.spec.get(f"{kind}Probe")
        }
        self.started = "startup" not in self.probes
        self.ready = False
        self.started_at = now()
        self.kubelet.event(self.pod, "Created", f"Created container {self.spec['name']}")
        self.kubelet.event(self.pod, "Started", f"Started container {self.spec['name']}")

    def _watch(self) -> None:
        assert self.docker_id is not None
        try:
            state = self.kubelet.client.api.inspect_container(self.docker_id)["State"]
        except NotFound:
            state = {"Running": False, "ExitCode": 137, "FinishedAt": now()}
        if not state.get("Running"):
            self._exited(state)
            return
        moment = time.monotonic()
        for kind, probe in self.probes.items():
            if moment < probe.due or (kind != "startup" and not self.started):
                continue
            if kind == "startup" and self.started:
                continue
            forced = kind == "readiness" and "never-ready" in self.faults
            ok, message = probe.run(self.port, forced)
            if not ok:
                label = kind.capitalize()
                self.kubelet.event(self.pod, "Unhealthy", f"{label} probe failed: {message}", True)
            if kind == "startup" and probe.passed:
                self.started = True
            elif kind == "readiness":
                self.ready = probe.passed or (self.ready and not probe.failed)
            if kind in ("startup", "liveness") and probe.failed:
                self.kubelet.event(
                    self.pod,
                    "Killing",
                    f"Container {self.spec['name']} failed {kind} probe, will be restarted",
                )
                self.kubelet.stop_container(self.docker_id, timeout=2)
                return
        if "readiness" not in self.probes:
            self.ready = self.started

    def _exited(self, state: dict[str, Any]) -> None:
        code = int(state.get("ExitCode", 0))
        self.last_terminated = {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": self.started_at,
                "finishedAt": (state.get("FinishedAt") or now())[:19] + "Z",
                "containerID": f"docker://{self.docker_id}",
            }
        }
        self.previous_id, self.docker_id = self.docker_id, None
        self.restarts += 1
        self.started = self.ready = False
        delay = self._backoff()
        name = self.spec["name"]
        message = (
            f"back-off {delay:g}s restarting failed container={name} "
            f"pod={self.name}_{self.namespace}({self.uid})"
        )
        self.waiting = ("CrashLoopBackOff", message)
        self.kubelet.event(
            self.pod,
            "BackOff",
            f"Back-off restarting failed container {name} in pod "
            f"{self.name}_{self.namespace}({self.uid})",
            True,
        )

    def _teardown(self, fast: bool) -> None:
        self.kubelet.unbind(self)
        grace = int(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        if self.docker_id is not None:
            self.kubelet.event(self.pod, "Killing", f"Stopping container {self.spec['name']}")
            pre_stop = self.spec.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
            if not fast and pre_stop:
                time.sleep(pre_stop.get("seconds", 0) * self.kubelet.time_scale)
            self.kubelet.stop_container(self.docker_id, timeout=2 if fast else grace)
        for found in (self.docker_id, self.previous_id):
            if found:
                self.kubelet.remove_container(found)

    # Status ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        ready = self.ready and self.docker_id is not None
        t = self.transitions
        if not self.scheduled:
            status: dict[str, Any] = {"phase": "Pending", "qosClass": "Burstable"}
            if self.unschedulable:
                status["conditions"] = [
                    t.condition("PodScheduled", False, "Unschedulable", self.unschedulable)
                ]
            return status
        state: dict[str, Any]
        if self.docker_id is not None:
            state = {"running": {"startedAt": self.started_at}}
        else:
            reason, message = self.waiting
            state = {"waiting": {"reason": reason} | ({"message": message} if message else {})}
        container = {
            "name": self.spec["name"],
            "image": self.spec["image"],
            "imageID": "",
            "ready": ready,
            "started": self.started and self.docker_id is not None,
            "restartCount": self.restarts,
            "state": state,
            "lastState": self.last_terminated or {},
        }
        if self.docker_id is not None:
            container["containerID"] = f"docker://{self.docker_id}"
        ran = self.docker_id is not None or self.restarts > 0
        return {
            "phase": "Running" if ran else "Pending",
            "conditions": [
                t.condition("Initialized", True),
                t.condition("Ready", ready, "" if ready else "ContainersNotReady"),
                t.condition("ContainersReady", ready, "" if ready else "ContainersNotReady"),
                t.condition("PodScheduled", True),
            ],
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": [container],
            "qosClass": "Burstable",
        }

    def _publish(self) -> None:
        status = self.status()
        if status == self._published or self.stopping.is_set():
            return
        try:
            self.kubelet.store.update_status("Pod", self.namespace, self.name, status)
            self._published = status
        except Exception:  # the pod is gone: the kubelet's sync stops this worker
            if self.kubelet.store.get("Pod", self.namespace, self.name) is None:
                self.stopping.set()
