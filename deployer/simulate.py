"""``deployer simulate -t TARGET``: an ``iot_edge`` target's rendered manifest, run on this
machine as the device's edge agent would run it, then tested.

``Simulation`` does it in steps, so that the CLI can print between them:

1. ``check``: render the target's manifest (the plan ``deployer deploy`` makes), read it
   as the agent does (``manifest.read_manifest``: createOptions chunks joined and parsed) and
   refuse, before anything is built or started, what a device would fail on
   (``manifest.problems``: host ports clashing with edgeHub's, images no registry credentials
   match, routes to modules that do not exist), and missing ``${ENV}`` values.
2. ``start``: build and push the image as ``deployer deploy`` does, fill the manifest's
   ``${ENV}`` placeholders (the registry credentials) from the environment, in memory only,
   run every custom module with ``engine.Engine`` (pulling with those credentials, as the
   device would), and wait until the model module's ``GET /ready`` answers 200.
3. ``test``: deploy.yaml's tests against the model module's ``/score``.
4. ``follow``: the modules' logs as they come; ``close`` removes every container started.

edgeAgent and edgeHub themselves are not run (their images are not reachable here): the
routes are checked against the module names instead. Modules run on this machine's host
network (see ``engine.Engine``).
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deployer.errors import DeployFailed, UserError
from deployer.events import Event, Sink
from deployer.placeholders import PLACEHOLDER
from deployer.plan import Plan, TargetPlan, make_plan
from deployer.targets.contract import Deadline
from deployer.targets.iot_edge.engine import Engine, ModuleStatus
from deployer.targets.iot_edge.manifest import (
    EdgeManifest,
    problems,
    read_manifest,
    registry_of,
)
from deployer.targets.iot_edge.render import EDGE_AGENT_IMAGE, EDGE_HUB_IMAGE
from deployer.targets.iot_edge.schema import KIND, Config
from deployer.verify import TestRun, run_tests

if TYPE_CHECKING:
    import docker

    from deployer.config.model import DeployConfig
    from deployer.secrets import Secrets

MANIFEST_FILE = "deployment.json"
DEFAULT_SERVER_PORT = 5001
PORT_ENV = "DEPLOYER_SERVER_PORT"
HOST_ENV = "DEPLOYER_SERVER_HOST"
# The image's server binds 0.0.0.0 (a device's container is reached through its published
# port). On the host network that would be every interface of this machine: loopback only.
LOCAL_HOST = "127.0.0.1"
POLL_S = 0.5
PROGRESS_EVERY_S = 5.0
STATUS_EVERY_S = 2.0
LOG_LINES = 40
_PASSWORD_PLACEHOLDER = re.compile(r'"password":\s*"\$\{([A-Za-z_][A-Za-z0-9_]*)\}"')


class ModuleFailed(DeployFailed):
    """A module crashed, could not be pulled or created, or never became ready."""


@dataclass
class Simulation:
    """One ``deployer simulate`` run; ``close`` (always) removes what it started."""

    config: DeployConfig
    config_path: Path
    target_name: str
    progress: Sink
    secrets: Secrets
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    # Registries the device may pull from without credentials (besides mcr.microsoft.com).
    public_registries: Collection[str] = ()
    ready_timeout_s: float | None = None
    client_factory: Callable[[], docker.DockerClient] | None = None

    def __post_init__(self) -> None:
        self.session = uuid.uuid4().hex[:12]
        self.engine: Engine | None = None
        self._plan: Plan | None = None
        self._target: TargetPlan | None = None
        self._manifest: EdgeManifest | None = None
        self._statuses: dict[str, ModuleStatus] = {}

    # 1. What a device would refuse -------------------------------------------------------
    def check(self) -> EdgeManifest:
        """Render and read the manifest; ``UserError`` (nothing built or started) for what a
        device would fail on, or for a ``${ENV}`` value the environment lacks."""
        settings = self.config.targets.get(self.target_name)
        plan = make_plan(self.config, self.config_path, [self.target_name])
        if not isinstance(settings, Config):
            kind = plan.targets[0].kind
            raise UserError(
                f"deployer simulate runs {KIND} targets as an edge device would; "
                f"{self.target_name!r} is a {kind} target (deployer deploy -t {self.target_name} "
                "deploys it)"
            )
        self._plan, self._target = plan, plan.targets[0]
        manifest = read_manifest(self._target.artifacts[MANIFEST_FILE])
        found = [
            problem.replace("targets.<name>.", f"targets.{self.target_name}.")
            for problem in problems(manifest, anonymous_registries=self.public_registries)
        ]
        if found:
            count = f"{len(found)} problem{'s' if len(found) > 1 else ''}"
            raise UserError(
                f"the deployment manifest of {self.target_name} would fail on a device "
                f"({count}); nothing was started:\n" + "\n".join(f"  - {p}" for p in found)
            )
        missing = sorted(
            {m[1] for m in PLACEHOLDER.finditer(self._target.artifacts[MANIFEST_FILE])}
            - {name for name, value in self.env.items() if value}
        )
        if missing:
            raise UserError(
                f"{' and '.join(missing)} must be set in the environment: the manifest's "
                "registry credentials are filled from them at run time (never written)"
            )
        self._manifest = manifest
        return manifest

    @property
    def settings(self) -> Config:
        settings = self.config.targets[self.target_name]
        assert isinstance(settings, Config)
        return settings

    @property
    def module_name(self) -> str:
        return self.settings.module_name

    @property
    def port(self) -> int:
        """The model module's port: its DEPLOYER_SERVER_PORT in the manifest (default 5001)."""
        manifest = self._require_manifest()
        value = manifest.modules[self.module_name].env.get(PORT_ENV, "")
        return int(value) if value.isdigit() else DEFAULT_SERVER_PORT

    @property
    def scoring_uri(self) -> str:
        return f"http://{LOCAL_HOST}:{self.port}/score"

    @property
    def device(self) -> str:
        """Which device(s) the manifest is for, in words."""
        settings = self.settings
        if settings.deployment is not None:
            return f"each device of deployment {settings.deployment.id}"
        return f"device {settings.device_id}"

    def notes(self) -> list[str]:
        """What this run does not do as a device would, in words."""
        manifest = self._require_manifest()
        routes = len(manifest.routes)
        return [
            f"edgeAgent and edgeHub are not run: their images ({EDGE_AGENT_IMAGE}, "
            f"{EDGE_HUB_IMAGE}) are not reachable here. The {routes} "
            f"route{'s were' if routes != 1 else ' was'} checked against the module names "
            "instead, and messages are not routed.",
            "modules run on this machine's host network: Docker ignores their PortBindings "
            f"(edgeHub's ports are checked, not bound). {self.module_name} listens on "
            f"{LOCAL_HOST}:{self.port} ({PORT_ENV}; {HOST_ENV}={LOCAL_HOST} is added here "
            "so that it listens on loopback only).",
        ]

    # 2. Build, push, run, wait -----------------------------------------------------------
    def start(self) -> dict[str, ModuleStatus]:
        """Build and push the image, run the modules, wait for the model module's /ready.
        ``ModuleFailed`` when a module crashes or cannot be pulled, or the deadline passes."""
        from deployer.deploy import Images, docker_client_factory

        manifest = self._require_manifest()
        plan, target = self._plan, self._target
        assert plan is not None and target is not None
        factory = self.client_factory or docker_client_factory()
        images = Images(plan, self.progress, factory, env=self.env, secrets=self.secrets)
        images.build(target)
        images.push(target)
        filled = read_manifest(self._fill(target.artifacts[MANIFEST_FILE]))
        self.engine = Engine(factory(), session=self.session)
        order = sorted(manifest.modules.values(), key=lambda m: (m.startup_order, m.name))
        for module in order:
            logins = [
                name
                for name, entry in manifest.registry_credentials.items()
                if entry["address"].lower() == (registry_of(module.image) or "").lower()
            ]
            login = f" with registryCredentials {logins[0]}" if logins else " anonymously"
            self._step(f"pulling {module.image}{login}, as the edge agent would")
        self._step(f"starting {', '.join(m.name for m in order)} in startup order")
        self._statuses = self.engine.apply(
            filled, extra_env={self.module_name: {HOST_ENV: LOCAL_HOST}}
        )
        self._raise_if_failed(self._statuses)
        self._wait_ready()
        return self._statuses

    def _fill(self, text: str) -> str:
        """``${NAME}`` placeholders filled from the environment (JSON-escaped), in memory;
        what fills a password is masked from now on (a username is not a secret)."""
        for name in _PASSWORD_PLACEHOLDER.findall(text):
            self.secrets.add(self.env[name])

        def value(match: re.Match[str]) -> str:
            return json.dumps(self.env[match[1]])[1:-1]

        return PLACEHOLDER.sub(value, text)

    def _wait_ready(self) -> None:
        engine = self._require_engine()
        timeout = self.ready_timeout_s or self.settings.ready_timeout_s
        deadline = Deadline(timeout)
        ready_url = f"http://{LOCAL_HOST}:{self.port}/ready"
        started = last_report = time.monotonic()
        while True:
            self._statuses = engine.status()
            self._raise_if_failed(self._statuses)
            model = self._statuses[self.module_name]
            if model.runtime_status == "running" and _get(ready_url) == 200:
                self._step(f"{self.module_name} is ready: {ready_url} answers 200")
                return
            if deadline.expired:
                raise ModuleFailed(
                    f"{self.module_name} did not answer {ready_url} with 200 within "
                    f"{timeout:g} s (targets.{self.target_name}.ready_timeout_s, or "
                    "--ready-timeout)",
                    engine.logs(self.module_name, LOG_LINES),
                )
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                self.progress(
                    Event(
                        "progress",
                        f"waiting for {self.module_name}'s init() ({now - started:.0f} s)",
                        key="simulate",
                    )
                )
            deadline.sleep(POLL_S)

    def _raise_if_failed(self, statuses: Mapping[str, ModuleStatus]) -> None:
        for name, status in statuses.items():
            if status.runtime_status in ("running",):
                continue
            if status.runtime_status == "stopped" and name != self.module_name:
                continue  # a helper module that finished (exit 0) or is meant to be stopped
            raise ModuleFailed(
                describe_failure(name, status), self._require_engine().logs(name, LOG_LINES)
            )

    # 3. Tests ----------------------------------------------------------------------------
    def test(self) -> TestRun:
        """deploy.yaml's tests against the model module."""
        self.progress(Event("step", f"running {len(self.config.tests.requests)} test requests"))
        return run_tests(self.scoring_uri, self.config.tests, {}, base_dir=self.config_path.parent)

    def check_modules(self) -> dict[str, ModuleStatus]:
        """Every module as the agent reports it now; ``ModuleFailed`` if one crashed."""
        self._statuses = self._require_engine().status()
        self._raise_if_failed(self._statuses)
        return self._statuses

    # 4. Logs, and clean-up ---------------------------------------------------------------
    def follow(self, stop: threading.Event) -> Iterator[str]:
        """Every custom module's new log lines (``module | line``) until ``stop`` is set, and
        each change of a module's runtime status as the agent would report it."""
        engine = self._require_engine()
        lines: queue.Queue[str] = queue.Queue()
        names = sorted(self._require_manifest().modules)

        def pump(module: str) -> None:
            for line in engine.follow(module, stop=stop.is_set):
                lines.put(f"{module} | {line}")

        for name in names:
            threading.Thread(target=pump, args=(name,), daemon=True).start()
        seen = {name: status.runtime_status for name, status in self._statuses.items()}
        next_status = time.monotonic() + STATUS_EVERY_S
        while not stop.is_set():
            try:
                yield lines.get(timeout=0.2)
                continue
            except queue.Empty:
                pass
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_EVERY_S
                for name, status in engine.status().items():
                    if seen.get(name) != status.runtime_status:
                        seen[name] = status.runtime_status
                        yield f"{name}: {status.runtime_status} ({status.status_description})"

    def close(self) -> list[str]:
        """Remove every container this run started; their names."""
        if self.engine is None:
            return []
        return self.engine.remove_all()

    # Helpers -----------------------------------------------------------------------------
    def _step(self, message: str) -> None:
        self.progress(Event("step", message))

    def _require_manifest(self) -> EdgeManifest:
        if self._manifest is None:
            raise RuntimeError("check() was not called")
        return self._manifest

    def _require_engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("start() was not called")
        return self.engine


def describe_failure(module: str, status: ModuleStatus) -> str:
    """A module that did not run, in the words of the agent's report."""
    code = "" if status.exit_code is None else f", exit code {status.exit_code}"
    restarts = f", {status.restart_count} restarts" if status.restart_count else ""
    return (
        f"module {module} is {status.runtime_status}{code}{restarts}: {status.status_description}"
    )


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError):
        return None
