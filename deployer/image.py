"""The shared scoring image: the user's environment, our server, the entry script, the model.

Layers go from least to most often changed so that a model-only change rebuilds only the
last layer, and a code change never reinstalls dependencies.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from deployer.buildcontext import BuildContext
from deployer.config import envfile
from deployer.plan_inputs import PlanInputs
from deployer.resources import serving_package_dir
from deployer.templating import Templates

APP_DIR = "/var/azureml-app"
SERVER_DIR = "/opt/deployer-server"
VENV_DIR = "/opt/venv"
CONTAINER_PORT = 5001
USER_ID = 10001


def model_dir(inputs: PlanInputs) -> str:
    """AZUREML_MODEL_DIR inside images, laid out as Azure ML lays out registered models."""
    return f"{APP_DIR}/azureml-models/{inputs.config.model_name}/{inputs.model_version}"


def add_user_files(context: BuildContext, inputs: PlanInputs, app: str, model: str) -> None:
    """The entry script (or its code folder) under ``app`` and the model under ``model``."""
    config, base = inputs.config, inputs.base_dir
    if config.code is not None:
        context.add_tree(app, base / config.code, exclude=("__pycache__", ".git"))
    else:
        context.add_file(
            f"{app}/{PurePosixPath(config.entry_script).name}", base / config.entry_script
        )
    model_path = base / config.model.path
    context.add_tree(f"{model}/{model_path.name}", model_path)


def entry_script_in_image(inputs: PlanInputs) -> str:
    config = inputs.config
    script = PurePosixPath(config.entry_script)
    if config.code is not None:
        script = script.relative_to(PurePosixPath(config.code))
    else:
        script = PurePosixPath(script.name)
    return f"{APP_DIR}/{script}"


def scoring_image(inputs: PlanInputs) -> BuildContext:
    config = inputs.config
    context = BuildContext(config.name)
    context.add_text("requirements.txt", envfile.pip_requirements(config, inputs.base_dir))
    server = serving_package_dir()
    context.add_text("deployer-server/deployer/__init__.py", "")
    context.add_tree("deployer-server/deployer/serving", server)
    add_user_files(context, inputs, app="app", model="model")
    context.add_text(
        "Dockerfile",
        Templates("image").render(
            "Dockerfile.j2",
            config=config,
            environment=config.environment,
            server=config.server,
            app_dir=APP_DIR,
            server_dir=SERVER_DIR,
            venv_dir=VENV_DIR,
            model_dir=model_dir(inputs),
            entry_script=entry_script_in_image(inputs),
            port=CONTAINER_PORT,
            user_id=USER_ID,
            model_version=inputs.model_version,
        ),
    )
    context.add_text(".dockerignore", "**/__pycache__\n**/*.pyc\n")
    return context
