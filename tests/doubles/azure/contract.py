"""The official contract of Microsoft.ContainerInstance (Swagger 2.0, from
Azure/azure-rest-api-specs, in shared/reference/azure), loaded with bravado-core: every
request the ARM double serves is matched to its operation and validated against it (path,
``api-version``, body) before anything else happens.

The copies are never edited; what loading them needs is done in memory (see the README
beside them):
- the ACI file's ``$ref`` to common-types (``../../../../../../common-types/...``, a path in
  the upstream tree) points at the copy in ``common-types/types.json``;
- ``types.json#/definitions/systemData`` is ``SystemData`` in this types.json;
- ``x-ms-examples`` point at files not copied: dropped;
- unknown properties are rejected: each object schema gets ``additionalProperties: false``
  unless it says otherwise (bravado-core, like JSON Schema, accepts them by default, so a
  typo like ``imageRegistryCredential`` would pass). To do that without rejecting what a
  parent schema brings, an ``allOf`` is merged into the schema that uses it first.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import warnings
from dataclasses import dataclass
from functools import cache
from typing import Any

from bravado_core.exception import SwaggerMappingError
from bravado_core.formatter import SwaggerFormat
from bravado_core.request import IncomingRequest, unmarshal_request
from bravado_core.spec import Spec, build_http_handlers
from jsonschema.exceptions import ValidationError

from tests.conftest import SHARED

AZURE = SHARED / "reference" / "azure"
ACI_FILE = AZURE / "containerinstance" / "containerInstance.json"
TYPES_FILE = AZURE / "common-types" / "types.json"
UPSTREAM_TYPES = "../../../../../../common-types/resource-management/v5/types.json"
LOCAL_TYPES = "../common-types/types.json"  # the copy, relative to the ACI file


class ContractViolation(Exception):
    """The request breaks the contract: ``code`` and ``message`` as ARM words it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def request_json(body: bytes) -> Any:
    """A request body as JSON (None when empty), or ARM's refusal of one that is not."""
    try:
        return json.loads(body) if body else None
    except ValueError as exc:
        raise ContractViolation(
            "InvalidRequestContent",
            f"The request content was invalid and could not be deserialized: '{exc}'.",
        ) from None


@dataclass(frozen=True)
class Operation:
    operation_id: str
    params: dict[str, Any]  # path, query and body parameters, by name, as validated


class Contract:
    """Operations by method and path; ``validate`` answers which one a request is."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self._routes: list[tuple[str, re.Pattern[str], Any]] = []
        for resource in spec.resources.values():
            for op in resource.operations.values():
                pattern = re.sub(r"\{([^}]+)\}", r"(?P<\1>[^/]+)", op.path_name)
                # ARM matches paths regardless of case (resourcegroups, resourceGroups)
                route = re.compile(f"^{pattern}$", re.IGNORECASE)
                self._routes.append((op.http_method.upper(), route, op))

    def find(self, method: str, path: str) -> tuple[Any, dict[str, str]] | None:
        for route_method, route, op in self._routes:
            found = route.match(path)
            if found and route_method == method:
                return op, found.groupdict()
        return None

    def validate(
        self, method: str, path: str, query: dict[str, str], body: bytes
    ) -> Operation | None:
        """The request's operation, or None when the contract has no such path (the
        caller answers as ARM does for that); raises ContractViolation."""
        found = self.find(method, path)
        if found is None:
            return None
        op, path_params = found
        if not query.get("api-version"):
            raise ContractViolation(
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        document = request_json(body)
        request = IncomingRequest()
        request.path = path_params
        request.query = query
        request.headers = {}
        request.form = {}
        request.files = {}
        request.json = lambda: document
        try:
            params = unmarshal_request(request, op)
        except ValidationError as exc:
            raise ContractViolation("InvalidRequestContent", _deserialization(exc)) from None
        except SwaggerMappingError as exc:
            raise ContractViolation("InvalidRequestContent", str(exc)) from None
        return Operation(op.operation_id, params)


def _deserialization(error: ValidationError) -> str:
    """A schema error in the words of ACI's (Newtonsoft) deserializer, which names the
    member, the type and the JSON path."""
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path).lstrip(".")
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = schema.get("x-model", "object")
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(schema.get("properties", {})))
        member = extra[0] if extra else "?"
        path = f"{where}.{member}" if where else member
        detail = f"Could not find member '{member}' on object of type '{kind}'. Path '{path}'"
    elif error.validator == "required":
        missing = re.search(r"'([^']+)' is a required property", error.message)
        name = missing.group(1) if missing else "?"
        detail = f"Required property '{name}' not found in JSON. Path '{where}'"
    else:
        detail = f"Error converting value at path '{where}': {error.message}"
    return f"The request content was invalid and could not be deserialized: '{detail}.'."


@cache
def aci_contract() -> Contract:
    """Microsoft.ContainerInstance's contract, loaded once per process."""
    text = ACI_FILE.read_text().replace(UPSTREAM_TYPES, LOCAL_TYPES)
    text = text.replace("types.json#/definitions/systemData", "types.json#/definitions/SystemData")
    types = json.loads(TYPES_FILE.read_text())
    aci = _closed(_without_examples(json.loads(text)), types)
    local = {TYPES_FILE.resolve().as_uri(): _closed(types, types)}

    class PatchedSpec(Spec):  # type: ignore[misc]
        """Serves the patched types.json for the ACI file's references to it."""

        def get_ref_handlers(self) -> dict[str, Any]:
            handlers = build_http_handlers(self.http_client)
            read_file = handlers["file"]

            def read(uri: str) -> Any:
                return copy.deepcopy(local[uri]) if uri in local else read_file(uri)

            handlers["file"] = read
            return handlers

    # Formats bravado-core does not know: accepted as strings (ARM checks a subscription id
    # itself, before the provider sees the request).
    formats = [
        SwaggerFormat(format=name, to_wire=str, to_python=str, validate=_any, description=name)
        for name in ("uuid", "arm-id", "uri", "password")
    ]
    config = {
        "formats": formats,
        "validate_responses": False,
        "validate_requests": True,
        "use_models": False,
        "validate_swagger_spec": True,
    }
    # The upstream file draws warnings (a $ref with siblings, formats bravado-core does not
    # know, models named like types.json's): true of the official file, nothing to act on.
    quiet = logging.getLogger("bravado_core")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = PatchedSpec.from_dict(aci, ACI_FILE.resolve().as_uri(), config=config)
    finally:
        quiet.setLevel(level)
    return Contract(spec)


def _any(value: Any) -> None:
    pass


def _without_examples(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_examples(v) for k, v in node.items() if k != "x-ms-examples"}
    if isinstance(node, list):
        return [_without_examples(v) for v in node]
    return node


def _closed(document: dict[str, Any], types: dict[str, Any]) -> dict[str, Any]:
    """``document`` with every object schema rejecting properties it does not declare. An
    ``allOf`` parent's properties are merged into the child first (ProxyResource's id, name,
    type and systemData into ContainerGroup); a parent from types.json brings its own
    references with it, pointed at types.json."""
    document = copy.deepcopy(document)
    definitions = document.get("definitions", {})

    def parent(ref: str, scope: dict[str, Any]) -> dict[str, Any]:
        target, _, name = ref.partition("#/definitions/")
        if not target:  # a local reference, in the file that holds ``scope``
            return flattened(copy.deepcopy(scope[name]), scope)
        base = flattened(copy.deepcopy(types["definitions"][name]), types["definitions"])
        text = json.dumps(base).replace('"#/definitions/', f'"{LOCAL_TYPES}#/definitions/')
        return json.loads(text)  # type: ignore[no-any-return]

    def flattened(schema: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
        merged = dict(schema)
        properties = dict(schema.get("properties", {}))
        required = list(schema.get("required", []))
        for part in merged.pop("allOf", []):
            base = parent(part["$ref"], scope) if "$ref" in part else flattened(part, scope)
            properties = {**base.get("properties", {}), **properties}
            required += [r for r in base.get("required", []) if r not in required]
        if properties:
            merged["properties"] = properties
        if required:
            merged["required"] = required
        return merged

    def close(schema: Any) -> Any:
        if not isinstance(schema, dict) or "$ref" in schema:
            return schema
        schema = dict(schema)
        if "properties" in schema:
            schema["properties"] = {k: close(v) for k, v in schema["properties"].items()}
        if isinstance(schema.get("items"), dict):
            schema["items"] = close(schema["items"])
        if isinstance(schema.get("additionalProperties"), dict):
            schema["additionalProperties"] = close(schema["additionalProperties"])
        is_object = schema.get("type") == "object" or "properties" in schema
        if is_object and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema

    for name in list(definitions):
        definitions[name] = close(flattened(definitions[name], definitions))
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for param in operation.get("parameters", []):
                if "schema" in param:
                    param["schema"] = close(param["schema"])
    return document
