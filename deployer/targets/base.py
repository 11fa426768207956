"""What every target kind provides for planning, and what it is given.

A kind is a package ``deployer/targets/<kind>/`` (as pre-commit's languages are modules):

- ``schema.py``: ``KIND`` (the ``type:`` value in deploy.yaml) and ``Config`` (its section).
  It imports nothing but the config field types, so loading deploy.yaml loads no more.
- ``render.py`` (``Renderer``): ``own_image()`` (a build context when the kind needs an image
  of its own rather than the shared scoring image) and ``render()`` (its deployment
  artifacts, from its template folder ``templates/<kind>/``).
- ``driver.py`` (``deployer.targets.contract``): everything that talks to a platform. Loaded
  only by the commands that act on deployments; heavy SDKs are imported there, by name.

The kinds are listed once, in ``deployer.targets.kinds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from deployer.config.fields import TargetConfig

if TYPE_CHECKING:
    from deployer.buildcontext import BuildContext, ImageRef
    from deployer.config.model import DeployConfig
    from deployer.plan_inputs import PlanInputs
    from deployer.templating import Templates


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


class Schema(Protocol):
    """The interface of a kind's ``schema.py``."""

    KIND: str
    Config: type[TargetConfig]


class Renderer(Protocol):
    """The interface of a kind's ``render.py``."""

    def own_image(self, ctx: TargetContext) -> BuildContext | None:
        """The image this kind builds itself, or None to deploy the shared scoring image."""
        ...

    def render(self, ctx: RenderContext) -> dict[str, str]:
        """Deployment artifacts: relative path -> file content."""
        ...
