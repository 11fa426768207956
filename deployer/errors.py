"""The toolkit's one error root.

Library code raises these; only ``deployer.cli`` prints them and turns them into exit codes.
A ``UserError`` means the input (deploy.yaml, flags, environment) is wrong and the user can
fix it: exit code 2. Any other ``DeployerError`` is an operation that failed (a build, a
push, a deploy): exit code 1. Anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class DeployerError(Exception):
    """Root of every error the toolkit raises on purpose."""

    exit_code = 1


class UserError(DeployerError):
    """The user's input is wrong; the message says what to change."""

    exit_code = 2


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in a config file, located at a node of the YAML document."""

    file: str
    line: int  # 1-based
    col: int  # 1-based
    path: str  # dotted path of the offending node, "" for the document itself
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(UserError):
    """deploy.yaml is invalid: every problem found, one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class DeployFailed(DeployerError):
    """A deploy did not go through; the previous version, if any, is still serving."""

    def __init__(self, message: str, logs: list[str] | None = None, tests: object = None):
        self.logs = logs or []
        self.tests = tests  # the TestRun that failed, when tests were what failed
        super().__init__(message)
