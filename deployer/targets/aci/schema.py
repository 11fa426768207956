"""The ``aci`` target's section of deploy.yaml."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from deployer.config.fields import (
    AzureLocation,
    DnsLabel,
    EnvVarName,
    Port,
    PositiveFloat,
    ResourceGroup,
    Rule,
    Section,
    TargetConfig,
    Uuid,
    error,
)

KIND = "aci"

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
    """How the container group logs in to the registry to pull its image."""

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


class Config(TargetConfig):
    model_config = ConfigDict(title="aci target")

    type: Literal["aci"]
    subscription_id: Uuid
    resource_group: ResourceGroup
    location: AzureLocation
    cpu_cores: PositiveFloat = Field(default=1.0, le=4)
    memory_gb: PositiveFloat = Field(default=1.5, le=16)
    dns_name_label: DnsLabel | None = Field(
        default=None,
        description="Gives the group a public FQDN <label>.<location>.azurecontainer.io",
    )
    port: Port = 5001
    auth: Literal["none", "key"] = Field(
        default="none",
        description="key: /score and /swagger.json need 'Authorization: Bearer <key>' (the "
        "probes /, /ready and /metrics stay open); the key is read at deploy time from the "
        "environment variable key_env names (a CI secret) and passed as a secure value.",
    )
    key_env: EnvVarName = Field(
        default="SCORING_KEY",
        description="With auth: key, the name of the environment variable holding the "
        'scoring key (not the key): at least 16 characters, such as python -c "import '
        'secrets; print(secrets.token_urlsafe(32))" prints.',
    )
    secondary_key_env: EnvVarName | None = Field(
        default=None,
        description="With auth: key, the name of an environment variable holding a second "
        "key the endpoint also accepts, so a key can be rotated without downtime.",
    )
    pull: ImagePull | None = Field(
        default=None,
        description="How ACI pulls the image. Unset: with registry.auth basic, the registry's "
        "own variables; with auth: acr it must be set (ACI cannot use deployer's short-lived "
        "push token).",
    )
    ready_timeout_s: PositiveFloat = Field(
        default=600,
        description="How long a new container group may take to be provisioned, pull its "
        "image and answer GET /ready (init() included) before the deploy gives up.",
    )

    @model_validator(mode="after")
    def _keys(self) -> Config:
        if self.auth != "key":
            for name in ("key_env", "secondary_key_env"):
                if name in self.model_fields_set:
                    raise error(
                        "auth",
                        "{name} is given but auth is 'none': set auth: key",
                        name=name,
                        at=name,
                    )
        elif self.secondary_key_env == self.key_env:
            raise error(
                "keys",
                "secondary_key_env names the same variable as key_env ({name}): a rotation "
                "needs two keys",
                name=self.key_env,
                at="secondary_key_env",
            )
        return self
