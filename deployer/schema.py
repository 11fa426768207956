"""The published JSON Schema of deploy.yaml, generated from the pydantic models."""

from __future__ import annotations

import json
from typing import Any

from deployer.config.model import DeployConfig

SCHEMA_ID = "https://deployer.dev/schemas/deploy.schema.json"


def deploy_schema() -> dict[str, Any]:
    schema = DeployConfig.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": "deploy.yaml",
    }


def deploy_schema_text() -> str:
    """Exactly what ``deployer schema`` prints and ``schemas/deploy.schema.json`` holds."""
    return json.dumps(deploy_schema(), indent=2, ensure_ascii=False) + "\n"
