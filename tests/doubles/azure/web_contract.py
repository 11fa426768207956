"""The contract of the Microsoft.Web requests the double serves. The full Microsoft.Web spec
is one 2 MB file and is not copied (shared/reference/azure/README.md): azure-mgmt-web's own
models are the contract for request bodies, and the examples copied from the spec
(shared/reference/azure/web/examples/) pin the shape.

A body is checked three ways, and any failure is a 400 in ARM's words
(``InvalidRequestContent``, as the ACI double answers):

1. it is deserialised with the SDK's deserialiser (``azure.mgmt.web._utils.model_base.
   _deserialize``) into its model: ``Site``, ``AppServicePlan``, ``StringDictionary``;
2. it is walked against the model's fields (their REST names and type annotations):
   a property the model does not declare (``Could not find member``) or a value of the wrong
   JSON type (``Error converting value``) is refused. azure-mgmt-web 11 keeps unknown keys
   in its models' backing store, so comparing a round trip would not catch them. Read-only
   properties are accepted and ignored, as App Service ignores them;
3. it is compared with the example request of its operation: every property path the
   example sends is sent (``REQUIRED``: what the example has, minus what Azure derives,
   such as a SKU's tier from its name), and a property that the example (request or
   answer) also has holds the same JSON kind.

Azure itself is more lenient than step 2 (App Service ignores unknown properties and its
JSON reader converts ``1`` into ``"1"``): the double is stricter on purpose, so that a typo
in a driver fails a test instead of being dropped silently in Azure.
"""

from __future__ import annotations

import datetime
import enum
import json
import re
import types
import typing
from functools import cache
from typing import Any

from azure.mgmt.web import models
from azure.mgmt.web._utils.model_base import Model, _deserialize
from azure.mgmt.web.models import _models

from tests.conftest import SHARED
from tests.doubles.azure.contract import ContractViolation, request_json

EXAMPLES = SHARED / "reference" / "azure" / "web" / "examples"
SCOPE = r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Web/"


class Body:
    """A request body the contract knows: its model and its example."""

    def __init__(
        self,
        model: type[Model],
        example: str,
        parameter: str,
        optional: set[str],
        data: tuple[str, ...] = ("tags",),
    ) -> None:
        self.model = model
        self.example = example  # file name in EXAMPLES
        self.parameter = parameter  # the body's name among the example's parameters
        self.optional = optional  # paths of the example request Azure does not require
        self.data = data  # objects whose keys are the user's (tags, settings), not properties


SITE = Body(
    models.Site,
    "CreateOrUpdateWebApp.json",
    "siteEnvelope",
    set(),
    ("tags", "identity.userAssignedIdentities", "properties.siteConfig.azureStorageAccounts"),
)
PLAN = Body(
    models.AppServicePlan,
    "CreateOrUpdateAppServicePlan.json",
    "appServicePlan",
    # Azure derives a SKU's tier, size, family from its name; capacity defaults to 1; kind
    # and properties may be left out of a plan
    {"sku.capacity", "sku.family", "sku.size", "sku.tier", "kind", "properties"},
)
SETTINGS = Body(
    models.StringDictionary, "UpdateAppSettings.json", "appSettings", set(), ("properties",)
)

BODIES: list[tuple[str, re.Pattern[str], Body]] = [
    ("PUT", re.compile(SCOPE + r"sites/[^/]+$", re.I), SITE),
    ("PUT", re.compile(SCOPE + r"serverfarms/[^/]+$", re.I), PLAN),
    ("PUT", re.compile(SCOPE + r"sites/[^/]+/config/appsettings$", re.I), SETTINGS),
]


def validate(method: str, path: str, body: bytes) -> dict[str, Any] | None:
    """The body of a Microsoft.Web request the contract knows, checked (None when the
    request has no body to check); raises ContractViolation."""
    known = next((b for m, p, b in BODIES if m == method and p.match(path)), None)
    if known is None:
        return None
    document = request_json(body)
    if not isinstance(document, dict):
        raise _violation(f"Cannot deserialize the body into type '{known.model.__name__}'", "")
    try:
        _deserialize(known.model, document)
    except Exception as exc:  # the SDK's own deserialiser refused it
        raise _violation(f"{type(exc).__name__}: {exc}", "") from None
    check_model(known.model, document, "")
    check_example(known, document)
    return document


# The models --------------------------------------------------------------------------------
@cache
def fields(model: type[Model]) -> dict[str, tuple[Any, bool]]:
    """REST name -> (type annotation, read-only) of a model's fields."""
    model({})  # model_base computes the fields when the first instance is made
    hints = typing.get_type_hints(model, globalns=vars(_models), localns={"_models": models})
    found = {}
    for attribute, field in model._attr_to_rest_field.items():
        readonly = field._visibility is not None and field._visibility == ["read"]
        found[field._rest_name] = (hints.get(attribute, Any), readonly)
    return found


def check_model(model: type[Model], value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise _conversion(value, model.__name__, path)
    known = fields(model)
    for name, item in value.items():
        where = f"{path}.{name}" if path else name
        if name not in known:
            raise _violation(
                f"Could not find member '{name}' on object of type '{model.__name__}'", where
            )
        annotation, _ = known[name]
        check_value(annotation, item, where)


def check_value(annotation: Any, value: Any, path: str) -> None:
    if value is None or annotation is Any:
        return
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        # an enum the service may extend: Union[str, SomeEnum]
        if str in options and isinstance(value, str):
            return
        errors = []
        for option in options:
            try:
                check_value(option, value, path)
                return
            except ContractViolation as exc:
                errors.append(exc)
        raise errors[0]
    if origin is typing.Literal:
        if value not in args:
            raise _conversion(value, "/".join(map(str, args)), path)
        return
    if origin is list:
        if not isinstance(value, list):
            raise _conversion(value, "List", path)
        for index, item in enumerate(value):
            check_value(args[0] if args else Any, item, f"{path}[{index}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise _conversion(value, "Dictionary", path)
        for key, item in value.items():
            check_value(args[1] if len(args) > 1 else Any, item, f"{path}.{key}")
        return
    if isinstance(annotation, type) and issubclass(annotation, Model):
        check_model(annotation, value, path)
        return
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        if value not in {m.value for m in annotation}:
            raise _conversion(value, annotation.__name__, path)
        return
    simple = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        datetime.datetime: lambda v: isinstance(v, str) and _is_datetime(v),
        bytes: lambda v: isinstance(v, str),
    }
    check = simple.get(annotation)
    if check is not None and not check(value):
        names = {bool: "System.Boolean", int: "System.Int32", float: "System.Double"}
        names.update({str: "System.String", datetime.datetime: "System.DateTime"})
        raise _conversion(value, names.get(annotation, str(annotation)), path)


def _is_datetime(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


# The examples ------------------------------------------------------------------------------
@cache
def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())  # type: ignore[no-any-return]


def paths(document: Any, data: tuple[str, ...] = (), prefix: str = "") -> dict[str, str]:
    """Every property path of a JSON document -> its JSON kind; the keys of the objects at
    ``data`` paths are the user's, not properties: not listed."""
    found: dict[str, str] = {}
    if isinstance(document, dict) and prefix not in data:
        for key, value in document.items():
            where = f"{prefix}.{key}" if prefix else key
            found[where] = _kind(value)
            found.update(paths(value, data, where))
    return found


def check_example(known: Body, document: dict[str, Any]) -> None:
    recorded = example(known.example)
    request = recorded["parameters"][known.parameter]
    sent = paths(document, known.data)
    wanted = paths(request, known.data)
    missing = [p for p in wanted if p not in sent and p not in known.optional]
    if missing:
        raise _violation(f"Required property '{missing[0].split('.')[-1]}' not found", missing[0])
    shapes = wanted
    for answer in recorded["responses"].values():
        shapes = {**paths(answer.get("body"), known.data), **shapes}
    for where, kind in sent.items():
        expected = shapes.get(where)
        if expected and kind not in ("null", expected):
            raise _violation(
                f"Error converting a {kind} to the {expected} the service expects "
                f"(example '{known.example}')",
                where,
            )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {dict: "object", list: "array", str: "string"}.get(type(value), "unknown")


# ARM's words ------------------------------------------------------------------------------
def _violation(detail: str, path: str) -> ContractViolation:
    return ContractViolation(
        "InvalidRequestContent",
        f"The request content was invalid and could not be deserialized: '{detail}. "
        f"Path '{path}'.'.",
    )


def _conversion(value: Any, type_name: str, path: str) -> ContractViolation:
    return _violation(f"Error converting value {json.dumps(value)} to type '{type_name}'", path)
