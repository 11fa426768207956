"""The model in the images' Dockerfiles: where it goes, what says which model it is, and what
is made when there is none (both the scoring image and the functions target's own image)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from deployer.cli import main
from deployer.config.loader import load_config
from deployer.image import APP_DIR, MODELS_DIR, SWAGGER_FILES, SWAGGER_NOTE
from deployer.plan import Plan, make_plan
from deployer.serving import swagger

EXAMPLE_MODEL = """\
model:
  path: model
  name: diabetes-ridge
  version: auto
  tags: {data: diabetes, type: regression}
  description: Ridge regression on the diabetes data set
"""
# Each image the example builds, by target: the shared scoring image and functions' own.
IMAGES = {"local": "diabetes", "batch": "diabetes-batch"}


def plan_of(config_path: Path) -> Plan:
    return make_plan(load_config(config_path), config_path, list(IMAGES))


def dockerfile(plan: Plan, target: str) -> str:
    text = plan.images[IMAGES[target]].files["Dockerfile"]
    assert isinstance(text, str)
    return text


@pytest.mark.parametrize("target", IMAGES)
def test_the_image_labels_the_model_with_its_version_and_content_hash(
    example_copy: Callable[..., Path], target: str
) -> None:
    plan = plan_of(example_copy())
    text = dockerfile(plan, target)
    version, model_hash = plan.inputs.model_version, plan.inputs.model_hash

    assert re.fullmatch(r"[1-9][0-9]*", version)
    assert f'ai.deployer.model.version="{version}"' in text
    assert f'ai.deployer.model.hash="{model_hash}"' in text
    assert f'AZUREML_MODEL_DIR="{MODELS_DIR}/diabetes-ridge/{version}"' in text
    # Where azureml-core's Model.get_model_path looks for azureml-models/.
    assert f'AML_APP_ROOT="{APP_DIR}"' in text
    assert f"COPY model/ {MODELS_DIR}/diabetes-ridge/{version}/" in text


@pytest.mark.parametrize("target", IMAGES)
def test_without_a_model_the_image_makes_an_empty_model_dir(
    example_copy: Callable[..., Path], target: str
) -> None:
    plan = plan_of(example_copy((EXAMPLE_MODEL, "")))
    text = dockerfile(plan, target)

    assert "COPY model/" not in text
    assert f"RUN mkdir -p {MODELS_DIR}\n" in text
    assert f'AZUREML_MODEL_DIR="{MODELS_DIR}"' in text
    assert "ai.deployer.model.hash" not in text
    assert not any(name.startswith("model/") for name in plan.images[IMAGES[target]].files)


def test_an_empty_model_folder_is_made_not_copied(example_copy: Callable[..., Path]) -> None:
    config_path = example_copy((EXAMPLE_MODEL, "model: {path: empty}\n"))
    (config_path.parent / "empty").mkdir()
    plan = plan_of(config_path)
    text = dockerfile(plan, "local")

    assert "COPY model/" not in text
    assert f"RUN mkdir -p {MODELS_DIR}/diabetes/{plan.inputs.model_version}/empty\n" in text


def test_swagger_files_beside_the_entry_script_are_shipped_without_a_code_folder(
    example_copy: Callable[..., Path],
) -> None:
    config_path = example_copy()
    for name in ("swagger2.json", "swagger3.json", "swagger3.1.json", "swagger.yaml"):
        (config_path.parent / name).write_text("{}")
    context = plan_of(config_path).images["diabetes"]

    shipped = sorted(name for name in context.files if name.startswith("app/"))
    assert shipped == [
        "app/score.py",
        "app/swagger2.json",
        "app/swagger3.1.json",
        "app/swagger3.json",
    ]
    assert "swagger2.json, swagger3.json, swagger3.1.json" in str(context.files["Dockerfile"])


def test_the_shipped_swagger_names_are_those_the_server_reads() -> None:
    served = {name for names in swagger._USER_FILES.values() for name in names}
    assert set(SWAGGER_FILES) == served


def test_validate_notes_the_swagger_files_it_will_ship(
    example_copy: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_path = example_copy()
    (config_path.parent / "swagger3.json").write_text("{}")
    monkeypatch.chdir(config_path.parent)

    assert main(["validate", "-c", "deploy.yaml"]) == 0

    out = capsys.readouterr().out
    assert f"swagger3.json: note: {SWAGGER_NOTE}\n" in out
