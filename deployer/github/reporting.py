"""Report a deploy (or plan) to GitHub: job summary, step outputs, the sticky PR comment.

The summary and the outputs are written first, and nothing that goes wrong with the comment
(a fork's read-only token, an outage, a rate limit beyond the budget) undoes them or changes
the deploy's verdict: a comment error is a warning, and fails the reporting only when the
caller asks (``fail_on_comment_error``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deployer.errors import DeployerError, UserError
from deployer.events import Event, Sink
from deployer.github import actions
from deployer.github.api import REPOSITORY, PermissionDenied, RetryPolicy, client_from_env
from deployer.github.artifacts import report_artifact_name
from deployer.github.comment import (
    StickyComment,
    author_for,
    fit,
    section_key,
    upsert,
    with_section,
)
from deployer.github.event import pull_request_number, read_payload
from deployer.report import read_written
from deployer.secrets import Masker

# Set to false, deployer does nothing GitHub-specific even in GitHub Actions.
REPORT_SWITCH_ENV = "DEPLOYER_GITHUB_REPORT"
# GitHub drops a step summary over 1 MiB: in characters, at 4 bytes each at worst in UTF-8.
SUMMARY_LIMIT = 1024 * 1024 // 4

CommandWriter = Callable[[str], None]  # prints one workflow-command line to stdout


@dataclass(frozen=True)
class GitHubOutcome:
    status: Literal["passed", "failed"]  # the report's verdict, as written to the outputs
    pull_request: int | None  # None: the event is not about a pull request (a push)
    comment: StickyComment | None = None
    comment_error: str = ""  # why a comment that was due is not there
    wrote_summary: bool = False
    wrote_outputs: bool = False
    warnings: list[str] = field(default_factory=list)
    failed: bool = False  # the reporting failed, as the caller asked it to count

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def reporting_enabled(env: Mapping[str, str]) -> bool:
    """Whether ``deploy`` should report by itself: in GitHub Actions, unless switched off."""
    return env.get("GITHUB_ACTIONS") == "true" and env.get(REPORT_SWITCH_ENV, "") != "false"


def report_to_github(
    report_json_path: Path,
    report_md_path: Path,
    env: Mapping[str, str],
    progress: Sink,
    *,
    commands: CommandWriter,
    secrets: Sequence[str] | None = None,
    token: str | None = None,
    comment: bool = True,
    fail_on_comment_error: bool = False,
    policy: RetryPolicy | None = None,
) -> GitHubOutcome:
    """Publish a written report to GitHub Actions and its pull request.

    ``commands`` receives workflow-command lines (masks first, then warnings and errors) for
    the CLI to print at once. ``secrets`` are the run's secret values when the caller has
    them; without them they are found from the deploy.yaml the report names. ``token``
    overrides $GITHUB_TOKEN. ``comment=False`` writes the summary and outputs only. Raises
    ``UserError`` only for a missing or unreadable report.
    """
    report = _read_report(report_json_path)
    markdown_text = read_written(report_md_path)
    config = str(report.get("config", ""))
    problem = ""
    if secrets is None:
        secrets, problem = _secrets_of(config, env)
    masker = Masker(secrets)
    for line in actions.mask_commands(secrets):
        commands(line)
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(masker.text(message))
        commands(actions.warning(warnings[-1]))

    if problem:
        warn(problem)
    markdown = masker.text(markdown_text)
    command = str(report.get("command") or "deploy")
    names = _target_names(report)
    for line in _failure_annotations(report):
        commands(masker.text(line))
    outputs = {
        "scoring-uris": masker.text(_scoring_uris(report)),
        "report-path": masker.text(str(report_json_path.resolve())),
        "status": "passed" if report.get("passed") is True else "failed",
        # For the action's upload step: what to upload, and the name a later plan looks for.
        "report-artifact": report_artifact_name(command, config, names),
        "report-files": "\n".join(str(p.resolve()) for p in (report_json_path, report_md_path)),
    }
    outcome = GitHubOutcome(
        status="passed" if outputs["status"] == "passed" else "failed",
        pull_request=None,
        wrote_summary=_write_file(
            env.get("GITHUB_STEP_SUMMARY"),
            lambda path: actions.append_summary(path, fit(markdown, SUMMARY_LIMIT)),
            "the job summary",
            warn,
        ),
        wrote_outputs=_write_file(
            env.get("GITHUB_OUTPUT"),
            lambda path: actions.write_outputs(path, outputs),
            "the step outputs",
            warn,
        ),
        warnings=warnings,
    )

    number, problem = _pull_request(env)
    if problem:
        warn(problem)
    if number is None:
        progress(Event("detail", "not a pull request: the report is in the job summary only"))
        return outcome
    outcome = dataclasses.replace(outcome, pull_request=number)
    if not comment:
        progress(Event("detail", "the pull-request comment is off: the report is in the summary"))
        return outcome
    section = markdown.rstrip("\n") + "\n" + _footer(env)
    key = section_key(command, names)

    def build(body: str | None) -> str:
        return with_section(body, config, key, section)

    try:
        posted = _post(build, config, number, env, token=token, progress=progress, policy=policy)
    except DeployerError as error:
        message = f"could not comment on pull request #{number}: {error}"
        if isinstance(error, PermissionDenied):
            # A pull request from a fork runs with a read-only token: expected, not an outage.
            message += (
                " (the token may not write comments: a pull request from a fork gets a "
                "read-only one); the report is in the job summary"
            )
        warn(message)
        return dataclasses.replace(outcome, comment_error=message, failed=fail_on_comment_error)
    progress(Event("step", f"report comment {posted.action}: {posted.url}"))
    return dataclasses.replace(outcome, comment=posted)


def _post(
    build: Callable[[str | None], str],
    config: str,
    number: int,
    env: Mapping[str, str],
    *,
    token: str | None,
    progress: Sink,
    policy: RetryPolicy | None,
) -> StickyComment:
    api, repo = client_from_env(env, token=token, policy=policy, progress=progress)
    progress(Event("step", f"reporting to pull request #{number} of {repo}"))
    author = author_for(api, api.token)
    return upsert(api, repo, number, config, build, author=author, progress=progress)


def _read_report(path: Path) -> dict[str, Any]:
    text = read_written(path)
    try:
        data = json.loads(text)
    except ValueError as error:
        raise UserError(f"{path}: not a deploy report ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("targets"), list):
        raise UserError(f"{path}: not a deploy report (no targets)")
    return data


def _secrets_of(config: str, env: Mapping[str, str]) -> tuple[list[str], str]:
    """The secrets a run of the report's deploy.yaml knows from the start, and a warning if
    that deploy.yaml cannot be read.

    Without the config the variable's default name is masked, the best guess left.
    """
    from deployer.config.loader import load_config
    from deployer.config.model import Registry
    from deployer.secrets import run_secrets

    try:
        loaded = load_config(config, check_files=False)
        return run_secrets(loaded.registry, env, loaded.targets.values()).values, ""
    except DeployerError as error:
        default = Registry.model_fields["password_env"].default
        guess = run_secrets(Registry(address="unknown", auth="basic"), env).values
        first_line = str(error).split("\n", 1)[0]
        return guess, (
            f"could not read {config or 'the deploy.yaml'} for its registry password variable "
            f"({first_line}); masking {default} only"
        )


def _target_names(report: Mapping[str, Any]) -> list[str]:
    return [str(t["name"]) for t in report["targets"] if isinstance(t, Mapping) and t.get("name")]


def _failure_annotations(report: Mapping[str, Any]) -> list[str]:
    """An ``::error`` per failed target, so the run's page says which failed and why."""
    lines = []
    for target in report["targets"]:
        if isinstance(target, Mapping) and target.get("passed") is False:
            error = str(target.get("error") or "")
            if not error and isinstance(target.get("tests"), Mapping):
                error = "its tests failed (see the report)"
            title = f"deployer: {target.get('name')} ({target.get('kind', '?')})"
            lines.append(actions.command("error", error or "failed", {"title": title}))
    return lines


def _scoring_uris(report: Mapping[str, Any]) -> str:
    uris = {
        str(t["name"]): str(t["scoring_uri"])
        for t in report.get("targets", [])
        if isinstance(t, Mapping) and t.get("name") and t.get("scoring_uri")
    }
    return json.dumps(uris, sort_keys=True, separators=(",", ":"))


def _pull_request(env: Mapping[str, str]) -> tuple[int | None, str]:
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return None, ""
    try:
        return pull_request_number(read_payload(Path(path))), ""
    except (OSError, ValueError) as error:
        return None, f"could not read the event payload {path}: {error}"


def _footer(env: Mapping[str, str]) -> str:
    run_id, repo = env.get("GITHUB_RUN_ID", ""), env.get("GITHUB_REPOSITORY", "")
    if not (run_id.isdigit() and REPOSITORY.fullmatch(repo)):
        return ""
    server = (env.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/")
    return (
        f"\n<sub>Posted by deployer from [workflow run {run_id}]"
        f"({server}/{repo}/actions/runs/{run_id}); updated in place by later runs.</sub>\n"
    )


def _write_file(
    name: str | None, write: Callable[[Path], None], what: str, warn: Callable[[str], None]
) -> bool:
    if not name:
        return False
    try:
        write(Path(name))
    except OSError as error:
        warn(f"could not write {what} ({name}): {error.strerror}")
        return False
    return True
