"""``functions``: an Azure Functions app (container) that calls the entry script per event.

The kind builds its own image: the Functions Python base image (the plain tag, which is
the one Azure Functions Core Tools generates for custom containers; ``-appservice`` only
adds SSH and remote debugging on App Service), the user's environment, a function app in
the Python v2 programming model, and the entry script and model where the scoring image
keeps them. ``environment.base_image`` does not apply: the Functions host and Python
worker come from the base image.

The function app is ``templates/functions/wwwroot/``: ``host.json`` and ``function_app.py``
(both rendered; the latter holds one function, ``score_<trigger>``, decorated with the
trigger and output bindings of deploy.yaml), ``deployer_scoring.py`` shipped as it is, and
``deployer/serving`` beside them. ``function_app.py`` imports the entry script once per
worker process (when the worker indexes it), calls ``init()`` once, and scores each event
through deployer.serving's invocation core, as the scoring server does (so every script
style behaves as there); an event that is not an HTTP request is scored as a POST of its
content. The v2 model needs Functions host 4.x with worker indexing, on by default in
every current ``4-python3.x`` base image (no ``AzureWebJobsFeatureFlags`` setting).

``render`` writes ``app.json``: the request bodies a deploy sends through azure-mgmt-web,
an Elastic Premium plan (custom containers and event-driven scale need one) and the
``functionapp,linux,container`` site running the image. The function app's timeout is
``server.scoring_timeout_ms``, rounded up to whole seconds.

Secrets are never written: an app setting whose value is ``${NAME}`` is filled at deploy
time from the environment variable ``NAME``, which must then be set; no other value in
app.json contains ``${``. Such settings are the host's storage (``AzureWebJobsStorage``),
the trigger's connection (the app setting that deploy.yaml's ``connection`` names, from
the variable of the same name) and, when the registry needs credentials,
``DOCKER_REGISTRY_SERVER_USERNAME``/``_PASSWORD`` from the variables that
``registry.username_env``/``password_env`` name. A ``null`` location means the resource
group's location.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import quote

from deployer.buildcontext import BuildContext
from deployer.config.envfile import pip_requirements
from deployer.image import (
    APP_DIR,
    add_serving_package,
    add_user_files,
    entry_script_in_image,
    model_dir,
)
from deployer.placeholders import placeholder
from deployer.resources import templates_dir
from deployer.targets.base import RenderContext, TargetContext
from deployer.targets.functions.schema import Config, HttpTrigger
from deployer.targets.pull_login import PullLogin, pull_login

# Where the Functions base image's host looks for the function app.
SCRIPT_ROOT = "/home/site/wwwroot"
# The function app's files in the template folder; the .j2 files among them are rendered.
APP_TEMPLATES = "wwwroot"
SHARED_MODULE = "deployer_scoring.py"
# The v2 programming model's entry point: the worker indexes the functions it decorates.
FUNCTION_APP = "function_app.py"
AZURE_FUNCTIONS_PACKAGE = "azure-functions"
PLAN_SUFFIX = "-plan"
# Azure's limit on App Service plan names (app names may be 60 characters too).
MAX_PLAN_NAME = 60
# The Functions host's ceiling for FUNCTIONS_WORKER_PROCESS_COUNT.
MAX_WORKER_PROCESSES = 10


def function_name(target: Config) -> str:
    """The one function of the app, named after its trigger: ``score_http``, ``score_blob``..."""
    return f"score_{target.trigger}"


def function_app(ctx: TargetContext, target: Config) -> str:
    """``function_app.py``: the app in the v2 programming model, one function decorated
    with the target's trigger and output bindings."""
    http = target.http or HttpTrigger()
    return ctx.templates.render(
        f"{APP_TEMPLATES}/{FUNCTION_APP}.j2",
        function_name=function_name(target),
        trigger=target.trigger,
        # The app's default for HTTP functions; the route names its own level too.
        auth_level=http.auth_level,
        http=http,
        blob=target.blob,
        service_bus=target.service_bus,
    )


def plan_name(target: Config) -> str:
    """deploy.yaml's plan, else the app's own: ``<app_name>-plan``, the app name shortened to
    fit Azure's limit."""
    if target.plan.name:
        return target.plan.name
    return target.app_name[: MAX_PLAN_NAME - len(PLAN_SUFFIX)] + PLAN_SUFFIX


# A plan SKU's tier, as App Service names it (the sku names a family: EP2 -> ElasticPremium).
PLAN_TIERS = [
    (r"EP\d", "ElasticPremium"),
    (r"B\d", "Basic"),
    (r"S\d", "Standard"),
    (r"P\dv2", "PremiumV2"),
    (r"P\dv3", "PremiumV3"),
    (r"P\dmv3", "PremiumMV3"),
]


def plan_tier(sku: str) -> str:
    return next(tier for pattern, tier in PLAN_TIERS if re.fullmatch(pattern, sku))


ROUTE_PARAMETER = re.compile(r"\{([^{}/]*)\}")


def fill_route(route: str, values: dict[str, str]) -> str:
    """``route`` (or a URL ending in one) with each ``{name}`` that has a value replaced by
    it, percent-encoded as one path segment."""

    def value(found: re.Match[str]) -> str:
        name = found[1]
        return quote(values[name], safe="") if name in values else found[0]

    return ROUTE_PARAMETER.sub(value, route)


def own_image(ctx: TargetContext) -> BuildContext | None:
    target = _config_of(ctx)
    inputs, config = ctx.inputs, ctx.config
    context = BuildContext(f"{config.name}-{ctx.name}")
    context.add_text(
        "requirements.txt",
        with_azure_functions(pip_requirements(config, inputs.base_dir)),
    )
    app_templates = templates_dir() / ctx.templates.folder / APP_TEMPLATES
    context.add_file(f"wwwroot/{SHARED_MODULE}", app_templates / SHARED_MODULE)
    # The app scores through deployer.serving's invocation core; the script root is on
    # the worker's sys.path, so the package goes there.
    add_serving_package(context, under="wwwroot")
    context.add_text(
        "wwwroot/host.json",
        ctx.templates.render(
            f"{APP_TEMPLATES}/host.json.j2",
            function_timeout=function_timeout(config.server.scoring_timeout_ms),
        ),
    )
    context.add_text(f"wwwroot/{FUNCTION_APP}", function_app(ctx, target))
    empty_model_folder = add_user_files(context, inputs, app="app", model="model")
    context.add_text(
        "Dockerfile",
        ctx.templates.render(
            "Dockerfile.j2",
            config=config,
            environment=config.environment,
            worker_processes=min(config.server.workers, MAX_WORKER_PROCESSES),
            script_root=SCRIPT_ROOT,
            app_dir=APP_DIR,
            model_dir=model_dir(inputs),
            empty_model_folder=empty_model_folder,
            entry_script=entry_script_in_image(inputs),
            model_version=ctx.model_version,
            model_hash=inputs.model_hash,
        ),
    )
    context.add_text(".dockerignore", "**/__pycache__\n**/*.pyc\n")
    return context


def render(ctx: RenderContext) -> dict[str, str]:
    target = _config_of(ctx)
    plan = plan_name(target)
    plan_id = (
        f"/subscriptions/{target.subscription_id}/resourceGroups/{target.resource_group}"
        f"/providers/Microsoft.Web/serverfarms/{plan}"
    )
    tags = {
        "deployer-service": ctx.config.name,
        "deployer-target": ctx.name,
        "deployer-model-name": ctx.config.model_name,
        "deployer-model-version": ctx.model_version,
    }
    login = pull_login(ctx.name, ctx.config.registry, target.pull)
    app_json = ctx.templates.render(
        "app.json.j2",
        target=target,
        function_name=function_name(target),
        plan_name=plan,
        plan_id=plan_id,
        plan_tier=plan_tier(target.plan.sku),
        tags=tags,
        image=str(ctx.image),
        app_settings=app_settings(ctx.image.registry, target, login),
        identity=_identity(login),
    )
    return {"app.json": app_json}


def _identity(login: PullLogin | None) -> dict[str, Any] | None:
    """The app's identity block when it pulls with a managed identity."""
    if login is None or login.identity is None:
        return None
    if login.identity == "system":
        return {"type": "SystemAssigned"}
    return {"type": "UserAssigned", "userAssignedIdentities": {login.identity: {}}}


def app_settings(registry: str, target: Config, login: PullLogin | None) -> dict[str, str]:
    """The site's app settings; secrets as ``${ENV_NAME}`` placeholders."""
    settings = {
        "FUNCTIONS_EXTENSION_VERSION": "~4",
        "FUNCTIONS_WORKER_RUNTIME": "python",
        # The app is in the image: mounting App Service's /home storage would hide it.
        "WEBSITES_ENABLE_APP_SERVICE_STORAGE": "false",
        "AzureWebJobsStorage": placeholder("AzureWebJobsStorage"),
    }
    trigger_settings = target.blob or target.service_bus
    if trigger_settings is not None:
        settings[trigger_settings.connection] = placeholder(trigger_settings.connection)
    if login is not None:
        settings["DOCKER_REGISTRY_SERVER_URL"] = f"https://{registry.split('/', 1)[0]}"
    if login is not None and login.username_env and login.password_env:
        settings["DOCKER_REGISTRY_SERVER_USERNAME"] = placeholder(login.username_env)
        settings["DOCKER_REGISTRY_SERVER_PASSWORD"] = placeholder(login.password_env)
    return settings


def function_timeout(scoring_timeout_ms: int) -> str:
    """host.json's functionTimeout (hh:mm:ss): the scoring timeout, rounded up to seconds."""
    seconds = math.ceil(scoring_timeout_ms / 1000)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def with_azure_functions(requirements: str) -> str:
    """The user's requirements, plus azure-functions unless they already list it.

    Unpinned, as Azure's own templates list it: the worker in the base image supplies
    the runtime side, and pip keeps whatever version the user's other pins allow.
    """
    for line in requirements.splitlines():
        match = _REQUIREMENT_NAME.match(line)
        if match and _normalise(match[1]) == AZURE_FUNCTIONS_PACKAGE:
            return requirements
    if requirements and not requirements.endswith("\n"):
        requirements += "\n"
    return f"{requirements}{AZURE_FUNCTIONS_PACKAGE}\n"


def _normalise(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _config_of(ctx: TargetContext) -> Config:
    if not isinstance(ctx.target, Config):
        raise TypeError(f"target {ctx.name!r} is not a functions target")
    return ctx.target
