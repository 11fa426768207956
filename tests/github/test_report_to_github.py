"""report_to_github against a fake GitHub: the sticky comment, summary, outputs, masks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from deployer.errors import UserError
from deployer.github import reporting_enabled
from deployer.github.comment import COMMENT_LIMIT, marker, sections_of
from deployer.report import DeployReport, TargetReport
from tests.github.conftest import (
    INSTALLATION_TOKEN,
    NOW,
    REGISTRY_PASSWORD,
    SCORING_KEY,
    Actions,
    parse_outputs,
    sample_report,
)
from tests.github.fake_github import BOT, REPOSITORY, serve

MakeActions = Callable[..., Actions]
MARKER = "<!-- deployer-report: deploy.yaml -->"
SECTION = "<!-- deployer-section: deploy local staging -->"
COMMENTS = f"/repos/{REPOSITORY}/issues/42/comments"
HUMAN = {"login": "mona", "id": 583231, "type": "User"}
PRODUCTION = ["production", "edge", "batch"]


def test_first_run_creates_one_comment(actions: MakeActions) -> None:
    job = actions()
    run = job.run()
    assert run.outcome.comment is not None
    assert run.outcome.comment.action == "created"
    assert run.outcome.pull_request == 42
    assert run.outcome.exit_code == 0
    (body,) = job.github.bodies(42)
    assert body.startswith(f"{MARKER}\n{SECTION}\n### Deploy of `diabetes`: FAILED\n")
    assert body.endswith("</sub>\n<!-- /deployer-section -->\n")
    assert (
        "| local | local | ✅ deployed | `http://127.0.0.1:8080/score` | 2/2 passed | 2.4 ms |"
        in (body)
    )
    assert "<details><summary>staging: error and last log lines</summary>" in body
    assert "No module named 'sklearn'" in body
    assert "[workflow run 8934512077](https://github.com/octo-org/diabetes-model/actions/runs/" in (
        body
    )
    assert run.outcome.comment.url == job.github.comments[42][0]["html_url"]
    # Listed first, then created, then listed again (another run may have created one at the
    # same time): with GitHub's documented path, query and headers.
    assert [(r.method, r.path) for r in job.github.requests] == [
        ("GET", f"{COMMENTS}?per_page=100"),
        ("POST", COMMENTS),
        ("GET", f"{COMMENTS}?per_page=100"),
    ]
    headers = job.github.requests[1].headers
    assert headers["authorization"] == f"Bearer {INSTALLATION_TOKEN}"
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"
    assert headers["user-agent"].startswith("deployer/")


def test_second_run_updates_the_same_comment(actions: MakeActions) -> None:
    job = actions()
    first = job.run().outcome.comment
    job.event("pull_request", "pull_request_synchronize.json")
    report = sample_report()
    report.targets[1].status = "deployed"
    report.targets[1].error, report.targets[1].logs = "", []
    job.write_report(report)
    second = job.run().outcome.comment
    assert first is not None and second is not None
    assert (second.action, second.id) == ("updated", first.id)
    (body,) = job.github.bodies(42)
    assert "### Deploy of `diabetes`: passed" in body
    assert "error and last log lines" not in body
    assert [r.method for r in job.github.requests] == ["GET", "POST", "GET", "GET", "PATCH"]
    assert job.github.requests[-1].path == f"/repos/{REPOSITORY}/issues/comments/{first.id}"


def test_150_comments_are_paged_to_find_ours_on_page_two(actions: MakeActions) -> None:
    job = actions()
    for i in range(150):
        if i == 120:
            ours = job.github.add_comment(42, f"{MARKER}\nan earlier report", BOT)
        else:
            job.github.add_comment(42, f"review remark {i}", HUMAN)
    run = job.run()
    assert run.outcome.comment is not None
    assert (run.outcome.comment.action, run.outcome.comment.id) == ("updated", ours["id"])
    assert len(job.github.comments[42]) == 150
    # Page 2 is fetched by the Link header's URL, as GitHub gives it (/repositories/ID/...).
    assert [(r.method, r.path) for r in job.github.requests] == [
        ("GET", f"{COMMENTS}?per_page=100"),
        ("GET", "/repositories/712345678/issues/42/comments?per_page=100&page=2"),
        ("PATCH", f"/repos/{REPOSITORY}/issues/comments/{ours['id']}"),
    ]


def test_a_marker_comment_by_someone_else_is_left_alone(actions: MakeActions) -> None:
    job = actions()
    theirs = job.github.add_comment(42, f"{MARKER}\nlooks like a report, but is mona's", HUMAN)
    quoted = job.github.add_comment(42, f"> {MARKER}\n> quoting the bot", BOT)
    run = job.run()
    assert run.outcome.comment is not None and run.outcome.comment.action == "created"
    assert theirs["body"].endswith("is mona's") and quoted["body"].endswith("the bot")
    assert len(job.github.comments[42]) == 3


def test_a_personal_token_finds_the_comments_of_its_user(actions: MakeActions) -> None:
    job = actions()
    pat = "github_pat_11ABCDEFG0123456789_abcdefghijklmnop"
    deploy_bot = {"login": "octo-deploy-bot", "id": 9120001, "type": "User"}
    job.github.users[pat] = deploy_bot
    job.github.add_comment(42, f"{MARKER}\nby a bot app", BOT)  # not the token's user
    ours = job.github.add_comment(42, f"{MARKER}\nthe last report", deploy_bot)
    run = job.run(token=pat)
    assert run.outcome.comment is not None
    assert (run.outcome.comment.action, run.outcome.comment.id) == ("updated", ours["id"])
    assert job.github.requests[0].path == "/user"


def test_a_forks_read_only_token_is_a_warning_not_a_failure(actions: MakeActions) -> None:
    job = actions()
    job.event("pull_request", "pull_request_synchronize_fork.json")
    job.github.read_only_tokens.add(INSTALLATION_TOKEN)
    run = job.run()
    outcome = run.outcome
    assert outcome.pull_request == 57
    assert outcome.comment is None
    assert (outcome.failed, outcome.exit_code) == (False, 0)
    assert "Resource not accessible by integration" in outcome.comment_error
    (warning,) = [c for c in run.commands if c.startswith("::warning")]
    assert warning.startswith("::warning title=deployer::could not comment on pull request #57")
    # The report still reaches the job summary and the outputs.
    assert outcome.wrote_summary and outcome.wrote_outputs
    assert "### Deploy of `diabetes`: FAILED" in job.summary_file.read_text()
    assert parse_outputs(job.output_file.read_text())["status"] == "failed"


def test_a_comment_error_fails_the_reporting_only_when_asked(actions: MakeActions) -> None:
    job = actions()
    job.github.read_only_tokens.add(INSTALLATION_TOKEN)
    run = job.run(fail_on_comment_error=True)
    assert (run.outcome.failed, run.outcome.exit_code) == (True, 1)


def test_server_errors_are_retried_with_backoff(actions: MakeActions) -> None:
    job = actions()
    job.github.server_errors = 2
    run = job.run()
    assert run.outcome.comment is not None and run.outcome.comment.action == "created"
    assert run.sleeps == [1.0, 2.0]
    assert [r.method for r in job.github.requests] == ["GET", "GET", "GET", "POST", "GET"]


def test_server_errors_beyond_the_retries_give_a_warning(actions: MakeActions) -> None:
    job = actions()
    job.github.server_errors = 10
    run = job.run()
    assert run.sleeps == [1.0, 2.0, 4.0]
    assert run.outcome.comment is None and not run.outcome.failed
    assert "HTTP 502, 4 attempts" in run.outcome.comment_error


def test_a_create_that_fails_after_creating_leaves_no_duplicate(actions: MakeActions) -> None:
    job = actions()
    job.github.create_then_fail = 1
    run = job.run()
    assert len(job.github.comments[42]) == 1
    assert run.outcome.comment is not None and run.outcome.comment.action == "updated"
    assert [r.method for r in job.github.requests] == ["GET", "POST", "GET", "PATCH"]
    assert run.sleeps == [1.0]


def test_a_primary_rate_limit_is_waited_out_until_its_reset(actions: MakeActions) -> None:
    job = actions()
    reset = {"x-ratelimit-limit": "1000", "x-ratelimit-remaining": "0"}
    reset["x-ratelimit-reset"] = str(int(NOW) + 30)
    job.github.rate_limits.append((403, reset))
    run = job.run()
    assert run.outcome.comment is not None and run.outcome.comment.action == "created"
    assert run.sleeps == [31.0]  # until the reset, and its second


def test_a_secondary_rate_limit_waits_retry_after(actions: MakeActions) -> None:
    job = actions()
    job.github.rate_limits.append((429, {"retry-after": "7"}))
    run = job.run()
    assert run.outcome.comment is not None
    assert run.sleeps == [7.0]


def test_a_rate_limit_beyond_the_budget_is_not_waited_for(actions: MakeActions) -> None:
    job = actions()
    late = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 3000)}
    job.github.rate_limits.append((403, late))
    run = job.run()
    assert run.sleeps == []
    assert run.outcome.comment is None and not run.outcome.failed
    assert "rate limited for 3001 s more" in run.outcome.comment_error


def test_secrets_appear_in_no_comment_summary_or_output(actions: MakeActions) -> None:
    job = actions()
    written = (job.report_dir / "deploy-report.md").read_text()
    assert REGISTRY_PASSWORD in written and SCORING_KEY in written  # what there is to mask
    run = job.run()
    (body,) = job.github.bodies(42)
    sent = [json.dumps(r.body) for r in job.github.requests]
    printed = [c for c in run.commands if not c.startswith("::add-mask::")]
    for secret in (REGISTRY_PASSWORD, SCORING_KEY):
        assert secret not in body
        assert not any(secret in request for request in sent)
        assert secret not in job.summary_file.read_text()
        assert secret not in job.output_file.read_text()
        assert not any(secret in line for line in printed + run.timeline[len(run.commands) :])
    assert "env REGISTRY_PASSWORD=***" in body
    uris = json.loads(parse_outputs(job.output_file.read_text())["scoring-uris"])
    assert uris["staging"] == "https://diabetes-staging.example.net/score?code=***"


def test_the_password_variable_is_the_one_deploy_yaml_names(
    actions: MakeActions, example_copy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = example_copy(("password_env: REGISTRY_PASSWORD", "password_env: ACR_PUSH_TOKEN"))
    monkeypatch.chdir(config.parent)
    job = actions()
    job.env["ACR_PUSH_TOKEN"] = "acr-token-Zq81kLm"
    job.write_report(sample_report(config="./deploy.yaml"))
    run = job.run()
    assert "::add-mask::acr-token-Zq81kLm" in run.commands
    assert f"::add-mask::{REGISTRY_PASSWORD}" not in run.commands  # not this config's variable
    assert job.github.bodies(42)[0].startswith(MARKER)  # ./deploy.yaml is deploy.yaml


def test_an_unreadable_config_masks_the_default_variable_and_warns(actions: MakeActions) -> None:
    job = actions()
    job.write_report(sample_report(config="models/missing.yaml"))
    run = job.run()
    assert f"::add-mask::{REGISTRY_PASSWORD}" in run.commands
    assert any("masking REGISTRY_PASSWORD only" in c for c in run.commands)
    assert REGISTRY_PASSWORD not in job.github.bodies(42)[0]


def test_masks_come_before_anything_else(actions: MakeActions) -> None:
    job = actions()
    job.github.read_only_tokens.add(INSTALLATION_TOKEN)  # so that a warning is printed too
    run = job.run()
    assert run.timeline[:2] == [
        f"::add-mask::{REGISTRY_PASSWORD}",
        f"::add-mask::{SCORING_KEY}",
    ]
    assert not any(line.startswith("::add-mask::") for line in run.timeline[2:])
    assert any(line.startswith("::warning") for line in run.timeline[2:])


def test_outputs_are_written_multiline_safe_and_read_back_exactly(actions: MakeActions) -> None:
    job = actions()
    job.output_file.write_text("earlier=kept\n")
    job.run()
    text = job.output_file.read_text()
    assert parse_outputs(text) == {
        "earlier": "kept",
        "scoring-uris": json.dumps(
            {
                "local": "http://127.0.0.1:8080/score",
                "staging": "https://diabetes-staging.example.net/score?code=***",
            },
            sort_keys=True,
            separators=(",", ":"),
        ),
        "report-path": str((job.report_dir / "deploy-report.json").resolve()),
        "status": "failed",
        "report-artifact": "deploy-report_deploy_deploy.yaml_local+staging",
        "report-files": "\n".join(
            str((job.report_dir / name).resolve())
            for name in ("deploy-report.json", "deploy-report.md")
        ),
    }
    assert "scoring-uris<<ghadelimiter_" in text


def test_the_summary_is_appended(actions: MakeActions) -> None:
    job = actions()
    job.summary_file.write_text("## Build\n\nimage built\n")
    job.run()
    summary = job.summary_file.read_text()
    markdown = (job.report_dir / "deploy-report.md").read_text()
    assert summary.startswith("## Build\n\nimage built\n### Deploy of `diabetes`: FAILED\n")
    assert summary.count("| staging | aci |") == 1
    # The same Markdown as the comment, masked.
    assert summary.endswith(
        markdown.replace(REGISTRY_PASSWORD, "***").replace(SCORING_KEY, "***") + "\n"
    )


def test_a_push_makes_no_api_call(actions: MakeActions) -> None:
    job = actions()
    job.event("push", "push.json")
    run = job.run()
    assert job.github.requests == []
    assert run.outcome.pull_request is None and run.outcome.comment is None
    assert run.outcome.comment_error == "" and run.outcome.exit_code == 0
    assert run.outcome.wrote_summary and run.outcome.wrote_outputs
    assert "### Deploy of `diabetes`" in job.summary_file.read_text()


def test_a_comment_on_the_pull_request_reports_to_it(actions: MakeActions) -> None:
    job = actions()
    job.event("issue_comment", "issue_comment_on_pull_request.json")
    run = job.run()
    assert run.outcome.pull_request == 42 and run.outcome.comment is not None


def test_github_enterprise_serves_the_api_under_a_path(actions: MakeActions) -> None:
    with serve(prefix="/api/v3") as enterprise:
        job = actions(enterprise)
        for i in range(100):
            enterprise.add_comment(42, f"remark {i}", HUMAN)
        assert job.env["GITHUB_API_URL"].endswith("/api/v3")
        job.run()
        job.run()
    page_2 = "/api/v3/repositories/712345678/issues/42/comments?per_page=100&page=2"
    assert [(r.method, r.path) for r in enterprise.requests] == [
        ("GET", f"/api/v3{COMMENTS}?per_page=100"),
        ("POST", f"/api/v3{COMMENTS}"),
        ("GET", f"/api/v3{COMMENTS}?per_page=100"),
        ("GET", page_2),
        ("GET", f"/api/v3{COMMENTS}?per_page=100"),
        ("GET", "/api/v3/repositories/712345678/issues/42/comments?per_page=100&page=2"),
        ("PATCH", f"/api/v3/repos/{REPOSITORY}/issues/comments/{enterprise.next_id}"),
    ]
    assert len(enterprise.comments[42]) == 101


def test_huge_logs_are_cut_to_fit_a_comment(actions: MakeActions) -> None:
    job = actions(report=sample_report(log_lines=5_000))
    assert len((job.report_dir / "deploy-report.md").read_text()) > 3 * COMMENT_LIMIT
    run = job.run()
    assert run.outcome.comment is not None  # the fake refuses bodies over the limit
    (body,) = job.github.bodies(42)
    assert len(body) <= COMMENT_LIMIT
    assert "container exited with code 1" in body  # the error
    assert "No module named 'sklearn'" in body  # the last log line
    assert "earlier lines cut to fit GitHub's comment size limit" in body
    assert body.count("```") % 2 == 0
    assert body.endswith("</sub>\n<!-- /deployer-section -->\n")
    # The job summary has room for all of it.
    assert "worker 3: loading model" in job.summary_file.read_text()


def test_no_token_is_a_comment_error(actions: MakeActions) -> None:
    job = actions()
    del job.env["GITHUB_TOKEN"]
    run = job.run()
    assert job.github.requests == []
    assert "no token: set GITHUB_TOKEN" in run.outcome.comment_error
    assert run.outcome.wrote_outputs and not run.outcome.failed


def test_a_missing_report_is_the_users_error(actions: MakeActions) -> None:
    job = actions()
    (job.report_dir / "deploy-report.json").unlink()
    with pytest.raises(UserError, match="no such file"):
        job.run()


def test_deploy_reports_by_itself_only_in_github_actions() -> None:
    assert reporting_enabled({"GITHUB_ACTIONS": "true"})
    assert not reporting_enabled({})
    # The action turns it off: there, reporting is its own step.
    assert not reporting_enabled({"GITHUB_ACTIONS": "true", "DEPLOYER_GITHUB_REPORT": "false"})


def test_the_marker_names_the_config_and_cannot_end_early() -> None:
    assert marker("./models/../deploy.yaml") == MARKER
    assert marker("odd -->name.yaml") == "<!-- deployer-report: odd%20--%3Ename.yaml -->"


def test_a_plan_and_a_deploy_share_the_comment_in_sections(actions: MakeActions) -> None:
    """The example's pull request: a plan of the production targets, then the preview deploy.
    Each keeps its own section of the one comment, through any number of later runs."""
    job = actions()
    plan = DeployReport("diabetes", "diabetes-ridge", "176c9d2a2f33", "deploy.yaml", command="plan")
    plan.targets = [TargetReport(name, "kubernetes", "planned", "r/d:1") for name in PRODUCTION]
    for _ in range(2):
        job.write_report(plan)
        job.run()
        job.write_report(sample_report())
        job.run()
    (body,) = job.github.bodies(42)
    assert list(sections_of(body)) == ["plan batch edge production", "deploy local staging"]
    assert sections_of(body)["plan batch edge production"].startswith("### Plan for `diabetes`")
    assert body.count("### Deploy of `diabetes`") == 1
    assert [r.method for r in job.github.requests] == ["GET", "POST", "GET"] + ["GET", "PATCH"] * 3


def test_comment_off_writes_summary_and_outputs_only(actions: MakeActions) -> None:
    job = actions()
    run = job.run(comment=False)
    assert job.github.requests == []
    assert run.outcome.pull_request == 42 and run.outcome.comment is None
    assert run.outcome.comment_error == "" and run.outcome.exit_code == 0
    assert "### Deploy of `diabetes`" in job.summary_file.read_text()
    assert parse_outputs(job.output_file.read_text())["status"] == "failed"


def test_each_failed_target_is_an_error_annotation(actions: MakeActions) -> None:
    run = actions().run()
    (error,) = [c for c in run.commands if c.startswith("::error")]
    assert error == (
        "::error title=deployer%3A staging (aci)::container exited with code 1 (scoring key ***)"
    )


def test_two_runs_creating_at_once_leave_one_comment(actions: MakeActions) -> None:
    """Both found no comment; the other run's create landed first. This run moves its section
    into that older comment and deletes its own."""
    job = actions()
    other_run = (
        f"{MARKER}\n<!-- deployer-section: plan edge -->\n### Plan\n<!-- /deployer-section -->\n"
    )
    job.github.racing_creates.append((other_run, BOT))
    run = job.run()
    (comment,) = job.github.comments[42]
    assert run.outcome.comment is not None
    assert (run.outcome.comment.action, run.outcome.comment.id) == ("updated", comment["id"])
    assert list(sections_of(comment["body"])) == ["plan edge", "deploy local staging"]
    assert [r.method for r in job.github.requests] == ["GET", "POST", "GET", "PATCH", "DELETE"]
