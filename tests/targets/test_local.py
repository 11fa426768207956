"""The local target's container.json: a Docker Engine create body, and what it means."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker.types
import pytest

from deployer.config.loader import load_config
from deployer.plan import make_plan
from tests.conftest import EXAMPLE

TARGET = "local"
EXAMPLE_TARGET = "local:      {type: local, port: 8080, cpu_cores: 1, memory_gb: 1}"
# An API version recent enough for every HostConfig field used (Init: 1.25, NanoCpus: 1.25).
DOCKER_API_VERSION = "1.41"


def _artifacts(config_path: Path) -> dict[str, str]:
    plan = make_plan(load_config(config_path), config_path, [TARGET])
    return plan.targets[0].artifacts


def _spec(config_path: Path) -> dict[str, Any]:
    artifacts = _artifacts(config_path)
    assert sorted(artifacts) == ["container.json"]
    spec = json.loads(artifacts["container.json"])
    assert isinstance(spec, dict)
    return spec


def _image(config_path: Path) -> str:
    return str(make_plan(load_config(config_path), config_path, [TARGET]).targets[0].image)


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    return _spec(EXAMPLE / "deploy.yaml")


def test_spec_is_what_docker_py_would_send_for_the_same_settings(example: dict[str, Any]) -> None:
    # docker-py's own builders, given the example's settings by hand (1 core, 1 GiB), name
    # and encode every field: each field rendered must match what they produce.
    host_config = docker.types.HostConfig(
        version=DOCKER_API_VERSION,
        network_mode="host",
        nano_cpus=1_000_000_000,
        mem_limit="1g",
        memswap_limit="1g",
        restart_policy={"Name": "unless-stopped", "MaximumRetryCount": 0},
        init=True,
    )
    expected = docker.types.ContainerConfig(
        DOCKER_API_VERSION,
        _image(EXAMPLE / "deploy.yaml"),
        None,
        environment={"DEPLOYER_SERVER_HOST": "127.0.0.1", "DEPLOYER_SERVER_PORT": "8080"},
        labels=example["Labels"],
        host_config=host_config,
        stop_timeout=67,
    )
    assert set(example) <= set(expected)
    for key, value in example.items():
        assert value == expected[key], key


def test_example_runs_on_the_host_network_with_its_port_and_limits(
    example: dict[str, Any],
) -> None:
    assert example["Image"] == _image(EXAMPLE / "deploy.yaml")
    assert example["Image"].startswith("127.0.0.1:5000/diabetes:")
    assert example["Env"] == ["DEPLOYER_SERVER_HOST=127.0.0.1", "DEPLOYER_SERVER_PORT=8080"]
    host = example["HostConfig"]
    assert host["NetworkMode"] == "host"
    assert "PortBindings" not in host
    assert "ExposedPorts" not in example
    assert host["NanoCpus"] == 1_000_000_000
    assert host["Memory"] == host["MemorySwap"] == 1024**3
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert host["Init"] is True


def test_no_fixed_name_and_the_base_name_is_a_label(example: dict[str, Any]) -> None:
    assert "Name" not in example
    assert example["Labels"] == {
        "ai.deployer.base-name": "diabetes-local",
        "ai.deployer.model.name": "diabetes-ridge",
        "ai.deployer.model.version": make_plan(
            load_config(EXAMPLE / "deploy.yaml"), EXAMPLE / "deploy.yaml", [TARGET]
        ).inputs.model_version,
        "ai.deployer.service": "diabetes",
        "ai.deployer.target": "local",
    }


def test_settings_reach_env_cpus_and_memory(example_copy: Callable[..., Path]) -> None:
    config = example_copy(
        (
            EXAMPLE_TARGET,
            "local:      {type: local, port: 9000, host: 0.0.0.0, cpu_cores: 0.5, memory_gb: 1.5}",
        )
    )
    spec = _spec(config)
    assert spec["Env"] == ["DEPLOYER_SERVER_HOST=0.0.0.0", "DEPLOYER_SERVER_PORT=9000"]
    assert spec["HostConfig"]["NanoCpus"] == 500_000_000
    assert spec["HostConfig"]["Memory"] == 1_610_612_736
    assert isinstance(spec["HostConfig"]["Memory"], int)


def test_stop_timeout_lets_the_longest_request_finish(example_copy: Callable[..., Path]) -> None:
    config = example_copy(("scoring_timeout_ms: 60000", "scoring_timeout_ms: 120500"))
    # ceil(120.5 s), the server's drain margin (2 s), the shutdown margin (5 s).
    assert _spec(config)["StopTimeout"] == 128


@pytest.mark.parametrize("auth", ["none", "basic"])
def test_no_credentials_in_the_spec(
    auth: str, example_copy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRY_USERNAME", "ci-robot-user")
    monkeypatch.setenv("REGISTRY_PASSWORD", "s3cret-Passw0rd")
    config = example_copy(("auth: basic", f"auth: {auth}"))
    text = _artifacts(config)["container.json"]
    assert "s3cret-Passw0rd" not in text
    assert "ci-robot-user" not in text
    assert "REGISTRY" not in text


def test_rendering_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    first = _artifacts(EXAMPLE / "deploy.yaml")
    monkeypatch.setenv("REGISTRY_PASSWORD", "changes-nothing")
    assert _artifacts(EXAMPLE / "deploy.yaml") == first
