"""The command line: a thin layer over the library. Only this module prints and exits.

Exit codes: 0 success; 1 an operation failed (a build, a deploy, a test); 2 the user's
input is wrong (deploy.yaml, flags); 70 a bug in deployer (the traceback is printed).

In a GitHub Actions job (``deployer.github.job``) the same commands also print workflow
commands on stdout (masks, annotations) and report to the job and its pull request.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from deployer import __version__
from deployer.console import ConsoleProgress
from deployer.errors import ConfigError, DeployerError, UserError

if TYPE_CHECKING:
    from deployer.github.job import ActionsJob
    from deployer.plan import Plan
    from deployer.verify import TestRun

    Commands = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_BUG = 70

Handler = Callable[[argparse.Namespace], int]


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path("deploy.yaml"),
        metavar="PATH",
        help="the deploy.yaml to use (default: ./deploy.yaml)",
    )


def _add_targets(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "-t",
        "--target",
        dest="targets",
        action="append",
        metavar="TARGET",
        required=required,
        help="a target named in deploy.yaml; repeat for several (default: all)",
    )


def _add_report_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where deploy-report.json and deploy-report.md are (default: .)",
    )


GITHUB_AUTO = (
    "With GITHUB_ACTIONS=true the report also goes to the job summary, the step outputs "
    "(status, report-path, scoring-uris) and a comment on the pull request, updated in place "
    "by later runs. DEPLOYER_GITHUB_REPORT=false turns all of that off."
)


def _add_github_options(parser: argparse.ArgumentParser, about: str = GITHUB_AUTO) -> None:
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


def _print_command(line: str) -> None:
    """A GitHub Actions workflow command: on stdout, at once, for the runner to read."""
    print(line, flush=True)


def _github_job(args: argparse.Namespace) -> ActionsJob | None:
    job: ActionsJob | None = getattr(args, "job", None)
    return job


def cmd_validate(args: argparse.Namespace) -> int:
    from deployer.config.loader import load_config
    from deployer.plan_inputs import PlanInputs

    config = load_config(args.config)
    inputs = PlanInputs.of(config, args.config)
    targets = ", ".join(f"{name} ({t.type})" for name, t in config.targets.items())
    print(
        f"{args.config}: valid: service {config.name!r}, model "
        f"{config.model_name}:{inputs.model_version}, targets: {targets}"
    )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from deployer.schema import deploy_schema_text

    sys.stdout.write(deploy_schema_text())
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from deployer.config.loader import load_config
    from deployer.plan import make_plan
    from deployer.render import write_plan

    started = time.perf_counter()
    config = load_config(args.config)
    plan = make_plan(config, args.config, args.targets)
    written = write_plan(plan, args.out)
    elapsed = time.perf_counter() - started
    for target in plan.targets:
        folder = args.out / target.name
        print(f"{target.name:<12} {target.kind.KIND:<11} {folder}  image {target.image}")
    print(f"wrote {len(written)} files to {args.out} in {elapsed * 1000:.0f} ms")
    return 0


def _plan(args: argparse.Namespace) -> Plan:
    from deployer.config.loader import load_config
    from deployer.plan import make_plan
    from deployer.registry_auth import secret_values

    config = load_config(args.config)
    job = _github_job(args)
    if job is not None:
        job.mask(secret_values(config.registry))
    return make_plan(config, args.config, args.targets)


def _report_to_github(
    args: argparse.Namespace,
    job: ActionsJob,
    json_path: Path,
    md_path: Path,
    secrets: list[str] | None,
) -> int:
    progress = ConsoleProgress()
    try:
        outcome = job.report(
            json_path,
            md_path,
            progress,
            secrets=secrets,
            comment=args.comment,
            fail_on_comment_error=args.fail_on_comment_error,
        )
    finally:
        progress.close()
    if outcome.comment is not None:
        print(f"pull request #{outcome.pull_request}: comment {outcome.comment.action}")
    return outcome.exit_code


def cmd_build(args: argparse.Namespace) -> int:
    from deployer.deploy import build_images

    plan = _plan(args)
    progress = ConsoleProgress()
    try:
        results = build_images(plan, progress, push=args.push, no_cache=args.no_cache)
    finally:
        progress.close()
    for built, pushed in results:
        state = "built" if built.built else "unchanged"
        if pushed is not None:
            state += ", pushed" if pushed.pushed else ", already in the registry"
        print(f"{built.ref}  {state}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from deployer import report as reports
    from deployer.deploy import deploy, secrets

    plan = _plan(args)
    progress = ConsoleProgress()
    try:
        result = deploy(plan, progress, ready_timeout_s=args.ready_timeout)
    finally:
        progress.close()
    secret_values = secrets(plan)
    json_path, md_path = reports.write(result, args.report_dir, secret_values)
    masker = reports.Masker(secret_values)
    for target in result.targets:
        tests = target.tests.summary if target.tests else "tests not run"
        line = f"{target.name:<12} {target.status:<10} {target.scoring_uri or '-':<36} {tests}"
        print(masker.text(line))
        if target.error:
            print(masker.text(f"  error: {target.error}"))
            for log_line in target.logs[-10:]:
                print(masker.text(f"  | {log_line}"))
        if target.tests:
            _print_tests(target.tests)
    print(f"report: {json_path} {md_path}")
    code = 0 if result.passed else 1
    if code and args.ignore_test_failures and result.only_tests_failed:
        print(
            "warning: tests failed (see the report); exit 0 because of --ignore-test-failures",
            file=sys.stderr,
        )
        code = 0
    job = _github_job(args)
    if job is not None:
        code = _report_to_github(args, job, json_path, md_path, secret_values) or code
    return code


def cmd_plan(args: argparse.Namespace) -> int:
    from deployer import report as reports
    from deployer.deploy import secrets
    from deployer.preview import preview, previous_report, registry_check

    plan = _plan(args)
    job = _github_job(args)
    progress = ConsoleProgress()
    try:
        baseline = previous_report(args.report_dir)
        if baseline is None and job is not None:
            names = [target.name for target in plan.targets]
            baseline = job.last_deploy(str(plan.inputs.config_path), names, progress)
        check = registry_check(plan, progress) if args.check_registry else (lambda ref: None)
        result = preview(plan, baseline, check)
    finally:
        progress.close()
    if args.out is not None:
        from deployer.render import write_plan

        write_plan(plan, args.out)
    json_path, md_path = reports.write(result, args.report_dir / "plan", secrets(plan))
    exists = {True: "unchanged (exists)", False: "to build", None: "not checked"}
    print(f"compared with {result.compared_with or 'nothing: no earlier deploy report'}")
    for target in result.targets:
        print(f"{target.name:<12} {target.kind:<11} {target.image}  {exists[target.image_exists]}")
        for change in target.changes:
            print(f"  {change}")
    print(f"plan: {json_path} {md_path}")
    if job is not None:
        return _report_to_github(args, job, json_path, md_path, secrets(plan))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from deployer.report import JSON_NAME, MARKDOWN_NAME, read_written

    folder = args.report_dir / "plan" if args.plan else args.report_dir
    json_path, md_path = folder / JSON_NAME, folder / MARKDOWN_NAME
    if not args.github:
        sys.stdout.write(read_written(md_path))
        return 0
    from deployer.github.job import ActionsJob

    # Asked for explicitly: reported even where GitHub Actions is not detected (the GITHUB_*
    # variables set by hand) or DEPLOYER_GITHUB_REPORT=false turned the automatic report off.
    job = _github_job(args) or ActionsJob(os.environ, _print_command)
    # No secrets given: they are found from the deploy.yaml the report names.
    return _report_to_github(args, job, json_path, md_path, None)


def cmd_test(args: argparse.Namespace) -> int:
    from deployer.config.loader import load_config
    from deployer.plan import select_targets
    from deployer.verify import run_tests

    config = load_config(args.config)
    uri = args.uri or _reported_uri(args.report_dir, select_targets(config, args.targets)[0])
    result = run_tests(uri, config.tests)
    _print_tests(result)
    return 0 if result.passed else 1


def cmd_down(args: argparse.Namespace) -> int:
    from deployer.deploy import down

    plan = _plan(args)
    progress = ConsoleProgress()
    try:
        removed = down(plan, progress, args.images)
    finally:
        progress.close()
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print("nothing to remove")
    return 0


def _reported_uri(report_dir: Path, target: str) -> str:
    import json

    from deployer.report import JSON_NAME

    path = report_dir / JSON_NAME
    try:
        data = json.loads(path.read_text())
        uri = next(t["scoring_uri"] for t in data["targets"] if t["name"] == target)
    except (OSError, ValueError, KeyError, StopIteration):
        uri = ""
    if not uri:
        raise UserError(f"no scoring URI for target {target!r} in {path}: pass --uri URL")
    return str(uri)


def _print_tests(run: TestRun) -> None:
    print(f"tests against {run.uri}: {'passed' if run.passed else 'FAILED'}")
    if run.error:
        print(f"  {run.error}")
    for r in run.results:
        verdict = "pass" if r.passed else "FAIL"
        print(f"  {verdict:<4}  {r.name:<24} {r.status!s:>4}  {r.latency_ms:8.1f} ms  {r.detail}")
    if run.latency:
        lat = run.latency
        limit = (
            f" (limit {lat.limit_p95_ms:g} ms: {'ok' if lat.passed else 'EXCEEDED'})"
            if lat.limit_p95_ms is not None
            else ""
        )
        print(
            f"  latency over {lat.requests} requests: p50 {lat.p50_ms:.1f} ms, "
            f"p95 {lat.p95_ms:.1f} ms{limit}, p99 {lat.p99_ms:.1f} ms"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deployer",
        description="Deploy a machine-learning model from one deploy.yaml: validate it, "
        "render Dockerfiles and manifests, build and push images, deploy to each target, "
        "test the deployment and report.",
        epilog="Run 'deployer COMMAND --help' for a command's options. Exit codes: 0 success, "
        "1 an operation failed, 2 invalid input, 70 a bug in deployer.",
    )
    parser.add_argument("--version", action="version", version=f"deployer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "validate",
        help="check deploy.yaml and the files it names",
        description="Check deploy.yaml and every file it names; print one line per problem "
        "as FILE:LINE:COL: PATH: MESSAGE. Exit 2 when anything is wrong.",
    )
    _add_config(p)
    p.set_defaults(handler=cmd_validate)

    p = commands.add_parser(
        "schema",
        help="print the JSON Schema of deploy.yaml",
        description="Print the JSON Schema of deploy.yaml (for editors: point "
        "'# yaml-language-server: $schema=...' at it).",
    )
    p.set_defaults(handler=cmd_schema)
    _add_build_commands(commands)
    _add_deploy_commands(commands)
    _add_operate_commands(commands)
    return parser


def _add_build_commands(commands: Commands) -> None:
    p = commands.add_parser(
        "render",
        help="write Dockerfiles and manifests for each target",
        description="Write, for each target, everything needed to build and deploy it: "
        "image build contexts under OUT/images/ and deployment artifacts under OUT/TARGET/. "
        "Writes no secrets. OUT is emptied first (only if a previous render made it).",
    )
    _add_config(p)
    _add_targets(p)
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("out"),
        metavar="OUT_DIR",
        help="output folder (default: ./out)",
    )
    p.set_defaults(handler=cmd_render)

    p = commands.add_parser(
        "build",
        help="build the images of the targets (and push them with --push)",
        description="Build each image the selected targets deploy, tagged REGISTRY/NAME:TAG "
        "where TAG is a hash of every build input: unchanged inputs mean no build and no push.",
    )
    _add_config(p)
    _add_targets(p)
    p.add_argument(
        "--push",
        action="store_true",
        help="push to the registry in deploy.yaml, with its credentials",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="rebuild every layer, even when an image with this tag exists",
    )
    p.set_defaults(handler=cmd_build)


def _add_deploy_commands(commands: Commands) -> None:
    p = commands.add_parser(
        "deploy",
        help="build, push, deploy, test and report",
        description="For each selected target: render, build, push, deploy, run the tests "
        "of deploy.yaml against it, and write deploy-report.json and deploy-report.md. A "
        "new version that fails to start or fails its tests leaves the previous one serving. "
        "Exit 1 when any target failed.",
    )
    _add_config(p)
    _add_targets(p)
    _add_report_dir(p)
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long a new version may take to become ready (default: 120)",
    )
    p.add_argument(
        "--ignore-test-failures",
        action="store_true",
        help="exit 0 when the only failures are failed tests (the new version was built and "
        "started, failed its tests, and the previous one kept serving); the report still "
        "says failed",
    )
    _add_github_options(p)
    p.set_defaults(handler=cmd_deploy)

    p = commands.add_parser(
        "plan",
        help="show what deploy would do, without doing it",
        description="For each target: the image deploy would build (and whether the registry "
        "already has it), and what changes since the last deploy report in --report-dir. "
        "Writes REPORT_DIR/plan/deploy-report.json and .md (for a pull-request comment).",
    )
    _add_config(p)
    _add_targets(p)
    _add_report_dir(p)
    p.add_argument(
        "--no-registry-check",
        dest="check_registry",
        action="store_false",
        help="do not ask the registry whether the images exist (no Docker engine needed)",
    )
    p.add_argument(
        "-o", "--out", type=Path, metavar="OUT_DIR", help="also write the rendered artifacts"
    )
    _add_github_options(p)
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
    _add_report_dir(p)
    p.add_argument("--plan", action="store_true", help="the last plan's report (REPORT_DIR/plan/)")
    p.add_argument("--github", action="store_true", help="publish to GitHub instead of printing it")
    _add_github_options(p)
    p.set_defaults(handler=cmd_report)


def _add_operate_commands(commands: Commands) -> None:
    p = commands.add_parser(
        "test",
        help="run deploy.yaml's tests against a deployed target",
        description="Send each request in tests.requests, compare status and JSON (numbers "
        "within tolerance), measure latency over a burst and check latency_p95_ms. The "
        "scoring URI is --uri, or the one the last deploy report gives for the target.",
    )
    _add_config(p)
    _add_targets(p, required=True)
    _add_report_dir(p)
    p.add_argument("--uri", help="scoring URI to test (default: from the last deploy report)")
    p.set_defaults(handler=cmd_test)

    p = commands.add_parser(
        "down",
        help="remove a target's deployment",
        description="Stop and remove what deploy started for the selected targets.",
    )
    _add_config(p)
    _add_targets(p, required=True)
    p.add_argument("--images", action="store_true", help="also remove the service's images")
    p.set_defaults(handler=cmd_down)

    p = commands.add_parser(
        "serve",
        help="run the scoring server for an entry script (as images do)",
        description="Run the scoring server on an Azure ML entry script. "
        "Options: --entry-script PATH --model-dir DIR [--host 127.0.0.1] [--port 5001] "
        "[--workers N]; see 'deployer serve --help'.",
        add_help=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        # The server parses its own options (argparse's REMAINDER would swallow none of
        # them when the first is an option such as --help).
        from deployer.serving.cli import main as serve_main

        return serve_main(argv[1:])
    args = build_parser().parse_args(argv)
    args.job = _detect_job(args.handler)
    code = _run(args.handler, args)
    if args.job is not None:
        args.job.finish(code)
    return code


def _detect_job(handler: Handler) -> ActionsJob | None:
    """The GitHub Actions job deployer runs in, for the commands that report to it."""
    if handler is cmd_schema or os.environ.get("GITHUB_ACTIONS") != "true":
        return None  # not imported otherwise: a local run loads no GitHub code
    from deployer.github.job import ActionsJob

    return ActionsJob.detect(_print_command)


def _run(handler: Handler, args: argparse.Namespace) -> int:
    job = _github_job(args)
    try:
        return handler(args)
    except ConfigError as exc:
        # Compiler-style, one problem per line, so editors and CI annotations can jump to it.
        if job is not None:
            job.annotate(exc.problems)  # the same problems, on the pull request's diff
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'s' if count > 1 else ''} found", file=sys.stderr)
        return exc.exit_code
    except DeployerError as exc:
        if job is not None:
            job.error(str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(
            f"deployer {__version__} hit a bug (the traceback above); please report it.",
            file=sys.stderr,
        )
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
