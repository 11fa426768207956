"""The ``aci`` target's section of deploy.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from deployer.config.fields import (
    AzureLocation,
    DnsLabel,
    EnvVarName,
    ImagePull,
    Port,
    PositiveFloat,
    ResourceGroup,
    TargetConfig,
    Uuid,
    error,
)

KIND = "aci"


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
