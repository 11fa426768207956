"""The example model, built, pushed and rendered for one target: what a double serves.

Doubles' tests need a real scoring image in the local registry and the artifacts deployer
renders for it; this does both through the CLI, as a user would, under a service name of
its own (so tests never share an image).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from tests.conftest import EXAMPLE, GUARD_PATH, REPO


def build_and_render(
    root: Path, target: str, dev_env: dict[str, str], prefix: str
) -> tuple[str, Path]:
    """Copy the example to ``root`` as service ``<prefix>-<hex>``, build and push its image,
    render ``target``; returns the service name and the folder of the rendered artifacts."""
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", "out", "tests"))
    config = root / "deploy.yaml"
    service = f"{prefix}-{uuid.uuid4().hex[:8]}"
    config.write_text(config.read_text().replace("name: diabetes\n", f"name: {service}\n", 1))
    env = {**os.environ, **dev_env, "PYTHONPATH": os.pathsep.join([str(GUARD_PATH), str(REPO)])}
    for command, *options in (["build", "--push"], ["render"]):
        argv = [sys.executable, "-m", "deployer", command, "-c", str(config), "-t", target]
        subprocess.run(
            [*argv, *options], cwd=root, env=env, check=True, timeout=1800, capture_output=True
        )
    return service, root / "out" / target
