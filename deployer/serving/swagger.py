"""``GET /swagger.json``: the same documents azureml-inference-server-http serves.

Azure ML fills a Swagger 2 / OpenAPI 3 template with the service name and the
schemas from ``inference_schema``'s decorators (or empty object schemas for an
undecorated ``run()``), unless a ``swagger.json``/``swagger2.json``/``swagger3.json``
file sits in the app root. We build the same templates as data and render every
version once at startup; a request only picks the cached bytes.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# builder version -> the ?version= values that select it (Azure ML's aliases)
ALIASES = {"2": ("2", "2.0"), "3": ("3", "3.0"), "3.1": ("3.1",)}
_USER_FILES = {
    "2": ("swagger.json", "swagger2.json"),
    "3": ("swagger3.json",),
    "3.1": ("swagger3.1.json",),
}
# What inference_schema reports for an undecorated function (ALL_SUPPORTED_VERSIONS).
_ALL_SCHEMA_VERSIONS = ("2.0", "3.0", "3.1")
_EMPTY_SCHEMA = {"type": "object", "example": {}}
_ERROR = "The service failed to execute due to an error."
_HEALTH = "Simple health check endpoint to ensure the service is up at any given point."
_HEALTHY = "If service is up and running, this response will be returned with the content 'Healthy'"
_SCORE = "Run web service's model and get the prediction output"
_PAYLOAD = "The input payload for executing the real-time machine learning service."
_SCORED = (
    "The service processed the input correctly and provided a result prediction, if applicable."
)
_BEARER = {
    "type": "apiKey",
    "name": "Authorization",
    "in": "header",
    "description": "For example: Bearer abc123",
}
_SHARED_SCHEMAS = {
    "ServiceInput": {
        "type": "object",
        "properties": {"param": {"type": "object", "additionalProperties": {"type": "object"}}},
    },
    "ServiceOutput": {"type": "object", "additionalProperties": {"type": "object"}},
    "ErrorResponse": {"type": "object", "properties": {"message": {"type": "string"}}},
}


def _info(name: str, version: str) -> dict[str, Any]:
    return {
        "title": name,
        "description": f"API specification for the Azure Machine Learning service {name}",
        "version": version,
    }


def _swagger2(name: str, version: str, prefix: str) -> dict[str, Any]:
    error = {"description": _ERROR, "schema": {"$ref": "#/definitions/ErrorResponse"}}
    return {
        "swagger": "2.0",
        "info": _info(name, version),
        "schemes": ["https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {"Bearer": dict(_BEARER)},
        "paths": {
            f"{prefix}/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": _HEALTH,
                    "responses": {
                        "200": {
                            "description": _HEALTHY,
                            "schema": {"type": "string"},
                            "examples": {"application/json": "Healthy"},
                        },
                        "default": error,
                    },
                }
            },
            f"{prefix}/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": _SCORE,
                    "security": [{"Bearer": []}],
                    "parameters": [
                        {
                            "name": "serviceInputPayload",
                            "in": "body",
                            "description": _PAYLOAD,
                            "schema": {"$ref": "#/definitions/ServiceInput"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": _SCORED,
                            "schema": {"$ref": "#/definitions/ServiceOutput"},
                        },
                        "default": error,
                    },
                }
            },
            f"{prefix}/swagger.json": {
                "get": {
                    "operationId": "GetSwaggerSpec",
                    "description": "Get the Swagger specification.",
                    "parameters": [
                        {
                            "name": "version",
                            "in": "query",
                            "required": False,
                            "type": "integer",
                            "enum": [2, 3],
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The Swagger specification.",
                            "schema": {"type": "string"},
                        },
                        "default": error,
                    },
                }
            },
        },
        "definitions": json.loads(json.dumps(_SHARED_SCHEMAS)),
    }


def _openapi3(name: str, version: str, prefix: str) -> dict[str, Any]:
    def content(mime: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {mime: {"schema": schema}}

    error = {
        "description": _ERROR,
        "content": content("application/json", {"$ref": "#/components/schemas/ErrorResponse"}),
    }
    return {
        "openapi": "3.0.3",
        "info": _info(name, version),
        "security": [{"Bearer": []}],
        "paths": {
            f"{prefix}/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": _HEALTH,
                    "responses": {
                        "200": {
                            "description": _HEALTHY,
                            "content": content(
                                "text/plain", {"type": "string", "example": "Healthy"}
                            ),
                        },
                        "default": error,
                    },
                }
            },
            f"{prefix}/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": _SCORE,
                    "security": [{"Bearer": []}],
                    "requestBody": {
                        "description": _PAYLOAD,
                        "content": content(
                            "application/json", {"$ref": "#/components/schemas/ServiceInput"}
                        ),
                    },
                    "responses": {
                        "200": {
                            "description": _SCORED,
                            "content": content(
                                "application/json", {"$ref": "#/components/schemas/ServiceOutput"}
                            ),
                        },
                        "default": error,
                    },
                }
            },
            f"{prefix}/swagger.json": {
                "get": {
                    "operationId": "GetSwaggerSpec",
                    "description": "Get the Swagger specification.",
                    "parameters": [
                        {
                            "name": "version",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "enum": [2, 3]},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The Swagger specification.",
                            "content": content("text/plain", {"type": "string"}),
                        },
                        "default": error,
                    },
                }
            },
        },
        "components": {
            "schemas": json.loads(json.dumps(_SHARED_SCHEMAS)),
            "securitySchemes": {"Bearer": dict(_BEARER)},
        },
    }


def _schemas(run: Callable[..., Any]) -> tuple[tuple[str, ...], Any, Any]:
    """(supported versions, input schema, output schema) for ``run``."""
    try:  # imported by name: it is the user's (untyped, optional) dependency, not ours
        schema_util = importlib.import_module("inference_schema.schema_util")
    except ImportError:  # not installed: the script cannot be decorated either
        return _ALL_SCHEMA_VERSIONS, _EMPTY_SCHEMA, _EMPTY_SCHEMA
    versions = tuple(schema_util.get_supported_versions(run))
    if schema_util.is_schema_decorated(run):
        return versions, schema_util.get_input_schema(run), schema_util.get_output_schema(run)
    return versions, _EMPTY_SCHEMA, _EMPTY_SCHEMA


class SwaggerDocs:
    """Every swagger version rendered once, and the errors Azure ML gives for the others."""

    def __init__(self, run: Callable[..., Any], app_root: str, environ: Mapping[str, str]):
        name = environ.get("SERVICE_NAME", "ML service")
        version = environ.get("SERVICE_VERSION", "1.0")
        prefix = environ.get("SERVICE_PATH_PREFIX", "")
        prefix = f"/{prefix.strip('/')}" if prefix else ""
        supported, input_schema, output_schema = _schemas(run)
        self.documents: dict[str, bytes] = {}
        for builder, aliases in ALIASES.items():
            doc = _read_user_file(app_root, _USER_FILES[builder])
            if doc is None and any(alias in supported for alias in aliases):
                doc = (_swagger2 if builder == "2" else _openapi3)(name, version, prefix)
                schemas = doc["definitions"] if builder == "2" else doc["components"]["schemas"]
                schemas.update(ServiceInput=input_schema, ServiceOutput=output_schema)
                if builder == "3.1":
                    doc["openapi"] = "3.1.0"
            if doc:
                self.documents[builder] = json.dumps(doc).encode()
        self._listed = ", ".join(sorted(self.documents))

    def get(self, version: str | None) -> tuple[int, bytes | str]:
        """(200, document) or (404, Azure ML's message) for ``?version=``."""
        version = "2" if version is None else version
        builder = next((b for b, aliases in ALIASES.items() if version in aliases), None)
        if builder is None:
            return 404, (
                f"Swagger version [{version}] is not valid. Supported versions: [{self._listed}]."
            )
        document = self.documents.get(builder)
        if document is None:
            return 404, (
                f"Swagger version [{version}] is not supported for the scoring script. "
                f"Supported swagger versions: [{self._listed}]."
            )
        return 200, document


def _read_user_file(app_root: str, names: tuple[str, ...]) -> Any:
    for name in names:
        path = Path(app_root, name)
        if path.is_file():
            with path.open(encoding="utf-8") as file:
                return json.load(file)
    return None


def app_root_for(entry_script: str, environ: Mapping[str, str]) -> str:
    """Azure ML's AML_APP_ROOT if set, else the entry script's directory."""
    return environ.get("AML_APP_ROOT") or os.path.dirname(os.path.abspath(entry_script))
