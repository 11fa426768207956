"""Deploying and saying what it did: ``plan``, ``deploy`` and ``report``."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from deployer.cli.common import (
    add_config,
    add_github_options,
    add_report_dir,
    add_targets,
    github_job,
    load,
    report_to_github,
)
from deployer.cli.output import print_tests
from deployer.console import ConsoleProgress

if TYPE_CHECKING:
    from deployer.cli.common import Commands
    from deployer.config.model import DeployConfig
    from deployer.plan import Plan
    from deployer.report import DeployReport
    from deployer.secrets import Masker, Secrets
    from deployer.targets.contract import Version
    from deployer.targets.kubernetes.dry_run import ClusterPreview

EXIT_BUG = 70


def cmd_deploy(args: argparse.Namespace) -> int:
    from deployer import report as reports
    from deployer.deploy import deploy
    from deployer.plan import make_plan

    config, secrets = load(args)
    plan = make_plan(config, args.config, args.targets)
    progress = ConsoleProgress(secrets=secrets)
    try:
        with _terminate_as_interrupt():
            run = deploy(plan, progress, secrets, ready_timeout_s=args.ready_timeout)
    finally:
        progress.close()
    masker = secrets.masker()
    json_path, md_path = reports.write(run.report, args.report_dir, masker)
    _print_report(run.report, masker)
    print(f"report: {json_path} {md_path}")
    code = 0 if run.report.passed else 2 if run.usage_error else 1
    if code == 1 and args.ignore_test_failures and run.report.only_tests_failed:
        print(
            "warning: tests failed (see the report); exit 0 because of --ignore-test-failures",
            file=sys.stderr,
        )
        code = 0
    job = github_job(args)
    if job is not None:
        code = report_to_github(args, job, json_path, md_path, secrets) or code
    if run.bugs:
        for trace in run.bugs:
            sys.stderr.write(masker.text(trace))
        print("deployer hit a bug (the traceback above); please report it.", file=sys.stderr)
        return EXIT_BUG
    return code


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI runner cancelling the job, ``docker stop``, ``kill``) stops a deploy the
    way Ctrl-C does: the target being deployed is rolled back and the report is written."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_report(report: DeployReport, masker: Masker) -> None:
    for target in report.targets:
        tests = target.tests.summary if target.tests else "tests not run"
        line = f"{target.name:<12} {target.status:<10} {target.scoring_uri or '-':<36} {tests}"
        print(masker.text(line))
        if target.error:
            print(masker.text(f"  error: {target.error}"))
            for log_line in target.logs[-10:]:
                print(masker.text(f"  | {log_line}"))
        for note in target.notes:
            print(masker.text(f"  note: {note}"))
        if target.tests:
            print_tests(target.tests, masker)


def cmd_plan(args: argparse.Namespace) -> int:
    from deployer import report as reports
    from deployer.plan import make_plan
    from deployer.preview import preview, previous_report, registry_check

    config, secrets = load(args)
    plan = make_plan(config, args.config, args.targets)
    job = github_job(args)
    progress = ConsoleProgress(secrets=secrets)
    try:
        live = _live_versions(plan.config, [t.name for t in plan.targets], args, secrets)
        baseline = previous_report(args.report_dir)
        if baseline is None and job is not None and len(live) < len(plan.targets):
            names = [target.name for target in plan.targets]
            baseline = job.last_deploy(str(plan.inputs.config_path), names, progress)
        check = (
            registry_check(plan, progress, secrets=secrets)
            if args.check_registry
            else (lambda ref: None)
        )
        result = preview(plan, baseline, check, live)
    finally:
        progress.close()
    clusters = _cluster_previews(plan, args, secrets)
    if args.out is not None:
        from deployer.render import write_plan

        write_plan(plan, args.out)
    masker = secrets.masker()
    json_path, md_path = reports.write(result, args.report_dir / "plan", masker)
    exists = {True: "unchanged (exists)", False: "to build", None: "not checked"}
    print(f"compared with {result.compared_with or 'nothing: no earlier deploy report'}")
    for target in result.targets:
        print(f"{target.name:<12} {target.kind:<11} {target.image}  {exists[target.image_exists]}")
        for change in target.changes:
            print(masker.text(f"  {change}"))
    for cluster in clusters:
        _write_cluster_preview(cluster, json_path.parent, masker)
    print(f"plan: {json_path} {md_path}")
    if job is not None:
        return report_to_github(args, job, json_path, md_path, secrets)
    return 0


def _live_versions(
    config: DeployConfig, names: list[str], args: argparse.Namespace, secrets: Secrets
) -> Mapping[str, Version | None]:
    """What is live per target, where its platform answers; nothing when offline."""
    if not args.check_registry:
        return {}
    from deployer.events import discard
    from deployer.operate import live_versions
    from deployer.targets.contract import Session

    return live_versions(config, names, Session(discard, secrets, os.environ))


def _cluster_previews(
    plan: Plan, args: argparse.Namespace, secrets: Secrets
) -> list[ClusterPreview]:
    """Each kubernetes target's RBAC, and the dry run of its apply where its cluster
    answers (not offline). The kubernetes modules are imported only when there is one."""
    targets = [t for t in plan.targets if t.kind == "kubernetes"]
    if not targets:
        return []
    from deployer.events import discard
    from deployer.targets.contract import Session
    from deployer.targets.kubernetes.dry_run import cluster_preview

    session = Session(discard, secrets, os.environ) if args.check_registry else None
    return [cluster_preview(plan.config, t.name, t.artifacts, t.revision, session) for t in targets]


def _write_cluster_preview(cluster: ClusterPreview, folder: Path, masker: Masker) -> None:
    """Print a kubernetes target's plan section; write its Role and its dry run beside the
    plan report (a dry run from an earlier plan is removed when this one was skipped)."""
    from deployer.targets.kubernetes.dry_run import plan_lines

    role_path = folder / f"{cluster.target}-rbac.yaml"
    role_path.write_text(cluster.role, encoding="utf-8")
    diff_path = folder / f"{cluster.target}-dry-run.diff"
    diff_name = None
    if cluster.diffs is None:
        diff_path.unlink(missing_ok=True)
    else:
        diff_path.write_text(masker.text(cluster.diff_file()), encoding="utf-8")
        diff_name = str(diff_path)
    for line in plan_lines(cluster, str(role_path), diff_name):
        print(masker.text(line))


def cmd_report(args: argparse.Namespace) -> int:
    from deployer.github.job import ActionsJob
    from deployer.report import JSON_NAME, MARKDOWN_NAME, read_written

    folder = args.report_dir / "plan" if args.plan else args.report_dir
    json_path, md_path = folder / JSON_NAME, folder / MARKDOWN_NAME
    if not args.github:
        sys.stdout.write(read_written(md_path))
        return 0
    # Asked for explicitly: reported even where GitHub Actions is not detected (the GITHUB_*
    # variables set by hand) or DEPLOYER_GITHUB_REPORT=false turned the automatic report off.
    job = github_job(args) or ActionsJob(os.environ, lambda line: print(line, flush=True))
    # No secrets given: they are found from the deploy.yaml the report names.
    return report_to_github(args, job, json_path, md_path, None)


def add_commands(commands: Commands) -> None:
    p = commands.add_parser(
        "deploy",
        help="build, push, deploy, test and report",
        description="For each selected target: render, build, push, deploy, run the tests "
        "of deploy.yaml against it, and write deploy-report.json and deploy-report.md. A "
        "new version that fails to start, to become ready or its tests, or any error of the "
        "platform, Ctrl-C or SIGTERM, rolls it back and leaves the previous one serving. "
        "Exit 1 when any target failed.",
    )
    add_config(p)
    add_targets(p)
    add_report_dir(p)
    p.add_argument(
        "--ready-timeout",
        type=float,
        metavar="SECONDS",
        help="how long a new version may take to become ready, for every target (default: "
        "each target's ready_timeout_s in deploy.yaml, which defaults to what suits its kind)",
    )
    p.add_argument(
        "--ignore-test-failures",
        action="store_true",
        help="exit 0 when the only failures are failed tests (the new version was built and "
        "started, failed its tests, and the previous one kept serving); the report still "
        "says failed",
    )
    add_github_options(p)
    p.set_defaults(handler=cmd_deploy)

    p = commands.add_parser(
        "plan",
        help="show what deploy would do, without doing it",
        description="For each target: the image deploy would build (and whether the registry "
        "already has it), and what changes compared with what is live (or, where the platform "
        "cannot be asked, with the last deploy report in --report-dir). Writes "
        "REPORT_DIR/plan/deploy-report.json and .md (for a pull-request comment). For a "
        "kubernetes target, also the RBAC Role its deploying identity needs "
        "(REPORT_DIR/plan/TARGET-rbac.yaml) and, where its cluster answers, a server-side "
        "dry run of the apply, diffed against what is live (TARGET-dry-run.diff).",
    )
    add_config(p)
    add_targets(p)
    add_report_dir(p)
    p.add_argument(
        "--no-registry-check",
        "--offline",
        dest="check_registry",
        action="store_false",
        help="ask neither the registry whether the images exist nor the platforms what is "
        "live (no Docker engine or cloud access needed; compares with the last report)",
    )
    p.add_argument(
        "-o", "--out", type=Path, metavar="OUT_DIR", help="also write the rendered artifacts"
    )
    add_github_options(p)
    p.set_defaults(handler=cmd_plan)

    p = commands.add_parser(
        "report",
        help="show the last deploy or plan report, or post it to GitHub",
        description="Print the Markdown of the last deploy report in --report-dir (--plan: "
        "of the last plan). With --github, publish it as deploy and plan do by themselves in "
        "GitHub Actions: the job summary ($GITHUB_STEP_SUMMARY), the step outputs "
        "($GITHUB_OUTPUT) and the pull request's sticky comment (the pull request is read "
        "from $GITHUB_EVENT_PATH; the token is $GITHUB_TOKEN; the API is $GITHUB_API_URL, "
        "for GitHub Enterprise Server). Secret values are masked everywhere.",
    )
    add_report_dir(p)
    p.add_argument("--plan", action="store_true", help="the last plan's report (REPORT_DIR/plan/)")
    p.add_argument("--github", action="store_true", help="publish to GitHub instead of printing it")
    add_github_options(p)
    p.set_defaults(handler=cmd_report)
