"""``simulate``: an IoT Edge target's manifest, run on this machine as a device would run it."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from deployer.cli.common import add_config, add_targets, load
from deployer.cli.output import print_tests
from deployer.console import ConsoleProgress
from deployer.errors import UserError

if TYPE_CHECKING:
    from deployer.cli.common import Commands
    from deployer.secrets import Masker
    from deployer.simulate import Simulation


def cmd_simulate(args: argparse.Namespace) -> int:
    from deployer.cli.deploy_commands import _terminate_as_interrupt
    from deployer.simulate import Simulation

    if len(args.targets) != 1:
        raise UserError("deployer simulate runs one target: give exactly one -t TARGET")
    config, secrets = load(args)
    masker = secrets.masker()
    progress = ConsoleProgress(secrets=secrets)
    simulation = Simulation(
        config,
        args.config,
        args.targets[0],
        progress,
        secrets,
        env=dict(os.environ),
        public_registries=tuple(args.public_registries or ()),
        ready_timeout_s=args.ready_timeout,
    )
    try:
        with _terminate_as_interrupt():
            return _run(simulation, args, progress)
    finally:
        with _signals_held():
            removed = simulation.close()
        progress.close()
        for name in removed:
            print(masker.text(f"removed container {name}"))


def _run(simulation: Simulation, args: argparse.Namespace, progress: ConsoleProgress) -> int:
    from deployer.simulate import ModuleFailed

    manifest = simulation.check()
    names = sorted(manifest.modules)
    print(
        f"simulating {simulation.target_name} as {simulation.device} would run it: "
        f"module{'s' if len(names) != 1 else ''} {', '.join(names) or 'none'}"
    )
    for note in simulation.notes():
        print(f"note: {note}")
    try:
        statuses = simulation.start()
    except ModuleFailed as failed:
        progress.close()
        _print_failure(str(failed), failed.logs, simulation.secrets.masker())
        return 1
    progress.close()
    masker = simulation.secrets.masker()  # the filled credentials are secrets too
    for name, status in statuses.items():
        print(masker.text(f"module {name}: {status.runtime_status} ({status.image})"))
    run = simulation.test()
    print_tests(run, masker)
    try:
        simulation.check_modules()  # a module that crashed under the tests fails the run
    except ModuleFailed as failed:
        _print_failure(str(failed), failed.logs, masker)
        return 1
    if args.follow:
        print(f"following the modules' logs; Ctrl-C stops and removes them ({simulation.session})")
        stop = threading.Event()
        try:
            for line in simulation.follow(stop):
                print(masker.text(line), flush=True)
        except KeyboardInterrupt:
            stop.set()
        try:
            simulation.check_modules()
        except ModuleFailed as failed:
            _print_failure(str(failed), failed.logs, masker)
            return 1
    return 0 if run.passed else 1


def _print_failure(message: str, logs: list[str], masker: Masker) -> None:
    print(masker.text(f"error: {message}"), file=sys.stderr)
    if logs:
        print("last lines of its log:", file=sys.stderr)
        for line in logs:
            print(masker.text(f"  | {line}"), file=sys.stderr)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Clean-up runs to its end: a second Ctrl-C or a SIGTERM while containers are being
    removed is ignored (in the main thread, where signals are handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_commands(commands: Commands) -> None:
    p = commands.add_parser(
        "simulate",
        help="run an iot_edge target's manifest on this machine, as a device would, and test it",
        description="Render the target's IoT Edge deployment manifest, refuse what a device "
        "would fail on (host ports clashing with edgeHub's 443/5671/8883, createOptions "
        "that do not parse or exceed the chunk limit, images no registry credentials in the "
        "manifest match, routes naming modules that do not exist), build and push the image, "
        "then run every custom module on the local Docker engine as the edge agent would "
        "(image pulled with the manifest's credentials, env, restart policy, createOptions "
        "joined back as the Docker create body), wait for the model module's /ready, run "
        "deploy.yaml's tests against it and, with --follow, stream the modules' logs until "
        "Ctrl-C. Every container it started is removed on exit. edgeAgent and edgeHub are "
        "not run. Exit 0 when the tests pass, 1 when they fail or a module crashes, 2 when "
        "the manifest or the input is wrong.",
    )
    add_config(p)
    add_targets(p, required=True)
    p.add_argument(
        "--ready-timeout",
        type=float,
        metavar="SECONDS",
        help="how long the model module may take to answer /ready (default: the target's "
        "ready_timeout_s in deploy.yaml)",
    )
    p.add_argument(
        "-f", "--follow", action="store_true", help="after the tests, stream the modules' logs"
    )
    p.add_argument(
        "--public-registry",
        dest="public_registries",
        action="append",
        metavar="HOST",
        help="a registry the device may pull from without credentials (besides "
        "mcr.microsoft.com); repeat for several",
    )
    p.set_defaults(handler=cmd_simulate)
