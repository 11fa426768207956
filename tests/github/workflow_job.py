"""A GitHub Actions job for tests: the environment and files the runner gives a step, deployer
run in it as a process, and $GITHUB_OUTPUT read back as the runner reads it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.github.fake_github import REPOSITORY, FakeGitHub

EVENTS = Path(__file__).parent / "events"
REGISTRY_PASSWORD = "s3cr3t-Registry-P@ss"
INSTALLATION_TOKEN = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str

    @property
    def commands(self) -> list[str]:
        """The workflow commands the runner would act on (``::name ...::``)."""
        return [line for line in self.stdout.splitlines() if line.startswith("::")]


@dataclass
class CliJob:
    """A GitHub Actions job that runs deployer as a process, in a copy of the example repo."""

    github: FakeGitHub
    root: Path  # the model repo, a folder of the workspace
    env: dict[str, str]

    @property
    def reports(self) -> Path:
        return self.root.parent / "reports"

    @property
    def output_file(self) -> Path:
        return Path(self.env["GITHUB_OUTPUT"])

    @property
    def no_registry(self) -> tuple[str, ...]:
        """plan's flags for a job without a registry to ask, and its report folder."""
        return ("--no-registry-check", "--report-dir", str(self.reports))

    def outputs(self) -> dict[str, str]:
        return parse_outputs(self.output_file.read_text())

    def summary(self) -> str:
        return Path(self.env["GITHUB_STEP_SUMMARY"]).read_text()

    def cli(self, *args: str) -> Ran:
        self.output_file.write_text("")  # each step has a file of its own
        result = subprocess.run(
            [sys.executable, "-m", "deployer", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Ran(result.returncode, result.stdout, result.stderr)


def job_environment(
    github: FakeGitHub, workspace: Path, event: str, *, inherit: bool = True
) -> dict[str, str]:
    """What the runner gives a step: the GITHUB_* variables and files, the step's secrets;
    with ``inherit``, on top of this process's environment (less proxies: the fake is local)."""
    for name in ("output", "step_summary"):
        (workspace / name).write_text("")
    proxies = {"http_proxy", "https_proxy", "all_proxy"}
    inherited = {
        k: v
        for k, v in (os.environ.items() if inherit else ())
        if k.lower() not in proxies and not k.startswith("GITHUB_")
    }
    return {
        **inherited,
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_API_URL": github.url,
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": REPOSITORY,
        "GITHUB_RUN_ID": "8934512077",
        "GITHUB_TOKEN": INSTALLATION_TOKEN,
        "GITHUB_OUTPUT": str(workspace / "output"),
        "GITHUB_STEP_SUMMARY": str(workspace / "step_summary"),
        "GITHUB_EVENT_NAME": "push" if event == "push.json" else "pull_request",
        "GITHUB_EVENT_PATH": str(EVENTS / event),
        "REGISTRY_USERNAME": "diabetes-push",
        "REGISTRY_PASSWORD": REGISTRY_PASSWORD,
    }


def parse_outputs(text: str) -> dict[str, str]:
    """$GITHUB_OUTPUT as the runner reads it: NAME=VALUE, or NAME<<DELIMITER ... DELIMITER."""
    outputs: dict[str, str] = {}
    lines = iter(text.split("\n"))
    for line in lines:
        if not line:
            continue
        name, heredoc, delimiter = line.partition("<<")
        if not heredoc:
            name, _, value_of_line = line.partition("=")
            outputs[name] = value_of_line
            continue
        value: list[str] = []
        for value_line in lines:
            if value_line == delimiter:
                break
            value.append(value_line)
        else:
            raise AssertionError(f"output {name}: delimiter {delimiter} never came")
        outputs[name] = "\n".join(value)
    return outputs
