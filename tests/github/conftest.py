"""A fake GitHub on 127.0.0.1, a written deploy report, and a GitHub Actions environment."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deployer.events import Event
from deployer.github import GitHubOutcome, report_to_github
from deployer.github.api import RetryPolicy
from deployer.report import DeployReport, TargetReport, write
from deployer.secrets import Masker
from deployer.verify import Latency, RequestResult, TestRun
from tests.conftest import EXAMPLE
from tests.github.fake_github import FakeGitHub, serve
from tests.github.workflow_job import (
    EVENTS,
    INSTALLATION_TOKEN,
    REGISTRY_PASSWORD,
    CliJob,
    Ran,
    job_environment,
    parse_outputs,
)

__all__ = ["INSTALLATION_TOKEN", "REGISTRY_PASSWORD", "CliJob", "Ran", "parse_outputs"]

SCORING_KEY = "k3y-Scoring-0a9b8c7d6e5f"
NOW = 1_714_644_000.0  # the injected clock: 2024-05-02T10:00:00Z


def sample_report(config: str = "deploy.yaml", log_lines: int = 3) -> DeployReport:
    """A deploy of two targets: local passed, staging (ACI) failed with its logs.

    Its error and logs echo both secrets, as real container logs may.
    """
    tests = TestRun(
        "http://127.0.0.1:8080/score",
        [
            RequestResult("two-rows", True, 200, 200, 3.2),
            RequestResult("bad-input", True, 500, 500, 1.9),
        ],
        Latency(50, 1.1, 2.4, 3.0, 250),
    )
    logs = [f"2024-05-02T10:00:{i % 60:02d}Z worker {i}: loading model" for i in range(log_lines)]
    logs[-1:] = [
        f"env REGISTRY_PASSWORD={REGISTRY_PASSWORD}",
        "Traceback (most recent call last): ModuleNotFoundError: No module named 'sklearn'",
    ]
    return DeployReport(
        service="diabetes",
        model="diabetes-ridge",
        model_version="176c9d2a2f33",
        config=config,
        targets=[
            TargetReport(
                "local",
                "local",
                "deployed",
                "127.0.0.1:5000/diabetes:7a38bc78cdd0788d",
                scoring_uri="http://127.0.0.1:8080/score",
                tests=tests,
            ),
            TargetReport(
                "staging",
                "aci",
                "failed",
                "127.0.0.1:5000/diabetes:7a38bc78cdd0788d",
                # An Azure-Functions-style URI carries its key: the outputs must not show it.
                scoring_uri=f"https://diabetes-staging.example.net/score?code={SCORING_KEY}",
                error=f"container exited with code 1 (scoring key {SCORING_KEY})",
                logs=logs,
            ),
        ],
    )


@dataclass
class Run:
    outcome: GitHubOutcome
    commands: list[str]
    timeline: list[str]  # workflow commands and progress messages, in the order they came
    sleeps: list[float]


@dataclass
class Actions:
    """One GitHub Actions job: its environment and files, and a way to run the reporting."""

    github: FakeGitHub
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    report_dir: Path = Path()

    @property
    def output_file(self) -> Path:
        return Path(self.env["GITHUB_OUTPUT"])

    @property
    def summary_file(self) -> Path:
        return Path(self.env["GITHUB_STEP_SUMMARY"])

    def event(self, name: str, payload_file: str) -> None:
        self.env["GITHUB_EVENT_NAME"] = name
        self.env["GITHUB_EVENT_PATH"] = str(EVENTS / payload_file)

    def write_report(self, report: DeployReport) -> None:
        # Written unmasked, unlike deploy's own report: the masking tested is the reporting's.
        write(report, self.report_dir, Masker([]))

    def run(self, **options: Any) -> Run:
        commands: list[str] = []
        timeline: list[str] = []
        sleeps: list[float] = []

        def command(line: str) -> None:
            commands.append(line)
            timeline.append(line)

        def progress(event: Event) -> None:
            timeline.append(f"{event.level}: {event.message}")

        options.setdefault(
            "policy", RetryPolicy(sleep=sleeps.append, clock=lambda: NOW, rate_limit_budget_s=120)
        )
        outcome = report_to_github(
            self.report_dir / "deploy-report.json",
            self.report_dir / "deploy-report.md",
            self.env,
            progress,
            commands=command,
            **options,
        )
        return Run(outcome, commands, timeline, sleeps)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to the fake go straight to 127.0.0.1, whatever proxy the machine has."""
    for name in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with serve() as fake:
        yield fake


@pytest.fixture
def actions(
    github: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Actions]:
    """A job on a pull_request event, with the example's deploy.yaml as its config."""
    # The report names deploy.yaml relative to where deployer ran: the example repo.
    monkeypatch.chdir(EXAMPLE)

    def make(fake: FakeGitHub | None = None, report: DeployReport | None = None) -> Actions:
        fake = fake or github
        job = Actions(fake, tmp_path, report_dir=tmp_path / "report")
        job.env = job_environment(fake, tmp_path, "pull_request_opened.json", inherit=False)
        job.env["DEPLOYER_SCORING_KEY"] = SCORING_KEY
        job.write_report(report or sample_report())
        return job

    return make


@pytest.fixture
def make_cli_job(github: FakeGitHub, example_copy: Callable[..., Path]) -> Callable[..., CliJob]:
    def make(*replacements: tuple[str, str], event: str = "pull_request_opened.json") -> CliJob:
        config = example_copy(*replacements)
        env = job_environment(github, config.parent.parent, event)
        return CliJob(github, config.parent, env)

    return make


def event_payload(name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return payload
