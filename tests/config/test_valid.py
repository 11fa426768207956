"""Valid configs load into typed objects with the values and defaults they mean."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from deployer.config.loader import load_config
from deployer.config.model import DeployConfig
from deployer.plan_inputs import PlanInputs
from deployer.targets.aci import schema as aci
from deployer.targets.functions import schema as functions
from deployer.targets.iot_edge import schema as iot_edge
from deployer.targets.kubernetes import schema as kubernetes
from deployer.targets.local import schema as local
from tests.config.corpus import FILES
from tests.conftest import EXAMPLE

MINIMAL = """\
version: 1
name: diabetes
model: {path: model}
entry_script: score.py
registry: {address: 127.0.0.1:5000}
targets:
  local: {type: local}
"""


@pytest.fixture
def project(tmp_path: Path) -> Callable[[str], Path]:
    """A folder with a model, an entry script and environment files; writes deploy.yaml."""
    shutil.copytree(FILES, tmp_path, dirs_exist_ok=True)

    def write(text: str) -> Path:
        config = tmp_path / "deploy.yaml"
        config.write_text(text, encoding="utf-8")
        return config

    return write


def test_the_example_loads_with_its_values() -> None:
    config = load_config(EXAMPLE / "deploy.yaml")

    assert (config.name, config.model_name) == ("diabetes", "diabetes-ridge")
    assert config.model.tags == {"data": "diabetes", "type": "regression"}
    assert config.entry_script == "score.py"
    assert config.environment.conda_file == "environment.yml"
    assert config.environment.variables == {"OMP_NUM_THREADS": "1"}
    assert (config.registry.address, config.registry.auth) == ("127.0.0.1:5000", "basic")
    requests = config.tests.requests
    assert [request.name for request in requests] == ["two-rows", "dataset-rows", "bad-input"]
    assert requests[0].expect.json_ == [4640.521, 3552.4529]
    assert requests[0].expect.tolerance == 0.001
    assert requests[2].expect.status == 500
    assert config.tests.latency_p95_ms == 250
    assert {name: type(target) for name, target in config.targets.items()} == {
        "local": local.Config,
        "staging": aci.Config,
        "production": kubernetes.Config,
        "batch": functions.Config,
        "edge": iot_edge.Config,
    }
    production = config.targets["production"]
    assert isinstance(production, kubernetes.Config)
    assert production.autoscale is not None
    assert (production.autoscale.min_replicas, production.autoscale.max_replicas) == (2, 10)
    batch = config.targets["batch"]
    assert isinstance(batch, functions.Config)
    assert batch.blob is not None
    assert batch.blob.input_path == "input/{name}.json"


def test_a_config_with_only_required_keys_gets_the_defaults(
    project: Callable[[str], Path],
) -> None:
    config = load_config(project(MINIMAL))

    assert config.model_name == "diabetes"  # the model is named after the service
    assert config.model.version == "auto"
    assert config.code is None
    assert config.environment.python == "3.11"
    assert config.environment.base_image == "python:3.11-slim"
    assert config.environment.conda_file is None
    assert config.environment.pip_requirements is None
    assert (config.server.workers, config.server.scoring_timeout_ms) == (1, 60_000)
    assert config.registry.auth == "none"
    assert config.registry.username_env == "REGISTRY_USERNAME"
    assert config.tests.requests == []
    target = config.targets["local"]
    assert isinstance(target, local.Config)
    assert (target.port, target.host) == (8080, "127.0.0.1")


def test_model_version_auto_is_an_integer_from_the_content_hash_of_the_model(
    project: Callable[[str], Path],
) -> None:
    config_path = project(MINIMAL)

    def inputs() -> PlanInputs:
        return PlanInputs.of(load_config(config_path), config_path)

    first = inputs()
    # An integer, as azureml-core's Model.get_model_path parses version folders.
    assert re.fullmatch(r"[1-9][0-9]*", first.model_version)
    assert re.fullmatch(r"[0-9a-f]{12}", first.model_hash)
    assert first.model_version == str(int(first.model_hash[:8], 16))
    assert inputs() == first
    (config_path.parent / "model" / "weights.bin").write_bytes(b"retrained weights")
    assert inputs().model_version != first.model_version


def test_an_explicit_model_version_is_used_as_given(project: Callable[[str], Path]) -> None:
    config_path = project(
        MINIMAL.replace("model: {path: model}", "model: {path: model, version: 2024.06-rc1}")
    )
    assert PlanInputs.of(load_config(config_path), config_path).model_version == "2024.06-rc1"


def test_the_base_image_follows_the_python_version(project: Callable[[str], Path]) -> None:
    config = load_config(project(MINIMAL + 'environment: {python: "3.12"}\n'))
    assert config.environment.base_image == "python:3.12-slim"


def test_merge_keys_share_settings_and_own_keys_win(project: Callable[[str], Path]) -> None:
    config = load_config(
        project(
            MINIMAL.replace(
                "  local: {type: local}\n",
                """\
  staging: &azure
    type: aci
    subscription_id: "00000000-0000-0000-0000-000000000000"
    resource_group: ml-rg
    location: westeurope
    cpu_cores: 1
  production:
    <<: *azure
    cpu_cores: 2
    dns_name_label: diabetes-prod
  copy: *azure
""",
            )
        )
    )

    staging, production, copy = (config.targets[name] for name in ("staging", "production", "copy"))
    assert isinstance(production, aci.Config)
    assert (production.location, production.cpu_cores) == ("westeurope", 2)
    assert production.dns_name_label == "diabetes-prod"
    assert copy == staging
    assert list(config.targets) == ["staging", "production", "copy"]


def test_quoted_keys_that_yaml_would_read_as_other_types_are_text(
    project: Callable[[str], Path],
) -> None:
    config = load_config(
        project(
            MINIMAL.replace(
                "model: {path: model}", 'model: {path: model, tags: {"on": "yes", "2024": "true"}}'
            )
        )
    )
    assert config.model.tags == {"on": "yes", "2024": "true"}


@pytest.mark.parametrize(
    "pin",
    [
        "python",
        "python=3.11",
        "python==3.11.4",
        "python 3.11",
        "python>=3.9,<3.13",
        "python=3.11.*",
        "conda-forge::python=3.11",
    ],
)
def test_conda_python_pins_that_admit_the_configured_version(
    project: Callable[[str], Path], pin: str
) -> None:
    config_path = project(MINIMAL + "environment: {conda_file: environment.yml}\n")
    (config_path.parent / "environment.yml").write_text(
        f"dependencies:\n  - {pin}\n  - pip:\n      - numpy==2.4.6\n"
    )
    assert isinstance(load_config(config_path), DeployConfig)


def test_an_entry_script_may_import_init_and_run(project: Callable[[str], Path]) -> None:
    config_path = project(MINIMAL.replace("score.py", "entry.py"))
    (config_path.parent / "entry.py").write_text(
        "try:\n    from fast import init\nexcept ImportError:\n    from slow import init\n"
        "from scoring.impl import run as run\n"
    )
    assert load_config(config_path).entry_script == "entry.py"


def test_a_byte_order_mark_is_not_part_of_the_first_key(project: Callable[[str], Path]) -> None:
    assert load_config(project("\ufeff" + MINIMAL)).name == "diabetes"
