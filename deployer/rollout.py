"""The deploy policy, written once for every kind: live state → apply → wait → verify →
promote (→ verify the service → confirm → retire), or roll back to what was live.

Drivers (``deployer.targets.contract``) do the platform's operations; this module decides.
Whatever goes wrong once the new version is applied (its tests fail, it never becomes
ready, the platform errs, the network refuses, the user presses Ctrl-C), the logs are
collected, the release is rolled back, and the failure says whether the previous version
serves again. A platform's error is a failed deploy (exit 1); anything else escaping a
driver is a bug in deployer, rolled back all the same, then re-raised (exit 70).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from deployer.errors import DeployFailed
from deployer.events import Event, Sink
from deployer.targets.contract import Deadline, Driver, Endpoint, Release, Version
from deployer.verify import TestRun

LOG_TAIL = 40

Verify = Callable[[Endpoint], TestRun]
T = TypeVar("T")


class Interrupted(DeployFailed):
    """Ctrl-C (SIGINT) or SIGTERM arrived during a deploy; the release was rolled back."""


@dataclass
class Outcome:
    status: Literal["deployed", "unchanged"]
    live: Version
    tests: TestRun
    logs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what tidying and retiring did
    # Ctrl-C or SIGTERM came while the previous version was being retired: the new one
    # serves, and the run stops after this target.
    interrupted: bool = False


def rollout(
    driver: Driver,
    release: Release,
    *,
    verify: Verify,
    deadline: Deadline,
    progress: Sink,
    target: str,
) -> Outcome:
    """Deploy ``release`` with ``driver``; raise ``DeployFailed`` (the previous version left
    serving) when it cannot be made live."""

    def step(message: str) -> None:
        progress(Event("step", f"{target}: {message}"))

    try:
        notes = driver.tidy()
        previous = driver.live()
    except platform_errors(driver) as error:
        raise DeployFailed(f"cannot read what is live: {_describe(error)}") from error
    for note in notes:
        progress(Event("warning", f"{target}: an earlier deploy was interrupted: {note}"))
    if previous is not None and previous.revision == release.revision:
        if previous.health == "healthy" and previous.endpoint is not None:
            step(f"revision {release.revision} is live already; testing it")
            tests = verify(previous.endpoint)
            if not tests.passed:
                raise DeployFailed(
                    f"the live version {release.revision} fails its tests ({tests.summary})",
                    _logs_quietly(driver, release.revision),
                    tests,
                )
            return Outcome("unchanged", previous, tests, notes=notes)
        step(f"revision {release.revision} is live but {previous.health}: deploying it again")

    tested: list[TestRun] = []  # the last run goes into a later failure's report
    try:
        with _rolled_back_on_failure(driver, release, previous, progress, target):
            step(f"applying revision {release.revision} ({driver.replacement})")
            candidate = driver.wait(driver.apply(release), deadline)
            if candidate.endpoint is None:
                raise DeployFailed("the new version is ready but has no address to test")
            step(f"testing the new version at {candidate.endpoint.scoring_uri}")
            tests = verify(candidate.endpoint)
            tested.append(tests)
            if not tests.passed:
                raise DeployFailed(
                    f"the new version fails its tests ({tests.summary})", tests=tests
                )
            live = driver.promote(candidate, previous)
            if driver.replacement == "candidate":
                if live.endpoint is None:
                    raise DeployFailed("the promoted version has no service address to test")
                step(f"the new version serves; testing {live.endpoint.scoring_uri}")
                tests = verify(live.endpoint)
                tested.append(tests)
                if not tests.passed:
                    raise DeployFailed(
                        f"the new version fails its tests once serving ({tests.summary})",
                        tests=tests,
                    )
            driver.confirm(live)
            logs = driver.logs(release.revision, LOG_TAIL)
    except DeployFailed as failure:
        # A step after the tests failed (promote, confirm): the report shows the tests run.
        if failure.tests is None and tested:
            failure.tests = tested[-1]
        raise
    outcome = Outcome("deployed", live, tests, logs, notes)
    if previous is not None:
        _retire(driver, previous, progress, target, outcome)
    return outcome


@contextlib.contextmanager
def _rolled_back_on_failure(
    driver: Driver, release: Release, previous: Version | None, progress: Sink, target: str
) -> Iterator[None]:
    try:
        yield
    except BaseException as failure:
        platform_error = isinstance(failure, platform_errors(driver))
        logs = _logs_quietly(driver, release.revision)
        restored = _roll_back(driver, release, previous, progress, target)
        if isinstance(failure, KeyboardInterrupt):
            raise Interrupted(f"interrupted; {restored}", logs) from None
        if isinstance(failure, DeployFailed):
            failure.logs = failure.logs or logs
            failure.args = (f"{failure.args[0]}; {restored}",)
            raise
        if platform_error:
            raise DeployFailed(f"{_describe(failure)}; {restored}", logs) from failure
        raise  # a bug in deployer: rolled back, and reported with its traceback


def _roll_back(
    driver: Driver, release: Release, previous: Version | None, progress: Sink, target: str
) -> str:
    """Roll back and say what serves now, in words for the error message."""
    progress(Event("step", f"{target}: rolling back revision {release.revision}"))
    try:
        driver.roll_back(release, previous)
    except BaseException as error:
        return f"rolling back failed ({_describe(error)}); the next deploy cleans up what is left"
    if previous is None:
        return "rolled back (no version was live before)"
    live = _quietly(driver.live, None)
    if live is not None and live.revision == previous.revision and live.health == "healthy":
        return f"rolled back: the previous version {previous.revision} serves"
    state = f"is {live.health}" if live is not None else "is gone"
    return f"rolled back, but the previous version {previous.revision} {state}"


def _retire(
    driver: Driver, previous: Version, progress: Sink, target: str, outcome: Outcome
) -> None:
    """After a confirmed switch the new version serves whatever happens here: a failure to
    remove the old one is a note, and the next deploy's ``tidy`` finishes the job."""
    progress(Event("step", f"{target}: retiring the previous version {previous.revision}"))
    reason = ""
    try:
        driver.retire(previous)
    except platform_errors(driver) as error:
        reason = _describe(error)
    except KeyboardInterrupt:
        reason, outcome.interrupted = "interrupted", True
    if reason:
        note = f"could not retire the previous version {previous.revision}: {reason}"
        progress(Event("warning", f"{target}: {note}; the next deploy removes it"))
        outcome.notes.append(note)


def platform_errors(driver: Driver) -> tuple[type[BaseException], ...]:
    """What counts as the platform failing: the driver's SDK errors, and the network's."""
    return (*driver.platform_errors, OSError)


def _quietly(read: Callable[[], T], default: T) -> T:
    """Best effort, while handling another failure: logs and state must not mask it."""
    try:
        return read()
    except Exception:
        return default


def _logs_quietly(driver: Driver, revision: str) -> list[str]:
    empty: list[str] = []
    return _quietly(lambda: driver.logs(revision, LOG_TAIL), empty)


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
