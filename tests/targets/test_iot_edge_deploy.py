"""End to end: ``deployer deploy`` to an ``iot_edge`` target against the IoT Hub double.

What an IoT Edge user cares about beyond the driver contract (tests/conformance covers that):
the registry credentials reaching the device and nothing else, a device out of this
machine's reach, a module that crashes at start, a device that is offline, a wrong key,
throttling, deployments at scale, and ``status`` and ``logs``. deployer runs as a
subprocess through the conformance harness; the hub's simulated edge device runs the
modules as containers on this machine (deployer's own engine, the one ``simulate`` uses).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from deployer.targets.local.driver import free_port
from tests.conformance.harness import (
    ANSWER,
    TOLERANCE,
    ModelRepo,
    environment,
    failed_with,
    score_once,
)
from tests.conformance.platforms import IotEdgePlatform
from tests.docker.conftest import client, dev_env
from tests.doubles.iothub import IoTHubDouble

pytestmark = [pytest.mark.docker, pytest.mark.slow]

__all__ = ["client", "dev_env"]  # the fixtures, for this module

TARGET = "edge"
READY_S = 120
FAST_S = 60


class Edge(IotEdgePlatform):
    """The conformance platform for a device of its own, with more settings in the target's
    mapping (``None`` removes one)."""

    def __init__(self, hub: IoTHubDouble, docker: Any, device: str, settings: dict[str, Any]):
        self.device = device
        super().__init__(hub, docker, free_port())
        self.settings = settings

    def target_yaml(self, ready_timeout_s: float) -> str:
        base = yaml.safe_load(super().target_yaml(ready_timeout_s))
        merged = {**base, **self.settings}
        return json.dumps({k: v for k, v in merged.items() if v is not None})


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, dev_env: dict[str, str]
) -> Iterator[IoTHubDouble]:
    with IoTHubDouble(tmp_path_factory.mktemp("iothub"), docker_env=dev_env) as double:
        yield double


@pytest.fixture(scope="module")
def make_repo(
    hub: IoTHubDouble,
    client: Any,
    dev_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """``make_repo(name, ready_timeout_s=..., env=..., **settings)``: a model repo of a
    service of its own, deployed to a device of its own; ``deployer down`` at the end."""
    made: list[ModelRepo] = []

    def make(
        name: str,
        ready_timeout_s: float = READY_S,
        env: dict[str, str | None] | None = None,
        **settings: Any,
    ) -> ModelRepo:
        root = tmp_path_factory.mktemp(name)
        platform = Edge(hub, client, f"{name}-device", settings)
        repo = ModelRepo(root / "repo", platform, TARGET)
        repo.extra_env = dict(env or {})
        repo.service = f"e-{name}-{uuid.uuid4().hex[:6]}"
        repo.write(ready_timeout_s)
        made.append(repo)
        return repo

    with environment(dev_env):  # the registry's credentials, for deployer
        yield make
        for repo in made:
            repo.run("down", "-t", TARGET)


def report_texts(repo: ModelRepo) -> str:
    return "".join(p.read_text() for p in sorted(repo.reports.glob("deploy-report.*")))


# One device --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(make_repo: Any, hub: IoTHubDouble) -> tuple[ModelRepo, Any, int]:
    repo = make_repo("served")
    first = len(hub.requests)
    return repo, repo.deploy(), first


def test_the_manifest_reaches_the_device_with_its_credentials_and_nowhere_else(
    served: tuple[ModelRepo, Any, int], hub: IoTHubDouble, dev_env: dict[str, str]
) -> None:
    repo, deployed, first = served
    assert deployed.code == 0, deployed.output
    (sent,) = [r for r in hub.requests[first:] if r.path.endswith("/applyConfigurationContent")]
    desired = sent.body["modulesContent"]["$edgeAgent"]["properties.desired"]
    (login,) = desired["runtime"]["settings"]["registryCredentials"].values()
    assert login["password"] == dev_env["REGISTRY_PASSWORD"]
    assert (
        desired["modules"]["model"]["env"]["DEPLOYER_REVISION"]["value"]
        == deployed.target["revision"]
    )
    password = dev_env["REGISTRY_PASSWORD"]
    assert password not in deployed.output + report_texts(repo)
    target = deployed.target
    assert target["scoring_uri"] == repo.platform.service_url()
    assert target["tests"]["passed"] is True
    assert score_once(target["scoring_uri"]) == pytest.approx(ANSWER, abs=TOLERANCE)


def test_status_reports_the_module_and_the_device(served: tuple[ModelRepo, Any, int]) -> None:
    repo, deployed, _ = served
    status = repo.run("status", "-t", TARGET)
    assert status.returncode == 0, status.stderr
    head = f"{TARGET} (iot_edge): healthy (module model running on served-device, Connected)"
    assert head in status.stdout, status.stdout
    assert f"revision     {deployed.target['revision']}" in status.stdout


def test_logs_come_through_get_module_logs(
    served: tuple[ModelRepo, Any, int], hub: IoTHubDouble
) -> None:
    repo, _, _ = served
    logs = repo.run("logs", "-t", TARGET, "--tail", "5")
    assert logs.returncode == 0, logs.stderr
    assert 0 < len(logs.stdout.splitlines()) <= 5, logs.stdout
    (call,) = [r for r in hub.requests if r.path.endswith("/modules/$edgeAgent/methods")][-1:]
    assert call.body["methodName"] == "GetModuleLogs"


def test_logs_of_an_offline_device_say_what_to_run_on_it(
    served: tuple[ModelRepo, Any, int], hub: IoTHubDouble
) -> None:
    repo, _, _ = served
    hub.device_offline("served-device")
    try:
        logs = repo.run("logs", "-t", TARGET, "--tail", "5")
    finally:
        hub.device_online("served-device")
    assert logs.returncode == 0, logs.stderr
    assert "on the device: sudo iotedge logs model --tail 5" in logs.stdout, logs.stdout


def test_a_module_that_crashes_at_start_fails_fast_and_the_previous_comes_back(
    served: tuple[ModelRepo, Any, int],
) -> None:
    repo, deployed, _ = served
    before = deployed.target["revision"]
    script = repo.root / "score.py"
    original = script.read_text()
    script.write_text(original + "\n\ndef init():\n    raise RuntimeError('no model here')\n")
    try:
        repo.write(CONFORMANCE_VERSION="crashes")
        result = repo.deploy()
    finally:
        script.write_text(original)
    error = failed_with(result, "module model on served-device is backoff", "exit code")
    assert f"the previous version {before} serves" in error, error
    assert float(result.target["seconds"]["deploy"]) < FAST_S + READY_S / 2
    assert "no model here" in "\n".join(result.target["logs"]), result.target["logs"]
    assert score_once(repo.platform.service_url()) == pytest.approx(ANSWER, abs=TOLERANCE)


# Out of reach, offline, refused ------------------------------------------------------------
def test_without_test_uri_the_tests_are_not_run_and_the_report_says_why(make_repo: Any) -> None:
    repo = make_repo("unreachable", test_uri=None, device_address="edge-01.factory.local")
    result = repo.deploy()
    assert result.code == 0, result.output
    target = result.target
    assert target["scoring_uri"].startswith("http://edge-01.factory.local:")
    assert any("set test_uri" in note for note in target["notes"]), target["notes"]
    assert "not run" in result.output


def test_an_offline_device_runs_into_the_deadline(make_repo: Any, hub: IoTHubDouble) -> None:
    repo = make_repo("offline", ready_timeout_s=8)
    hub.device_offline("offline-device")
    try:
        result = repo.deploy()
        logs = repo.run("logs", "-t", TARGET, "--tail", "5")
    finally:
        hub.device_online("offline-device")
    failed_with(result, "within the ready deadline of 8 s", "Disconnected")
    # Nothing was live, so nothing has logs: said as an error, not an empty page.
    assert "nothing is deployed" in logs.stderr + logs.stdout


def test_a_wrong_key_is_a_user_error(make_repo: Any, hub: IoTHubDouble) -> None:
    wrong = hub.connection_string_with(key=hub.wrong_key())
    repo = make_repo("wrongkey", env={"IOTHUB_CONNECTION_STRING": wrong})
    result = repo.deploy()
    assert result.code == 2, result.output
    assert "401 Unauthorized" in result.output
    assert hub.key not in result.output


def test_throttling_is_retried(make_repo: Any, hub: IoTHubDouble) -> None:
    repo = make_repo("throttled")
    rule = hub.fail("POST", r"/applyConfigurationContent", status=429, retry_after=1)
    result = repo.deploy()
    assert result.code == 0, result.output
    assert rule.matched.is_set()


# At scale -------------------------------------------------------------------------------
def test_at_scale_each_revision_is_a_configuration_and_the_old_one_goes(
    make_repo: Any, hub: IoTHubDouble
) -> None:
    repo = make_repo(
        "fleet",
        device_id=None,
        deployment={
            "id": "diabetes-fleet",
            "target_condition": "tags.environment='fleet'",
            "priority": 20,
        },
    )
    hub.set_tags("fleet-device", {"environment": "fleet"})
    first = repo.deploy()
    assert first.code == 0, first.output
    ids = [i for i in hub.configuration_ids() if i.startswith("diabetes-fleet-")]
    assert ids == [f"diabetes-fleet-{first.target['revision']}"]
    configuration = hub.configuration(ids[0])
    assert configuration["targetCondition"] == "tags.environment='fleet'"
    assert configuration["priority"] == 20
    repo.write(CONFORMANCE_VERSION="2")
    second = repo.deploy()
    assert second.code == 0, second.output
    ids = [i for i in hub.configuration_ids() if i.startswith("diabetes-fleet-")]
    assert ids == [f"diabetes-fleet-{second.target['revision']}"]
