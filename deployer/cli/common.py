"""What the commands share: their common options, loading deploy.yaml, the run's secrets,
and reporting to GitHub when running in a GitHub Actions job."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from deployer.console import ConsoleProgress

if TYPE_CHECKING:
    from deployer.config.model import DeployConfig
    from deployer.github.job import ActionsJob
    from deployer.secrets import Secrets

    Commands = argparse._SubParsersAction[argparse.ArgumentParser]

GITHUB_AUTO = (
    "With GITHUB_ACTIONS=true the report also goes to the job summary, the step outputs "
    "(status, report-path, scoring-uris) and a comment on the pull request, updated in place "
    "by later runs. DEPLOYER_GITHUB_REPORT=false turns all of that off."
)


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path("deploy.yaml"),
        metavar="PATH",
        help="the deploy.yaml to use (default: ./deploy.yaml)",
    )


def add_targets(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "-t",
        "--target",
        dest="targets",
        action="append",
        metavar="TARGET",
        required=required,
        help="a target named in deploy.yaml; repeat for several"
        + ("" if required else " (default: all)"),
    )


def add_report_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where deploy-report.json and deploy-report.md are (default: .)",
    )


def add_github_options(parser: argparse.ArgumentParser, about: str = GITHUB_AUTO) -> None:
    group = parser.add_argument_group("in GitHub Actions", about)
    group.add_argument(
        "--no-comment",
        dest="comment",
        action="store_false",
        help="write the job summary and the step outputs, but do not comment on the pull request",
    )
    group.add_argument(
        "--fail-on-comment-error",
        action="store_true",
        help="exit 1 when the comment cannot be posted (default: a warning, and the exit code "
        "of the deploy or plan)",
    )


def github_job(args: argparse.Namespace) -> ActionsJob | None:
    job: ActionsJob | None = getattr(args, "job", None)
    return job


def load(args: argparse.Namespace, check_files: bool = True) -> tuple[DeployConfig, Secrets]:
    """deploy.yaml and the run's secrets, worked out once. In a GitHub Actions job, every
    secret is masked the moment it is known, this one and any a driver learns later."""
    from deployer.config.loader import load_config
    from deployer.secrets import run_secrets

    config = load_config(args.config, check_files=check_files)
    secrets = run_secrets(config.registry, os.environ, config.targets.values())
    args.secrets = secrets  # for masking the error that may stop the command (cli.main)
    job = github_job(args)
    if job is not None:
        secrets.subscribe(job.mask)
    return config, secrets


def report_to_github(
    args: argparse.Namespace,
    job: ActionsJob,
    json_path: Path,
    md_path: Path,
    secrets: Secrets | None,
) -> int:
    progress = ConsoleProgress(secrets=secrets)
    try:
        outcome = job.report(
            json_path,
            md_path,
            progress,
            secrets=secrets.values if secrets is not None else None,
            comment=args.comment,
            fail_on_comment_error=args.fail_on_comment_error,
        )
    finally:
        progress.close()
    if outcome.comment is not None:
        print(f"pull request #{outcome.pull_request}: comment {outcome.comment.action}")
    return outcome.exit_code
