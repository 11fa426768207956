"""The ``functions`` target's section of deploy.yaml."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from deployer.config.fields import (
    AzureLocation,
    EnvVarName,
    ImagePull,
    ManagedIdentityId,
    PositiveFloat,
    ResourceGroup,
    Rule,
    Section,
    TargetConfig,
    Uuid,
    error,
)

KIND = "functions"

# Binding paths: a blob container (Azure's rule: 3-63 characters, single hyphens between
# letters or digits; the lookahead counts its length), then the blob name, which may hold
# {binding expressions}. Quotes, backslashes and control characters have no place in a binding path.
BlobPath = Annotated[
    str,
    Rule(
        "blob path",
        "container/blob-name: a container of 3 to 63 lowercase letters, digits and single "
        "'-' between them, then '/' and a blob name without quotes, backslashes or control "
        "characters, such as input/{name}.json",
        r'^(?=[a-z0-9-]{3,63}/)[a-z0-9]+(-[a-z0-9]+)*/[^\x00-\x1f\x7f"\\]+$',
    ),
]
# The app's host name, <app_name>.azurewebsites.net (Microsoft.Web/sites).
AppName = Annotated[
    str,
    Rule(
        "function app name",
        "2 to 60 letters, digits and '-', starting and ending with a letter or digit",
        r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$",
        min_length=2,
        max_length=60,
    ),
]
QueueName = Annotated[
    str,
    Rule(
        "Service Bus queue name",
        "up to 260 letters, digits, '.', '_', '-' and '/', starting and ending with a letter "
        "or digit",
        r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$",
        max_length=260,
    ),
]
# The path after /api/ that the HTTP trigger answers; {name} segments are route parameters.
HttpRoute = Annotated[
    str,
    Rule(
        "HTTP route",
        "letters, digits, '/', '_', '.', '-' and {parameters}, such as score or models/{name}",
        r"^[A-Za-z0-9_{}/.-]+$",
    ),
]


# An Application Insights component's resource id (``az monitor app-insights component show
# --query id``), the scope deployer logs reads with the Azure Monitor Logs query API.
InsightsId = Annotated[
    str,
    Rule(
        "Application Insights resource id",
        "/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Insights/components/"
        "<name>, as 'az monitor app-insights component show --query id' prints it",
        r"^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[-\w._()]+/providers/"
        r"(?i:microsoft\.insights)/components/[-\w._()]+$",
    ),
]


def route_parameters(route: str) -> list[str]:
    """The ``{name}`` parameters of an HTTP route, in order."""
    return [part.split("}", 1)[0] for part in route.split("{")[1:]]


class HttpTrigger(Section):
    auth_level: Literal["anonymous", "function", "admin"] = "function"
    route: HttpRoute = "score"
    route_values: dict[str, str] = Field(
        default_factory=dict,
        description="A value for each {parameter} of the route, used where the tests call "
        "the function (deployer test, the deploy's tests, --local): e.g. route models/{name} "
        "with route_values {name: diabetes} is tested at /api/models/diabetes.",
    )

    @model_validator(mode="after")
    def _a_value_for_each_parameter(self) -> HttpTrigger:
        names = route_parameters(self.route)
        for name in names:
            if not name.isidentifier():  # the route's rule already keeps it to ASCII
                raise error(
                    "route",
                    "route parameter {{{name}}} is not a name: letters, digits and '_'",
                    name=name,
                    at="route",
                )
        missing = [name for name in names if name not in self.route_values]
        if missing:
            raise error(
                "route",
                "route {route!r} has parameters the tests need values for: give "
                "route_values {{{pairs}}}",
                route=self.route,
                pairs=", ".join(f"{name}: ..." for name in missing),
                at="route_values",
            )
        extra = sorted(set(self.route_values) - set(names))
        if extra:
            raise error(
                "route",
                "route_values names {extra}, which route {route!r} does not have",
                extra=", ".join(extra),
                route=self.route,
                at="route_values",
            )
        return self


class BlobTrigger(Section):
    input_path: BlobPath
    output_path: BlobPath
    connection: EnvVarName = Field(description="App setting holding the storage connection.")


class ServiceBusTrigger(Section):
    queue: QueueName
    connection: EnvVarName = Field(description="App setting holding the Service Bus connection.")
    output_queue: QueueName | None = None


# The plans that run custom containers: Elastic Premium, or Dedicated (App Service) ones.
PlanSku = Annotated[
    str,
    Rule(
        "plan SKU for a container function app",
        "Elastic Premium EP1, EP2 or EP3, or a Dedicated plan's: B1-B3, S1-S3, P1v2-P3v2, "
        "P0v3-P3v3, P1mv3-P5mv3 (Consumption Y1 and Flex Consumption FC1 run no custom "
        "containers)",
        r"^(EP[1-3]|B[1-3]|S[1-3]|P[1-3]v2|P[0-3]v3|P[1-5]mv3)$",
    ),
]
PlanName = Annotated[
    str,
    Rule(
        "App Service plan name",
        "1 to 60 letters, digits and '-'",
        r"^[A-Za-z0-9-]{1,60}$",
    ),
]


class HostingPlan(Section):
    """The App Service plan the app runs on."""

    name: PlanName | None = Field(
        default=None,
        description="Default <app_name>-plan. deployer creates it when missing (and down "
        "removes it once no app uses it); a plan deployer did not create is used as it is.",
    )
    sku: PlanSku = Field(
        default="EP1",
        description="EP1-EP3 (Elastic Premium: scales out on events) or a Dedicated plan's "
        "SKU (fixed instances; the app gets Always On so that non-HTTP triggers keep firing). "
        "A plan deployer created is moved to a new SKU of the same family; Azure cannot move "
        "a plan between Elastic Premium and Dedicated.",
    )

    @property
    def elastic(self) -> bool:
        return self.sku.startswith("EP")


class FunctionsImagePull(ImagePull):
    identity: Literal["system"] | ManagedIdentityId | None = Field(
        default=None,
        description="A managed identity with AcrPull on the registry: 'system' (the app's "
        "own, made with it: grant it AcrPull once it exists) or a user-assigned identity's "
        "resource id (grant it first: the recommended way). The app then pulls with "
        "acrUseManagedIdentityCreds, with no password stored.",
    )


TRIGGER_FIELDS = ("http", "blob", "service_bus")


class Config(TargetConfig):
    model_config = ConfigDict(title="functions target")

    type: Literal["functions"]
    subscription_id: Uuid
    resource_group: ResourceGroup
    app_name: AppName
    location: AzureLocation | None = None
    trigger: Literal["http", "blob", "service_bus"] = "http"
    http: HttpTrigger | None = None
    blob: BlobTrigger | None = None
    service_bus: ServiceBusTrigger | None = None
    plan: HostingPlan = Field(default_factory=HostingPlan)
    pull: FunctionsImagePull | None = Field(
        default=None,
        description="How the app pulls the image. Unset: with registry.auth basic, the "
        "registry's own variables; with auth: acr it must be set.",
    )
    application_insights: InsightsId | None = Field(
        default=None,
        description="The app's Application Insights component: deployer logs reads its traces "
        "and exceptions there, instead of the app's container log (Kudu).",
    )
    ready_timeout_s: PositiveFloat = Field(
        default=900,
        description="How long the function app may take to pull its image, restart and "
        "answer (init() included) before the deploy rolls it back.",
    )

    @model_validator(mode="after")
    def _trigger_settings(self) -> Config:
        for other in TRIGGER_FIELDS:
            if other != self.trigger and getattr(self, other) is not None:
                raise error(
                    "trigger",
                    "'{other}' settings given but trigger is {trigger!r}",
                    other=other,
                    trigger=self.trigger,
                    at=other,
                )
        if self.trigger != "http" and getattr(self, self.trigger) is None:
            raise error(
                "trigger",
                "trigger {trigger!r} needs a '{trigger}' section",
                trigger=self.trigger,
                at="trigger",
            )
        return self
