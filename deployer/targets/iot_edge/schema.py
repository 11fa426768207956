"""The ``iot_edge`` target's section of deploy.yaml."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from deployer.config.fields import (
    EnvVarName,
    Port,
    PositiveFloat,
    Rule,
    Section,
    TargetConfig,
    error,
)

KIND = "iot_edge"

# Azure's rule for IoT Hub names (Microsoft.Devices/IotHubs); the hub is also a host name,
# <hub>.azure-devices.net, so it does not start with '-' either.
HubName = Annotated[
    str,
    Rule(
        "IoT Hub name",
        "3 to 50 letters, digits and '-', starting and ending with a letter or digit",
        r"^[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]$",
        min_length=3,
        max_length=50,
    ),
]
# IoT Hub's device id: case-sensitive, 7-bit ASCII letters and digits and these symbols.
DeviceId = Annotated[
    str,
    Rule(
        "device id",
        "up to 128 ASCII letters, digits and any of - : . + % _ # * ? ! ( ) , = @ ; $ '",
        r"^[A-Za-z0-9\-:.+%_#*?!(),=@;$']+$",
        max_length=128,
    ),
]
SYSTEM_MODULES = ("edgeAgent", "edgeHub")


def _not_a_system_module(name: str) -> str:
    """Checked before the name's format, so that this error, not the format's, is shown."""
    if name in SYSTEM_MODULES:
        raise error(
            "reserved",
            "{name!r} is the name of an IoT Edge system module; choose another",
            name=name,
        )
    return name


# The module's container name and its host name on the edge network, and part of the
# /messages/modules/<name>/... paths of routes. The pattern excludes the system modules too,
# for editors, which only see the JSON Schema.
ModuleName = Annotated[
    str,
    AfterValidator(_not_a_system_module),
    Rule(
        "module name",
        "up to 64 letters, digits, '_' and '-', starting with a letter or digit, "
        f"other than {' and '.join(SYSTEM_MODULES)} (the runtime's own modules)",
        rf"^(?!({'|'.join(SYSTEM_MODULES)})$)[A-Za-z0-9][A-Za-z0-9_-]*$",
        max_length=64,
    ),
]
# Route names and registryCredentials keys are twin property names: no '.', '$', '#' or ' '.
_TWIN_KEY_PATTERN = r"^[A-Za-z0-9_-]+$"
RouteName = Annotated[str, Rule("route name", "letters, digits, '_' and '-'", _TWIN_KEY_PATTERN)]
Route = Annotated[
    str,
    Rule(
        "route",
        "'FROM <source> [WHERE <condition>] INTO <sink>' on one line, FROM and INTO in "
        "capitals, such as FROM /messages/* INTO $upstream",
        r"^FROM [^\r\n]+ INTO [^\r\n]+$",
    ),
]
RegistryCredentialsName = Annotated[
    str, Rule("registry credentials name", "letters, digits, '_' and '-'", _TWIN_KEY_PATTERN)
]
# IoT Hub configuration ids: lowercase; we keep to letters, digits and '-' (they label the
# deployment and name it in `az iot edge deployment` commands).
DeploymentId = Annotated[
    str,
    Rule(
        "deployment id",
        "up to 128 lowercase letters, digits and '-', starting and ending with a letter or digit",
        r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        max_length=128,
    ),
]


class AtScale(Section):
    id: DeploymentId
    target_condition: Annotated[str, Field(min_length=1, max_length=1024)]
    priority: int = Field(default=10, ge=0, le=2_147_483_647)


class Config(TargetConfig):
    model_config = ConfigDict(title="iot_edge target")

    type: Literal["iot_edge"]
    hub: HubName
    device_id: DeviceId | None = None
    deployment: AtScale | None = None
    module_name: ModuleName
    port: Port = Field(default=5001, description="Port the module's server listens on.")
    routes: dict[RouteName, Route] = Field(
        default_factory=dict, description="edgeHub routes: name -> 'FROM ... INTO ...'."
    )
    registry_credentials_name: RegistryCredentialsName | None = None
    auth: Literal["connection_string", "entra"] = Field(
        default="connection_string",
        description="connection_string: the hub's service connection string, from the "
        "environment variable connection_string_env names (a shared access policy with "
        "service connect and registry read/write); entra: the identity deployer runs as "
        "(DefaultAzureCredential: azure/login, az login), with the IoT Hub Data Contributor "
        "role on the hub, reached at <hub>.azure-devices.net (or the cloud's suffix).",
    )
    connection_string_env: EnvVarName = Field(
        default="IOTHUB_CONNECTION_STRING",
        description="Name of the environment variable holding the hub's service connection "
        "string (not the string itself).",
    )
    device_address: str | None = Field(
        default=None,
        description="Host name or IP address the device answers on, for the scoring URI "
        "http://<device_address>:<port>/score (default: the device id). It is on the "
        "device's network: deployer reports it, and tests it only through test_uri.",
    )
    test_uri: Annotated[str, Field(pattern=r"^https?://[^/\s]+(/\S*)?$")] | None = Field(
        default=None,
        description="Where this machine reaches the model module's /score (a VPN, a port "
        "forward, a device on the runner's network). Without it deploy.yaml's tests are "
        "not run after a deploy: the device is out of reach, and the report says so.",
    )
    ready_timeout_s: PositiveFloat = Field(
        default=900,
        description="How long the device may take to report the new module running (image "
        "pull over the device's link included) before the deploy rolls it back.",
    )

    @model_validator(mode="after")
    def _one_placement(self) -> Config:
        if (self.device_id is None) == (self.deployment is None):
            raise error(
                "placement",
                "set exactly one of device_id (one device) and deployment (at scale)",
                at="deployment" if self.deployment is not None else "device_id",
            )
        return self
