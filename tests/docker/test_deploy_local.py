"""The main job end to end on real parts: the Docker engine, the registry on 127.0.0.1:5000,
the scoring image built from the example, a local deployment, its tests and its report.

The tests run in file order on one model repo (a scenario: each step starts from the state
the previous one left), because a cold image build is the expensive part.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer.cli import main
from tests.conftest import EXAMPLE
from tests.docker.conftest import free_port, registry_tags
from tests.github.fake_github import serve
from tests.github.workflow_job import job_environment, parse_outputs

pytestmark = [pytest.mark.docker, pytest.mark.slow]


class Repo:
    """A copy of the example repo with its own service name and port, and a report dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"it-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        shutil.copytree(
            EXAMPLE, root / "repo", ignore=shutil.ignore_patterns("__pycache__", "tests")
        )
        self.config = root / "repo" / "deploy.yaml"
        text = self.config.read_text()
        text = text.replace("name: diabetes\n", f"name: {self.name}\n", 1)
        text = text.replace("port: 8080", f"port: {self.port}")
        self.config.write_text(text)
        self.reports = root / "reports"

    def cli(self, *args: str) -> int:
        return main([args[0], "-c", str(self.config), *args[1:]])

    def deploy(self) -> tuple[int, dict[str, Any]]:
        code = self.cli("deploy", "-t", "local", "--report-dir", str(self.reports))
        report = json.loads((self.reports / "deploy-report.json").read_text())
        return code, report["targets"][0]

    def score(self, rows: list[list[float]]) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/score",
            data=json.dumps({"data": rows}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


ROWS = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, dev_env: dict[str, str]) -> Iterator[Repo]:
    saved = {k: os.environ.get(k) for k in dev_env}
    os.environ.update(dev_env)
    repo = Repo(tmp_path_factory.mktemp("deploy"))
    yield repo
    repo.cli("down", "-t", "local", "--images")
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_build_and_push_with_basic_auth(
    repo: Repo, dev_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert repo.cli("build", "-t", "local", "--push") == 0
    out = capsys.readouterr().out
    assert "built, pushed" in out
    ref = out.split()[0]
    assert ref.startswith(f"127.0.0.1:5000/{repo.name}:")
    tags = registry_tags(
        "127.0.0.1:5000", repo.name, dev_env["REGISTRY_USERNAME"], dev_env["REGISTRY_PASSWORD"]
    )
    assert tags == [ref.rsplit(":", 1)[1]]


def test_build_again_is_unchanged_with_no_push(
    repo: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    assert repo.cli("build", "-t", "local", "--push") == 0
    assert "unchanged, already in the registry" in capsys.readouterr().out


def test_push_with_wrong_credentials_is_rejected_clearly(
    repo: Repo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REGISTRY_PASSWORD", "not-the-password")
    assert repo.cli("build", "-t", "local", "--push") == 1
    err = capsys.readouterr().err
    assert "rejected the credentials (401 unauthorized)" in err
    assert "not-the-password" not in err


def test_deploy_local_serves_and_passes_its_tests(repo: Repo) -> None:
    code, target = repo.deploy()
    assert code == 0, target
    assert target["status"] == "deployed"
    assert target["scoring_uri"] == f"http://127.0.0.1:{repo.port}/score"
    assert target["tests"]["passed"] is True
    assert [r["name"] for r in target["tests"]["results"]] == [
        "two-rows",
        "dataset-rows",
        "bad-input",
    ]
    assert repo.score(ROWS) == pytest.approx([4640.521], abs=1e-3)
    markdown = (repo.reports / "deploy-report.md").read_text()
    assert f"`http://127.0.0.1:{repo.port}/score`" in markdown
    assert os.environ["REGISTRY_PASSWORD"] not in markdown


def _service_containers(repo: Repo) -> list[Any]:
    import docker

    client = docker.from_env()
    return client.containers.list(filters={"label": f"ai.deployer.base-name={repo.name}-local"})


def test_redeploy_without_change_builds_pushes_and_restarts_nothing(repo: Repo) -> None:
    (before,) = _service_containers(repo)
    code, target = repo.deploy()
    assert code == 0
    assert target["status"] == "unchanged"
    assert (target["built"], target["pushed"]) == (False, False)
    (after,) = _service_containers(repo)
    assert after.id == before.id
    assert after.attrs["State"]["StartedAt"] == before.attrs["State"]["StartedAt"]


def test_deploy_in_github_actions_reports_to_the_pull_request(
    repo: Repo,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """The same deploy as a step of a pull request's job: the comment, the outputs, the summary
    and the mask, from a real deployment and its real tests."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    capsys.readouterr()
    with serve() as github:
        for name, value in job_environment(github, tmp_path, "pull_request_opened.json").items():
            if name.startswith("GITHUB_"):
                monkeypatch.setenv(name, value)
        code, target = repo.deploy()
    assert code == 0, target
    password = os.environ["REGISTRY_PASSWORD"]
    assert capsys.readouterr().out.startswith(f"::add-mask::{password}\n")
    uri = f"http://127.0.0.1:{repo.port}/score"
    (body,) = github.bodies(42)
    assert f"| local | local | ✅ unchanged | `{uri}` | 3/3 passed |" in body
    assert "#### local: tests" in body and password not in body
    outputs = parse_outputs((tmp_path / "output").read_text())
    assert json.loads(outputs["scoring-uris"]) == {"local": uri}
    assert outputs["status"] == "passed"
    assert f"| local | local | ✅ unchanged | `{uri}` |" in (tmp_path / "step_summary").read_text()


def test_model_only_change_reuses_the_dependency_layers(
    repo: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    model = repo.config.parent / "model" / "diabetes.onnx"
    model.write_bytes(model.read_bytes() + b"")  # same bytes: no change yet
    (repo.config.parent / "model" / "NOTES.txt").write_text("retrained\n")
    capsys.readouterr()
    code, target = repo.deploy()
    assert code == 0, target
    assert target["status"] == "deployed" and target["built"] is True
    err = capsys.readouterr().err
    steps = [line for line in err.splitlines() if "Step " in line or "Using cache" in line]
    pip_steps = [i for i, line in enumerate(steps) if "pip install" in line]
    assert pip_steps, err
    # Every step up to the last pip install came from the cache.
    for index in pip_steps:
        assert "Using cache" in steps[index + 1], steps[index : index + 2]


def test_failing_tests_keep_the_old_version_and_may_be_let_through(repo: Repo) -> None:
    """A new version whose answers are wrong is retired; --ignore-test-failures (the action's
    fail-on-test-failure: false) makes that exit 0 while the report still says failed."""
    original = repo.config.read_text()
    assert "json: [4640.521, 3552.4529]" in original
    repo.config.write_text(original.replace("json: [4640.521, 3552.4529]", "json: [1.0, 2.0]"))
    (repo.config.parent / "model" / "NOTES.txt").write_text("retrained again\n")
    (before,) = _service_containers(repo)
    try:
        code = repo.cli(
            "deploy", "-t", "local", "--report-dir", str(repo.reports), "--ignore-test-failures"
        )
    finally:
        repo.config.write_text(original)
    assert code == 0
    report = json.loads((repo.reports / "deploy-report.json").read_text())
    (target,) = report["targets"]
    assert (report["passed"], target["status"], target["tests"]["passed"]) == (
        False,
        "failed",
        False,
    )
    (failed,) = [r for r in target["tests"]["results"] if not r["passed"]]
    assert failed["name"] == "two-rows"
    (after,) = _service_containers(repo)
    assert after.id == before.id
    assert repo.score(ROWS) == pytest.approx([4640.521], abs=1e-3)


def test_a_broken_init_fails_the_deploy_and_keeps_the_old_version(repo: Repo) -> None:
    script = repo.config.parent / "score.py"
    script.write_text(
        script.read_text().replace(
            "def init():",
            "def init():\n    raise RuntimeError('model store offline')\n\n\ndef _unused():",
            1,
        )
    )
    (before,) = _service_containers(repo)
    code, target = repo.deploy()
    assert code == 1
    assert target["status"] == "failed"
    assert "exited with code" in target["error"]
    assert any("RuntimeError: model store offline" in line for line in target["logs"])
    (after,) = _service_containers(repo)
    assert after.id == before.id
    assert repo.score(ROWS) == pytest.approx([4640.521], abs=1e-3)
    markdown = (repo.reports / "deploy-report.md").read_text()
    assert "RuntimeError: model store offline" in markdown


def test_down_removes_the_service(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    assert repo.cli("down", "-t", "local") == 0
    assert "removed local: container" in capsys.readouterr().out
    assert _service_containers(repo) == []
    with pytest.raises(urllib.error.URLError):
        repo.score(ROWS)
