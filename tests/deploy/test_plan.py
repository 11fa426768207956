"""`deployer plan`: what deploy would do, and what changed since the last deploy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployer.cli import main
from deployer.config.loader import load_config
from deployer.plan import make_plan
from deployer.preview import preview, previous_report
from deployer.report import DeployReport, TargetReport, to_markdown, write
from deployer.secrets import Masker
from tests.conftest import EXAMPLE

CONFIG = EXAMPLE / "deploy.yaml"


def _last_deploy(folder: Path, images: dict[str, str], failed: str = "") -> None:
    report = DeployReport("diabetes", "diabetes-ridge", "v0", "deploy.yaml")
    for name, image in images.items():
        status = "failed" if name == failed else "deployed"
        report.targets.append(TargetReport(name, "local", status, image))
    write(report, folder, Masker([]))


def test_plan_compares_with_the_last_deploy(tmp_path: Path) -> None:
    plan = make_plan(load_config(CONFIG), CONFIG, ["local", "staging", "production"])
    current = str(plan.targets[0].image)
    _last_deploy(
        tmp_path, {"local": current, "staging": "127.0.0.1:5000/diabetes:old"}, failed="local"
    )
    result = preview(
        plan, previous_report(tmp_path), lambda ref: ref.tag == plan.targets[0].image.tag
    )
    by_name = {t.name: t for t in result.targets}
    assert by_name["local"].changes == ["the last deploy of this target failed"]
    assert by_name["staging"].changes == [f"image 127.0.0.1:5000/diabetes:old → {current}"]
    assert by_name["production"].changes == ["new target (not in the last deploy report)"]
    assert result.compared_with == str(tmp_path / "deploy-report.json")
    assert by_name["production"].artifacts == ["deployment.yaml", "hpa.yaml", "service.yaml"]
    assert all(t.status == "planned" and t.image_exists for t in result.targets)


def test_plan_cli_writes_a_report_and_the_artifacts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "plan",
            "-c",
            str(CONFIG),
            "-t",
            "edge",
            "--no-registry-check",
            "--report-dir",
            str(tmp_path),
            "-o",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "edge" in out
    assert "not checked" in out
    data = json.loads((tmp_path / "plan" / "deploy-report.json").read_text())
    assert data["command"] == "plan"
    assert data["targets"][0]["artifacts"] == ["deployment.json"]
    markdown = (tmp_path / "plan" / "deploy-report.md").read_text()
    assert markdown.startswith("### Plan for `diabetes`")
    assert "| edge | iot_edge |" in markdown
    assert (tmp_path / "out" / "edge" / "deployment.json").is_file()


def test_a_plan_report_is_not_taken_for_the_last_deploy(tmp_path: Path) -> None:
    report = DeployReport("diabetes", "m", "v", "deploy.yaml", command="plan")
    report.targets.append(TargetReport("local", "local", "planned", "x"))
    write(report, tmp_path, Masker([]))
    assert previous_report(tmp_path) is None


def test_without_a_last_deploy_no_changes_are_claimed(tmp_path: Path) -> None:
    plan = make_plan(load_config(CONFIG), CONFIG, ["local"])
    result = preview(plan, previous_report(tmp_path), lambda ref: None)
    assert result.compared_with == ""
    assert result.targets[0].changes == []
    markdown = to_markdown(result, Masker([]))
    assert "No earlier deploy report was found, so changes are not shown." in markdown
    assert "| not checked | - |" in markdown
