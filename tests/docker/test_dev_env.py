"""Checks of the machine set-up done by scripts/dev-env.

Run after `eval "$(scripts/dev-env)"`; when its variables are missing the script is run from
here to get them. Everything is reached on 127.0.0.1 and containers use the host network.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import tarfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.docker.conftest import EXPORT_LINE, REQUIRED, SCRIPT, run_dev_env

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.docker

STATE_DIR = Path(os.environ.get("DEPLOYER_DEV_ENV_STATE", "/var/lib/deployer-dev-env"))
BASE_IMAGE = "python:3.11-slim"


def v2_status(registry: str, auth: tuple[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """Status and headers of GET http://<registry>/v2/ (no proxies: it is on 127.0.0.1)."""
    request = urllib.request.Request(f"http://{registry}/v2/")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


def _authed(registry: str, path: str, auth: tuple[str, str], method: str) -> Any:
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(
        f"http://{registry}{path}", headers={"Authorization": f"Basic {token}"}, method=method
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(request, timeout=10)


def registry_json(registry: str, path: str, auth: tuple[str, str]) -> Any:
    with _authed(registry, path, auth, "GET") as response:
        return json.load(response)


def registry_request(registry: str, path: str, auth: tuple[str, str], method: str) -> int:
    with _authed(registry, path, auth, method) as response:
        return int(response.status)


def run_in(client: Any, image: str, command: list[str]) -> str:
    output: bytes = client.containers.run(
        image, command, network_mode="host", remove=True, stdout=True, stderr=True
    )
    return output.decode()


def test_script_is_executable_bash_with_strict_mode() -> None:
    text = SCRIPT.read_text()
    assert os.access(SCRIPT, os.X_OK)
    assert text.startswith("#!/usr/bin/env bash\n") or text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text


def test_engine_answers(client: Any) -> None:
    assert client.ping() is True
    assert client.version()["ApiVersion"]


def test_registry_requires_credentials(dev_env: dict[str, str]) -> None:
    status, headers = v2_status(dev_env["DEPLOYER_TEST_REGISTRY"])
    assert status == 401
    assert headers.get("Www-Authenticate", headers.get("WWW-Authenticate", "")).startswith("Basic")


def test_registry_rejects_a_wrong_password(dev_env: dict[str, str]) -> None:
    wrong = (dev_env["REGISTRY_USERNAME"], dev_env["REGISTRY_PASSWORD"] + "x")
    assert v2_status(dev_env["DEPLOYER_TEST_REGISTRY"], wrong)[0] == 401


def test_registry_accepts_exported_credentials(dev_env: dict[str, str]) -> None:
    auth = (dev_env["REGISTRY_USERNAME"], dev_env["REGISTRY_PASSWORD"])
    assert dev_env["DEPLOYER_TEST_REGISTRY"].startswith("127.0.0.1:")
    assert v2_status(dev_env["DEPLOYER_TEST_REGISTRY"], auth)[0] == 200


def test_push_with_credentials_passed_by_the_caller(client: Any, dev_env: dict[str, str]) -> None:
    """The engine pushes to the registry with credentials given per call (no `docker login`)."""
    registry = dev_env["DEPLOYER_TEST_REGISTRY"]
    auth = (dev_env["REGISTRY_USERNAME"], dev_env["REGISTRY_PASSWORD"])
    tag = uuid.uuid4().hex[:12]
    repository = f"{registry}/dev-env-test/tiny"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (
            ("Dockerfile", b"FROM scratch\nCOPY hello.txt /\n"),
            ("hello.txt", tag.encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    image, _ = client.images.build(
        fileobj=context,
        custom_context=True,
        tag=f"{repository}:{tag}",
        network_mode="host",
        rm=True,
    )
    try:
        # Without credentials the registry refuses the push.
        anonymous = list(client.images.push(repository, tag=tag, stream=True, decode=True))
        assert any("error" in line for line in anonymous), anonymous
        pushed = list(
            client.images.push(
                repository,
                tag=tag,
                stream=True,
                decode=True,
                auth_config={"username": auth[0], "password": auth[1]},
            )
        )
        errors = [line["error"] for line in pushed if "error" in line]
        assert not errors, errors
        tags = registry_json(registry, "/v2/dev-env-test/tiny/tags/list", auth)
        assert tag in tags["tags"]
        digest = next(line["aux"]["Digest"] for line in pushed if "aux" in line)
        assert registry_request(
            registry, f"/v2/dev-env-test/tiny/manifests/{digest}", auth, method="DELETE"
        ) in (200, 202)
    finally:
        client.images.remove(image.id, force=True)


def test_base_image_runs_python_311_with_ssl_venv_and_pip(client: Any) -> None:
    assert client.images.get(BASE_IMAGE).id
    out = run_in(
        client,
        BASE_IMAGE,
        [
            "python",
            "-c",
            "import ssl, sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])",
        ],
    )
    assert out.strip() == "3.11"
    assert "python 3.11" in run_in(client, BASE_IMAGE, ["pip", "--version"])
    assert run_in(client, BASE_IMAGE, ["python3", "-m", "pip", "--version"]).startswith("pip ")


def test_base_image_makes_a_venv_with_pip(client: Any) -> None:
    out = run_in(
        client,
        BASE_IMAGE,
        ["sh", "-c", "python -m venv /tmp/v && /tmp/v/bin/pip --version && /tmp/v/bin/python -V"],
    )
    assert "Python 3.11" in out
    assert "/tmp/v/" in out


@pytest.mark.slow
def test_multi_stage_build_pip_installs_from_pypi(client: Any) -> None:
    """What the model images do: pip install into a venv in a build stage (host network)."""
    run_id = uuid.uuid4().hex[:12]
    label = f"org.deployer.test.dev-env={run_id}"
    dockerfile = (
        f"FROM {BASE_IMAGE} AS build\n"
        # A fresh label per run: the pip install is never a cached layer, and the build stage's
        # untagged image can be found and removed afterwards.
        f"LABEL {label}\n"
        "RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir -q six==1.16.0\n"
        f"FROM {BASE_IMAGE}\n"
        "COPY --from=build /opt/venv /opt/venv\n"
        'CMD ["/opt/venv/bin/python", "-c", "import six; print(six.__version__)"]\n'
    ).encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    tag = f"dev-env-test/pip:{run_id}"
    image, _ = client.images.build(
        fileobj=context, custom_context=True, tag=tag, network_mode="host", rm=True, forcerm=True
    )
    try:
        assert run_in(client, tag, []).strip() == "1.16.0"
    finally:
        client.images.remove(image.id, force=True)
        client.images.prune(filters={"dangling": True, "label": label})


def _pid(name: str) -> str | None:
    path = STATE_DIR / name
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def test_password_is_kept_private() -> None:
    password_file = STATE_DIR / "registry" / "password"
    if not password_file.exists():
        pytest.skip(f"no {password_file} (the registry was not set up by this script here)")
    assert password_file.stat().st_mode & 0o777 == 0o600


def test_rerun_prints_only_exports_and_changes_nothing(dev_env: dict[str, str]) -> None:
    pids_before = (_pid("dockerd.pid"), _pid("registry/registry.pid"))
    proc, exported = run_dev_env(timeout=120)

    lines = proc.stdout.splitlines()
    assert lines, "scripts/dev-env printed nothing on stdout"
    assert all(EXPORT_LINE.match(line) for line in lines), lines
    # Warm run: at most one line of chatter, same answers, same processes (no timing
    # assertion: machines here are noisy; the README quotes measured figures).
    assert len(proc.stderr.splitlines()) <= 1, proc.stderr
    for name in REQUIRED:
        assert exported[name] == dev_env[name], name
    default_host = "unix:///var/run/docker.sock"
    assert exported.get("DOCKER_HOST", default_host) == dev_env.get("DOCKER_HOST", default_host)
    assert (_pid("dockerd.pid"), _pid("registry/registry.pid")) == pids_before

    # And a shell that evals the output gets the same values.
    shell = subprocess.run(
        [
            "bash",
            "-c",
            f'{proc.stdout}\nprintf \'%s\\n\' "$REGISTRY_USERNAME" "$REGISTRY_PASSWORD"',
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    assert shell.stdout.splitlines() == [dev_env["REGISTRY_USERNAME"], dev_env["REGISTRY_PASSWORD"]]
