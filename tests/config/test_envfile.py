"""The conda file: what the image installs from it, and its problems, located in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.config import envfile
from deployer.config.loader import load_config
from deployer.config.model import Environment
from deployer.errors import Problem


def check(tmp_path: Path, conda_text: str, python: str = "3.11") -> list[str]:
    (tmp_path / "environment.yml").write_text(conda_text, encoding="utf-8")
    environment = Environment.model_validate(
        {"python": python, "conda_file": "environment.yml"}, context={"base_dir": tmp_path}
    )
    found: list[Problem] = envfile.check(environment, tmp_path, Path("repo"))
    return [str(problem) for problem in found]


def test_a_valid_conda_file_has_no_problems(tmp_path: Path) -> None:
    text = "dependencies:\n  - python=3.11\n  - pip\n  - pip: [numpy==2.4.6]\n"
    assert check(tmp_path, text) == []


@pytest.mark.parametrize("pin", ["python=3.10", "python<3.11", "python>=3.12", "python!=3.11"])
def test_a_python_pin_that_excludes_the_configured_version(tmp_path: Path, pin: str) -> None:
    assert check(tmp_path, f"dependencies:\n  - {pin}\n") == [
        f"repo/environment.yml:2:5: dependencies[0]: {pin!r} conflicts with environment.python "
        "'3.11' in deploy.yaml; make them agree"
    ]


def test_the_pip_section_must_be_a_list_of_strings(tmp_path: Path) -> None:
    assert check(tmp_path, "dependencies:\n  - pip: numpy\n") == [
        "repo/environment.yml:2:5: dependencies[0]: must be 'pip:' followed by a list of "
        "requirements, one string each"
    ]


def test_dependencies_must_be_a_list(tmp_path: Path) -> None:
    assert check(tmp_path, "name: x\ndependencies: numpy\n") == [
        "repo/environment.yml:2:1: dependencies: must be a list"
    ]


def test_a_yaml_error_in_the_conda_file_is_located_in_it(tmp_path: Path) -> None:
    assert check(tmp_path, "dependencies: [python=3.11\n") == [
        "repo/environment.yml:1:15: YAML syntax error: this flow list is not closed with ']' "
        "(or lacks a ',' between entries); the parser reached the end of the file"
    ]


def test_the_image_installs_the_pip_section(tmp_path: Path) -> None:
    (tmp_path / "environment.yml").write_text(
        "dependencies:\n  - python=3.11\n  - pip:\n      - numpy==2.4.6\n      - onnxruntime\n"
    )
    (tmp_path / "model").mkdir()
    (tmp_path / "score.py").write_text("def init(): pass\ndef run(data): return data\n")
    (tmp_path / "deploy.yaml").write_text(
        "version: 1\nname: diabetes\nmodel: {path: model}\nentry_script: score.py\n"
        "environment: {conda_file: environment.yml}\nregistry: {address: 127.0.0.1:5000}\n"
        "targets: {local: {type: local}}\n"
    )
    config = load_config(tmp_path / "deploy.yaml")
    assert envfile.pip_requirements(config, tmp_path) == "numpy==2.4.6\nonnxruntime\n"
