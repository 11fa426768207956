"""Fixtures shared by the whole suite."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import loopback_guard

loopback_guard.install()

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "example-repo"
# CI clones the repo as <dir>/p with shared/ beside it; a developer's checkout has the same.
SHARED = REPO.parent / "shared"
# On a subprocess's PYTHONPATH, it installs the same loopback guard (tests/sitecustomize/).
GUARD_PATH = REPO / "tests" / "sitecustomize"


@pytest.fixture
def example_copy(tmp_path: Path) -> Callable[..., Path]:
    """Copy the example repo to a tmp dir; optionally edit deploy.yaml's text on the way.

    ``example_copy(("port: 8080", "port: 9000"))`` returns the copied deploy.yaml's path.
    """

    def make(*replacements: tuple[str, str]) -> Path:
        root = tmp_path / "model-repo"
        shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", "out"))
        config = root / "deploy.yaml"
        text = config.read_text()
        for old, new in replacements:
            assert old in text, f"{old!r} is not in the example's deploy.yaml"
            text = text.replace(old, new)
        config.write_text(text)
        return config

    return make


def reference_dir() -> Path:
    """The official schemas in shared/reference, required by the schema tests."""
    path = SHARED / "reference"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the official schemas are expected in shared/reference/")
    return path
