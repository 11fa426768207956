"""How an Azure platform pulls the image from the registry: ``pull`` in the ``aci`` and
``functions`` targets' sections (a managed identity with AcrPull, or a user name and password
from named environment variables; never both)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from deployer.config.fields import EnvVarName, Rule, Section, error

ManagedIdentityId = Annotated[
    str,
    Rule(
        "user-assigned managed identity id",
        "/subscriptions/<id>/resourceGroups/<group>/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/<name>",
        r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
        r"(?i:Microsoft\.ManagedIdentity)/(?i:userAssignedIdentities)/[^/]+$",
        max_length=512,
    ),
]


class ImagePull(Section):
    """How the platform logs in to the registry to pull its image."""

    identity: ManagedIdentityId | None = Field(
        default=None,
        description="A user-assigned managed identity with AcrPull on the registry, given to "
        "the group: the recommended way, with no secret stored anywhere.",
    )
    username_env: EnvVarName | None = Field(
        default=None,
        description="Or the name of the environment variable holding a user name: an ACR "
        "token (scope map with content/read) or the admin user.",
    )
    password_env: EnvVarName | None = Field(
        default=None,
        description="The name of the environment variable holding that user's password.",
    )

    @model_validator(mode="after")
    def _one_way(self) -> ImagePull:
        by_secret = self.username_env is not None or self.password_env is not None
        if self.identity is not None and by_secret:
            raise error(
                "pull", "set identity, or username_env and password_env; not both", at="identity"
            )
        if by_secret and (self.username_env is None or self.password_env is None):
            missing = "password_env" if self.password_env is None else "username_env"
            raise error("pull", "{missing} is needed too", missing=missing)
        if self.identity is None and not by_secret:
            raise error("pull", "set identity, or username_env and password_env")
        return self
