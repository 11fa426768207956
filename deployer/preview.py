"""``deployer plan``: what ``deploy`` would do per target, without doing it.

For each target: the image it would deploy (its tag is the hash of every build input),
whether that image already exists (so deploy would neither build nor push it), and what
changes relative to what is live (where its platform can be asked) or else to the last
deploy report. This is what reviewers see on a pull request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployer.buildcontext import ImageRef
from deployer.errors import DeployerError
from deployer.events import Event, Sink
from deployer.plan import Plan, TargetPlan
from deployer.registry_auth import plan_credentials
from deployer.report import JSON_NAME, DeployReport, TargetReport
from deployer.targets.contract import Version

if TYPE_CHECKING:
    from deployer.secrets import Secrets

ImageCheck = Callable[[ImageRef], bool | None]


@dataclass(frozen=True)
class Baseline:
    """What a plan compares with: the last deploy's entry for each target it covers."""

    targets: Mapping[str, Mapping[str, Any]]
    source: str  # where the report was read, for the reader of the plan


def previous_report(report_dir: Path) -> Baseline | None:
    """The last deploy report in ``report_dir``; None when there is none or it is unreadable."""
    path = report_dir / JSON_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("command", "deploy") != "deploy":
            return None
        return Baseline({t["name"]: t for t in data["targets"]}, str(path))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


LIVE_SOURCE = "what is live"


def preview(
    plan: Plan,
    baseline: Baseline | None,
    image_exists: ImageCheck,
    live: Mapping[str, Version | None] | None = None,
) -> DeployReport:
    """What deploy would do per target, compared with what is ``live`` where its platform
    answered (name -> live version, None: nothing deployed), else with ``baseline``."""
    live = live or {}
    sources = [LIVE_SOURCE] if live else []
    if baseline is not None and any(t.name not in live for t in plan.targets):
        sources.append(baseline.source)
    report = DeployReport(
        service=plan.config.name,
        model=plan.config.model_name if plan.config.model else "",  # "": no model
        model_version=plan.inputs.model_version,
        model_hash=plan.inputs.model_hash,
        config=str(plan.inputs.config_path),
        command="plan",
        compared_with=" and ".join(sources),
    )
    for target in plan.targets:
        entry = TargetReport(target.name, target.kind, "planned", str(target.image))
        entry.revision = target.revision
        entry.image_exists = image_exists(target.image)
        if target.name in live:
            entry.changes = _changes_from_live(target, live[target.name])
        elif baseline is not None:
            entry.changes = _changes(str(target.image), baseline.targets.get(target.name))
        entry.artifacts = sorted(target.artifacts)
        report.targets.append(entry)
    return report


def _changes(image: str, last: Mapping[str, Any] | None) -> list[str]:
    if last is None:
        return ["new target (not in the last deploy report)"]
    changes = []
    if last.get("image") != image:
        changes.append(f"image {last.get('image')} → {image}")
    if last.get("status") == "failed":
        changes.append("the last deploy of this target failed")
    return changes


def _changes_from_live(target: TargetPlan, version: Version | None) -> list[str]:
    if version is None:
        return ["new: nothing is deployed there now"]
    changes = []
    if version.image != str(target.image):
        changes.append(f"image {version.image} → {target.image}")
    elif version.revision != target.revision:
        changes.append(f"settings: revision {version.revision} → {target.revision}")
    if version.health != "healthy":
        detail = f": {version.detail}" if version.detail else ""
        changes.append(f"the live version is {version.health}{detail}")
    return changes


def registry_check(
    plan: Plan, progress: Sink, env: Mapping[str, str] = os.environ, secrets: Secrets | None = None
) -> ImageCheck:
    """Ask the registry (through the Docker engine) whether each image exists; None when
    the engine, the registry or its credentials are not available here."""
    from deployer import docker_engine
    from deployer.build import ImageBuilder

    try:
        client = docker_engine.connect()
        credentials = plan_credentials(plan, env, secrets)
    except DeployerError as exc:
        progress(Event("warning", f"cannot check the registry, images not checked: {exc}"))
        return lambda ref: None
    builder = ImageBuilder(client, progress)

    def check(ref: ImageRef) -> bool | None:
        try:
            return bool(builder.remote_digest(ref, credentials))
        except DeployerError as exc:
            progress(Event("warning", f"cannot check {ref}: {exc}"))
            return None

    return check
