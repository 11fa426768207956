"""``aci``: the scoring image as an Azure Container Instances container group.

``container-group.json`` is the body of the ARM ``PUT`` of a
``Microsoft.ContainerInstance/containerGroups`` resource (API version 2023-05-01, the
version of azure-mgmt-containerinstance's models). Secrets in it are ``${ENV}``
placeholders that the deploy step fills in: the registry credentials from the variables
deploy.yaml names, and with ``auth: key`` the scoring keys, from the variables ``key_env``
and ``secondary_key_env`` name (CI secrets), as secure environment variables. Azure never
returns a secure value, so the keys live with the user, not only in Azure: the deploy step
reads them (deployer.scoring_keys) for the placeholders and for the post-deploy tests.

The group always gets a public IP address. A private one needs a virtual network subnet,
which this target does not configure (ARM refuses ``Private`` without ``subnetIds``), and a
group without an address cannot be reached at all, not even by the post-deploy tests.
``dns_name_label`` adds a stable name, ``<label>.<location>.azurecontainer.io``; without
it, the address is only known once the group runs. ``auth: key`` is what keeps a public
endpoint private.
"""

from __future__ import annotations

from typing import Any

from deployer.buildcontext import BuildContext
from deployer.placeholders import placeholder
from deployer.targets.aci.schema import Config
from deployer.targets.base import RenderContext, TargetContext
from deployer.targets.pull_login import pull_login

API_VERSION = "2023-05-01"

# The environment variables the scoring server reads its keys from (auth: key).
SCORING_KEY_ENV = "DEPLOYER_SCORING_KEY"
SECONDARY_SCORING_KEY_ENV = "DEPLOYER_SCORING_KEY_SECONDARY"

# ACI has no startup probe, so the first liveness check waits out a slow start (heavy
# imports, a large model). A container that crashes is restarted whatever the probes say;
# liveness only catches a hung one, so a generous delay costs little.
LIVENESS_INITIAL_DELAY_S = 300
LIVENESS_PERIOD_S = 10
LIVENESS_FAILURES = 3

TAG_SERVICE = "ai.deployer.service"
TAG_TARGET = "ai.deployer.target"
TAG_MODEL_NAME = "ai.deployer.model.name"
TAG_MODEL_VERSION = "ai.deployer.model.version"


def own_image(ctx: TargetContext) -> BuildContext | None:
    return None


def render(ctx: RenderContext) -> dict[str, str]:
    target = _config_of(ctx)
    return {
        "container-group.json": ctx.templates.render(
            "container-group.json.j2",
            location=target.location,
            tags=tags(ctx),
            container_name=ctx.config.name,
            image=str(ctx.image),
            port=target.port,
            cpu=target.cpu_cores,
            memory_gb=target.memory_gb,
            env=_environment(target),
            probes=_probes(ctx),
            dns_name_label=target.dns_name_label,
            registry_credentials=_registry_credentials(ctx),
            identity=_identity(ctx),
        )
    }


def tags(ctx: RenderContext) -> dict[str, str]:
    """The group's Azure tags, sorted by key."""
    values = {
        TAG_SERVICE: ctx.config.name,
        TAG_TARGET: ctx.name,
        TAG_MODEL_NAME: ctx.config.model_name,
        TAG_MODEL_VERSION: ctx.model_version,
    }
    return dict(sorted(values.items()))


def _environment(target: Config) -> list[dict[str, str]]:
    """The container's environment variables, sorted by name (values are strings)."""
    variables = [
        # The image's defaults, stated: the probes and the IP address use this port.
        {"name": "DEPLOYER_SERVER_HOST", "value": "0.0.0.0"},
        {"name": "DEPLOYER_SERVER_PORT", "value": str(target.port)},
    ]
    if target.auth == "key":
        variables.append({"name": SCORING_KEY_ENV, "secureValue": placeholder(target.key_env)})
        if target.secondary_key_env is not None:
            variables.append(
                {
                    "name": SECONDARY_SCORING_KEY_ENV,
                    "secureValue": placeholder(target.secondary_key_env),
                }
            )
    return sorted(variables, key=lambda variable: variable["name"])


def _probes(ctx: RenderContext) -> dict[str, int]:
    """Three failures, as Kubernetes' default: the server answers GET / from its event loop,
    never behind a run() in progress, so a busy container still looks alive."""
    return {
        "liveness_initial_delay_s": LIVENESS_INITIAL_DELAY_S,
        "liveness_period_s": LIVENESS_PERIOD_S,
        "liveness_failures": LIVENESS_FAILURES,
    }


def _registry_credentials(ctx: RenderContext) -> list[dict[str, Any]]:
    """ACI's registry login: a managed identity, or secrets as placeholders; none for a
    registry without auth."""
    login = pull_login(ctx.name, ctx.config.registry, _config_of(ctx).pull)
    # A login is to a host[:port]; a namespace path is part of image names only.
    server = ctx.image.registry.split("/", 1)[0]
    if login is None:
        return []
    if login.identity is not None:
        return [{"server": server, "identity": login.identity}]
    assert login.username_env and login.password_env
    return [
        {
            "server": server,
            "username": placeholder(login.username_env),
            "password": placeholder(login.password_env),
        }
    ]


def _identity(ctx: RenderContext) -> dict[str, Any] | None:
    """The group's identity block: the pull identity, user-assigned."""
    pull = _config_of(ctx).pull
    if pull is None or pull.identity is None:
        return None
    return {"type": "UserAssigned", "userAssignedIdentities": {pull.identity: {}}}


def _config_of(ctx: RenderContext) -> Config:
    if not isinstance(ctx.target, Config):
        raise TypeError(f"target {ctx.name!r} is not an aci target")
    return ctx.target
