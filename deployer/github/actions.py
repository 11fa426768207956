"""GitHub Actions workflow commands and files: annotations, masks, outputs, the job summary.

The lines built here are printed by the CLI (only it prints); the files ($GITHUB_OUTPUT,
$GITHUB_STEP_SUMMARY) are appended to here, because the runner reads them after the step.
Escaping follows the runner: in a command's data %, CR and LF are escaped; in its properties
also ':' and ',', which would otherwise end a property.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from deployer.errors import Problem
from deployer.secrets import MIN_SECRET_LENGTH


def escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, properties: Mapping[str, str | int] | None = None) -> str:
    """One workflow command line, e.g. ``::error file=deploy.yaml,line=3::message``."""
    props = ",".join(f"{key}={escape_property(str(v))}" for key, v in (properties or {}).items())
    head = f"{name} {props}" if props else name
    return f"::{head}::{escape_data(message)}"


def warning(message: str, title: str = "deployer") -> str:
    return command("warning", message, {"title": title})


def mask_commands(values: Iterable[str]) -> list[str]:
    """``::add-mask::`` lines for each secret value, to print before anything else.

    The runner masks log lines one by one, so a multi-line value is also registered line by
    line: otherwise each of its lines would show when printed on its own.
    """
    masks: list[str] = []
    for value in values:
        parts = [value, *value.splitlines()] if "\n" in value or "\r" in value else [value]
        for part in (p.strip("\r") for p in parts):
            if len(part) >= MIN_SECRET_LENGTH and part not in masks:
                masks.append(part)
    return [command("add-mask", value) for value in masks]


def annotate_problems(problems: list[Problem], workspace: Path | None = None) -> list[str]:
    """An ``::error`` annotation per problem of deploy.yaml, pointing at its line and column.

    GitHub places an annotation by a path relative to the repository root; with ``workspace``
    ($GITHUB_WORKSPACE) given, a problem's file is made relative to it (the action may run in
    a sub-folder of the repository).
    """
    lines = []
    for problem in problems:
        properties: dict[str, str | int] = {
            "file": _workspace_path(problem.file, workspace),
            "line": problem.line,
            "col": problem.col,
            "title": f"deploy.yaml: {problem.path}" if problem.path else "deploy.yaml",
        }
        lines.append(command("error", problem.message, properties))
    return lines


def _workspace_path(file: str, workspace: Path | None) -> str:
    if workspace is None:
        return Path(file).as_posix()
    try:
        return Path(file).resolve().relative_to(workspace.resolve()).as_posix()
    except ValueError:  # outside the repository: GitHub cannot place it, but show the path
        return Path(file).as_posix()


def output_entry(name: str, value: str) -> str:
    """``NAME<<DELIMITER`` + value + ``DELIMITER``: safe for any value, newlines included.

    The delimiter is random so that a value cannot end the entry early and set outputs of its
    own; one that happens to occur in the value is drawn again.
    """
    while True:
        delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        if delimiter not in value and delimiter not in name:
            return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


def write_outputs(path: Path, outputs: Mapping[str, str]) -> None:
    with path.open("a", encoding="utf-8", newline="\n") as file:
        for name, value in outputs.items():
            file.write(output_entry(name, value))


def append_summary(path: Path, markdown: str) -> None:
    # Other steps of the job append to the same file: keep ours a block of its own.
    with path.open("a", encoding="utf-8", newline="\n") as file:
        file.write(markdown if markdown.endswith("\n") else markdown + "\n")
        file.write("\n")
