"""The main job: plan → build → push → deploy → verify → report, for each selected target.

Each target is deployed on its own: one failing does not stop the others, and each ends in
the report with its status, its scoring URI and its test results, or its error and logs.
The deploy itself (apply, wait, verify, promote or roll back) is ``deployer.rollout``, the
same for every kind; this module builds, connects each target's driver and reports.

The report is always written: a bug in deployer marks its target failed, the other targets
go on, and the caller exits 70 with the tracebacks after writing it. Ctrl-C rolls back the
target being deployed and skips the rest.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import TYPE_CHECKING

from deployer import docker_engine
from deployer.build import BuildFailed, BuildOutcome, ImageBuilder, PushOutcome
from deployer.errors import DeployerError, DeployFailed, UserError
from deployer.events import Event, Sink
from deployer.operate import connected
from deployer.plan import Plan, TargetPlan
from deployer.registry_auth import Credentials, plan_credentials
from deployer.report import DeployReport, TargetReport
from deployer.rollout import Interrupted, rollout
from deployer.scoring_keys import how_to_call, key_env_names
from deployer.secrets import Secrets
from deployer.targets import kinds
from deployer.targets.contract import Deadline, Endpoint, Release, Session, TargetRef
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
    # The run's secrets: registry credentials made for the run (an ACR token) join them.
    secrets: Secrets | None = None

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
            builder = ImageBuilder(self.client(), self.progress)
            self.pushed[repository] = builder.ensure_pushed(target.image, self.credentials)
        return self.pushed[repository]

    @cached_property
    def credentials(self) -> Credentials | None:
        """The registry's credentials, worked out once a run (an ACR token exchange is a
        round trip to Entra ID and to the registry)."""
        return plan_credentials(self.plan, self.env, self.secrets)


def docker_client_factory() -> Callable[[], docker.DockerClient]:
    """Connect on first use only: a plan that needs no engine must not require one."""
    return cache(docker_engine.connect)


def build_images(
    plan: Plan, progress: Sink, push: bool, no_cache: bool = False, secrets: Secrets | None = None
) -> list[tuple[BuildOutcome, PushOutcome | None]]:
    images = Images(plan, progress, docker_client_factory(), no_cache=no_cache, secrets=secrets)
    results = []
    for target in plan.targets:
        if target.image.repository in images.built:
            continue
        built = images.build(target)
        results.append((built, images.push(target) if push else None))
    return results


@dataclass
class DeployRun:
    report: DeployReport
    # Exceptions that were bugs in deployer (not the platform's or the user's doing): the
    # caller prints their tracebacks after writing the report, and exits 70.
    bugs: list[str] = field(default_factory=list)
    # A target failed on the user's input (a missing secret, a setting the platform refuses
    # before anything is deployed): the run exits 2, not 1.
    usage_error: bool = False


def deploy(
    plan: Plan,
    progress: Sink,
    secrets: Secrets,
    ready_timeout_s: float | None = None,
    env: Mapping[str, str] = os.environ,
) -> DeployRun:
    """Deploy every target of the plan; the report says how each went (never raises for a
    target's failure: the caller decides the exit code from ``report.passed``).

    ``ready_timeout_s`` overrides every target's ``ready_timeout_s`` from deploy.yaml.
    """
    images = Images(plan, progress, docker_client_factory(), env=env, secrets=secrets)
    session = Session(progress, secrets, env)
    config = plan.config
    run = DeployRun(
        DeployReport(
            service=config.name,
            model=config.model_name if config.model else "",  # "": no model
            model_version=plan.inputs.model_version,
            model_hash=plan.inputs.model_hash,
            config=str(plan.inputs.config_path),
        )
    )
    interrupted = False
    for target in plan.targets:
        entry = TargetReport(target.name, target.kind, "failed", str(target.image))
        entry.revision = target.revision
        run.report.targets.append(entry)
        if interrupted:
            entry.error = "not deployed: the run was interrupted before this target"
            continue
        progress(Event("step", f"target {target.name} ({target.kind})"))
        try:
            interrupted = _deploy_target(target, images, session, ready_timeout_s, entry)
        except Interrupted as stop:
            entry.error, entry.logs = str(stop), stop.logs
            interrupted = True
        except KeyboardInterrupt:  # before anything was applied: nothing to roll back
            entry.error = "interrupted before anything was deployed"
            interrupted = True
        except BuildFailed as exc:
            entry.error, entry.logs = str(exc), exc.log_tail
        except DeployFailed as exc:
            entry.error, entry.logs = str(exc), exc.logs
            entry.tests = exc.tests if isinstance(exc.tests, TestRun) else entry.tests
        except UserError as exc:
            entry.error = str(exc)
            run.usage_error = True
        except DeployerError as exc:
            entry.error = str(exc)
        except Exception as exc:
            entry.error = f"deployer hit a bug ({type(exc).__name__}: {exc}); see its traceback"
            run.bugs.append(traceback.format_exc())
    return run


def _deploy_target(
    target: TargetPlan,
    images: Images,
    session: Session,
    ready_timeout_s: float | None,
    entry: TargetReport,
) -> bool:
    """Deploy one target into ``entry``; True when the run was interrupted after its
    version went live (the remaining targets are then skipped)."""
    config = images.plan.config
    release = Release(target.revision, target.image, target.artifacts)
    deadline_s = ready_timeout_s or target.target.ready_timeout_s
    module = kinds.driver(target.kind)
    # Connected first: missing credentials or an unreachable platform fail before a build.
    with connected(module, TargetRef.of(config, target.name), session) as driver:
        with _timed(entry, "build"):
            built = images.build(target)
        entry.built = built.built
        with _timed(entry, "push"):
            pushed = images.push(target)
        entry.pushed, entry.digest = pushed.pushed, pushed.digest
        with _timed(entry, "deploy"):
            outcome = rollout(
                driver,
                release,
                verify=lambda endpoint: _verify(endpoint, images.plan, session.progress),
                deadline=Deadline(deadline_s),
                progress=session.progress,
                target=target.name,
            )
    entry.status = outcome.status
    endpoint = outcome.live.endpoint
    if endpoint is not None:
        entry.scoring_uri, entry.swagger_uri = endpoint.scoring_uri, endpoint.swagger_uri
        entry.auth_headers = sorted(endpoint.headers)
        entry.auth = how_to_call(key_env_names(target.target))
    entry.tests, entry.logs, entry.notes = outcome.tests, outcome.logs, outcome.notes
    if endpoint is not None and endpoint.note:
        entry.notes = [*entry.notes, endpoint.note]
    return outcome.interrupted


def _verify(endpoint: Endpoint, plan: Plan, progress: Sink) -> TestRun:
    if not endpoint.reachable:
        progress(Event("detail", f"tests not run: {endpoint.note}"))
        return TestRun(endpoint.scoring_uri, skipped=endpoint.note)
    progress(Event("detail", f"running {len(plan.config.tests.requests)} test requests"))
    return run_tests(
        endpoint.reachable_uri,
        plan.config.tests,
        endpoint.headers,
        base_dir=plan.inputs.base_dir,
    )


@contextmanager
def _timed(entry: TargetReport, step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        entry.seconds[step] = round(time.perf_counter() - started, 3)
