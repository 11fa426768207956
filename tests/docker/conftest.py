"""Fixtures for tests that need the Docker engine and the registry scripts/dev-env sets up."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

docker = pytest.importorskip("docker")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "dev-env"
REQUIRED = ("REGISTRY_USERNAME", "REGISTRY_PASSWORD", "DEPLOYER_TEST_REGISTRY")
EXPORT_LINE = re.compile(r"^export [A-Z_][A-Z0-9_]*=\S.*$")


def run_dev_env(timeout: float = 1800) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Run scripts/dev-env; return the process and the variables its export lines set."""
    proc = subprocess.run(
        [str(SCRIPT)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/dev-env exited {proc.returncode}:\n{proc.stderr}")
    exported: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        words = shlex.split(line)
        assert len(words) == 2, f"not one `export NAME=value`: {line!r}"
        assert words[0] == "export", f"not an export line: {line!r}"
        name, _, value = words[1].partition("=")
        exported[name] = value
    return proc, exported


@pytest.fixture(scope="session")
def dev_env() -> dict[str, str]:
    """The variables scripts/dev-env exports, from the environment or from running it."""
    if all(os.environ.get(name) for name in REQUIRED):
        env = {name: os.environ[name] for name in REQUIRED}
        if os.environ.get("DOCKER_HOST"):
            env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
        return env
    _, env = run_dev_env()
    missing = [name for name in REQUIRED if name not in env]
    assert not missing, f"scripts/dev-env did not export {missing}"
    return env


@pytest.fixture(scope="session")
def client(dev_env: dict[str, str]) -> Iterator[Any]:
    environment = dict(os.environ)
    if "DOCKER_HOST" in dev_env:
        environment["DOCKER_HOST"] = dev_env["DOCKER_HOST"]
    c = docker.from_env(environment=environment, timeout=300)
    yield c
    c.close()


def free_port() -> int:
    from deployer.targets.local.driver import free_port as pick

    return pick()


def registry_tags(registry: str, repository: str, username: str, password: str) -> list[str]:
    """The tags of ``repository`` in the local registry ([] if it has none)."""
    request = urllib.request.Request(f"http://{registry}/v2/{repository}/tags/list")
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return list(json.loads(response.read())["tags"] or [])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise
