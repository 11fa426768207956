"""The deploy policy (deployer/rollout.py) step by step, against a scripted driver.

The conformance suite runs the policy with real drivers on real platforms; these tests pin
down its decisions one by one: what is called in which order, what is rolled back, and how
each kind of failure is classified (a failed deploy, an interruption, or deployer's bug).
The driver here is a test double of the contract: it records calls and fails on request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deployer import deploy as deploy_module
from deployer.buildcontext import ImageRef
from deployer.cli import main
from deployer.errors import DeployFailed
from deployer.events import discard
from deployer.rollout import Interrupted, Outcome, Verify, rollout
from deployer.targets.contract import (
    Deadline,
    Endpoint,
    Release,
    Replacement,
    Version,
    nothing_to_retire,
)
from deployer.verify import TestRun
from tests.conftest import EXAMPLE

LIVE = Endpoint("http://127.0.0.1:1/score", "http://127.0.0.1:1/swagger.json")
PRIVATE = Endpoint("http://127.0.0.1:2/score", "http://127.0.0.1:2/swagger.json")


class PlatformDown(Exception):
    """What this double's 'SDK' raises when its platform fails."""


@dataclass
class ScriptedDriver:
    previous: Version | None = None
    fail_at: dict[str, BaseException] = field(default_factory=dict)
    replacement: Replacement = "candidate"
    platform_errors: tuple[type[BaseException], ...] = (PlatformDown,)
    calls: list[str] = field(default_factory=list)
    serving: Version | None = None

    def __post_init__(self) -> None:
        self.serving = self.previous

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail_at:
            raise self.fail_at[name]

    def live(self) -> Version | None:
        self._call("live")
        return self.serving

    def tidy(self) -> list[str]:
        self._call("tidy")
        return []

    def apply(self, release: Release) -> Version:
        self._call("apply")
        return Version(release.revision, str(release.image), PRIVATE, "starting")

    def wait(self, version: Version, deadline: Deadline) -> Version:
        self._call("wait")
        return Version(version.revision, version.image, version.endpoint, "healthy")

    def logs(self, revision: str, tail: int) -> list[str]:
        self._call("logs")
        return [f"log of {revision}"]

    def follow(self, revision: str, tail: int) -> Iterator[str]:
        yield from self.logs(revision, tail)

    def promote(self, candidate: Version, previous: Version | None) -> Version:
        self._call("promote")
        self.serving = Version(candidate.revision, candidate.image, LIVE, "healthy")
        return self.serving

    def confirm(self, version: Version) -> None:
        self._call("confirm")

    def retire(self, previous: Version) -> None:
        self._call("retire")

    def roll_back(self, release: Release, previous: Version | None) -> None:
        self._call("roll_back")
        self.serving = previous

    def remove(self, images: bool) -> list[str]:
        self._call("remove")
        return []

    def close(self) -> None:
        self._call("close")


RELEASE = Release("new0revision", ImageRef("127.0.0.1:5000", "m", "t2"), {"a.json": "{}"})
OLD = Version("old0revision", "127.0.0.1:5000/m:t1", LIVE, "healthy", ref="old")


def _passing(endpoint: Endpoint) -> TestRun:
    return TestRun(endpoint.scoring_uri)


def _recording(tested: list[str]) -> Verify:
    def verify(endpoint: Endpoint) -> TestRun:
        tested.append(endpoint.scoring_uri)
        return TestRun(endpoint.scoring_uri)

    return verify


def _run(driver: ScriptedDriver, verify: Verify = _passing) -> Outcome:
    return rollout(
        driver,
        RELEASE,
        verify=verify,
        deadline=Deadline(60),
        progress=discard,
        target="t",
    )


def test_a_first_deploy_applies_waits_verifies_promotes_and_confirms() -> None:
    tested: list[str] = []
    driver = ScriptedDriver()
    outcome = _run(driver, _recording(tested))
    assert outcome.status == "deployed"
    assert driver.calls == ["tidy", "live", "apply", "wait", "promote", "confirm", "logs"]
    # The candidate on its own endpoint, then the service it took over.
    assert tested == [PRIVATE.scoring_uri, LIVE.scoring_uri]


def test_an_update_retires_the_previous_version_after_confirming() -> None:
    driver = ScriptedDriver(previous=OLD)
    assert _run(driver).status == "deployed"
    assert driver.calls[-3:] == ["confirm", "logs", "retire"]


def test_the_live_revision_is_only_tested() -> None:
    same = Version(RELEASE.revision, "i", LIVE, "healthy")
    driver = ScriptedDriver(previous=same)
    outcome = _run(driver)
    assert (outcome.status, driver.calls) == ("unchanged", ["tidy", "live"])


def test_an_unhealthy_live_revision_is_deployed_again() -> None:
    sick = Version(RELEASE.revision, "i", LIVE, "unhealthy", "nothing answers")
    driver = ScriptedDriver(previous=sick)
    assert _run(driver).status == "deployed"
    assert "apply" in driver.calls


def test_failed_tests_roll_back_and_say_the_previous_version_serves() -> None:
    driver = ScriptedDriver(previous=OLD)
    with pytest.raises(DeployFailed) as failed:
        _run(driver, lambda e: TestRun(e.scoring_uri, error="cannot reach it"))
    assert "promote" not in driver.calls
    assert driver.calls[-3:] == ["logs", "roll_back", "live"]
    message = str(failed.value)
    assert message.startswith("the new version fails its tests")
    assert message.endswith("rolled back: the previous version old0revision serves")
    assert failed.value.logs == ["log of new0revision"]


def test_failing_once_serving_rolls_back_too() -> None:
    driver = ScriptedDriver(previous=OLD)
    runs = iter([TestRun("ok"), TestRun("bad", error="reset")])
    with pytest.raises(DeployFailed, match="fails its tests once serving"):
        _run(driver, lambda e: next(runs))
    assert "roll_back" in driver.calls and "confirm" not in driver.calls
    assert driver.serving == OLD


def test_a_platform_error_is_a_failed_deploy_after_the_rollback() -> None:
    driver = ScriptedDriver(previous=OLD, fail_at={"promote": PlatformDown("503 from the API")})
    with pytest.raises(DeployFailed) as failed:
        _run(driver)
    assert str(failed.value) == (
        "PlatformDown: 503 from the API; rolled back: the previous version old0revision serves"
    )
    assert "roll_back" in driver.calls
    # The candidate's tests ran and passed before the failure: the report shows them.
    tests = failed.value.tests
    assert isinstance(tests, TestRun) and tests.passed


def test_a_refused_connection_is_the_platforms_failure_too() -> None:
    driver = ScriptedDriver(fail_at={"wait": ConnectionRefusedError("refused")})
    with pytest.raises(DeployFailed, match="ConnectionRefusedError: refused; rolled back"):
        _run(driver)


def test_ctrl_c_rolls_back_and_is_an_interruption() -> None:
    driver = ScriptedDriver(previous=OLD, fail_at={"wait": KeyboardInterrupt()})
    with pytest.raises(Interrupted, match=r"^interrupted; rolled back: the previous version"):
        _run(driver)
    assert "roll_back" in driver.calls


def test_a_bug_is_rolled_back_then_raised_as_it_is() -> None:
    driver = ScriptedDriver(previous=OLD, fail_at={"confirm": TypeError("a bug")})
    with pytest.raises(TypeError, match="a bug"):
        _run(driver)
    assert "roll_back" in driver.calls
    assert driver.serving == OLD


def test_a_failed_rollback_says_so() -> None:
    driver = ScriptedDriver(
        previous=OLD,
        fail_at={"promote": PlatformDown("gone"), "roll_back": PlatformDown("still gone")},
    )
    with pytest.raises(DeployFailed, match=r"rolling back failed .*still gone.*next deploy"):
        _run(driver)


def test_a_failure_to_retire_is_a_note_not_a_failure() -> None:
    driver = ScriptedDriver(previous=OLD, fail_at={"retire": PlatformDown("busy")})
    outcome = _run(driver)
    assert outcome.status == "deployed"
    assert outcome.notes == [
        "could not retire the previous version old0revision: PlatformDown: busy"
    ]
    assert not outcome.interrupted


def test_ctrl_c_while_retiring_keeps_the_new_version_and_stops_the_run() -> None:
    driver = ScriptedDriver(previous=OLD, fail_at={"retire": KeyboardInterrupt()})
    outcome = _run(driver)
    assert (outcome.status, outcome.interrupted) == ("deployed", True)
    assert "roll_back" not in driver.calls
    assert outcome.notes == ["could not retire the previous version old0revision: interrupted"]


def test_an_unreadable_live_state_fails_before_anything_is_applied() -> None:
    driver = ScriptedDriver(fail_at={"live": PlatformDown("401")})
    with pytest.raises(DeployFailed, match="cannot read what is live: PlatformDown: 401"):
        _run(driver)
    assert "apply" not in driver.calls


def test_in_place_drivers_are_tested_once_on_the_service() -> None:
    tested: list[str] = []

    @dataclass
    class InPlace(ScriptedDriver):
        replacement: Replacement = "in-place"
        retire = nothing_to_retire

        def apply(self, release: Release) -> Version:
            self._call("apply")
            return Version(release.revision, str(release.image), LIVE, "starting")

    driver = InPlace(previous=OLD)
    _run(driver, _recording(tested))
    assert tested == [LIVE.scoring_uri]


def test_the_report_is_written_and_the_exit_code_is_70_when_deployer_has_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in one target does not stop the others nor the report; the run exits 70."""

    def target_step(target: object, *args: object) -> None:
        name = getattr(target, "name", "")
        if name == "local":
            raise TypeError("a bug in deployer")
        raise DeployFailed("the platform said no")

    monkeypatch.setattr(deploy_module, "_deploy_target", target_step)
    code = main(
        [
            "deploy",
            "-c",
            str(EXAMPLE / "deploy.yaml"),
            "-t",
            "local",
            "-t",
            "staging",
            "--report-dir",
            str(tmp_path),
        ]
    )
    assert code == 70
    report = json.loads((tmp_path / "deploy-report.json").read_text())
    local, staging = report["targets"]
    assert local["status"] == "failed" and "deployer hit a bug (TypeError" in local["error"]
    assert staging["error"] == "the platform said no"
