"""This repository's GitHub files against the official schemas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import REPO, reference_dir

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_passes_check_jsonschema(workflow: Path) -> None:
    """check-jsonschema with its vendored github-workflows schema, as the issue asks."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(workflow),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_reference_schema(workflow: Path) -> None:
    schema = json.loads((reference_dir() / "github" / "github-workflow.json").read_text())
    document = yaml.safe_load(workflow.read_text())
    # YAML 1.1 reads the key `on` as the boolean true; GitHub reads it as "on".
    if True in document:
        document["on"] = document.pop(True)
    jsonschema.validate(document, schema)
