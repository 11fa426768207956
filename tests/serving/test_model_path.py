"""azureml-core's ``Model.get_model_path(name)`` finds the model where the image puts it.

SDK v1 entry scripts locate their model with ``Model.get_model_path`` in init(). It ignores
AZUREML_MODEL_DIR: it looks in ``$AML_APP_ROOT/azureml-models/<name>/`` (the working
directory's, without AML_APP_ROOT), takes the largest version folder by ``int()``, and
returns that folder's one entry, the model file or folder. These tests run the real
azureml-core, in its own venv (benchmarks/azureml_venv.py), under our server, on the
scoring image's files laid out as its Dockerfile lays them out.
"""

from __future__ import annotations

import os
import pickle
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deployer.config.loader import load_config
from deployer.image import scoring_image
from deployer.plan_inputs import PlanInputs

from .conftest import ServeFactory, Server, _load_azureml_venv_helper
from .image_layout import lay_out

pytestmark = pytest.mark.slow

DEPLOY_YAML = """\
version: 1
name: diabetes
model: {model}
entry_script: score.py
registry: {{address: 127.0.0.1:5000}}
targets:
  local: {{type: local}}
"""
# As the Azure ML SDK v1 samples write it (a pickled dict stands in for the sklearn model).
SDK_V1_FILE_MODEL = """\
import json
import pickle

from azureml.core.model import Model


def init():
    global model
    path = Model.get_model_path("sklearn_regression_model.pkl")
    with open(path, "rb") as f:
        model = pickle.load(f)


def run(raw_data):
    rows = json.loads(raw_data)["data"]
    return [sum(c * x for c, x in zip(model["coef"], row)) + model["intercept"] for row in rows]
"""
SDK_V1_FOLDER_MODEL = """\
import json
import os

from azureml.core.model import Model


def init():
    global weights, bias
    folder = Model.get_model_path("my_first_model")
    with open(os.path.join(folder, "weights.json")) as f:
        weights = json.load(f)
    with open(os.path.join(folder, "bias.json")) as f:
        bias = json.load(f)


def run(raw_data):
    rows = json.loads(raw_data)["data"]
    return [sum(w * x for w, x in zip(weights, row)) + bias for row in rows]
"""


def _pypi_reachable() -> bool:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        with urllib.request.urlopen(f"{index}/azureml-core/", timeout=15):
            return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def azureml_core_python() -> Path:
    """The python of the venv holding azureml-core (created once, about 20 s)."""
    helper = _load_azureml_venv_helper()
    try:
        python: Path = helper.ensure(helper.AZUREML_CORE_DIR, helper.AZUREML_CORE)
    except Exception as exc:
        if not _pypi_reachable():
            pytest.skip(f"PyPI is unreachable, so azureml-core cannot be installed: {exc}")
        pytest.fail(f"could not create {helper.AZUREML_CORE_DIR}:\n{exc}", pytrace=False)
    return python


def serve_project(
    serve: ServeFactory, python: Path, folder: Path, model: str, script: str
) -> Server:
    """Serve ``folder``'s deploy.yaml from the scoring image's layout, with azureml-core."""
    (folder / "score.py").write_text(script)
    config_path = folder / "deploy.yaml"
    config_path.write_text(DEPLOY_YAML.format(model=model))
    image = lay_out(
        scoring_image(PlanInputs.of(load_config(config_path), config_path)), folder / "built"
    )
    env = image.serving_env()
    return serve(
        Path(env["AZUREML_ENTRY_SCRIPT"]),
        python=str(python),
        model_dir=Path(env["AZUREML_MODEL_DIR"]),
        env=env,
    )


def test_get_model_path_finds_a_model_file_by_its_sdk_v1_name(
    serve: ServeFactory, azureml_core_python: Path, tmp_path: Path
) -> None:
    (tmp_path / "models").mkdir()
    with (tmp_path / "models" / "sklearn_regression_model.pkl").open("wb") as f:
        pickle.dump({"coef": [2.0, -1.0], "intercept": 0.5}, f)

    server = serve_project(
        serve,
        azureml_core_python,
        tmp_path,
        "{path: models/sklearn_regression_model.pkl, name: sklearn_regression_model.pkl}",
        SDK_V1_FILE_MODEL,
    )

    reply = server.post({"data": [[1, 2], [3, 1]]})
    assert (reply.status, reply.json()) == (200, [0.5, 5.5])


def test_get_model_path_finds_a_model_folder(
    serve: ServeFactory, azureml_core_python: Path, tmp_path: Path
) -> None:
    (tmp_path / "ensemble").mkdir()
    (tmp_path / "ensemble" / "weights.json").write_text("[1, 10]")
    (tmp_path / "ensemble" / "bias.json").write_text("100")

    server = serve_project(
        serve,
        azureml_core_python,
        tmp_path,
        "{path: ensemble, name: my_first_model}",
        SDK_V1_FOLDER_MODEL,
    )

    reply = server.post({"data": [[1, 2]]})
    assert (reply.status, reply.json()) == (200, [121])
