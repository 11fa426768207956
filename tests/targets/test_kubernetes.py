"""The kubernetes target's manifests: valid for the API server, and what they mean."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deployer.config.loader import load_config
from deployer.image import USER_ID
from deployer.label_values import object_name
from deployer.plan import make_plan
from tests.conftest import EXAMPLE

# The Kubernetes release the manifests are validated against (strict: unknown fields fail).
KUBERNETES_VERSION = "1.37.0"
TARGET = "production"
AUTOSCALE = "autoscale: {min_replicas: 2, max_replicas: 10, target_cpu_utilization: 70}, "
RESOURCES = "resources: {cpu: 500m, memory: 1Gi}"
NO_AUTOSCALE_EDIT = ("replicas: 2, " + AUTOSCALE, "replicas: 3, ")

Manifests = dict[str, dict[str, Any]]


def _artifacts(config_path: Path) -> dict[str, str]:
    plan = make_plan(load_config(config_path), config_path, [TARGET])
    return plan.targets[0].artifacts


def _parse(artifacts: dict[str, str]) -> Manifests:
    """Each file parsed, checking that it holds exactly one object."""
    manifests: Manifests = {}
    for name, text in artifacts.items():
        documents = list(yaml.safe_load_all(text))
        assert len(documents) == 1, f"{name} holds {len(documents)} objects"
        manifests[name] = documents[0]
    return manifests


def _render(config_path: Path) -> Manifests:
    return _parse(_artifacts(config_path))


def _container(manifests: Manifests) -> dict[str, Any]:
    (container,) = manifests["deployment.yaml"]["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


@pytest.fixture(scope="module")
def example() -> Manifests:
    return _render(EXAMPLE / "deploy.yaml")


def _assert_valid(manifests: Manifests) -> None:
    for name, manifest in manifests.items():
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{name}: {path}: {exc.message}")


def test_example_renders_a_deployment_a_service_and_an_autoscaler(example: Manifests) -> None:
    assert {name: m["kind"] for name, m in example.items()} == {
        "deployment.yaml": "Deployment",
        "service.yaml": "Service",
        "hpa.yaml": "HorizontalPodAutoscaler",
    }
    _assert_valid(example)


def test_objects_are_named_and_labelled_from_the_config(example: Manifests) -> None:
    for manifest in example.values():
        metadata = manifest["metadata"]
        assert metadata["name"] == f"diabetes-{TARGET}"
        assert metadata["namespace"] == "ml"
        labels = metadata["labels"]
        assert labels["app.kubernetes.io/name"] == "diabetes"
        assert labels["app.kubernetes.io/instance"] == TARGET
        assert labels["app.kubernetes.io/managed-by"] == "deployer"
        assert labels["deployer.ai/model-name"] == "diabetes-ridge"
    plan = make_plan(load_config(EXAMPLE / "deploy.yaml"), EXAMPLE / "deploy.yaml", [TARGET])
    version = plan.inputs.model_version
    assert example["deployment.yaml"]["metadata"]["labels"]["app.kubernetes.io/version"] == version
    # The shared scoring image: the kind builds none of its own.
    assert plan.targets[0].image.repository == "diabetes"
    assert _container(example)["image"] == str(plan.targets[0].image)


def test_two_targets_in_one_namespace_name_their_objects_apart(
    example_copy: Callable[..., Path],
) -> None:
    config_path = example_copy()
    text = config_path.read_text()
    production = next(line for line in text.splitlines() if line.startswith("  production:"))
    config_path.write_text(
        text.replace(
            production, production + "\n" + production.replace("production:", "canary:    ")
        )
    )
    plan = make_plan(load_config(config_path), config_path, ["production", "canary"])
    names = {
        target.name: {
            yaml.safe_load(text)["metadata"]["name"] for text in target.artifacts.values()
        }
        for target in plan.targets
    }
    assert names == {"production": {"diabetes-production"}, "canary": {"diabetes-canary"}}


def test_long_names_fit_a_dns_label_and_stay_apart() -> None:
    first, second = object_name("s" * 40, "t" * 30), object_name("s" * 40, "t" * 29 + "u")
    assert len(first) <= 63 and len(second) <= 63 and first != second


def test_selectors_use_stable_labels_the_pods_carry(example: Manifests) -> None:
    deployment = example["deployment.yaml"]["spec"]
    selector = deployment["selector"]["matchLabels"]
    pod_labels = deployment["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert example["service.yaml"]["spec"]["selector"] == selector
    # A selector that named the version would be immutable and different on every release.
    assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
    assert "app.kubernetes.io/version" in pod_labels


def test_container_serves_on_the_target_port_with_health_probes(example: Manifests) -> None:
    container = _container(example)
    assert container["name"] == "scoring"
    (port,) = container["ports"]
    assert port["containerPort"] == 5001
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env == {"DEPLOYER_SERVER_HOST": "0.0.0.0", "DEPLOYER_SERVER_PORT": "5001"}
    probes = {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert {kind: probe["httpGet"]["path"] for kind, probe in probes.items()} == {
        "startupProbe": "/",
        "readinessProbe": "/ready",
        "livenessProbe": "/",
    }
    assert all(probe["httpGet"]["port"] == port["name"] for probe in probes.values())
    startup = probes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # slow model loads


@pytest.mark.parametrize("timeout_s", [1, 60, 600])
def test_timings_follow_the_scoring_timeout(
    example_copy: Callable[..., Path], timeout_s: int
) -> None:
    """A request may run for scoring_timeout_ms: a stopping pod waits that long for its last
    requests. Liveness does not: GET / is answered while run() is busy."""
    manifests = _render(
        example_copy(("scoring_timeout_ms: 60000", f"scoring_timeout_ms: {timeout_s}000"))
    )
    container = _container(manifests)
    liveness = container["livenessProbe"]
    assert liveness["failureThreshold"] == 3
    pod = manifests["deployment.yaml"]["spec"]["template"]["spec"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + timeout_s


def test_resources_reserve_memory_and_request_cpu(example: Manifests) -> None:
    resources = _container(example)["resources"]
    assert resources["requests"] == {"cpu": "500m", "memory": "1Gi"}
    assert resources["limits"] == {"memory": "1Gi"}


def test_pod_runs_as_the_image_user_without_privileges(example: Manifests) -> None:
    pod = example["deployment.yaml"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == USER_ID
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    container = _container(example)
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    # With a read-only root, /tmp is the one writable place Python expects.
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    assert {"name": mount["name"], "emptyDir": {}} in pod["volumes"]


def test_rolling_update_keeps_the_old_version_until_the_new_one_is_ready(
    example: Manifests,
) -> None:
    strategy = example["deployment.yaml"]["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] >= 1


def test_autoscaler_owns_the_replica_count(example: Manifests) -> None:
    assert "replicas" not in example["deployment.yaml"]["spec"]
    hpa = example["hpa.yaml"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": example["deployment.yaml"]["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}


def test_without_autoscale_the_deployment_sets_replicas(
    example_copy: Callable[..., Path],
) -> None:
    manifests = _render(example_copy(NO_AUTOSCALE_EDIT))
    assert sorted(manifests) == ["deployment.yaml", "service.yaml"]
    assert manifests["deployment.yaml"]["spec"]["replicas"] == 3
    _assert_valid(manifests)


def test_the_image_is_pulled_with_a_secret_of_the_target(example: Manifests) -> None:
    # One secret per target (named like its objects), so that down removes it with them.
    pod = example["deployment.yaml"]["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "diabetes-production-registry"}]


@pytest.mark.parametrize(
    "edit",
    [
        ("auth: basic", "auth: none"),  # an open registry
        (RESOURCES, RESOURCES + ", pull_secret: false"),  # the cluster pulls by itself
    ],
    ids=["open-registry", "cluster-pulls"],
)
def test_no_pull_secret_when_the_cluster_pulls_by_itself(
    example_copy: Callable[..., Path], edit: tuple[str, str]
) -> None:
    manifests = _render(example_copy(edit))
    assert "imagePullSecrets" not in manifests["deployment.yaml"]["spec"]["template"]["spec"]
    _assert_valid(manifests)


def test_service_exposes_port_80_on_the_named_container_port(
    example: Manifests, example_copy: Callable[..., Path]
) -> None:
    spec = example["service.yaml"]["spec"]
    assert spec["type"] == "LoadBalancer"
    assert spec["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    config = example_copy(
        (RESOURCES, RESOURCES + ", service_type: ClusterIP, port: 8000"),
    )
    manifests = _render(config)
    assert manifests["service.yaml"]["spec"]["type"] == "ClusterIP"
    container = _container(manifests)
    assert container["ports"][0]["containerPort"] == 8000
    assert {"name": "DEPLOYER_SERVER_PORT", "value": "8000"} in container["env"]
    _assert_valid(manifests)


@pytest.mark.parametrize("version", ["20240101", "1e5", "1.5e3", "true"])
def test_versions_that_look_like_other_types_stay_strings(
    example_copy: Callable[..., Path], version: str
) -> None:
    # Unquoted, YAML readers take these for numbers or booleans (Go's reads 1e5 as a float,
    # PyYAML does not), and a label value must be a string.
    artifacts = _artifacts(example_copy(("version: auto", f'version: "{version}"')))
    for name, manifest in _parse(artifacts).items():
        assert manifest["metadata"]["labels"]["app.kubernetes.io/version"] == version
        assert f'"app.kubernetes.io/version": "{version}"' in artifacts[name]
    _assert_valid(_parse(artifacts))


def test_no_secret_value_is_rendered(
    example_copy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-Value-that-must-not-leak"
    monkeypatch.setenv("REGISTRY_USERNAME", "user-" + secret)
    monkeypatch.setenv("REGISTRY_PASSWORD", secret)
    # ACR pulls through AKS's kubelet identity unless the target asks for a pull secret.
    acr = example_copy(("auth: basic", "auth: acr"), (RESOURCES, RESOURCES + ", pull_secret: true"))
    for config in (EXAMPLE / "deploy.yaml", acr):
        artifacts = _artifacts(config)
        assert "imagePullSecrets" in artifacts["deployment.yaml"]
        for name, text in artifacts.items():
            assert secret not in text, name
            # Not even a placeholder: the pull secret is made at deploy time, not applied.
            assert "REGISTRY_" not in text, name


def test_rendering_is_deterministic(example_copy: Callable[..., Path]) -> None:
    first = _artifacts(EXAMPLE / "deploy.yaml")
    assert first == _artifacts(EXAMPLE / "deploy.yaml")
    # Same inputs in another folder: same bytes (no paths, times or random names).
    assert _artifacts(example_copy()) == first
