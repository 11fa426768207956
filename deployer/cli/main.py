"""The command line: a thin layer over the library. Only ``deployer.cli`` prints and exits.

Exit codes: 0 success; 1 an operation failed (a build, a deploy, a test); 2 the user's
input is wrong (deploy.yaml, flags); 70 a bug in deployer (the traceback is printed).

In a GitHub Actions job (``deployer.github.job``) the same commands also print workflow
commands on stdout (masks, annotations) and report to the job and its pull request.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from deployer import __version__
from deployer.cli import build_commands, deploy_commands, operate_commands, simulate_commands
from deployer.cli.common import github_job
from deployer.cli.deploy_commands import EXIT_BUG
from deployer.errors import ConfigError, DeployerError

if TYPE_CHECKING:
    from deployer.github.job import ActionsJob

Handler = Callable[[argparse.Namespace], int]


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
    build_commands.add_commands(commands)
    deploy_commands.add_commands(commands)
    operate_commands.add_commands(commands)
    simulate_commands.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        # The server parses its own options (argparse's REMAINDER would swallow none of
        # them when the first is an option such as --help).
        from deployer.serving.cli import main as serve_main

        return serve_main(argv[1:], prog="deployer serve")
    args = build_parser().parse_args(argv)
    args.job = _detect_job(args.handler)
    code = _run(args.handler, args)
    if args.job is not None:
        args.job.finish(code)
    return code


def _print_command(line: str) -> None:
    """A GitHub Actions workflow command: on stdout, at once, for the runner to read."""
    print(line, flush=True)


def _detect_job(handler: Handler) -> ActionsJob | None:
    """The GitHub Actions job deployer runs in, for the commands that report to it."""
    if handler is build_commands.cmd_schema or os.environ.get("GITHUB_ACTIONS") != "true":
        return None  # not imported otherwise: a local run loads no GitHub code
    from deployer.github.job import ActionsJob

    return ActionsJob.detect(_print_command)


def _run(handler: Handler, args: argparse.Namespace) -> int:
    job = github_job(args)
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
        secrets = getattr(args, "secrets", None)
        message = secrets.masker().text(str(exc)) if secrets is not None else str(exc)
        if job is not None:
            job.error(message)
        print(f"error: {message}", file=sys.stderr)
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
