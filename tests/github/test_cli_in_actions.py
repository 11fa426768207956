"""The deployer CLI run as a step of a GitHub Actions job runs it: a process of its own, the
GITHUB_* variables set, files for $GITHUB_OUTPUT and $GITHUB_STEP_SUMMARY, an event payload,
and a fake GitHub on 127.0.0.1. What the runner would read is asserted: the workflow commands
on stdout (annotations, masks, warnings), the outputs and the summary, and the comment."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from deployer.config.loader import load_config
from deployer.plan import make_plan
from tests.github.workflow_job import INSTALLATION_TOKEN, REGISTRY_PASSWORD, CliJob

MakeJob = Callable[..., CliJob]


def test_validate_puts_each_problem_on_its_line_of_the_diff(cli_job: MakeJob) -> None:
    job = cli_job(("workers: 1", "workers: 0"), ("port: 8080", "port: 80800"))
    run = job.cli("validate", "-c", "deploy.yaml")
    assert run.returncode == 2
    # The action may run in a folder of the repository: paths are the repository's.
    assert run.commands == [
        "::error file=model-repo/deploy.yaml,line=18,col=12,"
        "title=deploy.yaml%3A server.workers::must be at least 1, got 0",
        "::error file=model-repo/deploy.yaml,line=53,col=35,"
        "title=deploy.yaml%3A targets.local.port::must be at most 65535, got 80800",
    ]
    assert "deploy.yaml:18:12: server.workers: must be at least 1, got 0" in run.stderr
    assert job.outputs() == {"status": "failed", "report-path": "", "scoring-uris": "{}"}


def test_a_valid_config_gives_a_passed_status(cli_job: MakeJob) -> None:
    job = cli_job()
    run = job.cli("validate", "-c", "deploy.yaml")
    assert (run.returncode, run.commands) == (0, [])
    assert job.outputs()["status"] == "passed"


def test_a_plan_on_a_pull_request_compares_with_the_last_deploy_and_comments(
    cli_job: MakeJob,
) -> None:
    job = cli_job()
    job.github.add_artifact(
        "deploy-report_deploy_deploy.yaml_edge+production",
        {"deploy-report.json": _deploy_report(production="127.0.0.1:5000/diabetes:0ld")},
        run_id=9_100_000_042,
    )
    run = job.cli("plan", "-c", "deploy.yaml", "-t", "production", "-t", "edge", *job.no_registry)
    assert run.returncode == 0, run.stderr
    assert run.commands == [f"::add-mask::{REGISTRY_PASSWORD}"]
    image = _image_of(job, "production")
    (body,) = job.github.bodies(42)
    assert "<!-- deployer-section: plan edge production -->\n### Plan for `diabetes`" in body
    assert f"| production | kubernetes | `{image}` | not checked | image " in body
    assert f"127.0.0.1:5000/diabetes:0ld → {image}" in body
    assert "| edge | iot_edge |" in body and "new target (not in the last deploy report)" in body
    assert "against the deploy report of workflow run 9100000042 (main, commit a1b2c3d)" in body
    outputs = job.outputs()
    assert outputs["status"] == "passed"
    assert outputs["report-artifact"] == "deploy-report_plan_deploy.yaml_edge+production"
    assert outputs["report-path"] == str(job.reports / "plan" / "deploy-report.json")
    assert "### Plan for `diabetes`" in job.summary()


def test_a_plan_whose_token_cannot_read_artifacts_warns_and_still_comments(
    cli_job: MakeJob,
) -> None:
    job = cli_job()
    job.github.no_actions_read.add(INSTALLATION_TOKEN)
    run = job.cli("plan", "-c", "deploy.yaml", "-t", "edge", *job.no_registry)
    assert run.returncode == 0
    (warning,) = [c for c in run.commands if c.startswith("::warning")]
    assert "could not look up the last deploy report (the token needs 'actions: read')" in warning
    assert "No earlier deploy report was found" in job.github.bodies(42)[0]


def test_a_failed_deploy_is_an_error_annotation_and_a_failed_report(cli_job: MakeJob) -> None:
    job = cli_job()
    run = job.cli("deploy", "-c", "deploy.yaml", "-t", "edge", "--report-dir", str(job.reports))
    assert run.returncode == 2  # the job gives no IoT Hub connection string: the user's to fix
    (error,) = [c for c in run.commands if c.startswith("::error")]
    assert error.startswith(
        "::error title=deployer%3A edge (iot_edge)::"
        "the IoT Hub connection string is read from IOTHUB_CONNECTION_STRING, which is not set"
    )
    (body,) = job.github.bodies(42)
    assert "<!-- deployer-section: deploy edge -->\n### Deploy of `diabetes`: FAILED" in body
    assert "| edge | iot_edge | ❌ failed | - | not run | - |" in body
    outputs = job.outputs()
    assert (outputs["status"], outputs["scoring-uris"]) == ("failed", "{}")
    assert outputs["report-artifact"] == "deploy-report_deploy_deploy.yaml_edge"
    assert outputs["report-files"].split("\n") == [
        str(job.reports / "deploy-report.json"),
        str(job.reports / "deploy-report.md"),
    ]


def test_a_deploy_on_push_reports_to_the_summary_only(cli_job: MakeJob) -> None:
    job = cli_job(event="push.json")
    run = job.cli("deploy", "-c", "deploy.yaml", "-t", "staging", "--report-dir", str(job.reports))
    assert run.returncode == 2  # the job gives no SCORING_KEY for staging's auth: key
    assert job.github.requests == []
    assert "### Deploy of `diabetes`: FAILED" in job.summary()
    assert job.outputs()["status"] == "failed"


def test_a_comment_error_fails_the_run_only_when_asked(cli_job: MakeJob) -> None:
    job = cli_job(event="pull_request_synchronize_fork.json")
    job.github.read_only_tokens.add(INSTALLATION_TOKEN)
    plan = ("plan", "-c", "deploy.yaml", "-t", "edge", *job.no_registry)
    run = job.cli(*plan)
    assert run.returncode == 0
    assert any("could not comment on pull request #57" in c for c in run.commands)
    assert job.cli(*plan, "--fail-on-comment-error").returncode == 1
    assert job.github.bodies(57) == []


def test_report_github_publishes_a_written_report(cli_job: MakeJob) -> None:
    job = cli_job()
    quiet = job.cli("plan", "-c", "deploy.yaml", "-t", "edge", *job.no_registry, "--no-comment")
    assert quiet.returncode == 0
    assert job.github.bodies(42) == []
    run = job.cli("report", "--github", "--plan", "--report-dir", str(job.reports))
    assert run.returncode == 0, run.stderr
    (body,) = job.github.bodies(42)
    assert "<!-- deployer-section: plan edge -->" in body
    # Without --github it prints the report.
    printed = job.cli("report", "--plan", "--report-dir", str(job.reports))
    assert printed.stdout.startswith("### Plan for `diabetes`")


def test_an_unknown_target_is_an_error_annotation(cli_job: MakeJob) -> None:
    job = cli_job()
    run = job.cli("deploy", "-c", "deploy.yaml", "-t", "stagign")
    assert run.returncode == 2
    assert any(c.startswith("::error title=deployer::") and "stagign" in c for c in run.commands)
    assert job.outputs() == {"status": "failed", "report-path": "", "scoring-uris": "{}"}


def test_switched_off_it_does_nothing_for_github(cli_job: MakeJob) -> None:
    job = cli_job(("workers: 1", "workers: 0"))
    job.env["DEPLOYER_GITHUB_REPORT"] = "false"
    run = job.cli("validate", "-c", "deploy.yaml")
    assert (run.returncode, run.commands) == (2, [])
    assert job.output_file.read_text() == ""


@pytest.fixture
def cli_job(make_cli_job: MakeJob) -> MakeJob:
    return make_cli_job


def _image_of(job: CliJob, target: str) -> str:
    config = job.root / "deploy.yaml"
    plan = make_plan(load_config(config), config, [target])
    return str(plan.targets[0].image)


def _deploy_report(**images: str) -> str:
    targets = [{"name": n, "status": "deployed", "image": i} for n, i in images.items()]
    return json.dumps({"service": "diabetes", "command": "deploy", "targets": targets})
