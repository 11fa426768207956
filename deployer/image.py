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
# Where Azure ML puts registered models, and where azureml-core's Model.get_model_path looks
# (``$AML_APP_ROOT/azureml-models``; the images set AML_APP_ROOT to APP_DIR).
MODELS_DIR = f"{APP_DIR}/azureml-models"
# API documents the server serves instead of generated ones when they sit in the app root
# (deployer/serving/swagger.py, as Azure ML's server): shipped beside the entry script.
SWAGGER_FILES = ("swagger.json", "swagger2.json", "swagger3.json", "swagger3.1.json")
SWAGGER_NOTE = "shipped beside the entry script: /swagger.json serves it, not a generated one"
SERVER_DIR = "/opt/deployer-server"
VENV_DIR = "/opt/venv"
CONTAINER_PORT = 5001
USER_ID = 10001


def model_dir(inputs: PlanInputs) -> str:
    """AZUREML_MODEL_DIR inside images, laid out as Azure ML lays out a registered model:
    ``azureml-models/<name>/<version>/`` holding the model file or folder, its only entry
    (what Model.get_model_path requires). Without a model, the azureml-models folder
    itself, empty: Azure ML's value when a deployment has several models, and a folder
    that exists, so scripts that join paths to it fail on the file, not on the variable."""
    if inputs.config.model is None:
        return MODELS_DIR
    return f"{MODELS_DIR}/{inputs.config.model_name}/{inputs.model_version}"


def add_user_files(context: BuildContext, inputs: PlanInputs, app: str, model: str) -> str | None:
    """The entry script (or its code folder) under ``app`` and the model under ``model``.

    Returns the folder the image must make itself because no file in ``model`` does (a
    build context holds files only): model_dir() without a model, the model's folder when
    it is empty; None when copying ``model`` lays the model out.
    """
    config, base = inputs.config, inputs.base_dir
    if config.code is not None:
        context.add_tree(app, base / config.code, exclude=("__pycache__", ".git"))
    else:
        script = base / config.entry_script
        context.add_file(f"{app}/{script.name}", script)
        for document in swagger_files(inputs):
            context.add_file(f"{app}/{PurePosixPath(document).name}", base / document)
    if config.model is None:
        return model_dir(inputs)
    model_path = base / config.model.path
    context.add_tree(f"{model}/{model_path.name}", model_path)
    if not any(dest.startswith(f"{model}/") for dest in context.files):
        return f"{model_dir(inputs)}/{model_path.name}"
    return None


def swagger_files(inputs: PlanInputs) -> list[str]:
    """The API documents beside the entry script that are shipped with it although no code
    folder is set (which would ship them anyway), as paths relative to deploy.yaml: without
    a code folder nothing else is shipped, and the server reads them from the app root."""
    config = inputs.config
    if config.code is not None:
        return []
    folder = PurePosixPath(config.entry_script).parent
    return [
        str(folder / name) for name in SWAGGER_FILES if (inputs.base_dir / folder / name).is_file()
    ]


def shipped_swagger_files(context: BuildContext, app: str) -> list[str]:
    """The API documents in the app folder of ``context``: served instead of generated ones."""
    return [name for name in SWAGGER_FILES if f"{app}/{name}" in context.files]


def entry_script_in_image(inputs: PlanInputs) -> str:
    config = inputs.config
    script = PurePosixPath(config.entry_script)
    if config.code is not None:
        script = script.relative_to(PurePosixPath(config.code))
    else:
        script = PurePosixPath(script.name)
    return f"{APP_DIR}/{script}"


def add_serving_package(context: BuildContext, under: str = "deployer-server") -> None:
    """deployer.serving alone (not the toolkit) as ``<under>/deployer/serving``: the
    scoring server, and the invocation core the Functions handler calls run() through."""
    context.add_text(f"{under}/deployer/__init__.py", "")
    context.add_tree(f"{under}/deployer/serving", serving_package_dir())


def scoring_image(inputs: PlanInputs) -> BuildContext:
    config = inputs.config
    context = BuildContext(config.name)
    context.add_text("requirements.txt", envfile.pip_requirements(config, inputs.base_dir))
    add_serving_package(context)
    empty_model_folder = add_user_files(context, inputs, app="app", model="model")
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
            empty_model_folder=empty_model_folder,
            swagger_files=shipped_swagger_files(context, "app"),
            entry_script=entry_script_in_image(inputs),
            port=CONTAINER_PORT,
            user_id=USER_ID,
            model_version=inputs.model_version,
            model_hash=inputs.model_hash,
        ),
    )
    context.add_text(".dockerignore", "**/__pycache__\n**/*.pyc\n")
    return context
