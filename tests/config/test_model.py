"""The model section: optional, named by Azure ML's rules, versioned by an integer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deployer.cli import main
from deployer.config.loader import load_config
from deployer.errors import ConfigError
from deployer.plan_inputs import NO_MODEL_VERSION, PlanInputs, auto_version
from tests.config.corpus import FILES

WITHOUT_MODEL = """\
version: 1
name: binary-echo
entry_script: score.py
registry: {address: 127.0.0.1:5000}
targets:
  local: {type: local}
"""


def write_project(folder: Path, text: str) -> Path:
    shutil.copytree(FILES, folder, dirs_exist_ok=True)
    config = folder / "deploy.yaml"
    config.write_text(text, encoding="utf-8")
    return config


def with_model(model: str) -> str:
    return WITHOUT_MODEL.replace("entry_script:", f"model: {model}\nentry_script:")


def test_a_script_without_a_model_needs_no_model_section(tmp_path: Path) -> None:
    config_path = write_project(tmp_path, WITHOUT_MODEL)

    config = load_config(config_path)
    inputs = PlanInputs.of(config, config_path)

    assert config.model is None
    assert config.model_name == "binary-echo"  # what labels carry: the service's name
    assert (inputs.model_version, inputs.model_hash) == (NO_MODEL_VERSION, "")


@pytest.mark.parametrize(
    "name",
    [
        "sklearn_regression_model.pkl",  # Azure ML SDK v1 samples name models after files
        "my_first_model",
        "Model.v2-final",
        "m",
        "m" * 255,
    ],
)
def test_model_names_follow_azure_ml(tmp_path: Path, name: str) -> None:
    config = load_config(write_project(tmp_path, with_model(f"{{path: model, name: {name}}}")))
    assert config.model_name == name


@pytest.mark.parametrize("name", ["_model", ".model", "-model", "my model", "a/b", "m" * 256])
def test_model_names_azure_ml_refuses_are_refused(tmp_path: Path, name: str) -> None:
    config_path = write_project(tmp_path, with_model(f"{{path: model, name: '{name}'}}"))
    with pytest.raises(ConfigError, match="is not a valid model name"):
        load_config(config_path)


def test_auto_version_is_the_hash_prefix_in_decimal_and_never_zero() -> None:
    assert auto_version("259d5ec1a49a") == str(0x259D5EC1)
    assert auto_version("0000000fa49a") == "15"  # no leading zeros
    assert auto_version("00000000a49a") == "1"  # Azure ML versions start at 1


def test_an_explicit_version_keeps_the_content_hash_beside_it(tmp_path: Path) -> None:
    auto_path = write_project(tmp_path / "auto", with_model("{path: model}"))
    explicit_path = write_project(tmp_path / "explicit", with_model("{path: model, version: v7}"))

    auto = PlanInputs.of(load_config(auto_path), auto_path)
    explicit = PlanInputs.of(load_config(explicit_path), explicit_path)

    assert explicit.model_version == "v7"
    assert explicit.model_hash == auto.model_hash  # the same files
    assert auto.model_version == auto_version(auto.model_hash)


def test_auto_version_is_the_same_for_the_same_files_elsewhere(tmp_path: Path) -> None:
    here = write_project(tmp_path / "here", with_model("{path: model}"))
    there = write_project(tmp_path / "elsewhere" / "there", with_model("{path: model}"))

    assert _versions(here) == _versions(there)


def _versions(config_path: Path) -> tuple[str, str]:
    inputs = PlanInputs.of(load_config(config_path), config_path)
    return inputs.model_version, inputs.model_hash


def test_validate_says_there_is_no_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_project(tmp_path, WITHOUT_MODEL)

    assert main(["validate", "-c", str(config_path)]) == 0

    assert f"{config_path}: valid: service 'binary-echo', no model, targets:" in (
        capsys.readouterr().out
    )
