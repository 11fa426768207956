"""What editors get from the published JSON Schema: rules in words and the same checks."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml

from deployer.schema import deploy_schema
from tests.conftest import EXAMPLE

# deploy.yaml's own sections (the target kinds' sections belong to their modules).
SECTIONS = [
    "ModelSpec",
    "Environment",
    "Server",
    "Registry",
    "Expectation",
    "ScoringTest",
    "ScoringTests",
]


def example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLE / "deploy.yaml").read_text())
    return data


def test_every_setting_of_deploy_yaml_has_a_description() -> None:
    schema = deploy_schema()
    properties = {
        f"{name}.{key}": value
        for name in SECTIONS
        for key, value in schema["$defs"][name]["properties"].items()
    }
    properties |= schema["properties"]
    assert [name for name, value in properties.items() if not value.get("description")] == []


def test_constrained_names_explain_their_rule_to_editors() -> None:
    name = deploy_schema()["properties"]["name"]
    assert name["pattern"] == "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
    assert name["patternErrorMessage"] == (
        "Not a valid service name: use 3 to 40 lowercase letters, digits and '-', "
        "starting and ending with a letter or digit."
    )


@pytest.mark.parametrize("bad_name", ["Local_Docker", "2nd", "a" * 31])
def test_editors_flag_an_invalid_target_name(bad_name: str) -> None:
    config = example()
    config["targets"][bad_name] = config["targets"]["local"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(deploy_schema()).validate(config)


def test_editors_check_the_settings_of_every_target() -> None:
    config = example()
    config["targets"]["local"]["port"] = 70000
    with pytest.raises(jsonschema.ValidationError, match="70000"):
        jsonschema.Draft202012Validator(deploy_schema()).validate(config)
