"""The deploy report: ``deploy-report.json`` for machines, ``deploy-report.md`` for people.

Secrets are masked on the way out: every string that reaches either file passes through
``deployer.secrets.Masker``, because container logs and error messages may echo them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from deployer import __version__
from deployer.errors import UserError
from deployer.secrets import Masker
from deployer.verify import TestRun

Status = Literal["deployed", "unchanged", "failed", "planned"]
JSON_NAME = "deploy-report.json"
MARKDOWN_NAME = "deploy-report.md"


@dataclass
class TargetReport:
    name: str
    kind: str
    status: Status
    image: str
    digest: str = ""
    revision: str = ""  # hash of the image and the rendered artifacts: what was made live
    scoring_uri: str = ""
    swagger_uri: str = ""
    auth_headers: list[str] = field(default_factory=list)  # names a client must send
    # How a client authenticates (auth: key): the header and the CI secret holding the key,
    # never the key itself.
    auth: str = ""
    built: bool = False
    pushed: bool = False
    tests: TestRun | None = None
    error: str = ""
    logs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was tidied or could not be retired
    seconds: dict[str, float] = field(default_factory=dict)  # step -> duration
    # A plan's findings: whether the image is already built/pushed, what would change.
    image_exists: bool | None = None  # None: could not be checked
    changes: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)  # rendered files, relative paths

    @property
    def passed(self) -> bool:
        return self.status != "failed" and (self.tests is None or self.tests.passed)


@dataclass
class DeployReport:
    service: str
    model: str
    model_version: str
    config: str
    targets: list[TargetReport] = field(default_factory=list)
    model_hash: str = ""  # content hash of the model files, beside the version it gives
    toolkit: str = f"deployer {__version__}"
    command: Literal["deploy", "plan"] = "deploy"
    compared_with: str = ""  # a plan's baseline: where the last deploy report came from

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.targets)

    @property
    def only_tests_failed(self) -> bool:
        """Some target failed, and each that did failed only its tests: it was built and
        started, and its tests said no (so the previous version, if any, still serves)."""
        failed = [t for t in self.targets if not t.passed]
        return bool(failed) and all(t.tests is not None and not t.tests.passed for t in failed)


def to_json(report: DeployReport, masker: Masker) -> str:
    data = asdict(report)
    for target, raw in zip(report.targets, data["targets"], strict=True):
        raw["passed"] = target.passed
        if target.tests is not None:
            raw["tests"]["passed"] = target.tests.passed
    data["passed"] = report.passed
    return json.dumps(masker.data(data), indent=2, ensure_ascii=False) + "\n"


def to_markdown(report: DeployReport, masker: Masker) -> str:
    if report.command == "plan":
        return masker.text(_plan_markdown(report))
    verdict = "passed" if report.passed else "FAILED"
    lines = [
        f"### Deploy of `{report.service}`: {verdict}",
        "",
        f"{_model_line(report)}, from `{report.config}`.",
        "",
        "| Target | Kind | Status | Scoring URI | Tests | p95 latency | Image |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in report.targets:
        tests = t.tests.summary if t.tests else "not run"
        p95 = f"{t.tests.latency.p95_ms:.1f} ms" if t.tests and t.tests.latency else "-"
        uri = f"`{t.scoring_uri}`" if t.scoring_uri else "-"
        icon = "✅" if t.passed else "❌"
        lines.append(
            f"| {t.name} | {t.kind} | {icon} {t.status} | {uri} | {tests} | {p95} | `{t.image}` |"
        )
    for t in report.targets:
        lines += _details(t)
    return masker.text("\n".join(lines) + "\n")


def _model_line(report: DeployReport) -> str:
    if not report.model:  # deploy.yaml names no model
        return "No model"
    line = f"Model `{report.model}` version `{report.model_version}`"
    return f"{line} (content hash `{report.model_hash}`)" if report.model_hash else line


def _plan_markdown(report: DeployReport) -> str:
    compared = (
        f"Changes are against {report.compared_with}."
        if report.compared_with
        else "No earlier deploy report was found, so changes are not shown."
    )
    lines = [
        f"### Plan for `{report.service}`",
        "",
        f"{_model_line(report)}, from `{report.config}`. "
        "Nothing was deployed: this is what `deployer deploy` would do. " + compared,
        "",
        "| Target | Kind | Image | Build | Changes since the last deploy | Rendered |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    exists = {True: "unchanged, no build", False: "to build and push", None: "not checked"}
    for t in report.targets:
        if report.compared_with:
            changes = "<br>".join(_cell(c) for c in t.changes) or "none"
        else:
            changes = "-"
        rendered = "<br>".join(f"`{a}`" for a in t.artifacts) or "-"
        lines.append(
            f"| {t.name} | {t.kind} | `{t.image}` | {exists[t.image_exists]} | {changes} "
            f"| {rendered} |"
        )
    return "\n".join(lines) + "\n"


def _details(target: TargetReport) -> list[str]:
    lines: list[str] = []
    if target.auth and target.scoring_uri:
        lines += ["", f"Calling {target.name}: send {target.auth}."]
    if target.tests and target.tests.results:
        lines += [
            "",
            f"#### {target.name}: tests",
            "",
            "| Request | Result | Status | Latency |",
            "| --- | --- | --- | --- |",
        ]
        for r in target.tests.results:
            result = "pass" if r.passed else f"FAIL: {_cell(r.detail)}"
            first = f" (first byte {r.ttfb_ms:.1f} ms)" if r.ttfb_ms is not None else ""
            lines.append(f"| {r.name} | {result} | {r.status} | {r.latency_ms:.1f} ms{first} |")
        if target.tests.latency:
            lat = target.tests.latency
            limit = f" (limit {lat.limit_p95_ms:g} ms)" if lat.limit_p95_ms is not None else ""
            lines += [
                "",
                f"Latency over {lat.requests} requests: p50 {lat.p50_ms:.1f} ms, "
                f"p95 {lat.p95_ms:.1f} ms{limit}, p99 {lat.p99_ms:.1f} ms.",
            ]
    if target.error or target.logs:
        lines += [
            "",
            "<details><summary>" + f"{target.name}: error and last log lines" + "</summary>",
            "",
            "```text",
        ]
        if target.error:
            lines.append(target.error)
        lines += target.logs
        lines += ["```", "", "</details>"]
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write(report: DeployReport, folder: Path, masker: Masker) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / JSON_NAME, folder / MARKDOWN_NAME
    json_path.write_text(to_json(report, masker), encoding="utf-8")
    md_path.write_text(to_markdown(report, masker), encoding="utf-8")
    return json_path, md_path


def read_written(path: Path) -> str:
    """A report file as written, or a ``UserError`` that says how to get one."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"{path}: no such file (run deployer deploy or plan first, or pass --report-dir)"
        ) from None
    except OSError as error:
        raise UserError(f"{path}: cannot read it ({error.strerror})") from None
