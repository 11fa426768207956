"""The typed model of deploy.yaml.

A validated config is a tree of frozen objects; nothing downstream reads raw dicts. The
``targets`` union is built from the one list of kinds (``deployer.targets.kinds``), which
imports each kind's ``schema.py`` and nothing else of it: a new kind is one package plus one
template folder, and the schema learns its name from there. Field descriptions are what
editors show from the published JSON Schema.
"""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from deployer.config.fields import (
    DebianPackage,
    EntryScript,
    EnvVarName,
    HeaderName,
    HeaderValue,
    ImageReference,
    ModelName,
    PositiveFloat,
    RegistryAddress,
    RelativeFile,
    RelativePath,
    ResourceGroup,
    Rule,
    Section,
    ServiceName,
    TargetName,
    Uuid,
    VersionString,
    _check_keys_in_schema,
    describe,
    error,
)

if TYPE_CHECKING:
    # The union is built at run time from the list of kinds; to a type checker, every target
    # section is a TargetConfig (what code outside its kind's package may rely on).
    from deployer.config.fields import TargetConfig as TargetConfigUnion
else:
    from deployer.targets.kinds import TargetConfigUnion

SCHEMA_VERSION = 1

PythonVersion = Annotated[
    str,
    Rule("Python version", 'major.minor as a quoted string, such as "3.11"', r"^3\.[0-9]{1,2}$"),
]
TestName = Annotated[
    str,
    Rule(
        "test name",
        "up to 63 letters, digits, '.', '_' and '-', starting with a letter or digit",
        r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=63,
    ),
]
# The official python images: their tag starts with the Python version they hold.
_PYTHON_IMAGE = re.compile(r"^(?:docker\.io/)?(?:library/)?python:(?P<version>3\.[0-9]+)(?![0-9])")


class ModelSpec(Section):
    """The model artifacts shipped in the image."""

    path: RelativePath = Field(
        description="Model file or folder, relative to deploy.yaml; copied into the image."
    )
    name: ModelName | None = Field(
        default=None,
        description="The model's name, as registered in Azure ML: Model.get_model_path(name) "
        "finds it, and it labels images, resources and reports; defaults to the service name.",
    )
    version: VersionString = Field(
        default="auto",
        description='"auto" (an integer derived from the content hash of the model files: '
        "the same files give the same version anywhere, other files another one, but a "
        "newer model does not get a larger number) or an explicit version. It names the "
        "model's folder, azureml-models/<name>/<version>, and labels images and resources. "
        "azureml-core's Model.get_model_path (SDK v1) reads only integer versions; SDK v2 "
        "scripts, which read AZUREML_MODEL_DIR, take any.",
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form model metadata.")
    description: str = Field(default="", description="What the model is, for people.")


class Environment(Section):
    """The Python environment the entry script runs in."""

    python: PythonVersion = Field(
        default="3.11",
        description='The Python version, quoted ("3.10" unquoted is the number 3.1); the '
        "image build checks that the base image has it.",
    )
    conda_file: RelativeFile | None = Field(
        default=None,
        description="Conda environment file (Azure ML style), installed with pip: its pip "
        "section as written, each conda package from PyPI with the same version constraint "
        "(numpy=1.21 is numpy==1.21.*; pytorch is torch). Packages with no PyPI counterpart "
        "(cudatoolkit, system libraries, R) are errors; deployer validate notes each "
        "translation.",
    )
    pip_requirements: RelativeFile | None = Field(
        default=None, description="A pip requirements file; set this or conda_file, not both."
    )
    base_image: ImageReference = Field(
        default="python:3.11-slim",
        description="The image to build on; defaults to python:<python>-slim. It must have "
        "the Python version given in 'python'.",
    )
    system_packages: list[DebianPackage] = Field(
        default_factory=list, description="Debian packages installed with apt-get."
    )
    variables: dict[EnvVarName, str] = Field(
        default_factory=dict, description="Environment variables set in the image (no secrets)."
    )

    @field_validator("python", mode="before")
    @classmethod
    def _python_is_a_string(cls, value: Any) -> Any:
        if isinstance(value, float | int) and not isinstance(value, bool):
            if value == 3.1:  # what YAML makes of an unquoted 3.10
                raise error(
                    "quote_version",
                    'write "3.10" in quotes: unquoted, YAML reads 3.10 as the number 3.1',
                )
            raise error(
                "quote_version",
                'must be a string: write the version in quotes, "{value}"',
                value=value,
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _base_image_follows_python(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and "base_image" not in data
            and isinstance(data.get("python"), str)
            and re.fullmatch(r"3\.[0-9]{1,2}", data["python"])
        ):
            return {**data, "base_image": f"python:{data['python']}-slim"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Environment:
        if self.conda_file and self.pip_requirements:
            raise error(
                "conflict",
                "set at most one of conda_file and pip_requirements",
                at="pip_requirements",
            )
        official = _PYTHON_IMAGE.match(self.base_image)
        if official and official["version"] != self.python:
            raise error(
                "conflict",
                "{image!r} has Python {has}, but environment.python is {python!r}",
                image=self.base_image,
                has=official["version"],
                python=self.python,
                at="base_image",
            )
        return self


class Server(Section):
    """The scoring server inside the image."""

    workers: int = Field(
        default=1, ge=1, le=64, description="Worker processes, each with its own init()."
    )
    max_request_bytes: int = Field(
        default=104_857_600, ge=1024, le=2**31, description="Larger request bodies get 413."
    )
    scoring_timeout_ms: int = Field(
        default=60_000,
        ge=1,
        le=3_600_000,
        description="A run() taking longer is answered 500 'Scoring timeout after N ms' (as "
        "in Azure ML); stopping waits this long for requests in progress.",
    )
    limit_concurrency: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Most /score requests one worker holds (running and waiting); more "
        "are answered 503 with Retry-After at once instead of queueing.",
    )


_ACR_NAME_PATTERN = r"^[a-zA-Z0-9]{5,50}$"
AcrName = Annotated[
    str,
    Rule("registry name", "5 to 50 letters and digits (Azure's rule)", _ACR_NAME_PATTERN, 5, 50),
]
_ACR_ONLY = ("admin_user", "subscription_id", "resource_group", "name")


class Registry(Section):
    """Where images are pushed. Credentials are named by environment variable, never inlined;
    an Azure Container Registry's come from the identity deployer runs as."""

    address: RegistryAddress = Field(
        description="host[:port][/namespace], e.g. myregistry.azurecr.io or 127.0.0.1:5000."
    )
    auth: Literal["none", "basic", "acr"] = Field(
        default="none",
        description="none: an open registry; basic: user name and password from the "
        "environment variables below; acr: an Azure Container Registry, pushed to with a "
        "token exchanged for the Entra ID identity deployer runs as (az login, azure/login, "
        "AZURE_CLIENT_*), as 'az acr login' does; the identity needs AcrPush on it.",
    )
    username_env: EnvVarName = Field(
        default="REGISTRY_USERNAME",
        description="Name of the environment variable holding the user name (not the name "
        "itself). With auth: acr, what the targets' platforms pull with.",
    )
    password_env: EnvVarName = Field(
        default="REGISTRY_PASSWORD",
        description="Name of the environment variable holding the password (not the password).",
    )
    admin_user: bool = Field(
        default=False,
        description="auth: acr only: push as the registry's admin user instead, its password "
        "read from Azure Resource Manager (needs subscription_id and resource_group, the "
        "admin user enabled, and the right to list the registry's credentials).",
    )
    subscription_id: Uuid | None = Field(
        default=None, description="With admin_user: the registry's subscription."
    )
    resource_group: ResourceGroup | None = Field(
        default=None, description="With admin_user: the registry's resource group."
    )
    name: AcrName | None = Field(
        default=None,
        description="auth: acr only: the registry's Azure resource name, as in 'az acr show "
        "--name'. Default: the address's first label (myregistry of myregistry.azurecr.io).",
    )

    @property
    def acr_name(self) -> str | None:
        """The registry's Azure resource name: ``name``, else the address's first label when
        it can be one (not an IP address's)."""
        if self.name:
            return self.name
        label = self.address.split("/", 1)[0].split(":", 1)[0].split(".", 1)[0]
        return label if re.fullmatch(_ACR_NAME_PATTERN, label) and not label.isdigit() else None

    @model_validator(mode="after")
    def _acr_settings(self) -> Registry:
        given = [key for key in _ACR_ONLY if getattr(self, key) not in (None, False)]
        if self.auth != "acr" and given:
            raise error(
                "conflict",
                "{key} is for auth: acr (an Azure Container Registry); remove it or set auth: acr",
                key=given[0],
                at=given[0],
            )
        if self.admin_user:
            missing = [k for k in ("subscription_id", "resource_group") if getattr(self, k) is None]
            if missing:
                raise error(
                    "required",
                    "admin_user reads the admin password from Azure Resource Manager: set "
                    "{missing} (where the registry is)",
                    missing=" and ".join(missing),
                    at="admin_user",
                )
            if self.acr_name is None:
                raise error(
                    "required",
                    "admin_user needs the registry's Azure resource name, and the address "
                    "{address!r} does not start with one: set name",
                    address=self.address,
                    at="admin_user",
                )
        else:
            extra = [k for k in ("subscription_id", "resource_group") if getattr(self, k)]
            if extra:
                raise error(
                    "conflict",
                    "{key} is used only with admin_user: true (the default token exchange "
                    "needs none); remove it or set admin_user: true",
                    key=extra[0],
                    at=extra[0],
                )
        return self


HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_HTTP_METHODS: tuple[str, ...] = get_args(HttpMethod)
# A multipart field name goes into a quoted Content-Disposition parameter.
FormFieldName = Annotated[
    str,
    Rule(
        "form field name",
        "up to 100 characters without quotes, line breaks or control characters",
        r'^[^"\x00-\x1f\x7f]+$',
        max_length=100,
    ),
]
QueryName = Annotated[str, Field(min_length=1)]
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
MediaType = Annotated[
    str,
    Rule(
        "media type",
        "type/subtype, optionally with ; name=value parameters, such as image/png "
        "or text/plain; charset=utf-8",
        rf'^{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=({_TOKEN}|"[^"\\]*"))*$',
        max_length=255,
    ),
]
Sha256Digest = Annotated[
    str,
    Rule(
        "SHA-256 digest",
        "64 hexadecimal digits, as sha256sum prints them",
        r"^[0-9a-fA-F]{64}$",
        min_length=64,
        max_length=64,
    ),
]


def _inside_folder(value: str, info: ValidationInfo) -> str:
    """A test's file must not lead out of deploy.yaml's folder through a symbolic link:
    its bytes are sent to the endpoint."""
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    if base is not None:
        folder = Path(base).resolve()
        if not (folder / value.replace("\\", "/")).resolve().is_relative_to(folder):
            raise error(
                "path",
                "{value!r} leads outside the folder of deploy.yaml (through a symbolic link)",
                value=value,
            )
    return value


# A file a test request sends: relative to deploy.yaml, existing, and inside its folder.
TestFile = Annotated[RelativeFile, AfterValidator(_inside_folder)]


def _no_duplicate_names(headers: dict[str, str]) -> dict[str, str]:
    seen: dict[str, str] = {}
    for name in headers:
        if name.lower() in seen:
            raise error(
                "duplicate",
                "header {name!r} is given twice, as {first!r} too (header names ignore case)",
                name=name,
                first=seen[name.lower()],
                at=name,
            )
        seen[name.lower()] = name
    return headers


def _query_values(value: Any) -> Any:
    """One message for a query value that is neither a string nor a list of strings
    (the union's two errors would name its members)."""
    if isinstance(value, dict):
        for name, item in value.items():
            items = item if isinstance(item, list) else [item]
            for index, one in enumerate(items):
                if not isinstance(one, str):
                    where = (name, index) if isinstance(item, list) else name
                    hint = " (put it in quotes)" if isinstance(one, int | float | bool) else ""
                    raise error(
                        "query_type",
                        "a query value must be a string or a list of strings, got {got}{hint}",
                        got=describe(one),
                        hint=hint,
                        at=where,
                    )
    return value


HeaderMap = Annotated[dict[HeaderName, HeaderValue], AfterValidator(_no_duplicate_names)]
QueryParameters = Annotated[dict[QueryName, str | list[str]], BeforeValidator(_query_values)]


class Expectation(Section):
    """What a test request must answer. Each expectation given is checked; a failed
    status stops there (the rest would only repeat it)."""

    status: int = Field(default=200, ge=100, le=599, description="Expected HTTP status.")
    json_: Any = Field(
        default=None, alias="json", description="Expected JSON body; unset: not compared."
    )
    tolerance: float = Field(
        default=0.0, ge=0, description="Absolute tolerance when comparing numbers in json."
    )
    headers: HeaderMap = Field(
        default_factory=dict,
        description="Answer headers and their exact values; names ignore case. Repeated "
        "headers are compared joined with ', '.",
    )
    content_type: MediaType | None = Field(
        default=None,
        description="The answer's media type (type/subtype, case ignored); its parameters "
        "(charset=...) are compared only when given here.",
    )
    body_sha256: Sha256Digest | None = Field(
        default=None,
        description="SHA-256 hex digest of the raw answer body (sha256sum of the expected "
        "file), for binary answers.",
    )


# The ways to give a request body: at most one of them (files and form make one).
_BODY_FORMS = ("json", "body", "body_file", "files", "form")


def _one_body_in_schema(schema: dict[str, Any]) -> None:
    """Editors flag two body forms in one request, as validation does."""
    _check_keys_in_schema(schema)
    pairs = [pair for pair in combinations(_BODY_FORMS, 2) if set(pair) != {"files", "form"}]
    schema["not"] = {"anyOf": [{"required": list(pair)} for pair in pairs]}


class ScoringTest(Section):
    """One request sent to a deployed service, and what it must answer."""

    model_config = ConfigDict(json_schema_extra=_one_body_in_schema)

    name: TestName = Field(description="Unique within tests.requests; names it in reports.")
    method: HttpMethod = Field(
        default="POST", description="The HTTP method, in capitals: GET, POST, PUT, ..."
    )
    query: QueryParameters = Field(
        default_factory=dict,
        description="Query parameters added to the scoring URI: name -> value, or a list of "
        "values for a repeated name. Percent-encoded when sent.",
    )
    headers: HeaderMap = Field(default_factory=dict, description="Extra request headers.")
    json_: Any = Field(default=None, alias="json", description="JSON request body.")
    body: str | None = Field(default=None, description="Raw text request body (instead of json).")
    body_file: TestFile | None = Field(
        default=None,
        description="A file, relative to deploy.yaml, sent as the body byte for byte. Its "
        "Content-Type is the one in headers, else guessed from its extension, else "
        "application/octet-stream.",
    )
    files: dict[FormFieldName, TestFile] = Field(
        default_factory=dict,
        description="A multipart/form-data upload: form field name -> file relative to "
        "deploy.yaml (its name and a content type guessed from its extension are sent).",
    )
    form: dict[FormFieldName, str] = Field(
        default_factory=dict,
        description="Plain text fields of the multipart/form-data body, beside files.",
    )
    expect: Expectation = Field(
        default_factory=Expectation, description="What the answer must be; default: status 200."
    )

    @field_validator("method", mode="before")
    @classmethod
    def _method_in_capitals(cls, value: Any) -> Any:
        if isinstance(value, str) and value != value.upper() and value.upper() in _HTTP_METHODS:
            raise error("method", "write HTTP methods in capitals: {upper!r}", upper=value.upper())
        return value

    @model_validator(mode="after")
    def _one_body(self) -> ScoringTest:
        given = [
            form
            for form in _BODY_FORMS
            if (form == "json" and self.json_ is not None)
            or (form != "json" and getattr(self, form) not in (None, {}))
        ]
        if "files" in given and "form" in given:
            given.remove("form")  # one multipart body
        if len(given) > 1:
            raise error(
                "conflict",
                "set one request body: json, body, body_file or files (with form); "
                "not both {first} and {second}",
                first=given[0],
                second=given[1],
                at=given[1],
            )
        own_type = next((h for h in self.headers if h.lower() == "content-type"), None)
        if given and given[0] in ("files", "form") and own_type is not None:
            raise error(
                "conflict",
                "a files/form upload sets its own Content-Type (multipart/form-data with "
                "its boundary): remove {name!r} from headers",
                name=own_type,
                at=("headers", own_type),
            )
        return self


class ScoringTests(Section):
    """Requests that check a deployment after each deploy."""

    requests: list[ScoringTest] = Field(
        default_factory=list, description="Requests sent in order, each with its expected answer."
    )
    latency_p95_ms: PositiveFloat | None = Field(
        default=None, description="Fail when the 95th percentile latency is above this."
    )
    latency_requests: int = Field(
        default=50, ge=1, le=10_000, description="Requests in the latency burst."
    )

    @field_validator("requests")
    @classmethod
    def _unique_names(cls, requests: list[ScoringTest]) -> list[ScoringTest]:
        seen: set[str] = set()
        for index, request in enumerate(requests):
            if request.name in seen:
                raise error(
                    "duplicate",
                    "test request name {name!r} is used twice",
                    name=request.name,
                    at=(index, "name"),
                )
            seen.add(request.name)
        return requests


class DeployConfig(Section):
    """deploy.yaml: one model, its scoring script and environment, and where to deploy it."""

    version: Literal[1] = Field(description="The deploy.yaml format version: 1.")
    name: ServiceName = Field(
        description="The service: names the image, containers and cloud resources."
    )
    model: ModelSpec | None = Field(
        default=None,
        description="The model: its files, name and version. Leave it out when the entry "
        "script loads no model; AZUREML_MODEL_DIR is then an empty folder.",
    )
    entry_script: EntryScript = Field(
        description="The scoring script, relative to deploy.yaml; defines init() and run() "
        "at module level, Azure ML style."
    )
    code: RelativePath | None = Field(
        default=None,
        description="A folder shipped beside the entry script (helper modules); "
        "by default only the entry script is shipped.",
    )
    environment: Environment = Field(
        default_factory=Environment,
        description="The Python environment of the entry script: version, packages, variables.",
    )
    server: Server = Field(
        default_factory=Server, description="The scoring server's workers and limits."
    )
    registry: Registry = Field(description="Where images are pushed, and how to log in.")
    azure_cloud: Literal["AzureCloud", "AzureChinaCloud", "AzureUSGovernment"] | None = Field(
        default=None,
        description="The Azure cloud of the Azure targets and of an ACR registry, named as "
        "'az cloud list' names it. Unset: the environment variable DEPLOYER_AZURE_CLOUD (one "
        "of these names, or a custom cloud as a JSON file from 'az cloud show'), else "
        "AzureCloud.",
    )
    tests: ScoringTests = Field(
        default_factory=ScoringTests, description="Requests that check each deployment."
    )
    targets: dict[TargetName, TargetConfigUnion] = Field(
        min_length=1,
        description="Where to deploy: target name -> settings; 'type' picks the kind.",
    )

    @property
    def model_name(self) -> str:
        """The model's name; without a model, the service name (what labels carry)."""
        return (self.model.name if self.model else None) or self.name

    @field_validator("model", mode="before")
    @classmethod
    def _model_left_out_not_empty(cls, value: Any) -> Any:
        # Only a missing key means "no model": an empty "model:" is a section left
        # unfinished. "model_type" makes the loader word it as any non-mapping.
        if value is None:
            raise error("model_type", "must be a mapping")
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _known_version(cls, value: Any) -> Any:
        if type(value) is int and value != 1:
            raise error(
                "version",
                "format version {value} is not supported: this deployer reads version 1",
                value=value,
            )
        if type(value) is not int:
            raise error(
                "version",
                "must be the number 1 (the deploy.yaml format version), got {got}",
                got=describe(value),
            )
        return value

    @model_validator(mode="after")
    def _code_holds_entry_script(self) -> DeployConfig:
        if self.code is not None:
            code = self.code.rstrip("/") + "/"
            if code != "./" and not self.entry_script.startswith(code):
                raise error(
                    "entry_script",
                    "must lie inside the code folder {code!r}",
                    code=self.code,
                    at="entry_script",
                )
        return self
