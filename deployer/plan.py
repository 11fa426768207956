"""From a validated config to a plan: per target, the image it deploys and its artifacts.

Everything here is computed, nothing is written or built: ``render`` writes a plan to disk,
and the build and deploy steps take the same plan.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path

from deployer.buildcontext import BuildContext, ImageRef
from deployer.config.fields import TargetConfig
from deployer.config.model import DeployConfig
from deployer.errors import UserError
from deployer.image import scoring_image
from deployer.plan_inputs import PlanInputs
from deployer.targets import kinds
from deployer.targets.base import RenderContext, TargetContext
from deployer.templating import Templates

REVISION_LENGTH = 12


@dataclass(frozen=True)
class TargetPlan:
    name: str
    kind: str  # the target's type
    target: TargetConfig
    image: ImageRef
    artifacts: dict[str, str]

    @property
    def revision(self) -> str:
        """A hash of the image and every rendered artifact: what a deploy makes live, and
        what tells that a deploy has nothing to change."""
        digest = hashlib.sha256(f"{self.image}\0".encode())
        for path, content in sorted(self.artifacts.items()):
            digest.update(f"{path}\0{content}\0".encode())
        return digest.hexdigest()[:REVISION_LENGTH]


@dataclass(frozen=True)
class Plan:
    inputs: PlanInputs
    images: dict[str, BuildContext]  # repository -> build context
    targets: list[TargetPlan]

    @property
    def config(self) -> DeployConfig:
        return self.inputs.config


def select_targets(config: DeployConfig, names: list[str] | None) -> list[str]:
    """The targets named (in deploy.yaml's order), or all of them."""
    if not names:
        return list(config.targets)
    unknown = [name for name in names if name not in config.targets]
    if unknown:
        name = unknown[0]
        hint = difflib.get_close_matches(name, list(config.targets), n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        raise UserError(
            f"no target named '{name}' in deploy.yaml{suggestion} "
            f"(targets: {', '.join(config.targets)})"
        )
    return [name for name in config.targets if name in names]


def make_plan(config: DeployConfig, config_path: Path, targets: list[str] | None = None) -> Plan:
    inputs = PlanInputs.of(config, config_path)
    images: dict[str, BuildContext] = {}
    planned: list[TargetPlan] = []
    for name in select_targets(config, targets):
        target = config.targets[name]
        renderer = kinds.renderer(target.type)
        ctx = TargetContext(inputs, name, target, Templates(target.type))
        context = renderer.own_image(ctx)
        if context is None:
            context = images.get(config.name) or scoring_image(inputs)
        images[context.repository] = context
        ref = ImageRef(config.registry.address, context.repository, context.tag())
        render_ctx = RenderContext(inputs, name, target, ctx.templates, image=ref)
        planned.append(TargetPlan(name, target.type, target, ref, renderer.render(render_ctx)))
    return Plan(inputs, images, planned)
