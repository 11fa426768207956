"""How reports name the model: name, version and content hash, or no model at all."""

from __future__ import annotations

from typing import Literal

import pytest

from deployer.report import DeployReport, to_markdown
from deployer.secrets import Masker


@pytest.mark.parametrize("command", ["deploy", "plan"])
def test_a_report_shows_the_model_version_and_its_content_hash(
    command: Literal["deploy", "plan"],
) -> None:
    report = DeployReport(
        "diabetes",
        "diabetes-ridge",
        "630808261",
        "deploy.yaml",
        model_hash="259d5ec1a49a",
        command=command,
    )
    text = to_markdown(report, Masker([]))
    assert "Model `diabetes-ridge` version `630808261` (content hash `259d5ec1a49a`)" in text


def test_a_report_without_a_model_says_so() -> None:
    text = to_markdown(DeployReport("binary-echo", "", "1", "deploy.yaml"), Masker([]))
    assert "No model, from `deploy.yaml`." in text
