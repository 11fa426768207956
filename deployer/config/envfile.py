"""The environment file: what the image's venv installs.

Images are plain-Python venvs (the base image has no conda), so a conda file contributes its
``pip:`` section; its ``python`` pin must agree with ``environment.python``, and any other
conda package is reported: silently dropping it would give an image that fails at import.
Problems found here are located in the conda file itself, not in deploy.yaml.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from deployer.config.model import DeployConfig, Environment
from deployer.config.yamlsource import Position, YamlSyntaxError, dotted, parse
from deployer.errors import Problem

# Conda packages that are the interpreter and its installer, not importable libraries.
_TOOLING = {"python", "pip", "setuptools", "wheel"}
_CONDA_SPEC = re.compile(
    r"^(?:[\w.-]+::)?(?P<name>[A-Za-z0-9_.-]+)\s*(?P<constraint>[=<>!~].*|\s+\S.*)?$"
)
_VERSION_PART = re.compile(
    r"^\s*(?P<op>==|>=|<=|!=|~=|=|<|>)?\s*(?P<version>[0-9][0-9.]*)(?:\.?\*)?\s*$"
)


def pip_requirements(config: DeployConfig, base_dir: Path) -> str:
    """The requirements.txt text for the image (empty when no environment file is set)."""
    env = config.environment
    if env.pip_requirements:
        return (base_dir / env.pip_requirements).read_text(encoding="utf-8")
    if env.conda_file:
        requirements, _ = _read_conda(base_dir / env.conda_file, env.conda_file, env.python)
        return "".join(f"{line}\n" for line in requirements)
    return ""


def check(env: Environment, base_dir: Path, shown_dir: Path) -> list[Problem]:
    """Problems in the conda file itself, shown as a path beside deploy.yaml's (``shown_dir``)."""
    if not env.conda_file:
        return []
    shown = str(shown_dir / env.conda_file)
    _, problems = _read_conda(base_dir / env.conda_file, shown, env.python)
    return problems


def _read_conda(path: Path, shown: str, python: str) -> tuple[list[str], list[Problem]]:
    def problem(at: Position, where: str, message: str) -> Problem:
        return Problem(shown, at.line, at.col, where, message)

    try:
        data, source, issues = parse(path.read_text(encoding="utf-8"))
    except YamlSyntaxError as exc:
        return [], [problem(exc.position, "", exc.message)]
    except (OSError, UnicodeDecodeError) as exc:
        return [], [problem(Position(1, 1), "", f"cannot be read: {exc}")]
    problems = [problem(issue.position, dotted(issue.path), issue.message) for issue in issues]
    if not isinstance(data, dict):
        return [], [
            *problems,
            problem(
                source.value(()),
                "",
                "a conda environment file must be a mapping with a 'dependencies' list",
            ),
        ]
    deps: Any = data.get("dependencies", [])
    if not isinstance(deps, list):
        return [], [
            *problems,
            problem(source.key(("dependencies",)), "dependencies", "must be a list"),
        ]
    requirements: list[str] = []
    for index, dep in enumerate(deps):
        at = source.value(("dependencies", index))
        where = f"dependencies[{index}]"
        if isinstance(dep, dict) and "pip" in dep:
            pip = dep["pip"]
            if (
                set(dep) != {"pip"}
                or not isinstance(pip, list)
                or not all(isinstance(item, str) for item in pip)
            ):
                problems.append(
                    problem(
                        at,
                        where,
                        "must be 'pip:' followed by a list of requirements, one string each",
                    )
                )
                continue
            requirements += pip
            continue
        match = _CONDA_SPEC.match(dep) if isinstance(dep, str) else None
        if match is None:
            problems.append(problem(at, where, f"cannot read {dep!r} as a conda package spec"))
            continue
        name, constraint = match["name"].lower(), (match["constraint"] or "").strip()
        if name == "python":
            if constraint and not _python_agrees(constraint, python):
                problems.append(
                    problem(
                        at,
                        where,
                        f"{dep!r} conflicts with environment.python {python!r} in deploy.yaml; "
                        "make them agree",
                    )
                )
        elif name not in _TOOLING:
            problems.append(
                problem(
                    at,
                    where,
                    f"conda package {match['name']!r} cannot be installed: images use a Python "
                    "venv without conda; list it under 'pip:' instead",
                )
            )
    return requirements, problems


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
