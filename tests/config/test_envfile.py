"""The conda file: what the image installs from it, and its problems, located in it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from deployer.build import BuildFailed, ImageBuilder
from deployer.buildcontext import BuildContext, ImageRef
from deployer.cli import main
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


# Modelled on Azure ML's samples (azureml-examples, cli/endpoints/online/model-1/environment/
# conda.yaml), with the Python of deploy.yaml: conda packages pinned with '=', pip pinned as
# a conda package, and Microsoft's scoring server under pip.
AZURE_ML_SAMPLE = """\
name: model-env
channels:
  - conda-forge
dependencies:
  - python=3.11
  - numpy=1.26.4
  - pip=23.0.1
  - scikit-learn=1.5.2
  - scipy=1.13.1
  - pip:
    - azureml-inference-server-http==1.4.0
    - inference-schema[numpy-support]
    - joblib
"""


def project(tmp_path: Path, conda_text: str) -> Path:
    """A deploy.yaml beside a model, score.py and ``conda_text`` as environment.yml."""
    (tmp_path / "environment.yml").write_text(conda_text, encoding="utf-8")
    (tmp_path / "model").mkdir()
    (tmp_path / "score.py").write_text("def init(): pass\ndef run(data): return data\n")
    config = tmp_path / "deploy.yaml"
    config.write_text(
        "version: 1\nname: diabetes\nmodel: {path: model}\nentry_script: score.py\n"
        "environment: {python: '3.11', conda_file: environment.yml}\n"
        "registry: {address: 127.0.0.1:5000}\ntargets: {local: {type: local}}\n"
    )
    return config


def test_an_azure_ml_sample_conda_file_installs_with_pip(tmp_path: Path) -> None:
    config = load_config(project(tmp_path, AZURE_ML_SAMPLE))

    assert envfile.pip_requirements(config, tmp_path) == (
        "numpy==1.26.4.*  # translated from conda 'numpy=1.26.4' at environment.yml:6:5\n"
        "scikit-learn==1.5.2.*  # translated from conda 'scikit-learn=1.5.2' at "
        "environment.yml:8:5\n"
        "scipy==1.13.1.*  # translated from conda 'scipy=1.13.1' at environment.yml:9:5\n"
        "inference-schema[numpy-support]\n"
        "joblib\n"
    )


def test_validate_notes_how_each_conda_line_installs_and_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project(tmp_path, AZURE_ML_SAMPLE)
    monkeypatch.chdir(tmp_path)

    assert main(["validate", "-c", "deploy.yaml"]) == 0

    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines()[:-1] == [
        "environment.yml:6:5: note: conda 'numpy=1.26.4' installs as pip 'numpy==1.26.4.*'",
        "environment.yml:7:5: note: conda 'pip=23.0.1' is not installed: the image's own pip "
        "is used (list it under 'pip:' to pin it)",
        "environment.yml:8:5: note: conda 'scikit-learn=1.5.2' installs as pip "
        "'scikit-learn==1.5.2.*'",
        "environment.yml:9:5: note: conda 'scipy=1.13.1' installs as pip 'scipy==1.13.1.*'",
        "environment.yml:11:7: note: pip 'azureml-inference-server-http==1.4.0' is not "
        "installed: the image serves score.py with its own server, which provides "
        "azureml.contrib.services.aml_request and aml_response",
    ]
    assert out.splitlines()[-1].startswith("deploy.yaml: valid: service 'diabetes'")


def test_notes_say_what_a_translation_renamed_dropped_or_ignored(tmp_path: Path) -> None:
    text = (
        "channels: [pytorch, conda-forge]\n"
        "dependencies:\n"
        "  - pytorch::pytorch=2.3.1=py3.11_cpu_0\n"
        "  - matplotlib-base 3.8.*\n"
    )
    (tmp_path / "environment.yml").write_text(text, encoding="utf-8")
    environment = Environment.model_validate(
        {"python": "3.11", "conda_file": "environment.yml"}, context={"base_dir": tmp_path}
    )

    assert [str(note) for note in envfile.notes(environment, tmp_path, Path("repo"))] == [
        "repo/environment.yml:3:5: note: conda 'pytorch::pytorch=2.3.1=py3.11_cpu_0' installs "
        "as pip 'torch==2.3.1' ('torch' is its name on PyPI); build 'py3.11_cpu_0' dropped: "
        "wheels have no conda builds; from PyPI, not the conda channel 'pytorch'",
        "repo/environment.yml:4:5: note: conda 'matplotlib-base 3.8.*' installs as pip "
        "'matplotlib==3.8.*' ('matplotlib' is its name on PyPI)",
    ]


def test_azureml_defaults_is_replaced_by_what_scripts_import_from_it(tmp_path: Path) -> None:
    text = "dependencies:\n  - pip:\n      - azureml-defaults==1.57.0\n      - joblib\n"
    config = load_config(project(tmp_path, text))

    assert envfile.pip_requirements(config, tmp_path) == "inference-schema\njoblib\n"
    assert [str(note) for note in envfile.notes(config.environment, tmp_path, Path())] == [
        "environment.yml:3:9: note: pip 'azureml-defaults==1.57.0' is not installed: the "
        "image serves score.py with its own server, which provides "
        "azureml.contrib.services.aml_request and aml_response; inference-schema is installed "
        "in its place; if score.py imports azureml.core, list azureml-core under 'pip:'"
    ]


def test_a_conda_package_without_a_pypi_counterpart_is_an_error_with_the_fix(
    tmp_path: Path,
) -> None:
    text = "dependencies:\n  - python=3.11\n  - pytorch=2.3\n  - cudatoolkit=11.8\n  - r-base\n"
    assert check(tmp_path, text) == [
        "repo/environment.yml:4:5: dependencies[2]: conda package 'cudatoolkit=11.8' has no "
        "pip counterpart: it is conda's CUDA, which a pip image does not use: drop this line "
        "(GPU packages from PyPI bring their own CUDA libraries: torch's Linux wheels pull "
        "them in as nvidia-* packages, TensorFlow as 'tensorflow[and-cuda]' under 'pip:')",
        "repo/environment.yml:5:5: dependencies[3]: conda package 'r-base' has no pip "
        "counterpart: it is an R package, and the image runs Python only: drop this line",
    ]


@pytest.mark.parametrize(
    ("dep", "message"),
    [
        (
            "numpy 1.21|1.22",
            "conda package 'numpy 1.21|1.22' cannot be installed with pip: '1.21|1.22' uses "
            "'|' (either-or), which pip has no way to say",
        ),
        (
            "numpy[version='>=1.2']",
            "cannot read \"numpy[version='>=1.2']\" as a conda package spec: the [key=value] "
            "form is not supported here; write NAME VERSION",
        ),
        ("3", "cannot read 3 as a conda package spec: not a string"),
    ],
)
def test_a_conda_line_pip_cannot_express_is_an_error(
    tmp_path: Path, dep: str, message: str
) -> None:
    assert check(tmp_path, f"dependencies:\n  - {dep}\n") == [
        f"repo/environment.yml:2:5: dependencies[0]: {message}"
    ]


@pytest.mark.parametrize(
    "pin", ["python=3.10.12=h955ad1f_0", "python 3.10 h955ad1f_0", "conda-forge::python 3.12.*"]
)
def test_a_python_pin_with_a_build_or_a_space_must_agree_too(tmp_path: Path, pin: str) -> None:
    assert check(tmp_path, f"dependencies:\n  - {pin}\n") == [
        f"repo/environment.yml:2:5: dependencies[0]: {pin!r} conflicts with environment.python "
        "'3.11' in deploy.yaml; make them agree"
    ]


PIP_FAILED = [
    "Step 7/20 : RUN pip install -r /tmp/environment/requirements.txt",
    " ---> Running in 5d1f0c2b7a9e",
    "ERROR: Could not find a version that satisfies the requirement numpy==1.21.* (from "
    "versions: 1.26.0, 1.26.4, 2.4.6)",
    "ERROR: No matching distribution found for numpy==1.21.*",
]


def test_a_pip_failure_on_a_translated_package_points_at_its_conda_line(tmp_path: Path) -> None:
    config = load_config(project(tmp_path, "dependencies:\n  - numpy=1.21\n  - scipy\n"))
    requirements = envfile.pip_requirements(config, tmp_path)

    assert envfile.install_hint(requirements, PIP_FAILED) == (
        "pip 'numpy==1.21.*' was translated from conda 'numpy=1.21' at environment.yml:2:5: "
        "check that PyPI has that version, with a wheel for environment.python, or change "
        "the conda line"
    )
    assert envfile.install_hint("numpy==1.21.*\n", PIP_FAILED) == ""  # written for pip


def test_a_failed_image_build_names_the_conda_line(tmp_path: Path) -> None:
    import docker.errors

    class Images:
        def get(self, ref: str) -> None:
            raise docker.errors.ImageNotFound(ref)

    class Api:
        def build(self, **kwargs: object) -> list[dict[str, str]]:
            return [{"stream": f"{line}\n"} for line in PIP_FAILED] + [
                {
                    "error": "The command '/bin/sh -c pip install -r /tmp/environment/"
                    "requirements.txt' returned a non-zero code: 1"
                }
            ]

    client = SimpleNamespace(images=Images(), api=Api())
    context = BuildContext("diabetes-local")
    context.add_text(
        "requirements.txt",
        "numpy==1.21.*  # translated from conda 'numpy=1.21' at environment.yml:2:5\n",
    )

    with pytest.raises(BuildFailed) as failed:
        ImageBuilder(client, lambda event: None).ensure_built(
            context, ImageRef("127.0.0.1:5000", "diabetes-local", "0123456789abcdef")
        )

    assert str(failed.value) == (
        "building 127.0.0.1:5000/diabetes-local:0123456789abcdef failed: The command "
        "'/bin/sh -c pip install -r /tmp/environment/requirements.txt' returned a non-zero "
        "code: 1; pip 'numpy==1.21.*' was translated from conda 'numpy=1.21' at "
        "environment.yml:2:5: check that PyPI has that version, with a wheel for "
        "environment.python, or change the conda line"
    )
