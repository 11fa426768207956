"""Registry credentials: from the environment variables deploy.yaml names, or, for an Azure
Container Registry (``auth: acr``), from the identity deployer runs as.

Only the *names* of the variables live in deploy.yaml; the values are read here, at the
moment they are needed, and never written to a file, a report or a log. Credentials made
for the run (an ACR refresh token, an admin password read from Azure) join the run's
secrets the moment they are known, so every output masks them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deployer.config.model import Registry
from deployer.errors import UserError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from deployer.plan import Plan
    from deployer.secrets import Secrets

# What a 401 from the registry means with credentials from the environment.
BASIC_REJECTED = (
    "check the username and password in the environment variables "
    "registry.username_env/password_env name"
)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    # What to tell the user when the registry answers 401 to these credentials, and 403
    # (made for the run: then the registry's own words are quoted too, masked like the rest).
    if_rejected: str = field(default=BASIC_REJECTED, compare=False)
    if_denied: str = field(default="", compare=False)

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


def credentials_for(
    registry: Registry,
    env: Mapping[str, str] = os.environ,
    *,
    secrets: Secrets | None = None,
    azure_cloud: str | None = None,
    base_dir: Path | None = None,
    token_credential: TokenCredential | None = None,
) -> Credentials | None:
    """The registry's credentials, or None for ``auth: none``.

    For ``auth: acr`` they come from Azure: ``azure_cloud`` (deploy.yaml's setting, relative
    to ``base_dir``) or the environment names the cloud, ``token_credential`` (by default
    DefaultAzureCredential) the identity. The secret they hold is added to ``secrets``.
    """
    if registry.auth == "none":
        return None
    if registry.auth == "acr":
        from deployer.azure import acr
        from deployer.azure.cloud import resolve_cloud

        cloud = resolve_cloud(azure_cloud, base_dir or Path.cwd(), env)
        if registry.admin_user:
            credentials = acr.admin_credentials(registry, cloud, token_credential)
        else:
            credentials = acr.exchange_credentials(registry, cloud, env, token_credential, secrets)
        if secrets is not None:
            secrets.add(credentials.password)
        return credentials
    missing = [name for name in (registry.username_env, registry.password_env) if not env.get(name)]
    if missing:
        raise UserError(
            f"registry {registry.address} uses basic auth, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set in the environment"
        )
    return Credentials(env[registry.username_env], env[registry.password_env])


def plan_credentials(
    plan: Plan, env: Mapping[str, str] = os.environ, secrets: Secrets | None = None
) -> Credentials | None:
    """``credentials_for`` the registry of ``plan``'s deploy.yaml, in its Azure cloud."""
    config = plan.config
    return credentials_for(
        config.registry,
        env,
        secrets=secrets,
        azure_cloud=getattr(config, "azure_cloud", None),
        base_dir=plan.inputs.base_dir,
    )
