"""The driver contract: how deployer deploys, inspects and removes a deployment of any kind.

A kind's ``driver.py`` has one entry point, ``connect(target, session) -> Driver``, and
the ``Driver`` it returns implements every method below: none is optional (pre-commit's
language protocol is the model). A platform that lacks a step says so with the shared
stub for it (``nothing_to_tidy``, ``promoted_in_place``, ``nothing_to_retire``...), so that
reading a driver tells what its platform does and does not do.

Drivers do platform operations only. The policy (live state → apply → wait → verify →
promote, or roll back on any failure) is written once, in ``deployer.rollout``; a driver
never decides whether a version is good enough, and never verifies by itself.

Each driver declares how its platform replaces a version (``replacement``):

- ``candidate``: the new version runs beside the live one until it is proven. ``apply``
  starts it without touching the live one, ``wait`` and the tests run against the
  candidate's own endpoint, ``promote`` moves traffic to it (the previous version still
  exists, so a rollback is instant), the tests run again on the service endpoint,
  ``confirm`` makes the switch permanent and ``retire`` removes the previous version.
  Local Docker, Kubernetes, ACI (a candidate group) work this way.
- ``in-place``: the platform swaps the version itself. ``apply`` replaces it, the tests
  run on the service endpoint, ``promote`` has nothing to switch, ``confirm`` records the
  new version as the one to come back to, and a rollback re-applies the previous version.
  IoT Edge and a Functions app restart work this way: their rollbacks are not instant, and
  requests may fail meanwhile.

Every operation is idempotent where it can be: a deploy killed at any moment leaves state
that ``tidy`` (run first by the next deploy) turns back into exactly one live version.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from deployer.errors import DeployFailed

if TYPE_CHECKING:
    from deployer.buildcontext import ImageRef
    from deployer.config.fields import TargetConfig
    from deployer.config.model import DeployConfig, Registry, Server
    from deployer.events import Sink
    from deployer.secrets import Secrets

Replacement = Literal["candidate", "in-place"]
Health = Literal["healthy", "starting", "unhealthy", "stopped"]


@dataclass(frozen=True)
class TargetRef:
    """A deployment by name, with deploy.yaml's settings for it and nothing rendered: all
    that ``status``, ``logs`` and ``down`` need (no model files, no image)."""

    service: str  # deploy.yaml's name: names images, containers and cloud resources
    name: str  # the target's name in deploy.yaml
    settings: TargetConfig  # the target's section, narrowed by each kind to its Config
    registry: Registry
    server: Server
    azure_cloud: str | None = None  # deploy.yaml's azure_cloud (the Azure kinds' cloud)

    @classmethod
    def of(cls, config: DeployConfig, name: str) -> TargetRef:
        return cls(
            config.name,
            name,
            config.targets[name],
            config.registry,
            config.server,
            config.azure_cloud,
        )

    @property
    def kind(self) -> str:
        return self.settings.type


@dataclass(frozen=True)
class Release:
    """A version to apply: the rendered artifacts and the image they run.

    ``revision`` is a hash of both, so the same inputs give the same revision and a deploy
    whose revision is live already has nothing to apply.
    """

    revision: str
    image: ImageRef
    artifacts: Mapping[str, str]


@dataclass(frozen=True)
class Endpoint:
    """Where a version answers, and what a client must send it."""

    scoring_uri: str
    swagger_uri: str
    # Headers every request needs (an auth key). Their values are secrets: the driver adds
    # them to the session's secrets when it learns them, and reports show only the names.
    headers: Mapping[str, str] = field(default_factory=dict)
    # Where this run's tests reach it, when that is not the scoring URI: a service inside a
    # cluster, reached through the API server's proxy ("" : the scoring URI itself).
    test_uri: str = ""
    # What a reader of the report must know about the address ("internal to the cluster").
    note: str = ""
    # False when this machine cannot reach it at all (a device on its own network, and no
    # test_uri): the tests are not run, and the note says why.
    reachable: bool = True

    @property
    def reachable_uri(self) -> str:
        """The URI this run's tests send requests to."""
        return self.test_uri or self.scoring_uri


@dataclass(frozen=True)
class Version:
    """One deployed version of a target, as its platform shows it now."""

    revision: str
    image: str
    endpoint: Endpoint | None  # None while the platform has not given it an address
    health: Health
    detail: str = ""  # what the platform says, in words: why it is unhealthy, what it waits for
    ref: str = ""  # the platform's own name or id for it (container, group, configuration)


class Deadline:
    """How long a wait may take. Waits sleep through it, so Ctrl-C interrupts them."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.remaining()))

    def exceeded(self, what: str, logs: list[str] | None = None) -> DeployFailed:
        """The error for a wait that ran out: ``what`` says what never happened."""
        return DeployFailed(
            f"{what} within the ready deadline of {self.seconds:g} s "
            "(targets.<name>.ready_timeout_s in deploy.yaml)",
            logs,
        )


@dataclass(frozen=True)
class Session:
    """What every driver of one run shares: progress, the run's secrets, the environment."""

    progress: Sink
    secrets: Secrets
    env: Mapping[str, str]


class Driver(Protocol):
    """A driver connected to one target's platform. Every method is mandatory."""

    # How this platform replaces a version (see the module docstring).
    replacement: Replacement
    # What the platform's SDK raises when the platform (not deployer) fails: an HTTP error,
    # a refused connection. The policy turns these into a failed target (exit 1) after the
    # rollback; anything else escaping a driver is a bug in deployer (exit 70).
    platform_errors: tuple[type[BaseException], ...]

    def live(self) -> Version | None:
        """The version serving now, or None when nothing is deployed. Changes nothing."""
        ...

    def tidy(self) -> list[str]:
        """Finish or undo whatever an interrupted deploy left behind, so that exactly one
        version (or none) is live and serving; return what was done, in words."""
        ...

    def apply(self, release: Release) -> Version:
        """Start ``release`` without retiring the live version (``in-place``: replace it the
        way the platform does). Returns at once; ``wait`` waits."""
        ...

    def wait(self, version: Version, deadline: Deadline) -> Version:
        """Wait until ``version`` is ready to be tested, reporting progress; raise
        ``DeployFailed`` as soon as it cannot become ready (it crashed, its image cannot be
        pulled), or ``deadline.exceeded(...)`` when time runs out."""
        ...

    def logs(self, revision: str, tail: int) -> list[str]:
        """The last ``tail`` lines of that revision's logs (best effort: [] if none)."""
        ...

    def follow(self, revision: str, tail: int) -> Iterator[str]:
        """That revision's log lines as they come, after its last ``tail`` ones, until the
        version stops or the caller stops iterating (Ctrl-C)."""
        ...

    def promote(self, candidate: Version, previous: Version | None) -> Version:
        """Make the tested version the one that serves; return it as the service sees it.
        ``candidate`` drivers keep ``previous`` able to take traffic back until ``retire``."""
        ...

    def confirm(self, version: Version) -> None:
        """The promoted version passed on the service endpoint: make it the one the platform
        keeps from now on (it survives restarts, and a later rollback returns to it). Until
        this returns, a rollback still restores the previous version."""
        ...

    def retire(self, previous: Version) -> None:
        """Remove the version that served before a confirmed promote. The new version serves
        whatever happens here: a failure is a warning, and the next ``tidy`` finishes it."""
        ...

    def roll_back(self, release: Release, previous: Version | None) -> None:
        """After any failure of ``release`` (at any step, even half-applied): remove what
        it created and leave ``previous`` serving, as it was."""
        ...

    def remove(self, images: bool) -> list[str]:
        """Remove the deployment, whatever state it is in; [] when there is none (so a
        second ``down`` is a no-op). ``images``: also the images it ran, where the platform
        keeps them. Returns what was removed, in words."""
        ...

    def close(self) -> None:
        """Release the platform's connections."""
        ...


class DriverModule(Protocol):
    """The interface of a kind's ``driver.py``."""

    def connect(self, target: TargetRef, session: Session) -> Driver:
        """A driver for ``target``, with the kind's credentials; ``UserError`` naming what is
        missing and how to provide it when they are not there."""
        ...


# Shared stubs, for platforms that lack a step (assign them in the driver class body).


def nothing_to_tidy(driver: object) -> list[str]:
    """The platform converges by itself (declarative APIs): nothing is ever left half-done."""
    return []


def promoted_in_place(driver: object, candidate: Version, previous: Version | None) -> Version:
    """``in-place``: the applied version already serves; there is no switch to make."""
    return candidate


def confirmed_by_platform(driver: object, version: Version) -> None:
    """The platform's own object (a Deployment, a configuration) already records it."""


def nothing_to_retire(driver: object, previous: Version) -> None:
    """``in-place``: the previous version was replaced by the platform itself."""


def no_images(driver: object, images: bool) -> list[str]:
    """The platform keeps no images of its own: they stay in the registry."""
    return []


def follow_by_polling(read: Callable[[int], list[str]], interval_s: float = 2.0) -> Iterator[str]:
    """``follow`` for platforms that can only return the last lines: poll, and yield what is
    new after the lines seen last time (``read(tail)`` returns the last ``tail`` lines)."""
    seen: list[str] = []
    tail = 200
    while True:
        lines = read(tail)
        start = _overlap(seen, lines)
        yield from lines[start:]
        seen = lines
        time.sleep(interval_s)


def _overlap(seen: list[str], lines: list[str]) -> int:
    """Where ``lines`` continues ``seen``: the length of the longest suffix of ``seen`` that
    is a prefix of ``lines``."""
    for size in range(min(len(seen), len(lines)), 0, -1):
        if seen[-size:] == lines[:size]:
            return size
    return 0


def probe_ready(ready_url: str, timeout_s: float = 3.0) -> tuple[Health, str]:
    """Health as a client sees it: the scoring server's ``GET /ready`` (200 ready, 503 while
    init() runs), for drivers whose platform cannot tell readiness itself."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(ready_url, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as error:
        status = int(error.code)
    except (urllib.error.URLError, OSError):
        return "unhealthy", f"nothing answers at {ready_url}"
    if status == 200:
        return "healthy", ""
    if status == 503:
        return "starting", "GET /ready answers 503: init() has not finished"
    return "unhealthy", f"GET /ready answers {status}"
