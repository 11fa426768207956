"""Apply, rollout and rollback against the Kubernetes double, and what deployer adds on top.

One double (tests/doubles/kubernetes: the API server on 127.0.0.1, its controller running
pods as real Docker containers) and one copy of the example with two kubernetes targets,
``replicas: 2`` each, in namespace ml: ``bench``, which deployer deploys, and ``platform``,
which this script drives itself with the official client, from the manifests
``deployer render`` writes for it (same image, same probes, same rolling strategy). Per
round, one after the other:

  apply               server-side apply (PATCH application/apply-patch+yaml, fieldManager
                      deployer) through the official client, one round trip per object: the
                      rendered Deployment changed (the one that starts the rollout below),
                      then it and the Service unchanged (median of 5 each)
  rollout (platform)  what ``kubectl apply --server-side`` + ``kubectl rollout status`` do:
                      apply the Deployment with a new environment variable, then read it
                      every 50 ms until observedGeneration >= generation and updated ==
                      replicas == available == spec.replicas
  deploy (deployer)   ``deployer deploy -t bench`` of a new version (a new environment
                      variable, so a new revision): the report's seconds.deploy (after build
                      and push), broken down by when its progress lines appeared
  rollback (deployer) the same, with the service Deployment's new pods crash-looping
                      (controller.crash_loop): seconds.deploy until it has failed and rolled
                      back through the previous ReplicaSet, while an independent client
                      (the conformance harness's Load) scores on the load balancer and
                      counts failed requests; split at its progress lines as above (the undo
                      rollout: from "rolling ... back to revision" to the next reading of
                      the Deployment)
  undo (platform)     ``kubectl rollout undo`` by hand: the platform Deployment's new pods
                      crash-loop (timed: apply until a pod is in CrashLoopBackOff); then
                      apply the previous ReplicaSet's pod template and wait for that rollout
                      as above (timed: the undo alone)

Prints a markdown table of medians, min and max over the rounds (nothing is written to
a file, as bench_aci.py). The double runs in this process (its API server, controller and
kubelet are threads): the client's round trips share the interpreter with it. It scales
the kubelet's timings by 0.1 (probe periods, restart back-offs, the preStop sleep): pods
become ready and crash loops show 10x sooner than on a real kubelet, and images come from
a registry on the same machine; so the figures show what the API round trips, rollouts
and deployer's own steps cost relative to each other, not what a real cluster takes.

    eval "$(scripts/dev-env)"; .venv/bin/python benchmarks/bench_kubernetes.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform as host
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubernetes import client, config  # noqa: E402

from deployer.targets.kubernetes.objects import pull_secret  # noqa: E402
from tests.conformance.harness import Load, ModelRepo  # noqa: E402
from tests.conformance.platforms import KubernetesPlatform  # noqa: E402
from tests.doubles.kubernetes.fixtures import KubernetesDouble  # noqa: E402

NS = "ml"
REPLICAS = 2
TIME_SCALE = 0.1  # KubernetesDouble's default, passed explicitly below
POLL_S = 0.05  # the baseline's reads of the Deployment (deployer's RolloutWatch: 1 s)
APPLY = "application/apply-patch+yaml"
READY_S = 300
VERBOSE = False  # --verbose: deployer's output, with the seconds since the deploy started
DEV_ENV_NAMES = ("REGISTRY_USERNAME", "REGISTRY_PASSWORD", "DEPLOYER_TEST_REGISTRY", "DOCKER_HOST")

# Progress lines of a deploy, in the order it prints them (deployer/rollout.py and the
# kubernetes driver): the step each one opens.
MARKS = {
    "candidate": "applying the candidate deployment",
    "candidate tests": "testing the new version at",
    "promote": "(rolling: a new pod is ready before an old one goes)",
    "service tests": "the new version serves; testing",
    "retire": "retiring the previous version",
    "rolling back": "rolling back revision",
    "undo": "back to revision",
}

# The rollout watch's message once a rollout is done ("2/2 replicas available"; not
# "1/2 updated replicas available").
ROLLED_OUT = re.compile(r": \d+/\d+ replicas available$")


# The platform's side: the official client, as kubectl would use it --------------------------
class Kubectl:
    """``kubectl apply --server-side``, ``rollout status`` and ``rollout undo``, done with
    the official client (raw JSON answers, as deployer reads them)."""

    def __init__(self, kubeconfig: Path) -> None:
        configuration = client.Configuration()
        config.load_kube_config(str(kubeconfig), client_configuration=configuration)
        self.api = client.ApiClient(configuration)
        self.apps = client.AppsV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

    def apply(self, manifest: dict[str, Any]) -> float:
        """Server-side apply of one object as field manager deployer; its round trip (s)."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        patch: Callable[..., Any] = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
            "Secret": self.core.patch_namespaced_secret,
        }[kind]
        started = time.perf_counter()
        response = patch(
            name,
            NS,
            manifest,
            field_manager="deployer",
            _content_type=APPLY,
            _preload_content=False,
        )
        json.loads(response.data)
        return time.perf_counter() - started

    def deployment(self, name: str) -> dict[str, Any]:
        response = self.apps.read_namespaced_deployment(name, NS, _preload_content=False)
        return dict(json.loads(response.data))

    def replica_sets(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        labels = deployment["spec"]["selector"]["matchLabels"]
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        response = self.apps.list_namespaced_replica_set(
            NS, label_selector=selector, _preload_content=False
        )
        uid = deployment["metadata"]["uid"]
        return [
            rs
            for rs in json.loads(response.data)["items"]
            if any(o.get("uid") == uid for o in rs["metadata"].get("ownerReferences") or [])
        ]

    def pods(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        labels = deployment["spec"]["selector"]["matchLabels"]
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        response = self.core.list_namespaced_pod(
            NS, label_selector=selector, _preload_content=False
        )
        return list(json.loads(response.data)["items"])

    def rollout_status(self, name: str, within_s: float = READY_S) -> None:
        """Until the rollout is done, as ``kubectl rollout status`` reads it."""
        deadline = time.monotonic() + within_s
        while True:
            found = self.deployment(name)
            status = found.get("status") or {}
            desired = found["spec"].get("replicas", 1)
            updated = status.get("updatedReplicas", 0)
            if (
                status.get("observedGeneration", 0) >= found["metadata"]["generation"]
                and updated >= desired
                and status.get("replicas", 0) == updated
                and status.get("availableReplicas", 0) >= updated
            ):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"deployment {name} did not roll out: {status}")
            time.sleep(POLL_S)

    def until_crash_loop(self, name: str, within_s: float = 120) -> None:
        """Until a pod of the Deployment is in CrashLoopBackOff (only the new ones crash)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            for pod in self.pods(self.deployment(name)):
                for container in (pod.get("status") or {}).get("containerStatuses") or []:
                    waiting = (container.get("state") or {}).get("waiting") or {}
                    if waiting.get("reason") == "CrashLoopBackOff":
                        return
            time.sleep(POLL_S)
        raise SystemExit(f"no pod of {name} went into CrashLoopBackOff")

    def undo_manifest(self, applied: dict[str, Any], name: str) -> dict[str, Any]:
        """``applied`` with the pod template of the previous ReplicaSet (the one with the
        second-highest deployment revision), as ``kubectl rollout undo`` picks it."""
        sets = self.replica_sets(self.deployment(name))
        sets.sort(
            key=lambda rs: int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
        )
        if len(sets) < 2:
            raise SystemExit(f"deployment {name} has no previous ReplicaSet")
        template = copy.deepcopy(sets[-2]["spec"]["template"])
        template["metadata"].get("labels", {}).pop("pod-template-hash", None)
        found = copy.deepcopy(applied)
        found["spec"]["template"] = template
        return found


def with_env(deployment: dict[str, Any], value: str) -> dict[str, Any]:
    """The rendered Deployment with BENCH_ROUND=value in its container: a new pod template."""
    found = copy.deepcopy(deployment)
    container = found["spec"]["template"]["spec"]["containers"][0]
    env = [e for e in container.get("env", []) if e["name"] != "BENCH_ROUND"]
    container["env"] = [*env, {"name": "BENCH_ROUND", "value": value}]
    return found


# deployer's side ------------------------------------------------------------------------------
class Bench(ModelRepo):
    """The example with the ``bench`` target (deployed by deployer) and the ``platform``
    target (rendered by deployer, applied by this script)."""

    platform: KubernetesPlatform

    def write(self, ready_timeout_s: float = READY_S, **variables: str) -> None:
        super().write(ready_timeout_s, **variables)
        line = f"  platform: {self.platform.target_yaml(ready_timeout_s)}\n"
        self.config.write_text(self.config.read_text() + line)

    def render_platform(self, out: Path) -> dict[str, dict[str, Any]]:
        rendered = self.run("render", "-t", "platform", "-o", str(out))
        if rendered.returncode != 0:
            raise SystemExit(f"deployer render failed:\n{rendered.stdout}{rendered.stderr}")
        return {
            name: yaml.safe_load((out / "platform" / f"{name}.yaml").read_text())
            for name in ("deployment", "service")
        }


def timed_deploy(repo: Bench, expect_rollback: bool = False) -> tuple[dict[str, float], str]:
    """``deployer deploy``: seconds from its start to each progress mark, its wall time
    (``total``) and the report's seconds.deploy (``deploy``); and the scoring URI."""
    started = time.monotonic()
    proc = repo.start_deploy()
    seen: dict[str, float] = {}
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.monotonic() - started
        lines.append(line)
        if VERBOSE:
            print(f"    {now:6.2f} {line}", end="")
        for step, mark in MARKS.items():
            if mark in line and step not in seen:
                seen[step] = now
        if "undo" in seen and "undo done" not in seen and ROLLED_OUT.search(line):
            seen["undo done"] = now  # the rollout watch's reading that the undo is done
    code = proc.wait()
    seen["total"] = time.monotonic() - started
    target = (repo.report().get("targets") or [{}])[0]
    if expect_rollback:
        ok = code == 1 and target.get("status") == "failed" and "undo done" in seen
        ok = ok and "the previous version" in target.get("error", "")
    else:
        ok = code == 0 and target.get("status") == "deployed"
    if not ok:
        print("".join(lines[-60:]), file=sys.stderr)
        expected = "fail and roll back" if expect_rollback else "deploy"
        raise SystemExit(
            f"deployer deploy did not {expected} (exit {code}): {target.get('error', '')}\n"
            f"reports: {repo.reports}"
        )
    seen["deploy"] = float(target["seconds"]["deploy"])
    return seen, str(target.get("scoring_uri") or "")


# One round --------------------------------------------------------------------------------------
def platform_rollout(kubectl: Kubectl, manifests: dict[str, Any], index: int) -> dict[str, float]:
    """Apply the platform Deployment with a new environment variable and wait for it; then
    the applies again, unchanged (as every deploy applies the Service), median of 5 each."""
    base = manifests["deployment"]["metadata"]["name"]
    changed = with_env(manifests["deployment"], str(index))
    f: dict[str, float] = {}
    started = time.perf_counter()
    f["apply Deployment (changed: starts a rollout)"] = kubectl.apply(changed)
    kubectl.rollout_status(base)
    rollout = time.perf_counter() - started
    f["apply Deployment (unchanged)"] = statistics.median(kubectl.apply(changed) for _ in range(5))
    f["apply Service (unchanged)"] = statistics.median(
        kubectl.apply(manifests["service"]) for _ in range(5)
    )
    f["rollout (platform)"] = rollout
    return f


def deployer_update(repo: Bench, index: int) -> tuple[dict[str, float], str]:
    """deployer: an update (a new environment variable in the image: a new revision)."""
    repo.write(CONFORMANCE_VERSION=f"update-{index}")
    m, uri = timed_deploy(repo)
    f = {
        "deploy (deployer): seconds.deploy": m["deploy"],
        "  candidate rollout (1 replica)": m["candidate tests"] - m["candidate"],
        "  tests on the candidate (API server's pod proxy)": m["promote"] - m["candidate tests"],
        "  service rollout (2 replicas)": m["service tests"] - m["promote"],
        "  tests on the load balancer, confirm, logs": m["retire"] - m["service tests"],
        "  the rest (connect, read live, retire)": m["deploy"] - (m["retire"] - m["candidate"]),
        "deploy (deployer): wall time, build and push included": m["total"],
    }
    return f, uri


def deployer_rollback(
    repo: Bench, cluster: KubernetesDouble, uri: str, index: int
) -> tuple[dict[str, float], Load]:
    """deployer: a version whose service pods crash-loop, rolled back while an independent
    client scores on the load balancer."""
    assert cluster.controller is not None
    name = f"{repo.service}-bench"
    repo.write(CONFORMANCE_VERSION=f"crash-{index}")
    cluster.controller.crash_loop(name, NS)  # the service's pods only, not the candidate's
    try:
        with Load(uri).running() as load:
            m, _ = timed_deploy(repo, expect_rollback=True)
    finally:
        cluster.controller.clear_faults(name, NS)
    f = {
        "rollback (deployer): seconds.deploy": m["deploy"],
        "  candidate rollout and tests": m["promote"] - m["candidate"],
        "  promote until the crash loop is seen": m["rolling back"] - m["promote"],
        "  rolling back until the undo is applied": m["undo"] - m["rolling back"],
        "  undo rollout (apply until the watch sees it done)": m["undo done"] - m["undo"],
        "  the rest (connect, read live, what serves now)": m["deploy"]
        - (m["undo done"] - m["candidate"]),
    }
    return f, load


def platform_undo(
    kubectl: Kubectl, cluster: KubernetesDouble, manifests: dict[str, Any], index: int
) -> dict[str, float]:
    """The platform: a crash-looping template, then ``kubectl rollout undo`` by hand."""
    assert cluster.controller is not None
    base = manifests["deployment"]["metadata"]["name"]
    f: dict[str, float] = {}
    cluster.controller.crash_loop(base, NS)
    try:
        started = time.perf_counter()
        kubectl.apply(with_env(manifests["deployment"], f"crash-{index}"))
        kubectl.until_crash_loop(base)
        f["crash loop seen (platform: apply until CrashLoopBackOff)"] = (
            time.perf_counter() - started
        )
        undo = kubectl.undo_manifest(manifests["deployment"], base)
        sets = len(kubectl.replica_sets(kubectl.deployment(base)))
        started = time.perf_counter()
        kubectl.apply(undo)
        kubectl.rollout_status(base)
        f["undo (platform: apply the previous template, until rolled out)"] = (
            time.perf_counter() - started
        )
        if len(kubectl.replica_sets(kubectl.deployment(base))) != sets:
            raise SystemExit("the undo made a new ReplicaSet instead of reusing the previous one")
    finally:
        cluster.controller.clear_faults(base, NS)
    manifests["deployment"] = undo  # the template the next round changes
    return f


def one_round(
    repo: Bench, kubectl: Kubectl, cluster: KubernetesDouble, manifests: dict[str, Any], index: int
) -> dict[str, float]:
    update, uri = deployer_update(repo, index)
    f = platform_rollout(kubectl, manifests, index)
    f.update(update)
    f["what deployer adds: deploy (deployer) - rollout (platform)"] = (
        f["deploy (deployer): seconds.deploy"] - f["rollout (platform)"]
    )
    f["  service rollout: deployer's - platform's"] = (
        f["  service rollout (2 replicas)"] - f["rollout (platform)"]
    )
    rollback, load = deployer_rollback(repo, cluster, uri, index)
    f.update(rollback)
    f.update(platform_undo(kubectl, cluster, manifests, index))
    f["failed requests during the rollback (Load)"] = float(load.failed)
    f["requests answered during the rollback (Load)"] = float(load.ok)
    return f


def setup(repo: Bench, kubectl: Kubectl, root: Path, dev_env: dict[str, str]) -> dict[str, Any]:
    """deployer deploys the first version of ``bench``; ``platform`` is rendered from the
    same deploy.yaml (so the same image) and applied with its pull secret."""
    repo.write(CONFORMANCE_VERSION="first")
    first, _ = timed_deploy(repo)
    print(f"first deploy: {first['total']:.1f} s (seconds.deploy {first['deploy']:.2f})")
    manifests = repo.render_platform(root / "rendered")
    deployment = manifests["deployment"]
    labels = deployment["metadata"].get("labels") or {}
    secret = deployment["spec"]["template"]["spec"]["imagePullSecrets"][0]["name"]
    login = ("127.0.0.1:5000", dev_env["REGISTRY_USERNAME"], dev_env["REGISTRY_PASSWORD"])
    kubectl.apply(pull_secret(secret, NS, labels, login))
    manifests["deployment"] = with_env(deployment, "first")
    kubectl.apply(manifests["deployment"])
    kubectl.apply(manifests["service"])
    kubectl.rollout_status(deployment["metadata"]["name"])
    return manifests


# Output ------------------------------------------------------------------------------------------
def _cells(name: str, values: list[float]) -> list[str]:
    trio = [statistics.median(values), min(values), max(values)]
    if name.startswith(("failed", "requests")):
        return [f"{v:.0f}" for v in trio]
    if name.startswith("apply"):
        return [f"{v * 1000:.1f} ms" for v in trio]
    return [f"{v:.2f}" for v in trio]


def _table(rounds: list[dict[str, float]]) -> None:
    print(
        f"\n### Kubernetes double: medians of {len(rounds)} rounds (seconds unless marked), "
        f"replicas {REPLICAS}, {os.cpu_count()} cores, time_scale {TIME_SCALE}\n"
    )
    print("| step | median | min | max |\n| --- | ---: | ---: | ---: |")
    for name in rounds[0]:
        label = "&nbsp;&nbsp;· " + name.strip() if name.startswith("  ") else name
        print(f"| {label} | {' | '.join(_cells(name, [r[name] for r in rounds]))} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--verbose", action="store_true", help="print deployer's output")
    args = parser.parse_args()
    global VERBOSE  # noqa: PLW0603
    VERBOSE = args.verbose
    dev_env = {name: os.environ[name] for name in DEV_ENV_NAMES if name in os.environ}
    if "REGISTRY_PASSWORD" not in dev_env:
        raise SystemExit('run eval "$(scripts/dev-env)" first')
    os.environ.update(dev_env)  # the registry's credentials, for the deployer subprocesses
    began = time.monotonic()
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with KubernetesDouble(
            root / "kubernetes", docker_env=dict(os.environ), time_scale=TIME_SCALE
        ) as cluster:
            double = KubernetesPlatform(cluster, root, replicas=REPLICAS)
            repo = Bench(root / "repo", double, target="bench")
            kubectl = Kubectl(double.kubeconfig)
            manifests = setup(repo, kubectl, root, dev_env)
            for index in range(args.rounds):
                f = one_round(repo, kubectl, cluster, manifests, index)
                rounds.append(f)
                undo = next(v for k, v in f.items() if k.startswith("undo (platform"))
                print(
                    f"round {index + 1}: deploy {f['deploy (deployer): seconds.deploy']:.2f} s, "
                    f"rollout {f['rollout (platform)']:.2f} s, rollback "
                    f"{f['rollback (deployer): seconds.deploy']:.2f} s, undo {undo:.2f} s, "
                    f"{f['failed requests during the rollback (Load)']:.0f} failed requests",
                    flush=True,
                )
            # The double's close stops and removes every pod's container.
    _table(rounds)
    print(
        f"\nMachine: {os.cpu_count()} cores, {host.machine()}, {host.system()} "
        f"{host.release()}. The double's time_scale is {TIME_SCALE}: the kubelet's probe "
        f"periods, restart back-offs and preStop sleep are {1 / TIME_SCALE:.0f}x shorter than "
        "a real kubelet's, and images come from a registry on this machine. The platform "
        f"baseline reads the Deployment every {POLL_S * 1000:.0f} ms; deployer every "
        f"1 s. Run time {time.monotonic() - began:.0f} s."
    )


if __name__ == "__main__":
    main()
