"""``local``'s artifact: ``container.json``, the body of the Docker Engine API's
``POST /containers/create``, ready for ``docker.APIClient.create_container_from_config``.

It names no container: the driver names each one after the target and its revision, so
that the old and the new version can run side by side while traffic switches, and finds
them again by their labels.
"""

from __future__ import annotations

from deployer.buildcontext import BuildContext
from deployer.serving.config import drain_s
from deployer.targets.base import RenderContext, TargetContext
from deployer.targets.local.schema import Config

NANO_CPUS_PER_CORE = 1_000_000_000
# memory_gb counts GiB, as Docker's own "--memory 1g" does.
BYTES_PER_GB = 1024**3
# Slack on top of the server's drain, for the process to exit.
SHUTDOWN_MARGIN_S = 5

LABEL_SERVICE = "ai.deployer.service"
LABEL_TARGET = "ai.deployer.target"
LABEL_BASE_NAME = "ai.deployer.base-name"
LABEL_MODEL_NAME = "ai.deployer.model.name"
LABEL_MODEL_VERSION = "ai.deployer.model.version"


def own_image(ctx: TargetContext) -> BuildContext | None:
    return None


def render(ctx: RenderContext) -> dict[str, str]:
    target = _config_of(ctx)
    return {
        "container.json": ctx.templates.render(
            "container.json.j2",
            image=str(ctx.image),
            env=_environment(target),
            labels=labels(ctx),
            nano_cpus=nano_cpus(target.cpu_cores),
            memory_bytes=memory_bytes(target.memory_gb),
            stop_timeout_s=stop_timeout_s(ctx.config.server.scoring_timeout_ms),
        )
    }


def base_name(service: str, target_name: str) -> str:
    """The container's name without the version suffix the deploy step adds."""
    return f"{service}-{target_name}"


def labels(ctx: RenderContext) -> dict[str, str]:
    """The container's labels, sorted by key."""
    values = {
        LABEL_SERVICE: ctx.config.name,
        LABEL_TARGET: ctx.name,
        LABEL_BASE_NAME: base_name(ctx.config.name, ctx.name),
        LABEL_MODEL_NAME: ctx.config.model_name,
        LABEL_MODEL_VERSION: ctx.model_version,
    }
    return dict(sorted(values.items()))


def nano_cpus(cores: float) -> int:
    return round(cores * NANO_CPUS_PER_CORE)


def memory_bytes(gigabytes: float) -> int:
    return round(gigabytes * BYTES_PER_GB)


def _environment(target: Config) -> list[str]:
    """Env entries as the Engine API takes them ("NAME=value"), sorted.

    On the host network there is no port mapping: the server itself listens on the
    host's interface and port, so the image's defaults (0.0.0.0:5001) are overridden.
    """
    values = {"DEPLOYER_SERVER_HOST": target.host, "DEPLOYER_SERVER_PORT": str(target.port)}
    return [f"{name}={value}" for name, value in sorted(values.items())]


def stop_timeout_s(scoring_timeout_ms: int) -> int:
    """How long ``docker stop`` waits after SIGTERM: the server's drain (the longest request
    allowed, server.scoring_timeout_ms, and a margin) and then some, so that retiring the old
    container after a switch drops no request. Docker's default, 10 s, is shorter."""
    return drain_s(scoring_timeout_ms) + SHUTDOWN_MARGIN_S


def _config_of(ctx: RenderContext) -> Config:
    if not isinstance(ctx.target, Config):
        raise TypeError(f"target {ctx.name!r} is not a local target")
    return ctx.target
