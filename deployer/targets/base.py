"""What every target kind provides, and what it is given.

A kind is a module (like pre-commit's languages): ``KIND`` (the ``type:`` value in
deploy.yaml), ``Config`` (its pydantic section), ``own_image()`` (a build context when the
kind needs an image of its own rather than the shared scoring image) and ``render()`` (its
deployment artifacts, from its template folder ``templates/<KIND>/``). A kind that can
deploy from here also provides ``deploy()`` and ``down()`` (``Deployable``). Heavy SDKs are
never imported at module level: ``deployer validate`` imports every kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from deployer.config.fields import Section

if TYPE_CHECKING:
    import docker

    from deployer.buildcontext import BuildContext, ImageRef
    from deployer.config.model import DeployConfig
    from deployer.events import Sink
    from deployer.plan_inputs import PlanInputs
    from deployer.templating import Templates
    from deployer.verify import TestRun


class TargetConfig(Section):
    """Base of every target's section; each kind narrows ``type`` to its Literal."""

    type: str


@dataclass(frozen=True)
class TargetContext:
    """One target of one config, with the templates of its kind."""

    inputs: PlanInputs  # the config, where it lives, and the model version
    name: str
    target: TargetConfig
    templates: Templates

    @property
    def config(self) -> DeployConfig:
        return self.inputs.config

    @property
    def model_version(self) -> str:
        return self.inputs.model_version


@dataclass(frozen=True)
class RenderContext(TargetContext):
    """A target whose image is known: what its deployment artifacts are rendered from."""

    image: ImageRef


class TargetKind(Protocol):
    """The module interface of a target kind."""

    KIND: str
    Config: type[TargetConfig]

    def own_image(self, ctx: TargetContext) -> BuildContext | None:
        """The image this kind builds itself, or None to deploy the shared scoring image."""
        ...

    def render(self, ctx: RenderContext) -> dict[str, str]:
        """Deployment artifacts: relative path -> file content."""
        ...


@dataclass(frozen=True)
class DeployContext:
    """What a kind's ``deploy()`` gets: its rendered plan and the means to act and check."""

    name: str
    config: DeployConfig
    target: TargetConfig
    image: ImageRef
    artifacts: dict[str, str]
    docker: Callable[[], docker.DockerClient]  # connects on first use
    verify: Callable[[str], TestRun]  # runs deploy.yaml's tests against a scoring URI
    progress: Sink
    ready_timeout_s: float = 120.0


@dataclass
class DeployOutcome:
    status: Literal["deployed", "unchanged"]
    scoring_uri: str
    swagger_uri: str
    tests: TestRun
    logs: list[str] = field(default_factory=list)


@runtime_checkable
class Deployable(Protocol):
    """A kind that deploys from here. ``deploy`` verifies before it retires the previous
    version and raises ``DeployFailed`` (leaving the previous version serving) otherwise."""

    def deploy(self, ctx: DeployContext) -> DeployOutcome: ...

    def down(self, ctx: DeployContext, remove_images: bool) -> list[str]:
        """Remove the deployment; return what was removed, for the user."""
        ...
