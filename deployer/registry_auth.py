"""Registry credentials, read from the environment variables deploy.yaml names.

Only the *names* of the variables live in deploy.yaml; the values are read here, at the
moment they are needed, and never written to a file, a report or a log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from deployer.config.model import Registry
from deployer.errors import UserError


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


def credentials_for(registry: Registry, env: Mapping[str, str] = os.environ) -> Credentials | None:
    """The registry's credentials, or None for ``auth: none``."""
    if registry.auth == "none":
        return None
    if registry.auth == "acr":
        raise UserError(
            "registry.auth 'acr' is not supported yet; use 'basic' with the registry's "
            "admin user or a token in the environment variables it names"
        )
    missing = [name for name in (registry.username_env, registry.password_env) if not env.get(name)]
    if missing:
        raise UserError(
            f"registry {registry.address} uses basic auth, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set in the environment"
        )
    return Credentials(env[registry.username_env], env[registry.password_env])
