"""The ``local`` target's section of deploy.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from deployer.config.fields import Port, PositiveFloat, TargetConfig

KIND = "local"


class Config(TargetConfig):
    model_config = ConfigDict(title="local target")

    type: Literal["local"]
    port: Port = Field(default=8080, description="Host port the scoring server listens on.")
    host: Literal["127.0.0.1", "0.0.0.0"] = Field(
        default="127.0.0.1", description="Interface to listen on (host network)."
    )
    cpu_cores: PositiveFloat = 1.0
    memory_gb: PositiveFloat = 1.0
    ready_timeout_s: PositiveFloat = Field(
        default=120,
        description="How long a new version may take to start and answer GET /ready (its "
        "init() included) before the deploy gives up and keeps the previous version.",
    )
