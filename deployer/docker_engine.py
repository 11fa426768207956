"""The Docker engine client, imported lazily so that validate and render never need it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from deployer.errors import DeployerError

if TYPE_CHECKING:
    import docker


def connect() -> docker.DockerClient:
    """A client for the engine named by DOCKER_HOST (or the default socket)."""
    try:
        import docker
        import docker.errors
    except ImportError as exc:  # pragma: no cover - docker is a core dependency
        raise DeployerError(f"the Docker SDK for Python is not installed: {exc}") from None
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except docker.errors.DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise DeployerError(
            f"cannot reach the Docker engine at {where}: {_reason(exc)}. "
            'Start it (on a development machine: eval "$(scripts/dev-env)").'
        ) from None
    return client


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.split("(Caused by", 1)[0].strip().rstrip(":") or type(exc).__name__
