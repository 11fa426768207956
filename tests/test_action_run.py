"""scripts/action-run.sh, the body of action.yml, run as the runner runs it, with a fake deployer.

The script checks the action's inputs and turns them into one deployer command line; the fake is
a small program on PATH that records that command line and its working directory. (The real
deployer behind the script is tested in tests/github/test_action_end_to_end.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.github.workflow_job import parse_outputs

SCRIPT = REPO / "scripts" / "action-run.sh"

FAKE_DEPLOYER = f"""#!{sys.executable}
import json, os, sys

with open(os.environ["FAKE_DEPLOYER_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd()}}) + "\\n")
sys.exit(int(os.environ.get("FAKE_DEPLOYER_EXIT", "0")))
"""


@dataclass
class Run:
    returncode: int
    stdout: str
    calls: list[dict[str, Any]]
    outputs: dict[str, str]
    report_dir: Path

    @property
    def argvs(self) -> list[list[str]]:
        return [call["argv"] for call in self.calls]


@pytest.fixture
def run_action(tmp_path: Path) -> Any:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "deployer"
    fake.write_text(FAKE_DEPLOYER)
    fake.chmod(0o755)
    model_repo = tmp_path / "model-repo"
    model_repo.mkdir()

    def run(deployer_exit: int = 0, **inputs: str) -> Run:
        log = tmp_path / "calls.jsonl"
        output_file = tmp_path / "github_output"
        for path in (log, output_file):
            path.write_text("")
        env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "RUNNER_TEMP": str(tmp_path / "runner-temp"),
            "GITHUB_OUTPUT": str(output_file),
            "GITHUB_ACTIONS": "true",
            "FAKE_DEPLOYER_LOG": str(log),
            "FAKE_DEPLOYER_EXIT": str(deployer_exit),
            "ACTION_WORKING_DIRECTORY": str(model_repo),
        }
        env |= {f"ACTION_{name.upper()}": value for name, value in inputs.items()}
        result = subprocess.run(
            ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False
        )
        return Run(
            returncode=result.returncode,
            stdout=result.stdout + result.stderr,
            calls=[json.loads(line) for line in log.read_text().splitlines()],
            outputs=parse_outputs(output_file.read_text()),
            report_dir=tmp_path / "runner-temp" / "deployer-report",
        )

    return run


def test_deploy_with_the_defaults(run_action: Any, tmp_path: Path) -> None:
    run = run_action()
    assert run.argvs == [["deploy", "-c", "deploy.yaml", "--report-dir", str(run.report_dir)]]
    assert run.calls[0]["cwd"] == str(tmp_path / "model-repo")
    assert run.returncode == 0
    # Outputs, summary and comment are deployer's own work: the script writes none of them.
    assert run.outputs == {}


def test_targets_split_on_commas_spaces_and_newlines(run_action: Any) -> None:
    run = run_action(targets="staging, production\n edge", config="models/deploy.yaml")
    assert run.argvs[0] == [
        "deploy",
        "-c",
        "models/deploy.yaml",
        "-t",
        "staging",
        "-t",
        "production",
        "-t",
        "edge",
        "--report-dir",
        str(run.report_dir),
    ]


def test_the_switches_become_deployer_flags(run_action: Any) -> None:
    run = run_action(comment="false", fail_on_test_failure="false", fail_on_comment_error="true")
    assert run.argvs == [
        [
            "deploy",
            "-c",
            "deploy.yaml",
            "--report-dir",
            str(run.report_dir),
            "--no-comment",
            "--fail-on-comment-error",
            "--ignore-test-failures",
        ]
    ]


def test_plan_gets_the_targets_and_the_report_dir(run_action: Any, tmp_path: Path) -> None:
    reports = str(tmp_path / "reports")
    run = run_action(command="plan", targets="production", report_dir=reports, comment="false")
    assert run.argvs == [
        ["plan", "-c", "deploy.yaml", "-t", "production", "--report-dir", reports, "--no-comment"]
    ]


def test_validate_checks_the_whole_file(run_action: Any) -> None:
    run = run_action(command="validate", targets="staging", fail_on_test_failure="false")
    assert run.argvs == [["validate", "-c", "deploy.yaml"]]
    assert "::notice" in run.stdout


def test_down_removes_the_named_targets(run_action: Any) -> None:
    run = run_action(command="down", targets="staging", comment="false")
    assert run.argvs == [["down", "-c", "deploy.yaml", "-t", "staging"]]


@pytest.mark.parametrize("code", [1, 2, 70])
def test_deployers_exit_code_is_the_steps(run_action: Any, code: int) -> None:
    assert run_action(deployer_exit=code).returncode == code


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"command": "destroy"}, "command must be one of validate, plan, deploy, down"),
        ({"command": "down"}, "down needs the targets"),
        ({"targets": "staging --help"}, "'--help' is not a target name"),
        ({"targets": "Staging"}, "'Staging' is not a target name"),
        ({"comment": "yes"}, "comment must be true or false"),
        ({"fail_on_test_failure": "no"}, "fail-on-test-failure must be true or false"),
        ({"fail_on_comment_error": "1"}, "fail-on-comment-error must be true or false"),
        ({"working_directory": "/nonexistent"}, "working-directory '/nonexistent' is not a"),
    ],
)
def test_invalid_inputs_stop_before_deployer(
    run_action: Any, inputs: dict[str, str], message: str
) -> None:
    run = run_action(**inputs)
    assert run.returncode == 2
    assert run.calls == []
    assert f"::error title=deployer action::{message}" in run.stdout
    # deployer never ran, so the script gives the outputs deployer would have.
    assert run.outputs == {"status": "failed", "report-path": "", "scoring-uris": "{}"}


def test_an_input_cannot_start_a_workflow_command(run_action: Any) -> None:
    """A newline in an input is escaped in the error message, as the runner expects, so the
    rest of the value cannot be read as a workflow command of its own."""
    run = run_action(command="deploy\n::add-mask::x")
    assert run.returncode == 2
    assert "\n::add-mask::" not in run.stdout
    assert "deploy%0A::add-mask::x" in run.stdout
