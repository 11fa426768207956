"""``kubernetes``'s driver: the rendered Deployment, Service and HorizontalPodAutoscaler,
applied with server-side apply (field manager ``deployer``) through the official client.

A Kubernetes rollout only holds a version back while it is not *ready*; a version that is
ready but answers wrongly would take traffic at once. So a new version is proven first
(``candidate`` replacement):

1. ``apply`` applies a *candidate* Deployment, ``<name>-candidate``: one replica of the
   release whose pods the Service does not select. ``wait`` watches its rollout and fails
   fast on stuck pods; the first tests reach its pod through the API server's pod proxy.
2. ``promote`` applies the service Deployment, Service and HPA. The Deployment's rolling
   update (maxUnavailable 0) starts each new pod before an old one goes, so no request
   fails; its rollout is watched as ``kubectl rollout status`` does, and the tests run
   again on the Service's address.
3. ``confirm`` records the revision on the Deployment (``deployer.ai/confirmed-revision``)
   and deletes the candidate. The previous ReplicaSet stays, scaled to zero: a rollback
   applies its pod template again, as ``kubectl rollout undo`` does, and waits for that
   rollout too.

A deploy killed half-way leaves a template revision that differs from the confirmed one;
``tidy`` rolls it back to the confirmed ReplicaSet (or removes a Deployment never
confirmed) and deletes a leftover candidate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from deployer.errors import DeployFailed, UserError
from deployer.events import Event, Level
from deployer.label_values import object_name
from deployer.targets.contract import (
    Deadline,
    Endpoint,
    Health,
    Release,
    Replacement,
    Session,
    TargetRef,
    Version,
    nothing_to_retire,
)
from deployer.targets.kubernetes import objects, pod_logs
from deployer.targets.kubernetes.cluster import Cluster, connect_cluster, explain
from deployer.targets.kubernetes.forward import Forwarder
from deployer.targets.kubernetes.objects import (
    APPLY,
    CONFIRMED,
    FIELD_MANAGER,
    KUBE_REVISION,
    MERGE,
    path,
    template_revision,
)
from deployer.targets.kubernetes.rollout_watch import RolloutWatch, rollout_status
from deployer.targets.kubernetes.schema import Config

ADDRESS_POLL_S = 2.0
GONE_WAIT_S = 120.0
# After the old pods' preStop delay: a moment for them to close their connections.
SETTLE_MARGIN_S = 1.0


def connect(target: TargetRef, session: Session) -> KubernetesDriver:
    if not isinstance(target.settings, Config):
        raise TypeError(f"target {target.name!r} is not a kubernetes target")
    cluster = connect_cluster(target.settings.context, session.env)
    return KubernetesDriver(target, target.settings, session, cluster)


@dataclass
class KubernetesDriver:
    target: TargetRef
    settings: Config
    session: Session
    cluster: Cluster

    replacement: Replacement = "candidate"
    platform_errors: tuple[type[BaseException], ...] = (ApiException, urllib3.exceptions.HTTPError)
    # The rollout replaced the previous pods itself; its ReplicaSet stays, scaled to zero,
    # as the revision history a rollback (or kubectl rollout undo) goes back to.
    retire = nothing_to_retire

    def __post_init__(self) -> None:
        self.name = object_name(self.target.service, self.target.name)
        self.candidate = objects.candidate_name(self.name)
        self.ns = self.settings.namespace
        self.watch = RolloutWatch(
            self.cluster, self.ns, lambda text: self._progress(text, "progress")
        )
        self.forwarder = Forwarder(self.cluster)
        self._applied: dict[str, dict[str, Any]] = {}  # the release's manifests, by kind

    # The API ----------------------------------------------------------------------------------
    def _call(self, what: str, method: str, api_path: str, **kwargs: Any) -> Any:
        try:
            return self.cluster.request(method, api_path, **kwargs)
        except ApiException as error:
            raise explain(error, what, self.cluster) from error

    def get_object(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.cluster.request("GET", path(kind, self.ns, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise explain(error, f"reading {kind} {self.ns}/{name}", self.cluster) from error
        return found

    def _list(self, kind: str, selector: str) -> list[dict[str, Any]]:
        found = self._call(
            f"listing {kind}s in {self.ns}",
            "GET",
            path(kind, self.ns),
            query={"labelSelector": selector},
        )
        return list(found.get("items", []))

    def apply_object(self, manifest: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply of one object as field manager ``deployer``; ``force`` only
        when deploy.yaml says ``force_conflicts: true``."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        query = {"fieldManager": FIELD_MANAGER}
        if self.settings.force_conflicts:
            query["force"] = "true"
        if dry_run:
            query["dryRun"] = "All"
        applied: dict[str, Any] = self._call(
            f"applying {kind} {self.ns}/{name}",
            "PATCH",
            path(kind, self.ns, name),
            query=query,
            body=manifest,
            content_type=APPLY,
        )
        return applied

    def _delete(self, kind: str, name: str) -> bool:
        """Delete one object (its dependents in the background); False if there was none."""
        try:
            self.cluster.request(
                "DELETE",
                path(kind, self.ns, name),
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Background",
                },
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise explain(error, f"deleting {kind} {self.ns}/{name}", self.cluster) from error
        return True

    # What is there ---------------------------------------------------------------------------
    def live(self) -> Version | None:
        deployment = self.get_object("Deployment", self.name)
        if deployment is None:
            return None
        return self._version(deployment)

    def _version(self, deployment: dict[str, Any]) -> Version:
        status = deployment.get("status") or {}
        desired = deployment["spec"].get("replicas", 1)
        health: Health
        try:
            message, done = rollout_status(deployment)
        except DeployFailed as failure:
            message, done = str(failure), False
            health = "unhealthy"
        else:
            if desired == 0:
                health = "stopped"
            elif done and status.get("availableReplicas", 0) > 0:
                health = "healthy"
            elif _condition(status, "Progressing").get("status") == "True":
                health = "starting"
            else:
                health = "unhealthy"
        revision = (deployment["metadata"].get("annotations") or {}).get(KUBE_REVISION, "?")
        detail = (
            f"{status.get('readyReplicas', 0)}/{desired} ready, "
            f"{status.get('availableReplicas', 0)} available, deployment revision {revision}"
        )
        if not done:
            detail += f"; {message}"
        return Version(
            revision=template_revision(deployment),
            image=deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            endpoint=self._service_endpoint(),
            health=health,
            detail=detail,
            ref=f"deployment/{self.name} in namespace {self.ns}",
        )

    def _service_endpoint(self) -> Endpoint | None:
        """Where the Service answers: its load balancer's address, a node port, or (a
        ClusterIP Service) its in-cluster name, tested through the API server's proxy."""
        service = self.get_object("Service", self.name)
        if service is None:
            return None
        spec = service.get("spec") or {}
        port = (spec.get("ports") or [{}])[0]
        kind = spec.get("type", "ClusterIP")
        proxy = (
            path("Service", self.ns, self.name) + f":{port.get('name') or port.get('port')}/proxy"
        )
        if kind == "LoadBalancer":
            ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            host = next((i.get("ip") or i.get("hostname") for i in ingress if i), None)
            if not host:
                return None
            return _endpoint(_base(host, port.get("port", 80)))
        if kind == "NodePort":
            node = self._node_address()
            base = _base(node or "<node-address>", port.get("nodePort", 0))
            if node:
                return _endpoint(base)
            return _endpoint(
                base,
                test=self.forwarder.url(proxy),
                note="a NodePort Service: any node's address answers on this port (this "
                "identity may not list nodes, so the tests went through the API server's proxy)",
            )
        in_cluster = _base(f"{self.name}.{self.ns}.svc.cluster.local", port.get("port", 80))
        return _endpoint(
            in_cluster,
            test=self.forwarder.url(proxy),
            note="a ClusterIP Service: internal to the cluster; the tests went through the API "
            "server's service proxy",
        )

    def _node_address(self) -> str | None:
        try:
            nodes = self.cluster.request("GET", "/api/v1/nodes").get("items", [])
        except ApiException:
            return None  # a namespaced Role cannot list nodes
        for wanted in ("ExternalIP", "InternalIP"):
            for node in nodes:
                for address in (node.get("status") or {}).get("addresses") or []:
                    if address.get("type") == wanted:
                        return str(address["address"])
        return None

    # An interrupted deploy -------------------------------------------------------------------
    def tidy(self) -> list[str]:
        done: list[str] = []
        if self._delete("Deployment", self.candidate):
            done.append(f"removed the candidate deployment {self.candidate}")
        deployment = self.get_object("Deployment", self.name)
        if deployment is None:
            return done
        revision = template_revision(deployment)
        confirmed = (deployment["metadata"].get("annotations") or {}).get(CONFIRMED)
        if confirmed is None:
            removed = self._remove_applied()
            done.append(f"removed {', '.join(removed)}: revision {revision} was never confirmed")
        elif confirmed != revision:
            self._undo(deployment, confirmed, Deadline(self.settings.ready_timeout_s))
            done.append(
                f"rolled deployment {self.name} back to the confirmed revision {confirmed}: "
                f"revision {revision} was promoted and never confirmed"
            )
        return done

    # A new version ---------------------------------------------------------------------------
    def apply(self, release: Release) -> Version:
        manifests = [yaml.safe_load(text) for text in release.artifacts.values()]
        self._applied = {m["kind"]: m for m in manifests if isinstance(m, dict) and "kind" in m}
        deployment = objects.with_revision(self._applied["Deployment"], release.revision)
        self._applied["Deployment"] = deployment
        self._apply_pull_secret(deployment)
        candidate = objects.candidate(deployment, release.revision)
        self._progress(
            f"applying the candidate deployment {self.candidate} (one replica, outside the Service)"
        )
        self.apply_object(candidate)
        return Version(release.revision, str(release.image), None, "starting", ref=self.candidate)

    def wait(self, version: Version, deadline: Deadline) -> Version:
        deployment = self._watch(version.ref, version.revision, deadline)
        selector = deployment["spec"]["selector"]["matchLabels"]
        pods = [p for p in self.watch.pods(selector, version.revision) if _ready(p)]
        if not pods:
            raise DeployFailed(f"deployment {version.ref} rolled out, but no pod of it is ready")
        pod = pods[0]["metadata"]["name"]
        proxy = path("Pod", self.ns, pod) + ":http/proxy"
        endpoint = Endpoint(
            scoring_uri=f"{self.cluster.host}{proxy}/score",
            swagger_uri=f"{self.cluster.host}{proxy}/swagger.json",
            test_uri=self.forwarder.url(proxy) + "/score",
        )
        return Version(version.revision, version.image, endpoint, "healthy", ref=f"pod/{pod}")

    def promote(self, candidate: Version, previous: Version | None) -> Version:
        if not self._applied:
            raise RuntimeError("promote() before apply()")
        verb = "updating" if previous is not None else "creating"
        self._progress(
            f"{verb} deployment {self.name} (rolling: a new pod is ready before an old one goes)"
        )
        self.apply_object(self._applied["Deployment"])
        self.apply_object(self._applied["Service"])
        if "HorizontalPodAutoscaler" in self._applied:
            self.apply_object(self._applied["HorizontalPodAutoscaler"])
        elif self._owned(self.get_object("HorizontalPodAutoscaler", self.name)):
            # autoscale was removed from deploy.yaml: the replicas field owns the count again.
            self._delete("HorizontalPodAutoscaler", self.name)
        deadline = Deadline(self.settings.ready_timeout_s)
        self._watch(self.name, candidate.revision, deadline)
        endpoint = self._wait_for_address(deadline)
        if previous is not None:
            self._let_old_pods_leave(deadline)
        deployment = self.get_object("Deployment", self.name) or {}
        return Version(
            candidate.revision,
            candidate.image,
            endpoint,
            "healthy",
            detail=self._version(deployment).detail if deployment else "",
            ref=f"deployment/{self.name} in namespace {self.ns}",
        )

    def _let_old_pods_leave(self, deadline: Deadline) -> None:
        """A rollout is done when the old pods are deleted, but each keeps serving its
        connections through its preStop delay (while endpoints and load balancers forget
        it), then drains. Wait that long, so the tests that follow on the Service's address
        test the new version alone, under the traffic it now takes."""
        spec = self._applied["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        pre_stop = spec.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        settle = float(pre_stop) + SETTLE_MARGIN_S
        self._progress(
            f"waiting {settle:g} s for the previous pods to leave the Service (their preStop "
            "delay) before testing it",
            "detail",
        )
        deadline.sleep(settle)

    def confirm(self, version: Version) -> None:
        self._check_no_restarts(version.revision)
        self._call(
            f"recording revision {version.revision} on deployment {self.name}",
            "PATCH",
            path("Deployment", self.ns, self.name),
            query={"fieldManager": FIELD_MANAGER},
            body={"metadata": {"annotations": {CONFIRMED: version.revision}}},
            content_type=MERGE,
        )
        try:
            self._delete("Deployment", self.candidate)
        except (ApiException, DeployFailed, urllib3.exceptions.HTTPError) as error:
            self._progress(
                f"could not remove the candidate deployment ({error}); the next deploy does",
                "warning",
            )

    def _check_no_restarts(self, revision: str) -> None:
        """A new pod that restarted while it was tested (it passed, then died under
        traffic) fails the deploy before it is confirmed: the rollback restores the old."""
        deployment = self.get_object("Deployment", self.name)
        if deployment is None:
            raise DeployFailed(f"deployment {self.name} is gone")
        for pod in self.watch.pods(deployment["spec"]["selector"]["matchLabels"], revision):
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                if container.get("restartCount", 0):
                    last = (container.get("lastState") or {}).get("terminated") or {}
                    name = pod["metadata"]["name"]
                    raise DeployFailed(
                        f"pod {name} restarted {container['restartCount']} times after taking "
                        f"over (its container exited with code {last.get('exitCode', '?')})",
                        self.watch.evidence([pod], previous=True),
                    )

    def roll_back(self, release: Release, previous: Version | None) -> None:
        self._delete("Deployment", self.candidate)
        deployment = self.get_object("Deployment", self.name)
        if deployment is None or template_revision(deployment) != release.revision:
            return  # the service was not touched
        if previous is None:
            self._remove_applied()
            return
        self._undo(deployment, previous.revision, Deadline(self.settings.ready_timeout_s))

    def _undo(self, deployment: dict[str, Any], revision: str, deadline: Deadline) -> None:
        """Apply the pod template of the newest ReplicaSet that ran ``revision`` again, and
        wait for that rollout (``kubectl rollout undo --to-revision``)."""
        uid = deployment["metadata"]["uid"]
        sets = [
            rs
            for rs in self._list("ReplicaSet", _labels(deployment["spec"]["selector"]))
            if any(o.get("uid") == uid for o in rs["metadata"].get("ownerReferences") or [])
            and template_revision(rs) == revision
        ]
        if not sets:
            raise DeployFailed(
                f"no ReplicaSet of deployment {self.name} runs revision {revision} any more "
                "(spec.revisionHistoryLimit): nothing to roll back to"
            )
        found = max(sets, key=lambda rs: int(_annotation(rs, KUBE_REVISION) or 0))
        base = self._applied.get("Deployment") or objects.intent(deployment)
        self._progress(
            f"rolling deployment {self.name} back to revision {revision} (ReplicaSet "
            f"{found['metadata']['name']}, deployment revision {_annotation(found, KUBE_REVISION)})"
        )
        self.apply_object(objects.undo(base, found))
        self._watch(self.name, revision, deadline)

    def _watch(self, name: str, revision: str, deadline: Deadline) -> dict[str, Any]:
        try:
            return self.watch.wait(name, revision, deadline)
        except ApiException as error:
            raise explain(error, f"watching the rollout of {name}", self.cluster) from error

    def _wait_for_address(self, deadline: Deadline) -> Endpoint:
        """The Service's address: a cloud load balancer takes a while to get one."""
        said = False
        while True:
            endpoint = self._service_endpoint()
            if endpoint is not None:
                return endpoint
            if deadline.expired:
                raise deadline.exceeded(f"service {self.name} got no load balancer address")
            if not said:
                self._progress(
                    f"waiting for service {self.name}'s load balancer address", "progress"
                )
                said = True
            deadline.sleep(ADDRESS_POLL_S)

    def _apply_pull_secret(self, deployment: dict[str, Any]) -> None:
        names = deployment["spec"]["template"]["spec"].get("imagePullSecrets") or []
        if not names:
            return
        registry = self.target.registry
        env = self.session.env
        missing = [n for n in (registry.username_env, registry.password_env) if not env.get(n)]
        if missing:
            raise UserError(
                f"the image pull secret of {self.target.name} is made from the registry's "
                f"credentials, and {' and '.join(missing)} is not set; set it, or set "
                "pull_secret: false when the cluster pulls by itself (AKS attached to ACR)"
            )
        password = env[registry.password_env]
        self.session.secrets.add(password)
        server = registry.address.split("/", 1)[0]
        labels = deployment["metadata"].get("labels") or {}
        login = (server, env[registry.username_env], password)
        secret = objects.pull_secret(names[0]["name"], self.ns, labels, login)
        self.apply_object(secret)

    # Logs and removal ------------------------------------------------------------------------
    def _revision_pods(self, revision: str) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = []
        for name in (self.name, self.candidate):
            deployment = self.get_object("Deployment", name)
            if deployment is not None:
                pods += self.watch.pods(deployment["spec"]["selector"]["matchLabels"], revision)
        return pods

    def logs(self, revision: str, tail: int) -> list[str]:
        names = [p["metadata"]["name"] for p in self._revision_pods(revision)]
        return pod_logs.merged(self.cluster, self.ns, names, tail)

    def follow(self, revision: str, tail: int) -> Iterator[str]:
        """Every pod's log as it comes, merged (``kubectl logs -f -l ... --prefix``)."""
        names = [p["metadata"]["name"] for p in self._revision_pods(revision)]
        return pod_logs.follow(self.cluster, self.ns, names, tail)

    def remove(self, images: bool) -> list[str]:
        """Everything deployer applied for this target: found by its labels, and deleted
        only where deployer's field manager applied it."""
        selector = objects.owner_selector(self.target.service, self.target.name)
        removed = []
        pod_selectors = []
        for kind in objects.APPLIED_KINDS:
            for obj in self._list(kind, selector):
                if not objects.applied_by_deployer(obj):
                    continue
                name = obj["metadata"]["name"]
                if kind == "Deployment":
                    pod_selectors.append(_labels(obj["spec"]["selector"]))
                if self._delete(kind, name):
                    removed.append(f"{kind.lower()} {self.ns}/{name}")
        self._wait_pods_gone(pod_selectors)
        return removed

    def _remove_applied(self) -> list[str]:
        """The service's objects (not the candidate): after a first deploy that failed."""
        removed = []
        for kind in ("HorizontalPodAutoscaler", "Deployment", "Service", "Secret"):
            name = self.name if kind != "Secret" else self.name + "-registry"
            if self._owned(self.get_object(kind, name)) and self._delete(kind, name):
                removed.append(f"{kind.lower()} {name}")
        return removed

    def _owned(self, obj: dict[str, Any] | None) -> bool:
        return obj is not None and objects.applied_by_deployer(obj)

    def _wait_pods_gone(self, selectors: list[str]) -> None:
        """Until the deleted Deployments' pods are gone: nothing of them serves any more."""
        deadline = Deadline(GONE_WAIT_S)
        for selector in selectors:
            while self._list("Pod", selector) and not deadline.expired:
                deadline.sleep(1.0)

    def close(self) -> None:
        self.forwarder.close()
        self.cluster.close()

    def _progress(self, message: str, level: Level = "step") -> None:
        key = self.target.name if level == "progress" else ""
        self.session.progress(Event(level, f"{self.target.name}: {message}", key=key))


def _base(host: str, port: int) -> str:
    return f"http://{host}" + ("" if port == 80 else f":{port}")


def _endpoint(base: str, test: str = "", note: str = "") -> Endpoint:
    return Endpoint(
        f"{base}/score",
        f"{base}/swagger.json",
        test_uri=f"{test}/score" if test else "",
        note=note,
    )


def _labels(selector: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items())


def _annotation(obj: dict[str, Any], key: str) -> str | None:
    value = (obj["metadata"].get("annotations") or {}).get(key)
    return None if value is None else str(value)


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in status.get("conditions") or [] if c.get("type") == kind]
    return dict(found[0]) if found else {}


def _ready(pod: dict[str, Any]) -> bool:
    return _condition(pod.get("status") or {}, "Ready").get("status") == "True"
