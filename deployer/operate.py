"""What is live, its logs, and removing it: ``deployer status``, ``logs`` and ``down``.

These act on deployments by name, with deploy.yaml's settings only (``TargetRef``): no
model files, no render, no build. A platform's error is an operation that failed (exit 1),
reported per target by ``status`` so that one unreachable platform hides nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from deployer.config.model import DeployConfig
from deployer.errors import DeployerError
from deployer.plan import select_targets
from deployer.rollout import platform_errors
from deployer.targets import kinds
from deployer.targets.contract import (
    Driver,
    DriverModule,
    Session,
    TargetRef,
    Version,
)


@contextmanager
def connected(module: DriverModule, target: TargetRef, session: Session) -> Iterator[Driver]:
    driver = module.connect(target, session)
    try:
        yield driver
    finally:
        driver.close()


@contextmanager
def _platform(target: TargetRef, action: str, session: Session) -> Iterator[Driver]:
    """A connected driver whose platform errors become ``DeployerError``s naming ``action``."""
    with connected(kinds.driver(target.kind), target, session) as driver:
        try:
            yield driver
        except platform_errors(driver) as error:
            text = " ".join(str(error).split()) or type(error).__name__
            raise DeployerError(f"{target.name}: {action} failed: {text}") from error


@dataclass(frozen=True)
class TargetStatus:
    name: str
    kind: str
    live: Version | None  # None: nothing deployed (or an error)
    error: str = ""  # why the platform could not be asked


def status(config: DeployConfig, names: list[str] | None, session: Session) -> list[TargetStatus]:
    """What is live per target; a target whose platform cannot be asked gets its error."""
    found = []
    for name in select_targets(config, names):
        target = TargetRef.of(config, name)
        try:
            with _platform(target, "reading the live state", session) as driver:
                found.append(TargetStatus(name, target.kind, driver.live()))
        except DeployerError as error:
            found.append(TargetStatus(name, target.kind, None, str(error)))
    return found


def live_versions(
    config: DeployConfig, names: list[str], session: Session
) -> Mapping[str, Version | None]:
    """The live version of each target whose platform answers (what ``plan`` compares
    with); targets that cannot be asked are left out, for the caller to fall back on."""
    return {s.name: s.live for s in status(config, names, session) if not s.error}


def logs(
    config: DeployConfig, name: str, session: Session, tail: int, follow: bool
) -> Iterator[str]:
    """The live version's last ``tail`` log lines, then (``follow``) new ones as they come."""
    target = TargetRef.of(config, name)
    with _platform(target, "reading the logs", session) as driver:
        live = driver.live()
        if live is None:
            raise DeployerError(f"{name}: nothing is deployed, so there are no logs")
        if follow:
            yield from driver.follow(live.revision, tail)
        else:
            yield from driver.logs(live.revision, tail)


def down(config: DeployConfig, names: list[str], session: Session, images: bool) -> list[str]:
    """Remove each target's deployment; returns what was removed ([] when nothing was)."""
    removed: list[str] = []
    for name in select_targets(config, names):
        target = TargetRef.of(config, name)
        with _platform(target, "removing the deployment", session) as driver:
            removed += [f"{name}: {item}" for item in driver.remove(images)]
    return removed
