"""``kubernetes``: Deployment, Service and HorizontalPodAutoscaler for AKS or any cluster.

The manifests are YAML templates whose every value goes through ``tojson`` (a JSON string is
a YAML string to every parser, where a bare ``1e5`` is a number to some); the numbers that
follow from the config (probe budgets, the grace period) are worked out here, where they
can be explained and tested.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from deployer.buildcontext import BuildContext
from deployer.image import USER_ID
from deployer.label_values import label_value, object_name
from deployer.serving.config import drain_s
from deployer.targets.base import RenderContext, TargetContext
from deployer.targets.kubernetes.schema import Config

if TYPE_CHECKING:
    from deployer.config.model import DeployConfig

# How long a starting container may take to answer GET / (model load included) before the
# kubelet restarts it: startup probes run every STARTUP_PERIOD_S seconds, this many times.
STARTUP_BUDGET_S = 300
STARTUP_PERIOD_S = 10
LIVENESS_PERIOD_S = 10
LIVENESS_FAILURES = 3
# A pod being stopped keeps serving this long while the endpoint and load balancer
# deregister it, so that no new request reaches a server that has stopped accepting.
PRE_STOP_DELAY_S = 5
# Slack on top of the server's drain, for the process to exit.
SHUTDOWN_MARGIN_S = 5


def own_image(ctx: TargetContext) -> BuildContext | None:
    return None


def render(ctx: RenderContext) -> dict[str, str]:
    target = _config_of(ctx)
    selector = {
        "app.kubernetes.io/name": ctx.config.name,
        "app.kubernetes.io/instance": ctx.name,
    }
    # The model's name and version may change from one deployment to the next, so they
    # label objects but never select them (a Deployment's selector is immutable).
    labels = {
        **selector,
        "app.kubernetes.io/version": ctx.model_version,
        "app.kubernetes.io/managed-by": "deployer",
        # Azure ML model names may not fit a label value; the image's labels keep it whole.
        "deployer.ai/model-name": label_value(ctx.config.model_name),
    }
    values: dict[str, Any] = {
        # Templates.render takes the template as "name".
        # Named after the service and the target: two targets in one namespace never collide.
        "resource_name": object_name(ctx.config.name, ctx.name),
        "target": target,
        "labels": labels,
        "selector": selector,
    }
    artifacts = {
        "deployment.yaml": ctx.templates.render(
            "deployment.yaml.j2",
            **values,
            image=str(ctx.image),
            pull_secret=pull_secret_name(ctx.config, ctx.name, target),
            user_id=USER_ID,
            probes=_probes(ctx),
            termination_grace_s=_termination_grace_s(ctx),
            pre_stop_delay_s=PRE_STOP_DELAY_S,
        ),
        "service.yaml": ctx.templates.render("service.yaml.j2", **values),
    }
    if target.autoscale is not None:
        artifacts["hpa.yaml"] = ctx.templates.render(
            "hpa.yaml.j2", **values, autoscale=target.autoscale
        )
    return artifacts


def _config_of(ctx: RenderContext) -> Config:
    if not isinstance(ctx.target, Config):
        raise TypeError(f"target {ctx.name!r} is not a kubernetes target")
    return ctx.target


def pull_secret_name(config: DeployConfig, target: str, settings: Config) -> str | None:
    """The image pull secret the Deployment names, or None when the cluster pulls by itself
    (an open registry, or ACR attached to AKS). One per target, so ``down`` removes it.

    The secret itself holds credentials, so it is created at deploy time, never rendered.
    """
    wanted = settings.pull_secret
    if wanted is None:
        wanted = config.registry.auth == "basic"
    if not wanted or config.registry.auth == "none":
        return None
    return object_name(config.name, target) + "-registry"


def _probes(ctx: RenderContext) -> dict[str, int]:
    """Probe timings. The startup budget covers a slow model load; it is not derived from
    the scoring timeout, which bounds one request, not init(). Liveness keeps the kubelet's
    default of three failures: the server answers GET / from its event loop, never behind
    a run() in progress, so a busy container still looks alive."""
    startup_failures = math.ceil(STARTUP_BUDGET_S / STARTUP_PERIOD_S)
    return {
        "startup_period_s": STARTUP_PERIOD_S,
        "startup_failures": startup_failures,
        "startup_budget_s": STARTUP_PERIOD_S * startup_failures,
        "liveness_period_s": LIVENESS_PERIOD_S,
        "liveness_failures": LIVENESS_FAILURES,
    }


def _termination_grace_s(ctx: RenderContext) -> int:
    """Long enough to deregister, then let the longest allowed request finish."""
    return PRE_STOP_DELAY_S + drain_s(ctx.config.server.scoring_timeout_ms) + SHUTDOWN_MARGIN_S
