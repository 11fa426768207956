"""The main job: plan → build → push → deploy → verify → report, for each selected target.

Each target is deployed on its own: one failing does not stop the others, and each ends in
the report with its status, its scoring URI and its test results, or its error and logs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

from deployer import docker_engine
from deployer.build import BuildFailed, BuildOutcome, ImageBuilder, PushOutcome
from deployer.errors import DeployerError, DeployFailed, UserError
from deployer.events import Event, Sink
from deployer.plan import Plan, TargetPlan
from deployer.registry_auth import credentials_for, secret_values
from deployer.report import DeployReport, TargetReport
from deployer.targets.base import Deployable, DeployContext
from deployer.verify import TestRun, run_tests

if TYPE_CHECKING:
    import docker


@dataclass
class Images:
    """Builds and pushes each image of a plan once, however many targets deploy it."""

    plan: Plan
    progress: Sink
    client: Callable[[], docker.DockerClient]
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    built: dict[str, BuildOutcome] = field(default_factory=dict)
    pushed: dict[str, PushOutcome] = field(default_factory=dict)
    no_cache: bool = False

    def build(self, target: TargetPlan) -> BuildOutcome:
        repository = target.image.repository
        if repository not in self.built:
            builder = ImageBuilder(self.client(), self.progress, self.no_cache)
            self.built[repository] = builder.ensure_built(
                self.plan.images[repository], target.image
            )
        return self.built[repository]

    def push(self, target: TargetPlan) -> PushOutcome:
        repository = target.image.repository
        if repository not in self.pushed:
            credentials = credentials_for(self.plan.config.registry, self.env)
            builder = ImageBuilder(self.client(), self.progress)
            self.pushed[repository] = builder.ensure_pushed(target.image, credentials)
        return self.pushed[repository]


def docker_client_factory() -> Callable[[], docker.DockerClient]:
    """Connect on first use only: a plan that needs no engine must not require one."""
    return cache(docker_engine.connect)


def build_images(
    plan: Plan, progress: Sink, push: bool, no_cache: bool = False
) -> list[tuple[BuildOutcome, PushOutcome | None]]:
    images = Images(plan, progress, docker_client_factory(), no_cache=no_cache)
    results = []
    for target in plan.targets:
        if target.image.repository in images.built:
            continue
        built = images.build(target)
        results.append((built, images.push(target) if push else None))
    return results


def deploy(plan: Plan, progress: Sink, ready_timeout_s: float = 120.0) -> DeployReport:
    """Deploy every target of the plan; the report says how each went (never raises for a
    target's failure: the caller decides the exit code from ``report.passed``)."""
    images = Images(plan, progress, docker_client_factory())
    config = plan.config
    report = DeployReport(
        service=config.name,
        model=config.model_name,
        model_version=plan.inputs.model_version,
        config=str(plan.inputs.config_path),
    )
    for target in plan.targets:
        progress(Event("step", f"target {target.name} ({target.kind.KIND})"))
        report.targets.append(_deploy_target(target, images, progress, ready_timeout_s))
    return report


def _deploy_target(
    target: TargetPlan, images: Images, progress: Sink, ready_timeout_s: float
) -> TargetReport:
    entry = TargetReport(target.name, target.kind.KIND, "failed", str(target.image))
    kind = target.kind
    try:
        if not isinstance(kind, Deployable):
            raise UserError(
                f"deploying to {kind.KIND!r} targets is not available in this version; "
                f"'deployer render -t {target.name}' writes its artifacts"
            )
        with _timed(entry, "build"):
            built = images.build(target)
        entry.built = built.built
        with _timed(entry, "push"):
            pushed = images.push(target)
        entry.pushed, entry.digest = pushed.pushed, pushed.digest
        ctx = DeployContext(
            name=target.name,
            config=images.plan.config,
            target=target.target,
            image=target.image,
            artifacts=target.artifacts,
            docker=images.client,
            verify=lambda uri: _verify(uri, images.plan, progress),
            progress=progress,
            ready_timeout_s=ready_timeout_s,
        )
        with _timed(entry, "deploy"):
            outcome = kind.deploy(ctx)
    except BuildFailed as exc:
        entry.error, entry.logs = str(exc), exc.log_tail
    except DeployFailed as exc:
        entry.error, entry.logs = str(exc), exc.logs
        entry.tests = exc.tests if isinstance(exc.tests, TestRun) else None
    except DeployerError as exc:
        entry.error = str(exc)
    else:
        entry.status = outcome.status
        entry.scoring_uri, entry.swagger_uri = outcome.scoring_uri, outcome.swagger_uri
        entry.tests, entry.logs = outcome.tests, outcome.logs
    return entry


def _verify(uri: str, plan: Plan, progress: Sink) -> TestRun:
    progress(Event("step", f"testing {uri}"))
    return run_tests(uri, plan.config.tests)


def secrets(plan: Plan, env: Mapping[str, str] = os.environ) -> list[str]:
    return secret_values(plan.config.registry, env)


@contextmanager
def _timed(entry: TargetReport, step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        entry.seconds[step] = round(time.perf_counter() - started, 3)


def down(plan: Plan, progress: Sink, remove_images: bool) -> list[str]:
    """Remove each target's deployment; returns what was removed."""
    client = docker_client_factory()
    removed: list[str] = []
    for target in plan.targets:
        kind = target.kind
        if not isinstance(kind, Deployable):
            raise UserError(f"removing {kind.KIND!r} deployments is not available in this version")
        ctx = DeployContext(
            name=target.name,
            config=plan.config,
            target=target.target,
            image=target.image,
            artifacts=target.artifacts,
            docker=client,
            verify=_no_verify,
            progress=progress,
        )
        progress(Event("step", f"removing target {target.name}"))
        removed += [f"{target.name}: {item}" for item in kind.down(ctx, remove_images)]
    return removed


def _no_verify(uri: str) -> TestRun:
    raise AssertionError("down does not verify")
