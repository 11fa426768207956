"""The ``aci`` target's section of deploy.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from deployer.config.fields import (
    AzureLocation,
    DnsLabel,
    Port,
    PositiveFloat,
    ResourceGroup,
    TargetConfig,
    Uuid,
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
        description="key: scoring requests need 'Authorization: Bearer <key>'; the key is "
        "generated at deploy time and passed as a secure environment variable.",
    )
    ready_timeout_s: PositiveFloat = Field(
        default=600,
        description="How long a new container group may take to be provisioned, pull its "
        "image and answer GET /ready (init() included) before the deploy gives up.",
    )
