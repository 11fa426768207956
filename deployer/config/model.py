"""The typed model of deploy.yaml.

A validated config is a tree of frozen objects; nothing downstream reads raw dicts. The
``targets`` union is built from the one list of kinds (``deployer.targets.kinds``), which
imports each kind's ``schema.py`` and nothing else of it: a new kind is one package plus one
template folder, and the schema learns its name from there. Field descriptions are what
editors show from the published JSON Schema.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

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
    Rule,
    Section,
    ServiceName,
    TargetName,
    VersionString,
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
        description="The model's name in labels and reports; defaults to the service name.",
    )
    version: VersionString = Field(
        default="auto",
        description='"auto" (a 12-character content hash of the model files, which changes '
        "whenever they do) or an explicit version; it tags images and labels resources.",
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
        description="Conda environment file (Azure ML style); its pip section is installed. "
        "Images have no conda, so other conda packages are rejected.",
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


class Registry(Section):
    """Where images are pushed. Credentials are named by environment variable, never inlined."""

    address: RegistryAddress = Field(
        description="host[:port][/namespace], e.g. myregistry.azurecr.io or 127.0.0.1:5000."
    )
    auth: Literal["none", "basic", "acr"] = Field(
        default="none",
        description="none: an open registry; basic: user name and password from the "
        "environment variables below; acr: the same, for an Azure Container Registry.",
    )
    username_env: EnvVarName = Field(
        default="REGISTRY_USERNAME",
        description="Name of the environment variable holding the user name (not the name itself).",
    )
    password_env: EnvVarName = Field(
        default="REGISTRY_PASSWORD",
        description="Name of the environment variable holding the password (not the password).",
    )


class Expectation(Section):
    """What a test request must answer."""

    status: int = Field(default=200, ge=100, le=599, description="Expected HTTP status.")
    json_: Any = Field(
        default=None, alias="json", description="Expected JSON body; unset: not compared."
    )
    tolerance: float = Field(
        default=0.0, ge=0, description="Absolute tolerance when comparing numbers in json."
    )


class ScoringTest(Section):
    """One request sent to a deployed service, and what it must answer."""

    name: TestName = Field(description="Unique within tests.requests; names it in reports.")
    json_: Any = Field(default=None, alias="json", description="JSON request body.")
    body: str | None = Field(default=None, description="Raw text request body (instead of json).")
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict, description="Extra request headers."
    )
    expect: Expectation = Field(
        default_factory=Expectation, description="What the answer must be; default: status 200."
    )

    @model_validator(mode="after")
    def _one_body(self) -> ScoringTest:
        if self.json_ is not None and self.body is not None:
            raise error("conflict", "set either json or body, not both", at="body")
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
    model: ModelSpec = Field(description="The model: its files, name and version.")
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
    tests: ScoringTests = Field(
        default_factory=ScoringTests, description="Requests that check each deployment."
    )
    targets: dict[TargetName, TargetConfigUnion] = Field(
        min_length=1,
        description="Where to deploy: target name -> settings; 'type' picks the kind.",
    )

    @property
    def model_name(self) -> str:
        return self.model.name or self.name

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
