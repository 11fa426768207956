"""What the scoring image holds for the entry script, served as the image serves it.

Each case renders the scoring image's build context from a deploy.yaml, lays its files out
as the Dockerfile does (tests/serving/image_layout.py) and starts our server with the
image's environment: no model, an empty model folder, a custom swagger file.
"""

from __future__ import annotations

import json
from pathlib import Path

from deployer.config.loader import load_config
from deployer.image import scoring_image
from deployer.plan_inputs import PlanInputs

from .conftest import ServeFactory, Server
from .image_layout import lay_out

DEPLOY_YAML = """\
version: 1
name: layout-check
{model}entry_script: score.py
registry: {{address: 127.0.0.1:5000}}
targets:
  local: {{type: local}}
"""
# Answers with what the script finds under AZUREML_MODEL_DIR: folders end with '/'.
MODEL_DIR_LISTING = """\
import os


def init():
    global found
    root = os.environ["AZUREML_MODEL_DIR"]
    found = {"is_dir": os.path.isdir(root), "entries": []}
    for folder, dirs, files in os.walk(root):
        relative = os.path.relpath(folder, root)
        for name in dirs:
            found["entries"].append(os.path.normpath(os.path.join(relative, name)) + "/")
        for name in files:
            found["entries"].append(os.path.normpath(os.path.join(relative, name)))
    found["entries"].sort()


def run(raw_data):
    return found
"""


def serve_image(
    serve: ServeFactory, project: Path, model: str, files: dict[str, str]
) -> tuple[Server, set[str]]:
    """Write deploy.yaml (with ``model``, a YAML line or "") and ``files`` into ``project``,
    lay the scoring image out and serve it; also return the build context's file names."""
    project.mkdir(exist_ok=True)
    for name, text in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    config_path = project / "deploy.yaml"
    config_path.write_text(DEPLOY_YAML.format(model=model))
    context = scoring_image(PlanInputs.of(load_config(config_path), config_path))
    image = lay_out(context, project.parent / "built")
    env = image.serving_env()
    server = serve(
        Path(env["AZUREML_ENTRY_SCRIPT"]), model_dir=Path(env["AZUREML_MODEL_DIR"]), env=env
    )
    return server, set(context.files)


def test_without_a_model_azureml_model_dir_is_an_empty_folder(
    serve: ServeFactory, tmp_path: Path
) -> None:
    server, _ = serve_image(serve, tmp_path / "project", "", {"score.py": MODEL_DIR_LISTING})

    assert server.post({}).json() == {"is_dir": True, "entries": []}


def test_an_empty_model_folder_is_an_empty_folder_in_the_image(
    serve: ServeFactory, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (project / "weights").mkdir(parents=True)  # empty: a build context holds no folders
    server, context_files = serve_image(
        serve, project, "model: {path: weights}\n", {"score.py": MODEL_DIR_LISTING}
    )

    assert not any(name.startswith("model/") for name in context_files)
    assert server.post({}).json() == {"is_dir": True, "entries": ["weights/"]}


def test_a_swagger_file_beside_the_entry_script_is_shipped_and_served(
    serve: ServeFactory, tmp_path: Path
) -> None:
    custom = {"swagger": "2.0", "info": {"title": "hand-written", "version": "7"}, "paths": {}}
    server, context_files = serve_image(
        serve,
        tmp_path / "project",
        "",
        {"score.py": MODEL_DIR_LISTING, "swagger2.json": json.dumps(custom)},
    )

    assert "app/swagger2.json" in context_files
    assert server.request("GET", "/swagger.json?version=2").json() == custom
    # The other versions are still generated.
    assert server.request("GET", "/swagger.json?version=3").json()["openapi"].startswith("3.")
