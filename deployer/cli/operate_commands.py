"""Acting on what is deployed: ``test``, ``status``, ``logs``, ``down``, and ``serve``.

``status``, ``logs`` and ``down`` need deploy.yaml's settings only: not the model files,
not a render (a clean-up job may run where the model is not).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from deployer.cli.common import add_config, add_report_dir, add_targets, load
from deployer.cli.output import print_status, print_tests
from deployer.console import ConsoleProgress
from deployer.errors import UserError

if TYPE_CHECKING:
    from deployer.cli.common import Commands
    from deployer.events import Sink
    from deployer.secrets import Secrets
    from deployer.targets.contract import Session


def _session(progress: Sink, secrets: Secrets) -> Session:
    from deployer.targets.contract import Session

    return Session(progress, secrets, os.environ)


def cmd_test(args: argparse.Namespace) -> int:
    from deployer.operate import status
    from deployer.plan import select_targets
    from deployer.scoring_keys import scoring_keys, uses_keys
    from deployer.verify import run_tests

    if args.local or args.azurite:
        return _test_local(args)
    config, secrets = load(args, check_files=False)
    target = select_targets(config, args.targets)[0]
    uri, headers = args.uri, {}
    if uri is None:
        # The live version's endpoint, with the headers it needs (a key), where the
        # platform can be asked; else the URI of the last deploy report.
        progress = ConsoleProgress(secrets=secrets)
        try:
            (found,) = status(config, [target], _session(progress, secrets))
        finally:
            progress.close()
        if found.live is not None and found.live.endpoint is not None:
            uri, headers = found.live.endpoint.scoring_uri, dict(found.live.endpoint.headers)
        else:
            uri = _reported_uri(args.report_dir, target)
    settings = config.targets[target]
    if not headers and uses_keys(settings):
        # An endpoint behind auth: key, given by URI: its key from the CI secret.
        headers = scoring_keys(settings, os.environ, secrets).headers
    # The files tests send are read beside deploy.yaml (loaded without checking them).
    result = run_tests(uri, config.tests, headers, base_dir=args.config.resolve().parent)
    print_tests(result, secrets.masker())
    return 0 if result.passed else 1


def _test_local(args: argparse.Namespace) -> int:
    """``--local``: the functions target's rendered app, run here (functions/local.py)."""
    from deployer.plan import select_targets
    from deployer.targets.functions.local import azurite_connection, run_local_tests
    from deployer.targets.functions.schema import Config

    if args.uri is not None:
        raise UserError("--local runs the function app here: it takes no --uri")
    config, secrets = load(args)  # the model and entry script are rendered into the app
    targets = select_targets(config, args.targets)
    if len(targets) != 1:
        raise UserError("deployer test --local runs one target: give exactly one -t TARGET")
    (target,) = targets
    settings = config.targets[target]
    azurite = None
    if args.azurite:
        if not isinstance(settings, Config) or settings.blob is None:
            raise UserError(f"--azurite is for a functions target with a blob trigger: {target!r}")
        azurite = azurite_connection(os.environ.get(settings.blob.connection))
    result = run_local_tests(config, args.config, target, azurite=azurite)
    print_tests(result, secrets.masker())
    return 0 if result.passed else 1


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


def cmd_status(args: argparse.Namespace) -> int:
    from deployer.operate import status

    config, secrets = load(args, check_files=False)
    progress = ConsoleProgress(secrets=secrets)
    try:
        found = status(config, args.targets, _session(progress, secrets))
    finally:
        progress.close()
    print_status(found, secrets.masker())
    return 1 if any(s.error for s in found) else 0


def cmd_logs(args: argparse.Namespace) -> int:
    from deployer.operate import logs

    config, secrets = load(args, check_files=False)
    if len(args.targets) != 1:
        raise UserError("deployer logs shows one target: give exactly one -t TARGET")
    masker = secrets.masker()
    progress = ConsoleProgress(secrets=secrets)
    session = _session(progress, secrets)
    try:
        for line in logs(config, args.targets[0], session, args.tail, args.follow):
            print(masker.text(line), flush=args.follow)
    except KeyboardInterrupt:
        if not args.follow:
            raise
    finally:
        progress.close()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from deployer.operate import down

    config, secrets = load(args, check_files=False)
    progress = ConsoleProgress(secrets=secrets)
    try:
        removed = down(config, args.targets, _session(progress, secrets), args.images)
    finally:
        progress.close()
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print("nothing to remove")
    return 0


def add_commands(commands: Commands) -> None:
    p = commands.add_parser(
        "test",
        help="run deploy.yaml's tests against a deployed target",
        description="Send each request in tests.requests (its method, query, headers and "
        "body: JSON, text, a file or a multipart upload), read the answer as a stream and "
        "compare its status, headers, content type, JSON (numbers within tolerance) or body "
        "digest; print each request's time to first byte and total time, measure latency "
        "over a burst and check latency_p95_ms. The "
        "scoring URI is --uri, or the live version's (with the headers it needs), or the "
        "one the last deploy report gives for the target.",
    )
    add_config(p)
    add_targets(p, required=True)
    add_report_dir(p)
    p.add_argument("--uri", help="scoring URI to test (default: from the last deploy report)")
    p.add_argument(
        "--local",
        action="store_true",
        help="functions targets: render the function app and run its function in this "
        "process with the azure-functions binding types (HttpRequest, InputStream, "
        "ServiceBusMessage), nothing deployed; no latency burst",
    )
    p.add_argument(
        "--azurite",
        action="store_true",
        help="with --local, for a blob trigger: upload each test input to Azurite and read "
        "the output blob back from it, through the connection string in the app setting "
        "the trigger's 'connection' names (default: Azurite's account on 127.0.0.1:10000)",
    )
    p.set_defaults(handler=cmd_test)

    p = commands.add_parser(
        "status",
        help="what is live on each target: revision, image, scoring URI, health",
        description="Ask each target's platform what version serves now, its image and "
        "scoring URI, and whether it answers (Azure ML's service.state). Exit 1 when a "
        "platform cannot be asked (a kind this version cannot deploy is only noted).",
    )
    add_config(p)
    add_targets(p)
    p.set_defaults(handler=cmd_status)

    p = commands.add_parser(
        "logs",
        help="the live version's logs on one target",
        description="Print the last lines of the live version's logs (Azure ML's "
        "service.get_logs()); with --follow, keep printing new lines until Ctrl-C.",
    )
    add_config(p)
    add_targets(p, required=True)
    p.add_argument(
        "--tail", type=int, default=100, metavar="N", help="how many last lines (default: 100)"
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.set_defaults(handler=cmd_logs)

    p = commands.add_parser(
        "down",
        help="remove a target's deployment",
        description="Remove whatever deploy started for the selected targets, whatever state "
        "it is in. Needs deploy.yaml's settings only, not the model files. Removing what is "
        "not there is not an error: it prints 'nothing to remove'.",
    )
    add_config(p)
    add_targets(p, required=True)
    p.add_argument("--images", action="store_true", help="also remove the service's images")
    p.set_defaults(handler=cmd_down)

    commands.add_parser(
        "serve",
        help="run the scoring server for an entry script (as images do)",
        description="Run the scoring server on an Azure ML entry script. "
        "Options: --entry-script PATH --model-dir DIR [--host 127.0.0.1] [--port 5001] "
        "[--workers N]; see 'deployer serve --help'.",
        add_help=False,
    )
