"""deploy-report.json and deploy-report.md."""

from __future__ import annotations

import json
from pathlib import Path

from deployer.report import DeployReport, TargetReport, write
from deployer.secrets import Masker
from deployer.verify import Latency, RequestResult, TestRun


def _report(secret: str) -> DeployReport:
    tests = TestRun(
        "http://127.0.0.1:8080/score",
        [
            RequestResult("two-rows", True, 200, 200, 3.2),
            RequestResult("bad", False, 200, 500, 2.0, "status 200, expected 500"),
        ],
        Latency(50, 1.0, 2.0, 3.0, 250),
    )
    return DeployReport(
        service="diabetes",
        model="diabetes-ridge",
        model_version="abc",
        config="deploy.yaml",
        targets=[
            TargetReport(
                "local",
                "local",
                "deployed",
                "127.0.0.1:5000/diabetes:1",
                digest="sha256:1",
                scoring_uri="http://127.0.0.1:8080/score",
                tests=tests,
            ),
            TargetReport(
                "edge",
                "iot_edge",
                "failed",
                "127.0.0.1:5000/diabetes:1",
                error=f"login failed for password {secret}",
                logs=["line 1", f"env {secret}"],
            ),
        ],
    )


def test_both_files_hold_the_results_and_mask_secrets(tmp_path: Path) -> None:
    secret = "hunter2-very-secret"
    json_path, md_path = write(_report(secret), tmp_path, Masker([secret]))
    data = json.loads(json_path.read_text())
    assert data["passed"] is False
    local, edge = data["targets"]
    assert local["scoring_uri"] == "http://127.0.0.1:8080/score"
    assert local["tests"]["results"][0]["name"] == "two-rows"
    assert local["tests"]["latency"]["p95_ms"] == 2.0
    assert local["passed"] is False  # one request failed
    assert edge["status"] == "failed" and edge["logs"] == ["line 1", "env ***"]
    markdown = md_path.read_text()
    assert (
        "| local | local | ❌ deployed | `http://127.0.0.1:8080/score` | 1/2 passed | 2.0 ms |"
        in markdown
    )
    assert "<details><summary>edge: error and last log lines</summary>" in markdown
    for path in (json_path, md_path):
        assert secret not in path.read_text()


def _failed(tests: TestRun | None) -> TargetReport:
    return TargetReport("t", "local", "failed", "i", tests=tests)


def test_only_tests_failed_when_every_failed_target_was_tested() -> None:
    failing = TestRun("u", [RequestResult("r", False, 200, 500, 1.0, "status 200")])
    report = DeployReport("s", "m", "v", "deploy.yaml", targets=[_failed(failing)])
    assert report.only_tests_failed
    # A target that never got to its tests (a failed build or start) is not a test failure.
    report.targets.append(_failed(None))
    assert not report.only_tests_failed
    assert not DeployReport("s", "m", "v", "deploy.yaml").only_tests_failed  # nothing failed
