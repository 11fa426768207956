"""deployer as a step of a GitHub Actions job: what the CLI does there besides its work.

In a job (``GITHUB_ACTIONS=true``, unless ``DEPLOYER_GITHUB_REPORT=false``) the CLI also
- registers secret values with ``::add-mask::`` before it prints anything that could hold them;
- turns each problem in deploy.yaml into an ``::error`` annotation at its line, on the diff;
- after ``deploy`` and ``plan``, reports: job summary, step outputs, the pull request's comment;
- gives every run the step outputs ``status``, ``report-path`` and ``scoring-uris``, even a
  run that stopped before it wrote a report, so that later steps can always read them;
- lets a plan with no report of its own compare with the last deploy on the default branch.

Workflow-command lines are handed back to the CLI to print (only the CLI prints).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deployer.errors import DeployerError, Problem
from deployer.events import Event, Sink
from deployer.github import actions
from deployer.github.api import PermissionDenied, client_from_env
from deployer.github.artifacts import last_deploy
from deployer.github.event import default_branch, read_payload
from deployer.github.reporting import GitHubOutcome, report_to_github, reporting_enabled
from deployer.preview import Baseline

Print = Callable[[str], None]


@dataclass
class ActionsJob:
    env: Mapping[str, str]
    print_command: Print
    masked: set[str] = field(default_factory=set)
    wrote_outputs: bool = False

    @classmethod
    def detect(cls, print_command: Print, env: Mapping[str, str] = os.environ) -> ActionsJob | None:
        return cls(env, print_command) if reporting_enabled(env) else None

    def mask(self, secret: str) -> None:
        """Register a secret (once): the runner hides it in every later log line. Subscribed
        to the run's ``Secrets``, so each is registered as soon as it is known."""
        self._commands(actions.mask_commands([secret]))

    def annotate(self, problems: list[Problem]) -> None:
        workspace = self.env.get("GITHUB_WORKSPACE")
        self._commands(actions.annotate_problems(problems, Path(workspace) if workspace else None))

    def warn(self, message: str) -> None:
        self._commands([actions.warning(message)])

    def error(self, message: str) -> None:
        """An error the run stopped on, as an annotation on the run's page."""
        self._commands([actions.command("error", message, {"title": "deployer"})])

    def report(
        self,
        json_path: Path,
        md_path: Path,
        progress: Sink,
        *,
        secrets: Sequence[str] | None = None,
        comment: bool = True,
        fail_on_comment_error: bool = False,
    ) -> GitHubOutcome:
        outcome = report_to_github(
            json_path,
            md_path,
            self.env,
            progress,
            commands=lambda line: self._commands([line]),
            secrets=secrets,
            comment=comment,
            fail_on_comment_error=fail_on_comment_error,
        )
        self.wrote_outputs = self.wrote_outputs or outcome.wrote_outputs
        return outcome

    def last_deploy(self, config: str, targets: Sequence[str], progress: Sink) -> Baseline | None:
        """The last deploy of these targets on the default branch, from its report artifact.

        None, with a warning, when GitHub cannot say (no token, a token without
        ``actions: read``); None, quietly, when no deploy has uploaded a report yet.
        """
        branch = self._default_branch()
        if branch is None:
            progress(Event("detail", "no default branch in the event: nothing to compare with"))
            return None
        try:
            api, repo = client_from_env(self.env, progress=progress)
            progress(Event("step", f"looking up the last deploy report on {branch} of {repo}"))
            found = last_deploy(api, repo, config, targets, branch, progress=progress)
        except DeployerError as error:
            hint = (
                " (the token needs 'actions: read')" if isinstance(error, PermissionDenied) else ""
            )
            self.warn(
                f"could not look up the last deploy report{hint}: {error}; the plan shows no "
                "changes"
            )
            return None
        if found is None:
            progress(Event("detail", f"no deploy report of these targets on {branch} yet"))
        return found

    def finish(self, exit_code: int) -> None:
        """Step outputs for a run that wrote no report (validate, down, or stopped early)."""
        path = self.env.get("GITHUB_OUTPUT")
        if self.wrote_outputs or not path:
            return
        outputs = {
            "status": "passed" if exit_code == 0 else "failed",
            "report-path": "",
            "scoring-uris": "{}",
        }
        try:
            actions.write_outputs(Path(path), outputs)
        except OSError as error:
            self.warn(f"could not write the step outputs ({path}): {error.strerror}")
            return
        self.wrote_outputs = True

    def _default_branch(self) -> str | None:
        path = self.env.get("GITHUB_EVENT_PATH")
        if not path:
            return None
        try:
            return default_branch(read_payload(Path(path)))
        except (OSError, ValueError):
            return None

    def _commands(self, lines: Sequence[str]) -> None:
        for line in lines:
            if line.startswith("::add-mask::"):
                if line in self.masked:
                    continue
                self.masked.add(line)
            self.print_command(line)
