"""``deployer simulate -t edge``: the example's IoT Edge manifest run on the local Docker
engine as the device's edge agent would, its tests, and clean-up; and what is refused before
anything is built or started.

The Docker tests copy the example repo with its own service name, module name (containers
are named after their module) and port, and use the local registry 127.0.0.1:5000 with the
credentials scripts/dev-env exports.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from deployer import docker_engine
from deployer.cli import main
from tests.conftest import EXAMPLE
from tests.docker.conftest import client, dev_env, free_port

__all__ = ["client", "dev_env"]  # fixtures


class Repo:
    """A copy of the example repo whose edge target runs module ``module`` on ``port``."""

    def __init__(self, root: Path, *replacements: tuple[str, str]) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.module = f"sim-{suffix}"
        self.port = free_port()
        shutil.copytree(
            EXAMPLE, root / "repo", ignore=shutil.ignore_patterns("__pycache__", "tests", "out")
        )
        self.root = root / "repo"
        self.config = self.root / "deploy.yaml"
        text = self.config.read_text()
        for old, new in (
            ("name: diabetes\n", f"name: sim-{suffix}\n"),
            ("module_name: diabetes, port: 5001", f"module_name: {self.module}, port: {self.port}"),
            *replacements,
        ):
            assert old in text, old
            text = text.replace(old, new, 1)
        self.config.write_text(text)

    def simulate(self, *args: str) -> int:
        return main(["simulate", "-c", str(self.config), "-t", "edge", *args])


@pytest.fixture
def registry_env(dev_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in dev_env.items():
        monkeypatch.setenv(name, value)
    return dev_env


def containers_of(client: Any, module: str) -> list[Any]:
    by_label = client.containers.list(
        all=True, filters={"label": f"ai.deployer.simulate.module={module}"}
    )
    by_name = [c for c in client.containers.list(all=True) if c.name == module]
    return [*by_label, *by_name]


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything connects to the Docker engine (nothing may be built or
    started)."""

    def refuse() -> None:
        raise AssertionError("the Docker engine was used")

    monkeypatch.setattr(docker_engine, "connect", refuse)


# Refused before anything runs (no Docker needed) -----------------------------------------


def test_a_port_clashing_with_edge_hub_is_refused(
    tmp_path: Path, no_engine: None, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Repo(tmp_path)
    text = repo.config.read_text().replace(f"port: {repo.port}}}", "port: 8883}")
    repo.config.write_text(text)
    assert repo.simulate() == 2
    err = capsys.readouterr().err
    assert "error: the deployment manifest of edge would fail on a device (1 problem); " in err
    assert "nothing was started" in err
    assert f"module {repo.module} publishes host port 8883/tcp, which edgeHub publishes" in err
    assert "targets.edge.port in deploy.yaml" in err


def test_a_registry_with_no_credentials_in_the_manifest_is_refused(
    tmp_path: Path, no_engine: None, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Repo(tmp_path, ("auth: basic", "auth: none"))
    assert repo.simulate() == 2
    err = capsys.readouterr().err
    assert f"module {repo.module}: the device could not pull 127.0.0.1:5000/" in err
    assert "the manifest has no registryCredentials, none for 127.0.0.1:5000" in err
    assert "set registry.auth (basic or acr) in deploy.yaml" in err


def test_a_target_of_another_kind_is_refused(
    tmp_path: Path, no_engine: None, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Repo(tmp_path)
    assert main(["simulate", "-c", str(repo.config), "-t", "local"]) == 2
    assert "deployer simulate runs iot_edge targets" in capsys.readouterr().err


# On the Docker engine --------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_simulate_runs_the_edge_module_and_passes_its_tests(
    tmp_path: Path,
    registry_env: dict[str, str],
    client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = Repo(tmp_path)
    try:
        code = repo.simulate("--ready-timeout", "240")
        out, err = capsys.readouterr()
        assert code == 0, out + err
        assert "note: edgeAgent and edgeHub are not run" in out
        assert "The 1 route was checked against the module names instead" in out
        assert f"listens on 127.0.0.1:{repo.port}" in out
        assert f"module {repo.module}: running" in out
        assert f"tests against http://127.0.0.1:{repo.port}/score: passed" in out
        assert f"removed container {repo.module}" in out
        assert registry_env["REGISTRY_PASSWORD"] not in out + err
        assert containers_of(client, repo.module) == []
    finally:
        for container in containers_of(client, repo.module):
            container.remove(force=True)


@pytest.mark.docker
@pytest.mark.slow
def test_an_init_that_raises_reports_the_modules_backoff(
    tmp_path: Path,
    registry_env: dict[str, str],
    client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = Repo(tmp_path)
    script = repo.root / "score.py"
    script.write_text(
        script.read_text().replace(
            '    """Load the ONNX model into a global InferenceSession."""\n',
            '    """Load the ONNX model into a global InferenceSession."""\n'
            '    raise RuntimeError("the model file is corrupt")\n',
        )
    )
    try:
        code = repo.simulate("--ready-timeout", "240")
        out, err = capsys.readouterr()
        assert code == 1, out + err
        assert f"error: module {repo.module} is backoff, exit code " in err
        exit_code = err.split("exit code ", 1)[1].split(":", 1)[0]
        assert exit_code.isdigit() and exit_code != "0"
        assert "the agent restarts it after a cool-off of 10 s (restart 1 of 5)" in err
        assert "last lines of its log:" in err
        assert "the model file is corrupt" in err
        assert f"removed container {repo.module}" in out
        assert containers_of(client, repo.module) == []
    finally:
        for container in containers_of(client, repo.module):
            container.remove(force=True)


@pytest.mark.docker
@pytest.mark.slow
def test_the_engine_restarts_a_crashing_module_as_the_agent_does(client: Any) -> None:
    """A module that exits 3 at once, on a local image (imagePullPolicy never): backoff with
    its exit code, restarted after each cool-off, failed after the last restart."""
    from deployer.targets.iot_edge.engine import Engine
    from deployer.targets.iot_edge.manifest import read_manifest
    from deployer.targets.iot_edge.render import module_settings

    name = f"crash-{uuid.uuid4().hex[:8]}"
    options = {
        "Cmd": ["python", "-c", "import sys; print('boom', flush=True); sys.exit(3)"],
        "Env": ["FROM_CREATE_OPTIONS=1"],
        "HostConfig": {"PortBindings": {"8080/tcp": [{"HostPort": str(free_port())}]}},
    }
    content = {
        "$edgeAgent": {
            "properties.desired": {
                "modules": {
                    name: {
                        "type": "docker",
                        "status": "running",
                        "restartPolicy": "always",
                        "imagePullPolicy": "never",
                        "env": {"FROM_ENV": {"value": "2"}},
                        "settings": module_settings("python:3.11-slim", options),
                    }
                }
            }
        }
    }
    engine = Engine(client, session=uuid.uuid4().hex[:12], cool_off_unit_s=0.5, max_restart_count=2)
    try:
        engine.apply(read_manifest(content))
        container = client.containers.get(name)
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert {"FROM_CREATE_OPTIONS=1", "FROM_ENV=2"} <= set(container.attrs["Config"]["Env"])
        labels = container.attrs["Config"]["Labels"]
        assert labels["net.azure-devices.edge.owner"] == "Microsoft.Azure.Devices.Edge.Agent"
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = engine.status()[name]
            seen.append((status.runtime_status, status.restart_count))
            if status.runtime_status == "failed":
                break
            time.sleep(0.2)
        assert status.runtime_status == "failed", seen
        assert (status.exit_code, status.restart_count) == (3, 2)
        assert status.last_exit_time is not None
        assert ("backoff", 0) in seen and ("backoff", 1) in seen
        assert engine.logs(name, 10) == ["boom", "boom", "boom"]
    finally:
        assert engine.remove_all() == [name]
    assert containers_of(client, name) == []
