"""How an Azure platform logs in to the registry to pull the image (``aci``, ``functions``):
deploy.yaml's ``pull`` when it is set, else the registry's own user and password (``auth:
basic``); an ACR that deployer pushes to with its own token (``auth: acr``) needs ``pull``,
since that token expires within hours and the platform pulls again on every restart."""

from __future__ import annotations

from dataclasses import dataclass

from deployer.config.fields import ImagePull
from deployer.config.model import Registry
from deployer.errors import UserError


@dataclass(frozen=True)
class PullLogin:
    identity: str | None = None  # a user-assigned identity's id, or "system" (functions)
    username_env: str | None = None
    password_env: str | None = None


def pull_login(target: str, registry: Registry, pull: ImagePull | None) -> PullLogin | None:
    """The login for target ``target``; None for a registry without auth."""
    if pull is not None and pull.identity is not None:
        return PullLogin(identity=pull.identity)
    if pull is not None and pull.username_env and pull.password_env:
        return PullLogin(username_env=pull.username_env, password_env=pull.password_env)
    if registry.auth == "basic":
        return PullLogin(username_env=registry.username_env, password_env=registry.password_env)
    if registry.auth == "acr":
        raise UserError(
            f"target {target}: the registry uses auth: acr, so set targets.{target}.pull: "
            "a managed identity with AcrPull (identity: <its resource id>), or a token's "
            "username_env and password_env (deployer's own ACR token expires within hours)"
        )
    return None
