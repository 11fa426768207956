"""From deploy.yaml to images: ``validate``, ``schema``, ``render`` and ``build``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from deployer.cli.common import add_config, add_targets, load
from deployer.console import ConsoleProgress

if TYPE_CHECKING:
    from deployer.cli.common import Commands


def cmd_validate(args: argparse.Namespace) -> int:
    from deployer.config import envfile
    from deployer.config.loader import load_config
    from deployer.image import SWAGGER_NOTE, swagger_files
    from deployer.plan_inputs import PlanInputs

    config = load_config(args.config)
    inputs = PlanInputs.of(config, args.config)
    for note in envfile.notes(config.environment, args.config.resolve().parent, args.config.parent):
        print(note)
    for document in swagger_files(inputs):
        print(f"{args.config.parent / document}: note: {SWAGGER_NOTE}")
    targets = ", ".join(f"{name} ({t.type})" for name, t in config.targets.items())
    model = f"model {config.model_name}:{inputs.model_version}" if config.model else "no model"
    print(f"{args.config}: valid: service {config.name!r}, {model}, targets: {targets}")
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
        print(f"{target.name:<12} {target.kind:<11} {folder}  image {target.image}")
    print(f"wrote {len(written)} files to {args.out} in {elapsed * 1000:.0f} ms")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from deployer.deploy import build_images
    from deployer.plan import make_plan

    config, secrets = load(args)
    plan = make_plan(config, args.config, args.targets)
    progress = ConsoleProgress(secrets=secrets)
    try:
        results = build_images(
            plan, progress, push=args.push, no_cache=args.no_cache, secrets=secrets
        )
    finally:
        progress.close()
    for built, pushed in results:
        state = "built" if built.built else "unchanged"
        if pushed is not None:
            state += ", pushed" if pushed.pushed else ", already in the registry"
        print(f"{built.ref}  {state}")
    return 0


def add_commands(commands: Commands) -> None:
    p = commands.add_parser(
        "validate",
        help="check deploy.yaml and the files it names",
        description="Check deploy.yaml and every file it names; print one line per problem "
        "as FILE:LINE:COL: PATH: MESSAGE. Exit 2 when anything is wrong.",
    )
    add_config(p)
    p.set_defaults(handler=cmd_validate)

    p = commands.add_parser(
        "schema",
        help="print the JSON Schema of deploy.yaml",
        description="Print the JSON Schema of deploy.yaml (for editors: point "
        "'# yaml-language-server: $schema=...' at it).",
    )
    p.set_defaults(handler=cmd_schema)

    p = commands.add_parser(
        "render",
        help="write Dockerfiles and manifests for each target",
        description="Write, for each target, everything needed to build and deploy it: "
        "image build contexts under OUT/images/ and deployment artifacts under OUT/TARGET/. "
        "Writes no secrets. OUT is emptied first (only if a previous render made it).",
    )
    add_config(p)
    add_targets(p)
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
    add_config(p)
    add_targets(p)
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
