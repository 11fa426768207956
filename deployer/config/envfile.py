"""The environment file: what the image's venv installs.

Images are plain-Python venvs (the base image has no conda), so a conda file is installed
with pip: its ``pip:`` section as written, and each conda package from PyPI, its spec
translated with conda's meaning (``condaspec``). A real conda environment (micromamba) is
not an option: the machines that build images reach PyPI, Debian and npm, not conda's
channels. Its ``python`` pin must agree with ``environment.python``; ``pip``,
``setuptools`` and ``wheel`` are the image's own; a conda package with no PyPI counterpart
(CUDA, system libraries, R) is reported with what to do instead: silently dropping it could
give an image that fails at import.

Microsoft's scoring server (``azureml-inference-server-http``, and ``azureml-defaults``,
which is that server plus azureml-core and azureml-dataset-runtime) is not installed: the
image serves score.py with its own server, which also provides the
``azureml.contrib.services.aml_request``/``aml_response`` modules scripts import. Installing
it anyway would add Flask, gunicorn and OpenTelemetry with exact pins that can clash with the
model's own. What a script may still import from it, ``inference_schema`` (the
``@input_schema`` decorators), is installed in its place; azureml-core (SDK v1's
``Model.get_model_path``) is left for the few scripts that need it to list, as the note says.

Problems and notes found here are located in the conda file itself, not in deploy.yaml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.config import condaspec
from deployer.config.model import DeployConfig, Environment
from deployer.config.yamlsource import Position, YamlSyntaxError, dotted, parse
from deployer.errors import Problem

# The interpreter and its installers: the image's own, whatever the conda file pins.
_TOOLING = {"python", "pip", "setuptools", "wheel"}
# Microsoft's scoring server, which the image's own server replaces, and what scripts may
# import from it (inference_schema's decorators), installed in its place.
_SCORING_SERVERS = {"azureml-inference-server-http", "azureml-defaults"}
_SERVER_IMPORTS = "inference-schema"
# How a requirements.txt line names the conda line it was translated from (pip ignores it).
_ORIGIN = "  # translated from conda "
_VERSION_PART = re.compile(
    r"^\s*(?P<op>==|>=|<=|!=|~=|=|<|>)?\s*(?P<version>[0-9][0-9.]*)(?:\.?\*)?\s*$"
)
# A requirement's project name: what follows it rules out URLs ("git+https://...").
_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:$|[\[;<>=!~@(#])")


@dataclass(frozen=True)
class Note:
    """Something worth knowing about a valid conda file: how a line is installed."""

    file: str
    line: int  # 1-based
    col: int  # 1-based
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: note: {self.message}"


def pip_requirements(config: DeployConfig, base_dir: Path) -> str:
    """The requirements.txt text for the image (empty when no environment file is set)."""
    env = config.environment
    if env.pip_requirements:
        return (base_dir / env.pip_requirements).read_text(encoding="utf-8")
    if env.conda_file:
        found = _read_conda(base_dir / env.conda_file, env.conda_file, env.python)
        return "".join(f"{line}\n" for line in found.requirements)
    return ""


def check(env: Environment, base_dir: Path, shown_dir: Path) -> list[Problem]:
    """Problems in the conda file itself, shown as a path beside deploy.yaml's (``shown_dir``)."""
    return _read_beside(env, base_dir, shown_dir).problems


def notes(env: Environment, base_dir: Path, shown_dir: Path) -> list[Note]:
    """How conda lines are installed where that is not as written (``deployer validate``)."""
    return _read_beside(env, base_dir, shown_dir).notes


def install_hint(requirements: str, pip_output: list[str]) -> str:
    """When pip's errors (``pip_output``) name a package translated from a conda line, the
    sentence that points back at that line; "" otherwise."""
    names_in_errors = {
        _normalise(word)
        for line in pip_output
        if line.lstrip().startswith("ERROR:")
        for word in re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    }
    hints = []
    for line in requirements.splitlines():
        requirement, marker, origin = line.partition(_ORIGIN)
        name = _REQUIREMENT_NAME.match(requirement)
        if marker and name and _normalise(name[1]) in names_in_errors:
            hints.append(f"pip '{requirement.strip()}' was translated from conda {origin}")
    if not hints:
        return ""
    return (
        f"{'; '.join(hints)}: check that PyPI has that version, with a wheel for "
        "environment.python, or change the conda line"
    )


def _read_beside(env: Environment, base_dir: Path, shown_dir: Path) -> _CondaFile:
    if not env.conda_file:
        return _CondaFile("", env.python)
    return _read_conda(base_dir / env.conda_file, str(shown_dir / env.conda_file), env.python)


def _read_conda(path: Path, shown: str, python: str) -> _CondaFile:
    found = _CondaFile(shown, python)
    try:
        data, source, issues = parse(path.read_text(encoding="utf-8"))
    except YamlSyntaxError as exc:
        found.problem(exc.position, "", exc.message)
        return found
    except (OSError, UnicodeDecodeError) as exc:
        found.problem(Position(1, 1), "", f"cannot be read: {exc}")
        return found
    for issue in issues:
        found.problem(issue.position, dotted(issue.path), issue.message)
    if not isinstance(data, dict):
        message = "a conda environment file must be a mapping with a 'dependencies' list"
        found.problem(source.value(()), "", message)
        return found
    deps: Any = data.get("dependencies", [])
    if not isinstance(deps, list):
        found.problem(source.key(("dependencies",)), "dependencies", "must be a list")
        return found
    pip_lines: list[tuple[str, Position]] = []
    for index, dep in enumerate(deps):
        at = source.value(("dependencies", index))
        where = f"dependencies[{index}]"
        if not (isinstance(dep, dict) and "pip" in dep):
            found.conda_package(dep, at, where)
        elif (
            set(dep) != {"pip"}
            or not isinstance(dep["pip"], list)
            or not all(isinstance(item, str) for item in dep["pip"])
        ):
            message = "must be 'pip:' followed by a list of requirements, one string each"
            found.problem(at, where, message)
        else:
            pip_lines += [
                (item, source.value(("dependencies", index, "pip", number)))
                for number, item in enumerate(dep["pip"])
            ]
    found.pip_section(pip_lines)
    return found


@dataclass
class _CondaFile:
    """A conda file as read: its requirements.txt lines, its problems and notes."""

    shown: str  # the file's name in problems and notes
    python: str  # environment.python
    requirements: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    def problem(self, at: Position, where: str, message: str) -> None:
        self.problems.append(Problem(self.shown, at.line, at.col, where, message))

    def note(self, at: Position, message: str) -> None:
        self.notes.append(Note(self.shown, at.line, at.col, message))

    def conda_package(self, dep: object, at: Position, where: str) -> None:
        """One conda package line: checked (python), skipped (tooling), or translated."""
        try:
            if not isinstance(dep, str):
                raise condaspec.SpecError("not a string")
            spec = condaspec.parse(dep)
        except condaspec.SpecError as exc:
            self.problem(at, where, f"cannot read {dep!r} as a conda package spec: {exc}")
            return
        if spec.name == "python":
            if spec.version and not _python_agrees(spec.version, self.python):
                self.problem(
                    at,
                    where,
                    f"{dep!r} conflicts with environment.python {self.python!r} in "
                    "deploy.yaml; make them agree",
                )
        elif spec.name in _TOOLING:
            if spec.version:
                self.note(
                    at,
                    f"conda {dep!r} is not installed: the image's own {spec.name} is used "
                    "(list it under 'pip:' to pin it)",
                )
        elif (reason := condaspec.no_pip_counterpart(spec.name)) is not None:
            self.problem(at, where, f"conda package {dep!r} has no pip counterpart: {reason}")
        else:
            try:
                requirement = condaspec.pip_requirement(spec)
            except condaspec.SpecError as exc:
                message = f"conda package {dep!r} cannot be installed with pip: {exc}"
                self.problem(at, where, message)
                return
            origin = f"{dep!r} at {self.shown}:{at.line}:{at.col}"
            self.requirements.append(f"{requirement}{_ORIGIN}{origin}")
            self.note(at, _translated(dep, requirement, spec))

    def pip_section(self, lines: list[tuple[str, Position]]) -> None:
        """The ``pip:`` lines as written, but for Microsoft's scoring server (see the
        module's docstring), replaced by what scripts import from it unless listed."""
        names = [_requirement_name(line) for line, _ in lines]
        for (line, at), name in zip(lines, names, strict=True):
            if name not in _SCORING_SERVERS:
                self.requirements.append(line)
                continue
            message = (
                f"pip {line!r} is not installed: the image serves score.py with its own "
                "server, which provides azureml.contrib.services.aml_request and aml_response"
            )
            if _SERVER_IMPORTS not in names and _SERVER_IMPORTS not in self.requirements:
                self.requirements.append(_SERVER_IMPORTS)
                message += f"; {_SERVER_IMPORTS} is installed in its place"
            if name == "azureml-defaults":
                message += "; if score.py imports azureml.core, list azureml-core under 'pip:'"
            self.note(at, message)


def _translated(dep: str, requirement: str, spec: condaspec.CondaSpec) -> str:
    message = f"conda {dep!r} installs as pip {requirement!r}"
    if spec.name != condaspec.pypi_name(spec.name):
        message += f" ({condaspec.pypi_name(spec.name)!r} is its name on PyPI)"
    if spec.build:
        message += f"; build {spec.build!r} dropped: wheels have no conda builds"
    if spec.channel:
        message += f"; from PyPI, not the conda channel {spec.channel!r}"
    return message


def _requirement_name(line: str) -> str | None:
    """The project a requirements line names, as pip compares names; None for options
    (``-r``, ``--index-url``) and URLs."""
    match = _REQUIREMENT_NAME.match(line)
    return _normalise(match[1]) if match else None


def _normalise(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _python_agrees(constraint: str, python: str) -> bool:
    """Whether a conda version constraint (``=3.11``, ``>=3.9,<3.13``, ``3.11.*``) admits
    ``python`` (major.minor). Constraints it cannot read are given the benefit of the doubt."""
    want = tuple(int(part) for part in python.split("."))
    for part in constraint.split(","):
        match = _VERSION_PART.match(part)
        if match is None:
            return True
        op = match["op"] or "="
        pinned = tuple(int(p) for p in match["version"].rstrip(".").split(".") if p)
        # major.minor is all deploy.yaml says, so compare at the shorter of the two.
        width = min(len(pinned), len(want))
        have, bound = want[:width], pinned[:width]
        admitted = {
            "=": have == bound,
            "==": have == bound,
            "!=": have != bound or len(pinned) > len(want),
            ">=": have >= bound,
            "~=": have >= bound,
            ">": have > bound or (have == bound and len(pinned) > len(want)),
            "<=": have <= bound,
            "<": have < bound or (have == bound and len(pinned) > len(want)),
        }[op]
        if not admitted:
            return False
    return True
