"""The driver contract's conformance suite: every driver, the same scenarios.

Each platform in ``PLATFORMS`` runs the whole module, in file order, on one service of its
own (a scenario: each test starts from what the previous one left live, as a model's
history does). deployer runs as a subprocess, as users and CI run it; faults come from the
versions themselves (a score.py that answers wrong, never becomes ready, or dies under
traffic) and from the platform's double (an API error, a request held while the deploy is
killed). While versions switch, an independent client keeps scoring and counts failures:
a count, not a timing, so these tests assert it.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.harness import (
    ANSWER,
    TOLERANCE,
    Load,
    ModelRepo,
    Platform,
    environment,
    finish,
    interrupt,
    score_once,
    wait_until_answers,
)
from tests.conformance.platforms import PLATFORMS

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module", params=sorted(PLATFORMS))
def platform(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    dev_env: dict[str, str],
    client: Any,
) -> Iterator[Platform]:
    with PLATFORMS[request.param](tmp_path_factory.mktemp("platform"), dev_env, client) as made:
        yield made


@pytest.fixture(scope="module")
def repo(
    platform: Platform, tmp_path_factory: pytest.TempPathFactory, dev_env: dict[str, str]
) -> Iterator[ModelRepo]:
    made = ModelRepo(tmp_path_factory.mktemp("model") / "repo", platform)
    with environment(dev_env):  # the registry's credentials, for the deployer subprocesses
        yield made
        made.run("down", "-t", made.target, "--images")


def _seamless(platform: Platform) -> bool:
    """Whether a switch of versions keeps every request answered on this platform."""
    return platform.replacement == "candidate" and not platform.switch_drops_requests


def _no_failed_request_before_promote(platform: Platform, load: Load) -> None:
    """For a version that fails before it is promoted: a candidate platform kept the previous
    version serving all along, so no request may fail. An in-place one (IoT Edge, a
    Functions restart) had replaced it already, and its rollback is a second replacement:
    the failures are counted and shown, not asserted."""
    if platform.replacement == "candidate":
        assert load.failed == 0, str(load)
    else:
        print(f"{platform.kind} (in-place): {load}")


def _at(platform: Platform, step: str) -> None:
    if step not in platform.steps:
        pytest.skip(f"{platform.kind}'s protocol has no {step!r} step")


def _one_live(repo: ModelRepo) -> str:
    live = repo.live()
    assert len(live) == 1, f"expected exactly one live version, found {live}"
    assert repo.leftovers() == [], repo.leftovers()
    return live[0]


def _failed(deployed: Any, *phrases: str) -> str:
    assert deployed.code == 1, deployed.output
    target = deployed.target
    assert target["status"] == "failed", target
    for phrase in phrases:
        assert phrase in target["error"], (phrase, target["error"])
    return str(target["error"])


# First deploy, no-op, update --------------------------------------------------------------
def test_first_deploy_serves_and_passes_its_tests(repo: ModelRepo, platform: Platform) -> None:
    repo.write(CONFORMANCE_VERSION="1")
    deployed = repo.deploy()
    assert deployed.code == 0, deployed.output
    target = deployed.target
    assert target["status"] == "deployed"
    assert target["scoring_uri"] == platform.service_url()
    assert target["tests"]["passed"] is True
    assert _one_live(repo) == target["revision"]
    assert score_once(platform.service_url()) == pytest.approx(ANSWER, abs=TOLERANCE)


def test_deploying_the_same_version_again_changes_nothing(repo: ModelRepo) -> None:
    before = _one_live(repo)
    deployed = repo.deploy()
    assert deployed.code == 0, deployed.output
    assert deployed.target["status"] == "unchanged"
    assert deployed.target["revision"] == before
    assert _one_live(repo) == before


def test_an_update_under_load_drops_no_request(repo: ModelRepo, platform: Platform) -> None:
    before = _one_live(repo)
    repo.write(CONFORMANCE_VERSION="2")
    with Load(platform.service_url()).running() as load:
        deployed = repo.deploy()
    assert deployed.code == 0, deployed.output
    assert deployed.target["status"] == "deployed"
    after = _one_live(repo)
    assert after == deployed.target["revision"] != before
    print(f"update under load: {load}")
    if _seamless(platform):
        assert load.failed == 0, str(load)
    assert load.ok > 0


def test_status_and_logs_show_the_live_version(repo: ModelRepo, platform: Platform) -> None:
    live = _one_live(repo)
    status = repo.run("status", "-t", repo.target)
    assert status.returncode == 0, status.stderr
    assert f"{repo.target} ({platform.kind}): healthy" in status.stdout
    assert f"revision     {live}" in status.stdout
    assert platform.service_url() in status.stdout
    logs = repo.run("logs", "-t", repo.target, "--tail", "5")
    assert logs.returncode == 0, logs.stderr
    assert 0 < len(logs.stdout.splitlines()) <= 5


# Versions that must not go live -------------------------------------------------------------
def test_a_version_that_fails_its_tests_is_rolled_back(repo: ModelRepo, platform: Platform) -> None:
    before = _one_live(repo)
    repo.write(CONFORMANCE_WRONG_ANSWERS="1")
    with Load(platform.service_url()).running() as load:
        deployed = repo.deploy()
    _failed(deployed, "fails its tests", f"the previous version {before} serves")
    assert deployed.target["tests"]["passed"] is False
    assert _one_live(repo) == before
    _no_failed_request_before_promote(platform, load)


def test_a_version_that_never_becomes_ready_is_rolled_back(
    repo: ModelRepo, platform: Platform
) -> None:
    before = _one_live(repo)
    repo.write(ready_timeout_s=5, CONFORMANCE_INIT_DELAY_S="3600")
    with Load(platform.service_url()).running() as load:
        deployed = repo.deploy()
    _failed(deployed, "within the ready deadline of 5 s", f"the previous version {before} serves")
    assert _one_live(repo) == before
    _no_failed_request_before_promote(platform, load)


def test_a_version_that_fails_after_taking_over_is_rolled_back(
    repo: ModelRepo, platform: Platform
) -> None:
    """It passes its tests on its own endpoint (53 requests), then dies under traffic."""
    before = _one_live(repo)
    repo.write(CONFORMANCE_CRASH_AFTER="80")
    with Load(platform.service_url()).running() as load:
        deployed = repo.deploy()
        error = _failed(deployed, "rolled back")
        restored_s = wait_until_answers(platform.service_url())
    assert f"the previous version {before} serves" in error
    assert _one_live(repo) == before
    print(
        f"a version that dies after taking over: {load.failed} failed requests "
        f"of {load.ok + load.failed}; answering again {restored_s:.2f} s after the deploy"
    )


@pytest.mark.parametrize("step", ["apply", "promote", "confirm"])
def test_a_platform_error_mid_deploy_is_rolled_back(
    repo: ModelRepo, platform: Platform, step: str
) -> None:
    _at(platform, step)
    before = _one_live(repo)
    repo.write(CONFORMANCE_VERSION=f"error-at-{step}")
    fault = platform.fail(step)
    with Load(platform.service_url()).running() as load:
        deployed = repo.deploy()
    assert fault.matched.is_set(), f"the deploy never reached {step}"
    error = _failed(deployed, "rolled back", f"the previous version {before} serves")
    assert "bug" not in error
    assert _one_live(repo) == before
    if _seamless(platform):
        assert load.failed == 0, str(load)


def test_ctrl_c_rolls_back_and_writes_the_report(repo: ModelRepo, platform: Platform) -> None:
    before = _one_live(repo)
    repo.write(ready_timeout_s=600, CONFORMANCE_INIT_DELAY_S="3600")
    applied = platform.hold("apply")
    with Load(platform.service_url()).running() as load:
        proc = repo.start_deploy()
        assert applied.matched.wait(120), "the deploy never reached apply"
        applied.released.set()
        time.sleep(2)  # it is waiting for the version to become ready
        interrupt(proc, signal.SIGINT)
        output = finish(proc)
    assert proc.returncode == 1, output
    target = repo.report()["targets"][0]
    assert target["status"] == "failed"
    assert target["error"].startswith("interrupted; rolled back"), target["error"]
    assert f"the previous version {before} serves" in target["error"]
    assert _one_live(repo) == before
    _no_failed_request_before_promote(platform, load)


# A deploy killed at any step ----------------------------------------------------------------
@pytest.mark.parametrize("step", ["apply", "promote", "pause", "confirm", "retire"])
def test_a_deploy_killed_at_any_step_converges_on_the_next(
    repo: ModelRepo, platform: Platform, step: str
) -> None:
    """SIGKILL (a CI runner dying) while the deploy waits on the platform at ``step``: the
    service keeps answering, and the next deploy succeeds with exactly one live version."""
    _at(platform, step)
    _one_live(repo)
    repo.write(CONFORMANCE_VERSION=f"killed-at-{step}")
    held = platform.hold(step)
    with Load(platform.service_url()).running() as load:
        proc = repo.start_deploy()
        assert held.matched.wait(180), f"the deploy never reached {step}"
        interrupt(proc, signal.SIGKILL)
        finish(proc)
        time.sleep(1)  # the service, left as the kill found it, keeps answering
        answered_while_left = load.ok
        deployed = repo.deploy()
    assert deployed.code == 0, deployed.output
    assert deployed.target["status"] in ("deployed", "unchanged")
    assert _one_live(repo) == deployed.target["revision"]
    notes = deployed.target.get("notes", [])
    print(f"killed at {step}: {load}; the next deploy tidied: {notes}")
    assert answered_while_left > 0
    if _seamless(platform):
        assert load.failed == 0, str(load)


# Removing ---------------------------------------------------------------------------------
def test_down_removes_everything_and_a_second_down_is_a_no_op(
    repo: ModelRepo, platform: Platform, tmp_path: Path
) -> None:
    _one_live(repo)
    # down needs deploy.yaml's settings only: not the model files, not a render.
    model = repo.root / "model"
    moved = model.rename(tmp_path / "model")
    try:
        first = repo.run("down", "-t", repo.target)
        second = repo.run("down", "-t", repo.target)
    finally:
        moved.rename(model)
    assert first.returncode == 0, first.stderr
    assert re.search(rf"removed {repo.target}: ", first.stdout), first.stdout
    assert repo.live() == [] and repo.leftovers() == []
    with pytest.raises(ConnectionRefusedError):
        score_once(platform.service_url(), timeout=2)
    assert (second.returncode, second.stdout.strip()) == (0, "nothing to remove")


def test_deploy_after_down_works(repo: ModelRepo, platform: Platform) -> None:
    assert repo.live() == []
    deployed = repo.deploy()
    assert deployed.code == 0, deployed.output
    assert deployed.target["status"] == "deployed"
    assert _one_live(repo) == deployed.target["revision"]
    assert score_once(platform.service_url()) == pytest.approx(ANSWER, abs=TOLERANCE)
