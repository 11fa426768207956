"""IoT Hub's service API contract (Swagger 2.0, the autorest input of azure-iot-hub 2.7.0, in
shared/reference/azure/iothub/service.json, api-version 2021-04-12), loaded with
bravado-core: every request the double serves is matched to its operation and validated
against it (path, query, headers, body) before the hub sees it.

The copy is never edited; what loading it needs is done in memory:
- a bare ``{"type": "object"}`` (tags, desired and reported property values, the values of
  ``deviceContent``/``moduleContent``/``modulesContent`` entries, a direct method's payload)
  means "any JSON value" in this file (the SDK's models type them ``object`` and send
  strings and numbers there, as IoT Hub accepts): it becomes ``{}``;
- unknown properties are rejected: every object schema with ``properties`` gets
  ``additionalProperties: false`` (bravado-core, like JSON Schema, accepts them by default:
  a typo like ``targetCondtion`` would pass);
- ``api-version`` has a default in the file (bravado-core would fill it in): the double
  checks it is there, and is the contract's, before validating.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from functools import cache
from typing import Any

from bravado_core.exception import SwaggerMappingError
from bravado_core.request import IncomingRequest, unmarshal_request
from bravado_core.spec import Spec
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError, best_match

from tests.conftest import SHARED

# The same violation and operation as the ARM double's: only the codes and words differ.
from tests.doubles.azure.contract import ContractViolation, Operation

SERVICE_FILE = SHARED / "reference" / "azure" / "iothub" / "service.json"
API_VERSION = "2021-04-12"


class Contract:
    """Operations by method and path; ``validate`` answers which one a request is."""

    def __init__(self, spec: Spec, document: dict[str, Any]) -> None:
        self.spec = spec
        self._open = document  # as loaded, before closing: for checking responses
        self._operations = [op for r in spec.resources.values() for op in r.operations.values()]
        # Literal paths first: /configurations/testQueries is not /configurations/{id}.
        self._operations.sort(key=lambda op: op.path_name.count("{"))

    def find(self, method: str, segments: list[str]) -> tuple[Any, dict[str, str]] | None:
        """The operation for a path given as decoded segments (a module id arrives as
        ``%24edgeAgent``: decoded per segment, so an encoded ``/`` stays inside its id)."""
        for op in self._operations:
            template = op.path_name.strip("/").split("/")
            if op.http_method.upper() != method or len(template) != len(segments):
                continue
            params: dict[str, str] = {}
            for part, value in zip(template, segments, strict=True):
                if part.startswith("{") and part.endswith("}"):
                    params[part[1:-1]] = value
                elif part != value:
                    break
            else:
                return op, params
        return None

    def validate(
        self,
        method: str,
        segments: list[str],
        query: dict[str, str],
        headers: Any,
        body: bytes,
    ) -> Operation | None:
        """The request's operation, or None when the contract has no such path; raises
        ContractViolation."""
        found = self.find(method, segments)
        if found is None:
            return None
        op, path_params = found
        version = query.get("api-version")
        if not version:
            raise ContractViolation(
                "InvalidProtocolVersion", "The api-version query parameter is required."
            )
        if version != API_VERSION:
            raise ContractViolation(
                "InvalidProtocolVersion",
                f"Invalid api-version '{version}' (this double serves {API_VERSION} only).",
            )
        try:
            document = json.loads(body) if body else None
        except ValueError as exc:
            raise ContractViolation(
                "IotHubFormatError", f"The request body is not valid JSON: {exc}"
            ) from None
        request = IncomingRequest()
        request.path = path_params
        request.query = query
        request.headers = headers
        request.form = {}
        request.files = {}
        request.json = lambda: document
        try:
            params = unmarshal_request(request, op)
        except ValidationError as exc:
            raise ContractViolation("ArgumentInvalid", _described(exc)) from None
        except SwaggerMappingError as exc:
            raise ContractViolation("ArgumentInvalid", str(exc)) from None
        return Operation(op.operation_id, params)

    def check_response(self, operation_id: str, status: int, body: Any) -> str | None:
        """What is wrong with a response the double is about to send (None: nothing), by
        the contract's response schema for that status (not closed: the service sends
        fields the file does not list, such as a module twin's ``configurations``)."""
        op = next((o for o in self._operations if o.operation_id == operation_id), None)
        if op is None or body is None:
            return None
        responses = self._open["paths"][op.path_name][op.http_method]["responses"]
        response = responses.get(str(status))
        if response is None:
            return f"{operation_id} does not answer {status} in the contract"
        schema = response.get("schema")
        if schema is None:
            return None
        validator = Draft4Validator({**schema, "definitions": self._open["definitions"]})
        error = best_match(validator.iter_errors(body))
        return None if error is None else f"{operation_id} {status}: {_described(error)}"


def _described(error: ValidationError) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path).lstrip(".")
    if error.validator == "additionalProperties":
        schema = error.schema if isinstance(error.schema, dict) else {}
        extra = sorted(set(error.instance) - set(schema.get("properties", {})))
        member = extra[0] if extra else "?"
        path = f"{where}.{member}" if where else member
        return f"Could not find member '{member}' (at '{path}') on the request's object."
    return f"Invalid value at '{where or '$'}': {error.message}"


def _any_json(node: Any) -> Any:
    """Every bare ``{"type": "object"}`` (perhaps with a description) becomes ``{}``."""
    if isinstance(node, dict):
        if node.get("type") == "object" and not {"properties", "additionalProperties"} & set(node):
            return {k: v for k, v in node.items() if k == "description"}
        return {k: _any_json(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_any_json(v) for v in node]
    return node


def _closed(document: dict[str, Any]) -> dict[str, Any]:
    """The document with every object schema that lists ``properties`` closed."""

    def close(schema: Any) -> Any:
        if not isinstance(schema, dict) or "$ref" in schema:
            return schema
        schema = dict(schema)
        if "properties" in schema:
            schema["properties"] = {k: close(v) for k, v in schema["properties"].items()}
            schema.setdefault("additionalProperties", False)
        if isinstance(schema.get("items"), dict):
            schema["items"] = close(schema["items"])
        if isinstance(schema.get("additionalProperties"), dict):
            schema["additionalProperties"] = close(schema["additionalProperties"])
        return schema

    document = copy.deepcopy(document)
    for name, schema in document.get("definitions", {}).items():
        document["definitions"][name] = close(schema)
    for item in document.get("paths", {}).values():
        for operation in item.values():
            for param in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if "schema" in param:
                    param["schema"] = close(param["schema"])
    return document


@cache
def iothub_contract() -> Contract:
    """IoT Hub's service contract, loaded once per process."""
    document = _any_json(json.loads(SERVICE_FILE.read_text()))
    config = {
        "validate_responses": False,
        "validate_requests": True,
        "use_models": False,
        "validate_swagger_spec": True,
    }
    quiet = logging.getLogger("bravado_core")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = Spec.from_dict(_closed(document), SERVICE_FILE.resolve().as_uri(), config=config)
    finally:
        quiet.setLevel(level)
    return Contract(spec, document)
