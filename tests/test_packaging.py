"""What a ``pip install .`` user gets: templates and schemas inside the package."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
    )
    (built,) = out.glob("deployer-*.whl")
    return built


@pytest.mark.slow
def test_wheel_ships_templates_schemas_and_the_server(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "deployer/schemas/deploy.schema.json" in names
    for template in (REPO / "templates").rglob("*"):
        if template.is_file():
            assert f"deployer/templates/{template.relative_to(REPO / 'templates')}" in names
    assert "deployer/serving/__main__.py" in names
    assert "deployer/serving/requirements.txt" in names


@pytest.mark.slow
def test_installed_wheel_renders_without_the_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deployer",
            "render",
            "-c",
            str(EXAMPLE / "deploy.yaml"),
            "-t",
            "local",
            "-o",
            str(tmp_path / "out"),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    probe = subprocess.run(
        [sys.executable, "-c", "import deployer.resources as r; print(r.templates_dir())"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == str(site / "deployer" / "templates")


def test_serve_extra_matches_the_image_requirements() -> None:
    """The image installs deployer/serving/requirements.txt; `pip install deployer[serve]`
    must give a host the same server."""
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["serve"]
    listed = [
        line.strip()
        for line in (REPO / "deployer" / "serving" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert sorted(extra) == sorted(listed)
