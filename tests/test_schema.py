"""The published JSON Schema: generated from the models, checked in, and not stale."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from deployer.cli import main
from deployer.resources import schemas_dir
from deployer.schema import deploy_schema, deploy_schema_text
from deployer.targets.kinds import KINDS
from tests.conftest import EXAMPLE, REPO

CHECKED_IN = REPO / "schemas" / "deploy.schema.json"


def test_checked_in_schema_is_current() -> None:
    assert CHECKED_IN.read_text(encoding="utf-8") == deploy_schema_text(), (
        "schemas/deploy.schema.json is stale: run 'deployer schema > schemas/deploy.schema.json'"
    )


def test_cli_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == deploy_schema_text()


def test_schema_is_valid_and_accepts_the_example() -> None:
    schema = deploy_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    example = yaml.safe_load((EXAMPLE / "deploy.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(example)


def test_schema_lists_every_target_kind() -> None:
    text = json.dumps(deploy_schema())
    for kind in KINDS:
        assert f'"const": "{kind}"' in text or f'"enum": ["{kind}"]' in text, kind


def test_schema_rejects_an_unknown_key() -> None:
    example = yaml.safe_load((EXAMPLE / "deploy.yaml").read_text())
    example["modle"] = {}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(deploy_schema()).validate(example)


def test_the_example_points_editors_at_the_schema() -> None:
    first_line = (EXAMPLE / "deploy.yaml").read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=../schemas/deploy.schema.json"
    assert (schemas_dir() / "deploy.schema.json").is_file()
