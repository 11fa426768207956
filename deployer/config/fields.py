"""Field types shared by deploy.yaml's sections and by every target's config.

Values that end up in image references, Kubernetes objects, Azure resource names or URLs
are constrained here, once, so that no template can be broken by them. Each constrained
string carries its rule in words (``Rule``): validation errors quote it, and the JSON
Schema shows it to editors beside the regular expression.
"""

from __future__ import annotations

import ast
import datetime
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationInfo,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema


def _check_keys_in_schema(schema: dict[str, Any]) -> None:
    """Rewrite pydantic's ``patternProperties`` for constrained dict keys as
    ``propertyNames`` + ``additionalProperties``.

    With ``patternProperties`` alone, a key that does not match (a target named
    ``Local_Docker``) is not flagged, and its value goes unchecked; editors should say both.
    """
    for field_schema in schema.get("properties", {}).values():
        for candidate in [field_schema, *field_schema.get("anyOf", [])]:
            patterns = candidate.get("patternProperties")
            if not isinstance(patterns, dict) or len(patterns) != 1:
                continue
            ((pattern, values),) = patterns.items()
            del candidate["patternProperties"]
            candidate["propertyNames"] = {**candidate.get("propertyNames", {}), "pattern": pattern}
            candidate["additionalProperties"] = values


class Section(BaseModel):
    """Base of every deploy.yaml mapping: strict types, unknown keys rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, json_schema_extra=_check_keys_in_schema
    )


def error(
    kind: str, message: str, at: str | tuple[str | int, ...] | None = None, **values: Any
) -> PydanticCustomError:
    """A validation error whose ``message`` is formatted with ``values`` (``str.format``).

    ``at`` (a field name, or a path below the model) points an error raised by a model
    validator at that field rather than at the whole section.
    """
    text = message.format(**values)
    # pydantic formats "{key}" from its context again: only "at" is passed, and braces in
    # user values (e.g. binding expressions) are left alone because no other key exists.
    return PydanticCustomError(kind, text, {"at": at} if at is not None else None)


def describe(value: Any) -> str:
    """A value as deploy.yaml's author wrote it, for "got ..." in messages."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, datetime.date):
        return f"the date {value.isoformat()}"
    return f"a {type(value).__name__}"


@dataclass(frozen=True)
class Rule:
    """A string format, checked with a message in words: ``Annotated[str, Rule(...)]``.

    ``what`` names the value ("service name"), ``words`` states the rule as a user reads it
    ("3 to 40 lowercase letters, ..."); the error reads "'X' is not a valid <what>: use <words>".
    The length limits are part of ``words`` and of the JSON Schema, not separate errors.
    """

    what: str
    words: str
    pattern: str
    min_length: int = 1
    max_length: int | None = None

    def check(self, value: str) -> str:
        too_long = self.max_length is not None and len(value) > self.max_length
        if len(value) < self.min_length or too_long or not re.fullmatch(self.pattern, value):
            # Formatted here, not by pydantic, so that braces in the value stay as typed.
            raise PydanticCustomError(
                "format", f"{value!r} is not a valid {self.what}: use {self.words}"
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["description"] = f"{self.what[0].upper()}{self.what[1:]}: {self.words}."
        json_schema["pattern"] = self.pattern
        # Shown by editors (yaml-language-server, VS Code) instead of the bare regex.
        json_schema["patternErrorMessage"] = f"Not a valid {self.what}: use {self.words}."
        json_schema["minLength"] = self.min_length
        if self.max_length is not None:
            json_schema["maxLength"] = self.max_length
        return json_schema


# A DNS-1123 label: usable as a container, Kubernetes, Azure or image repository name.
_NAME_WORDS = (
    "3 to 40 lowercase letters, digits and '-', starting and ending with a letter or digit"
)
_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
ServiceName = Annotated[
    str, Rule("service name", _NAME_WORDS, _NAME_PATTERN, min_length=3, max_length=40)
]
# Azure ML's own rule for registered model names (azureml-core's model_name_validation,
# azureml/_model_management/_util.py), so that SDK v1 names such as
# "sklearn_regression_model.pkl" pass. Kubernetes labels, which cannot hold every such
# name, get a derived form (deployer.label_values).
ModelName = Annotated[
    str,
    Rule(
        "model name",
        "up to 255 letters, digits, '-', '_' and '.', starting with a letter or digit "
        "(Azure ML's rule)",
        r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=255,
    ),
]
# Target names become folder names and suffixes of resource names.
TargetName = Annotated[
    str,
    Rule(
        "target name",
        "up to 30 lowercase letters, digits and '-', starting with a letter "
        "and not ending with '-'",
        r"^[a-z]([a-z0-9-]*[a-z0-9])?$",
        max_length=30,
    ),
]
DnsLabel = Annotated[
    str,
    Rule(
        "DNS label",
        "up to 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
        r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        max_length=63,
    ),
]
# What Docker accepts as a tag and Kubernetes as a label value (which must end alphanumeric).
VersionString = Annotated[
    str,
    Rule(
        "version",
        "up to 63 letters, digits, '.', '_' and '-', starting and ending with a letter or digit",
        r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$",
        max_length=63,
    ),
]
EnvVarName = Annotated[
    str,
    Rule(
        "environment variable name",
        "letters, digits and '_', not starting with a digit",
        r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=128,
    ),
]
Port = Annotated[int, Field(ge=1, le=65535)]
PositiveFloat = Annotated[float, Field(gt=0)]
Uuid = Annotated[
    str,
    Rule(
        "subscription id",
        "a GUID such as 00000000-0000-0000-0000-000000000000",
        r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    ),
]
ResourceGroup = Annotated[
    str,
    Rule(
        "resource group name",
        "up to 90 letters, digits, '-', '_', '.', '(' and ')', not ending with '.'",
        r"^[-\w._()]*[-\w_()]$",
        max_length=90,
    ),
]
AzureLocation = Annotated[
    str,
    Rule(
        "Azure location",
        "a region name in lowercase letters and digits, such as westeurope",
        r"^[a-z][a-z0-9]*$",
        max_length=40,
    ),
]
# <host>[:port][/path] of a registry, without scheme.
RegistryAddress = Annotated[
    str,
    Rule(
        "registry address",
        "host[:port][/namespace] without a scheme, such as myregistry.azurecr.io "
        "or 127.0.0.1:5000 (the namespace in lowercase)",
        r"^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*$",
        max_length=200,
    ),
]
# A Docker image reference: [registry/]repository[:tag][@digest].
ImageReference = Annotated[
    str,
    Rule(
        "image reference",
        "[registry/]repository[:tag][@sha256:digest] without spaces, such as python:3.11-slim",
        r"^[a-zA-Z0-9][a-zA-Z0-9._:/-]*(@sha256:[a-f0-9]{64})?$",
        max_length=255,
    ),
]
DebianPackage = Annotated[
    str,
    Rule(
        "Debian package",
        "a package name in lowercase, optionally pinned as name=version",
        r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$",
    ),
]
# Test request headers reach the HTTP client as they are: RFC 9110 field names, and
# values without control characters (which would end the header early).
HeaderName = Annotated[
    str,
    Rule(
        "HTTP header name",
        "letters, digits and !#$%&'*+.^_`|~-",
        r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
    ),
]
HeaderValue = Annotated[
    str,
    Rule(
        "HTTP header value",
        "text without line breaks or control characters",
        r"^[^\x00-\x08\x0a-\x1f\x7f]*$",
        min_length=0,
    ),
]


def _base_dir(info: ValidationInfo) -> Path | None:
    context = info.context
    return context.get("base_dir") if isinstance(context, dict) else None


def _relative_path(value: str, info: ValidationInfo) -> Path | None:
    """Check that ``value`` is a relative path inside the config's folder; resolve it."""
    posix = PurePosixPath(value.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(value).drive:
        raise error("path", "must be a path relative to deploy.yaml, not an absolute path")
    if ".." in posix.parts:
        raise error("path", "must stay inside the folder of deploy.yaml ('..' is not allowed)")
    base = _base_dir(info)
    return None if base is None else base / posix


def _existing(value: str, info: ValidationInfo) -> str:
    path = _relative_path(value, info)
    if path is not None and not path.exists():
        raise error(
            "missing_file", "{value!r} does not exist (relative to deploy.yaml)", value=value
        )
    return value


def _existing_file(value: str, info: ValidationInfo) -> str:
    path = _relative_path(value, info)
    if path is not None and not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise error("missing_file", "{value!r} " + what + " (relative to deploy.yaml)", value=value)
    return value


def _entry_script(value: str, info: ValidationInfo) -> str:
    if not value.endswith(".py"):
        raise error(
            "entry_script", "must be a Python file ending in .py, got {value!r}", value=value
        )
    _existing_file(value, info)
    path = _relative_path(value, info)
    if path is None:
        return value
    try:
        tree = ast.parse(path.read_bytes(), filename=value)
    except SyntaxError as exc:
        raise error(
            "entry_script",
            "{value!r} has a Python syntax error at line {line}: {msg}",
            value=value,
            line=exc.lineno or 0,
            msg=exc.msg,
        ) from None
    except (ValueError, OSError) as exc:  # null bytes (Python 3.11), unreadable file
        raise error(
            "entry_script", "{value!r} cannot be read as Python: {exc}", value=value, exc=exc
        ) from None
    defined = _module_names(tree.body)
    missing = [name for name in ("init", "run") if name not in defined]
    if missing and "*" not in defined:
        raise error(
            "entry_script",
            "{value!r} must define {names} at module level (Azure ML's scoring contract)",
            value=value,
            names=" and ".join(f"{name}()" for name in missing),
        )
    return value


def _module_names(body: list[ast.stmt]) -> set[str]:
    """Names a module binds at its top level: defs, assignments and imports, including
    those under top-level if/try/with blocks (e.g. an optional-dependency fallback).
    ``"*"`` stands for a star import, which may bind anything."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.If | ast.With):
            names |= _module_names(node.body) | _module_names(getattr(node, "orelse", []))
        elif isinstance(node, ast.Try):
            for block in (
                node.body,
                node.orelse,
                node.finalbody,
                *(handler.body for handler in node.handlers),
            ):
                names |= _module_names(block)
    return names


RelativePath = Annotated[str, Field(min_length=1), AfterValidator(_existing)]
RelativeFile = Annotated[str, Field(min_length=1), AfterValidator(_existing_file)]
EntryScript = Annotated[str, Field(min_length=1), AfterValidator(_entry_script)]


class TargetConfig(Section):
    """Base of every target's section; each kind narrows ``type`` to its Literal.

    Every kind states its own ``ready_timeout_s`` default (what suits its platform): the
    field is required here, so a kind that forgets it cannot be loaded.
    """

    type: str
    ready_timeout_s: PositiveFloat


# How an Azure platform pulls the image from the registry: ``pull`` in the ``aci`` and
# ``functions`` targets' sections (a managed identity with AcrPull, or a user name and
# password from named environment variables; never both).
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
