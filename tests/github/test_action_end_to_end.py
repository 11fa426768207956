"""action.yml's run step as the runner runs it: scripts/action-run.sh with the inputs in ACTION_*
variables, the real deployer from this virtualenv (DEPLOYER_VENV, as the install step makes it),
the GITHUB_* variables and files, and a fake GitHub on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import REPO
from tests.github.fake_github import REPOSITORY
from tests.github.workflow_job import CliJob, Ran

SCRIPT = REPO / "scripts" / "action-run.sh"
MakeJob = Callable[..., CliJob]


def run_action(job: CliJob, **inputs: str) -> Ran:
    job.output_file.write_text("")
    env = {
        **job.env,
        "RUNNER_TEMP": str(job.root.parent / "runner-temp"),
        "DEPLOYER_VENV": sys.prefix,
        "ACTION_WORKING_DIRECTORY": str(job.root),
        **{f"ACTION_{name.upper()}": value for name, value in inputs.items()},
    }
    result = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    return Ran(result.returncode, result.stdout, result.stderr)


def report_dir(job: CliJob) -> Path:
    return job.root.parent / "runner-temp" / "deployer-report"


def test_plan_on_a_pull_request(make_cli_job: MakeJob) -> None:
    job = make_cli_job()
    run = run_action(job, command="plan", targets="edge, production")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("deployer plan -c deploy.yaml -t edge -t production --report-dir")
    (body,) = job.github.bodies(42)
    assert "<!-- deployer-section: plan edge production -->" in body
    plan = report_dir(job) / "plan"
    assert job.outputs() == {
        "status": "passed",
        "report-path": str(plan / "deploy-report.json"),
        "scoring-uris": "{}",
        # What the action's upload step uploads, and under which name.
        "report-artifact": "deploy-report_plan_deploy.yaml_edge+production",
        "report-files": f"{plan / 'deploy-report.json'}\n{plan / 'deploy-report.md'}",
    }


def test_validate_annotates_the_diff(make_cli_job: MakeJob) -> None:
    job = make_cli_job(("workers: 1", "workers: 0"))
    run = run_action(job, command="validate")
    assert run.returncode == 2
    assert "::error file=model-repo/deploy.yaml,line=18,col=12," in run.stdout
    assert job.outputs() == {"status": "failed", "report-path": "", "scoring-uris": "{}"}


def test_a_deploy_that_did_not_get_to_its_tests_fails_the_step_even_when_tests_may_fail(
    make_cli_job: MakeJob,
) -> None:
    job = make_cli_job()
    run = run_action(job, command="deploy", targets="staging", fail_on_test_failure="false")
    assert run.returncode == 2  # the job gives no SCORING_KEY for staging's auth: key
    assert "--ignore-test-failures" in run.stdout.splitlines()[0]
    assert job.outputs()["status"] == "failed"


def test_comment_off_leaves_the_pull_request_alone(make_cli_job: MakeJob) -> None:
    job = make_cli_job()
    run = run_action(job, command="plan", targets="edge", comment="false")
    assert run.returncode == 0
    # The only call: the plan looking up the last deploy's report.
    assert [r.path.split("?")[0] for r in job.github.requests] == [
        f"/repos/{REPOSITORY}/actions/artifacts"
    ]
    assert "### Plan for `diabetes`" in job.summary()
